//! htpasswd files: parsing with a message per bad line, and the import
//! shared by `authd import-htpasswd` and `POST /api/v1/htpasswd`.
//!
//! Rules: one transaction; any bad line (unknown or malformed hash, a hash
//! whose cost is out of bounds, invalid user name, duplicate user) makes the
//! import refuse everything unless `skip_invalid` is set, in which case the
//! good lines are imported and the bad ones reported. Existing users are
//! skipped and reported unless `overwrite` is set; admins always are.
//! Hashes are taken as they are and upgraded to argon2id on each user's
//! first good login.

use serde::Serialize;

use crate::db::Db;
use crate::db::users::{self, ImportCounts};
use crate::error::Error;
use crate::names::is_valid_user_name;
use crate::password::{HashError, HashFormat};

/// One refused line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// A parsed file: good (name, hash) entries in file order, and bad lines.
#[derive(Debug, Default)]
pub struct Parsed {
    pub entries: Vec<(String, String)>,
    pub errors: Vec<LineError>,
}

/// The outcome of an import.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub counts: ImportCounts,
    pub rejected: usize,
    pub errors: Vec<LineError>,
}

/// Parses htpasswd text. Empty lines and `#` comments are skipped. Error
/// messages never quote a hash.
pub fn parse(text: &str) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parsed = Parsed::default();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        let number = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut error = |message: String| {
            parsed.errors.push(LineError {
                line: number,
                message,
            });
        };
        let Some((name, hash)) = line.split_once(':') else {
            error("not of the form user:hash".into());
            continue;
        };
        if !is_valid_user_name(name) {
            error(format!(
                "invalid user name {:?}",
                name.chars().take(80).collect::<String>()
            ));
            continue;
        }
        match HashFormat::parse(hash) {
            Ok(_) => {}
            Err(HashError::Unsupported) => {
                error(format!(
                    "user {name:?}: unsupported or malformed hash (accepted: bcrypt \
                     $2y$/$2a$/$2b$, $apr1$, {{SHA}}, crypt, $1$, $5$, $6$, argon2); plaintext \
                     passwords are refused"
                ));
                continue;
            }
            Err(e @ HashError::Cost(_)) => {
                error(format!("user {name:?}: {e}"));
                continue;
            }
        }
        if let Some(first) = seen.insert(name, number) {
            error(format!("user {name:?} is already on line {first}"));
            continue;
        }
        parsed.entries.push((name.to_owned(), hash.to_owned()));
    }
    parsed
}

/// How to import.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options {
    /// Import the good lines of a file with bad ones.
    pub skip_invalid: bool,
    /// Replace the password of existing non-admin users.
    pub overwrite: bool,
}

/// Parses and imports `text`. With bad lines and without `skip_invalid`,
/// nothing is imported and the error lists every bad line.
pub async fn import(db: &Db, text: &str, options: Options, actor: &str) -> Result<Report, Error> {
    let Options {
        skip_invalid,
        overwrite,
    } = options;
    let parsed = parse(text);
    if !parsed.errors.is_empty() && !skip_invalid {
        let n = parsed.errors.len();
        return Err(Error::BadRequest {
            code: "invalid_htpasswd",
            message: format!(
                "{n} invalid line{}; nothing imported (skip them with skip_invalid)",
                if n == 1 { "" } else { "s" }
            ),
            details: Some(serde_json::json!({ "lines": parsed.errors })),
        });
    }
    let counts = users::import(db, &parsed.entries, overwrite, actor).await?;
    Ok(Report {
        counts,
        rejected: parsed.errors.len(),
        errors: parsed.errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_bad_and_duplicate_lines() {
        let text = "\u{feff}# users\r\n\
                    alice:$2y$05$dWA3c6e4nZuRLDxbbtoZteW1rXyGqt.DqMYKeEje.MLT6Tgw8VX0W\r\n\
                    \n\
                    bob:$apr1$nVMz3fmk$XKJOzvjBhn1Eui1LnJobG1\n\
                    carol:plaintext\n\
                    no-colon-here\n\
                    bad name:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n\
                    alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n\
                    dave:StGr/F2re28kk";
        let p = parse(text);
        let names: Vec<&str> = p.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "dave"]);
        let lines: Vec<usize> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [5, 6, 7, 8]);
        assert!(p.errors[0].message.contains("unsupported"));
        assert!(!p.errors[0].message.contains("plaintext\""), "hash leaked");
        assert!(p.errors[3].message.contains("line 2"));
    }

    #[test]
    fn empty_file() {
        let p = parse("");
        assert!(p.entries.is_empty() && p.errors.is_empty());
    }
}
