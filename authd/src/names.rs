//! Names of principals and grant subjects: user names, and the reserved
//! subjects `anonymous` and `*`. Validation lives here so that every door
//! (API, CLI, htpasswd import, config) refuses the same names.

use crate::error::Error;

/// Subject of grants that apply to requests without credentials.
pub const ANONYMOUS: &str = "anonymous";
/// Subject of grants that apply to every signed-in user.
pub const EVERYONE: &str = "*";
/// Longest user name.
pub const MAX_USER_NAME_LEN: usize = 64;

/// User names: 1–64 of `A–Z a–z 0–9 . _ @ -`, not starting with `-` or `.`,
/// and not one of the reserved subjects. Anything else (quotes, spaces,
/// `:` which htpasswd cannot hold, unicode) is refused with a clear error
/// instead of being stored.
pub fn is_valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME_LEN
        && name != ANONYMOUS
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

pub fn check_user_name(name: &str) -> Result<(), Error> {
    if is_valid_user_name(name) {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_name",
            format!(
                "invalid user name {name:?}: use 1 to {MAX_USER_NAME_LEN} of A-Z a-z 0-9 . _ @ - \
                 (not starting with - or .), and not \"{ANONYMOUS}\""
            ),
        ))
    }
}

/// Checks a grant subject: a valid user name, `anonymous` or `*`.
pub fn check_subject(subject: &str) -> Result<(), Error> {
    if subject == ANONYMOUS || subject == EVERYONE || is_valid_user_name(subject) {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_subject",
            format!(
                "invalid subject {subject:?}: use a user name, \"{ANONYMOUS}\" or \"{EVERYONE}\""
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects() {
        for ok in ["alice", "a", "ci-bot", "first.last@example.com", "A_B"] {
            assert!(is_valid_user_name(ok), "{ok}");
        }
        for bad in [
            "",
            "anonymous",
            "-x",
            ".x",
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
    }
}
