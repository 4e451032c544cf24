//! The repository name and tag grammars of the OCI distribution spec.
//!
//! Hand-written matchers instead of regexes: they run on every request and
//! every scope, and the grammar is small enough to read as code.

/// Longest repository name accepted, in bytes (distribution's limit).
pub const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag accepted, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most 255 bytes.
pub fn is_valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_REPOSITORY_LEN && name.split('/').all(is_valid_component)
}

fn is_valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-", followed by alnum.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Whether repository `name` matches grant pattern `pattern`, where `*`
/// matches any run of characters including `/` (so `team/*` covers
/// `team/app/sub`) and every other character matches itself.
///
/// Iterative, with one backtrack point: linear in practice, O(n·m) at
/// worst, no recursion whatever the input.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in [
            "a",
            "library/alpine",
            "a/b/c/d",
            "foo.bar",
            "foo_bar",
            "foo__bar",
            "foo---bar",
            "0",
            "team-1/app.v2",
        ] {
            assert!(is_valid_repository(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "foo/",
            "/foo",
            "foo//bar",
            "..",
            "foo/../bar",
            "foo/./bar",
            "foo___bar",
            "foo.-bar",
            "-foo",
            "foo-",
            "foo:5000/bar",
            "foo\0bar",
            "fo%2e",
            "é",
            "foo bar",
            ".foo",
            "foo._bar",
        ] {
            assert!(!is_valid_repository(bad), "{bad:?}");
        }
        assert!(is_valid_repository(&"a".repeat(255)));
        assert!(!is_valid_repository(&"a".repeat(256)));
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", "a/b/c"));
        assert!(glob_matches("team/*", "team/app"));
        assert!(glob_matches("team/*", "team/app/sub"));
        assert!(!glob_matches("team/*", "team"));
        assert!(!glob_matches("team/*", "teams/app"));
        assert!(glob_matches("library/alpine", "library/alpine"));
        assert!(!glob_matches("library/alpine", "library/alpine2"));
        assert!(glob_matches("*/app", "x/y/app"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        assert!(glob_matches("**", ""));
        assert!(!glob_matches("", "a"));
        // Pathological input stays fast.
        let long = "a".repeat(255);
        assert!(!glob_matches(&format!("{}b", "*a".repeat(60)), &long));
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in [
            "",
            ".x",
            "-x",
            "a/b",
            "a:b",
            "sha256:abc",
            &"t".repeat(129),
            "é",
        ] {
            assert!(!is_valid_tag(bad), "{bad:?}");
        }
    }
}
