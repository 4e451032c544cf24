//! Names of principals and grant subjects: user names, group names
//! (`@team` as a subject), and the reserved subjects `anonymous` and `*`.
//! Validation lives here so that every door (API, CLI, htpasswd import,
//! config) refuses the same names.

use crate::error::Error;

/// Subject of grants that apply to requests without credentials.
pub const ANONYMOUS: &str = "anonymous";
/// Subject of grants that apply to every signed-in user.
pub const EVERYONE: &str = "*";
/// Longest user name.
pub const MAX_USER_NAME_LEN: usize = 64;
/// What a group's name starts with when it is a grant subject.
pub const GROUP_PREFIX: char = '@';
/// Longest group name (without the `@`).
pub const MAX_GROUP_NAME_LEN: usize = 64;

/// User names: 1–64 bytes forming one repository path component
/// (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, lowercase), so that `${user}/*`
/// names repositories for every user and `Admin` cannot shadow `admin`;
/// and not one of the reserved subjects. Anything else (upper case, `@`
/// which marks a group, quotes, spaces, `:` which htpasswd cannot hold,
/// unicode) is refused with a clear error instead of being stored.
pub fn is_valid_user_name(name: &str) -> bool {
    name.len() <= MAX_USER_NAME_LEN
        && name != ANONYMOUS
        && !name.contains('/')
        && token::name::is_valid_repository(name)
}

pub fn check_user_name(name: &str) -> Result<(), Error> {
    if is_valid_user_name(name) {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_name",
            format!(
                "invalid user name {name:?}: use 1 to {MAX_USER_NAME_LEN} of a-z 0-9 and the \
                 separators . _ __ - between them (a repository path component), and not \
                 \"{ANONYMOUS}\""
            ),
        ))
    }
}

/// Group names: 1–64 of `a–z 0–9 . _ -`, starting with a letter or digit.
pub fn is_valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_GROUP_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Reads a group name, with or without its `@`.
pub fn parse_group_name(name: &str) -> Result<&str, Error> {
    let bare = name.strip_prefix(GROUP_PREFIX).unwrap_or(name);
    if is_valid_group_name(bare) {
        Ok(bare)
    } else {
        Err(Error::bad_request(
            "invalid_name",
            format!(
                "invalid group name {name:?}: use 1 to {MAX_GROUP_NAME_LEN} of a-z 0-9 . _ - \
                 (starting with a letter or digit)"
            ),
        ))
    }
}

/// The group a grant subject names (`@team` → `team`), if it names one.
pub fn subject_group(subject: &str) -> Option<&str> {
    subject.strip_prefix(GROUP_PREFIX)
}

/// Checks a grant subject: a valid user name, `@group`, `anonymous` or `*`.
pub fn check_subject(subject: &str) -> Result<(), Error> {
    let group_ok = subject_group(subject).is_some_and(is_valid_group_name);
    if subject == ANONYMOUS || subject == EVERYONE || group_ok || is_valid_user_name(subject) {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_subject",
            format!(
                "invalid subject {subject:?}: use a user name, @group, \"{ANONYMOUS}\" or \
                 \"{EVERYONE}\""
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects() {
        for ok in [
            "alice",
            "a",
            "ci-bot",
            "first.last",
            "a_b",
            "a__b",
            "a--b",
            "x9",
        ] {
            assert!(is_valid_user_name(ok), "{ok}");
        }
        for bad in [
            "",
            "anonymous",
            "-x",
            ".x",
            "x-",
            "a..b",
            "a___b",
            "A_B",
            "Alice",
            "first.last@example.com",
            "@team",
            "a/b",
            "a b",
            "a:b",
            "a'; DROP TABLE users;--",
            "é",
            "*",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_user_name(bad), "{bad:?}");
        }
        assert!(check_subject("*").is_ok());
        assert!(check_subject("anonymous").is_ok());
        assert!(check_subject("x y").is_err());
        // `@` marks a group: never the start of a user name.
        assert!(!is_valid_user_name("@team"));
        assert!(check_subject("@team").is_ok());
        assert!(check_subject("@Team").is_err());
        assert!(check_subject("@").is_err());
        assert_eq!(parse_group_name("@ci-robots").unwrap(), "ci-robots");
        assert_eq!(parse_group_name("devs").unwrap(), "devs");
        for bad in ["", "@", "-x", "a b", "A", "a@b", &"g".repeat(65)] {
            assert!(parse_group_name(bad).is_err(), "{bad:?}");
        }
    }
}
