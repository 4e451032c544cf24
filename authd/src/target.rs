//! What a grant applies to: a repository glob (with `${user}` for the
//! signed-in user's name) or the catalog. Parsing checks the pattern, so a
//! stored `Target` is always a valid one; matching follows the registry's
//! globs.

use crate::error::Error;

/// Placeholder for the signed-in user's name in a pattern.
pub const USER_PLACEHOLDER: &str = "${user}";

/// What a grant applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Repositories whose name matches the glob.
    Repository(String),
    /// `registry:catalog:*`: listing every repository.
    Catalog,
}

impl Target {
    /// Stored form: (resource type, pattern).
    pub fn parts(&self) -> (&str, &str) {
        match self {
            Target::Repository(p) => ("repository", p),
            Target::Catalog => (token::CATALOG_TYPE, token::CATALOG_NAME),
        }
    }

    /// Reads a target from its API/CLI form: a repository glob, or
    /// `registry:catalog` (optionally with `:*`). `resource_type`, when
    /// given, must agree.
    pub fn parse(resource_type: Option<&str>, pattern: &str) -> Result<Target, Error> {
        let catalog = format!("{}:{}", token::CATALOG_TYPE, token::CATALOG_NAME);
        let is_catalog_text = pattern == catalog || pattern == format!("{catalog}:*");
        match resource_type {
            None | Some("repository") if !is_catalog_text => {
                check_pattern(pattern)?;
                Ok(Target::Repository(pattern.to_owned()))
            }
            None => Ok(Target::Catalog),
            Some(t)
                if t == token::CATALOG_TYPE
                    && (pattern == token::CATALOG_NAME || is_catalog_text) =>
            {
                Ok(Target::Catalog)
            }
            Some(t) => Err(Error::bad_request(
                "invalid_pattern",
                format!(
                    "unsupported grant target {t}:{pattern} (use type \"repository\" with a name \
                     pattern, or \"registry\" with \"catalog\")"
                ),
            )),
        }
    }

    /// Reads a target from its stored form.
    pub fn from_parts(resource_type: &str, pattern: &str) -> Target {
        if resource_type == token::CATALOG_TYPE {
            Target::Catalog
        } else {
            Target::Repository(pattern.to_owned())
        }
    }
}

/// Repository patterns: repository-name characters, `*`, and `${user}`.
fn check_pattern(pattern: &str) -> Result<(), Error> {
    let plain = pattern.replace(USER_PLACEHOLDER, "u");
    let ok = !pattern.is_empty()
        && pattern.len() <= token::name::MAX_REPOSITORY_LEN
        && plain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_pattern",
            format!(
                "invalid repository pattern {pattern:?}: use lowercase repository name \
                 characters (a-z 0-9 . _ - /), * and {USER_PLACEHOLDER}"
            ),
        ))
    }
}

/// A grant pattern with `${user}` replaced by the signed-in user's name;
/// `None` when it names the user and there is none (anonymous).
pub fn expand_pattern(pattern: &str, user: Option<&str>) -> Option<String> {
    if pattern.contains(USER_PLACEHOLDER) {
        user.map(|u| pattern.replace(USER_PLACEHOLDER, u))
    } else {
        Some(pattern.to_owned())
    }
}

/// Glob match (the registry's, from the token crate: `*` matches any run of
/// characters including `/`), after `${user}` expansion.
pub fn pattern_matches(pattern: &str, user: Option<&str>, name: &str) -> bool {
    expand_pattern(pattern, user).is_some_and(|p| token::name::glob_matches(&p, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(pattern_matches("*", None, "a/b/c"));
        assert!(pattern_matches("team/*", None, "team/app"));
        assert!(pattern_matches("team/*", None, "team/app/sub"));
        assert!(!pattern_matches("team/*", None, "team"));
        assert!(!pattern_matches("team/*", None, "teams/app"));
        assert!(pattern_matches("library/alpine", None, "library/alpine"));
        assert!(!pattern_matches("library/alpine", None, "library/alpine2"));
        assert!(pattern_matches("*/app", None, "x/y/app"));
        assert!(pattern_matches("a*b*c", None, "aXXbYYc"));
        assert!(!pattern_matches("a*b*c", None, "aXXbYY"));
        assert!(pattern_matches("**", None, ""));
        // Pathological pattern stays fast.
        let s = "a".repeat(200);
        assert!(!pattern_matches(&format!("{}b", "*a".repeat(20)), None, &s));
    }

    #[test]
    fn user_placeholder() {
        assert!(pattern_matches("${user}/*", Some("alice"), "alice/app"));
        assert!(!pattern_matches("${user}/*", Some("alice"), "bob/app"));
        assert!(!pattern_matches("${user}/*", Some("alice"), "alice"));
        assert!(!pattern_matches("${user}/*", None, "alice/app"));
        assert!(pattern_matches("home/${user}", Some("bob"), "home/bob"));
    }

    #[test]
    fn target_patterns() {
        assert_eq!(
            Target::parse(None, "registry:catalog:*").unwrap(),
            Target::Catalog
        );
        assert_eq!(
            Target::parse(Some("registry"), "catalog").unwrap(),
            Target::Catalog
        );
        for bad in ["", "Team/*", "a b", "x'--", "registry:other"] {
            assert!(Target::parse(None, bad).is_err(), "{bad:?}");
        }
        assert!(Target::parse(Some("registry"), "team/*").is_err());
        assert!(Target::parse(Some("plugin"), "x").is_err());
    }
}
