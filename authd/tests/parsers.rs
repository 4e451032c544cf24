//! Property tests of the parsers of client input: htpasswd files, the
//! stored-hash parser (PHC strings, bcrypt, apr1, SHA-crypt, `{SHA}`),
//! Basic credentials, URL-encoded parameters and the audit filter. Any
//! input gives a value or a typed error — never a panic, and never a 500.

#![allow(clippy::unwrap_used)]

use authd::htpasswd;
use authd::names::is_valid_user_name;
use authd::password::{self, HashError, HashFormat};
use authd::routes::{Credentials, Params, admin::audit_filter};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine;
use proptest::prelude::*;

/// Hash-like strings: the shapes the parser knows, with random parts.
fn hash_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\$argon2(id|i|d|x)\\$(v=(16|19)\\$)?m=[0-9]{1,11},t=[0-9]{1,11},p=[0-9]{1,4}\\$[A-Za-z0-9+/]{0,30}\\$[A-Za-z0-9+/]{0,50}",
        "\\$2[abyx]\\$[0-9]{1,3}\\$[./A-Za-z0-9]{0,60}",
        "\\$apr1\\$[./A-Za-z0-9]{0,10}\\$[./A-Za-z0-9]{0,25}",
        "\\$[156]\\$(rounds=[0-9]{1,25}\\$)?[./A-Za-z0-9]{0,20}\\$[./A-Za-z0-9]{0,90}",
        "\\{SHA\\}[A-Za-z0-9+/=]{0,40}",
        "[./A-Za-z0-9]{11,15}",
    ]
}

/// Whether verifying `hash` is cheap enough for a property test: the
/// costly formats are only parsed.
fn cheap_to_verify(format: HashFormat, hash: &str) -> bool {
    match format {
        HashFormat::Apr1 | HashFormat::Sha1 | HashFormat::DesCrypt | HashFormat::Md5Crypt => true,
        HashFormat::Sha256Crypt | HashFormat::Sha512Crypt => !hash.contains("rounds="),
        _ => false,
    }
}

fn headers(value: &[u8]) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, value);
    Some(h)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn stored_hash_parser_gives_a_format_or_a_typed_error(hash in hash_like()) {
        match HashFormat::parse(&hash) {
            Ok(format) => {
                prop_assert_eq!(HashFormat::detect(&hash), Some(format));
                if cheap_to_verify(format, &hash) {
                    password::verify(b"password", &hash);
                }
            }
            Err(HashError::Unsupported | HashError::Cost(_)) => {
                prop_assert!(!password::verify(b"password", &hash));
            }
        }
    }

    #[test]
    fn htpasswd_text_gives_entries_and_numbered_errors(text in any::<String>()) {
        let parsed = htpasswd::parse(&text);
        let lines = text.split('\n').count();
        for (name, hash) in &parsed.entries {
            prop_assert!(is_valid_user_name(name));
            prop_assert!(HashFormat::parse(hash).is_ok());
        }
        for e in &parsed.errors {
            prop_assert!((1..=lines).contains(&e.line));
        }
    }

    #[test]
    fn htpasswd_lines_of_names_and_hashes(
        lines in proptest::collection::vec(("[A-Za-z0-9._@:-]{0,12}", hash_like()), 0..8),
    ) {
        let text = lines
            .iter()
            .flat_map(|(n, h)| [n.as_str(), ":", h.as_str(), "\n"])
            .collect::<String>();
        let parsed = htpasswd::parse(&text);
        prop_assert!(parsed.entries.len() + parsed.errors.len() <= lines.len());
        for e in &parsed.errors {
            // Messages name the user, never the hash.
            let hash = &lines[e.line - 1].1;
            if hash.len() > 8 {
                prop_assert!(!e.message.contains(hash.as_str()));
            }
        }
    }

    #[test]
    fn any_authorization_header_is_credentials_or_a_400(value in any::<Vec<u8>>()) {
        if let Some(h) = headers(&value)
            && let Err(e) = Credentials::from_headers(&h)
        {
            prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn basic_credentials_round_trip(user_pass in any::<Vec<u8>>(), padded in any::<bool>()) {
        let engine = if padded {
            base64::engine::general_purpose::STANDARD
        } else {
            base64::engine::general_purpose::STANDARD_NO_PAD
        };
        let h = headers(format!("Basic {}", engine.encode(&user_pass)).as_bytes()).unwrap();
        let text = String::from_utf8(user_pass.clone()).ok();
        let expected = text
            .as_deref()
            .and_then(|t| t.split_once(':'))
            .filter(|(user, _)| !user.is_empty());
        match (Credentials::from_headers(&h), expected) {
            (Ok(Credentials::Basic { user, password }), Some((u, p))) => {
                prop_assert_eq!(user, u);
                prop_assert_eq!(password, p);
            }
            (Err(e), None) => prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST),
            (got, want) => prop_assert!(false, "{got:?} for {want:?}"),
        }
    }

    #[test]
    fn url_encoded_parameters_and_audit_filters(query in any::<Vec<u8>>()) {
        let params = Params::parse(&query);
        params.flag("offline_token");
        let _ = params.all("scope").count();
        match audit_filter(&params) {
            Ok(f) => prop_assert!((1..=authd::db::audit::MAX_LIMIT).contains(&f.limit)),
            Err(e) => prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST),
        }
    }

    #[test]
    fn audit_filter_of_plausible_queries(
        limit in "-?[0-9]{0,5}",
        since in "(2026-0[1-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](Z|\\+01:00))|[a-z0-9:-]{0,12}",
    ) {
        let params = Params::parse(format!("limit={limit}&since={since}").as_bytes());
        match audit_filter(&params) {
            Ok(f) => {
                prop_assert!((1..=authd::db::audit::MAX_LIMIT).contains(&f.limit));
                prop_assert_eq!(f.since.is_some(), !since.is_empty());
            }
            Err(e) => prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST),
        }
    }
}
