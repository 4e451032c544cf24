//! Property tests of the token crate's parsers of client input: scopes,
//! repository names and tags, and bearer tokens (JWT header, claims and
//! signature) as the registry verifies them. Any input gives a typed error,
//! never a panic; scopes print back as themselves.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey as _;
use proptest::prelude::*;
use serde_json::{Value, json};
use token::scope::{MAX_SCOPE_LEN, ScopeError};
use token::{PublicKey, Scope, TrustedKeys, VerifyError, VerifyOptions};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One issuer key, trusted, made once: key generation is the slow part.
fn issuer() -> &'static (EncodingKey, TrustedKeys, String) {
    static KEY: std::sync::OnceLock<(EncodingKey, TrustedKeys, String)> =
        std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let secret = p256::SecretKey::random(&mut rand::thread_rng());
        let public = PublicKey::P256(secret.public_key());
        let kid = public.libtrust_key_id();
        let mut keys = TrustedKeys::new();
        keys.insert(public, None);
        let der = secret.to_pkcs8_der().expect("PKCS#8");
        (EncodingKey::from_ec_der(der.as_bytes()), keys, kid)
    })
}

fn opts() -> VerifyOptions {
    VerifyOptions::new("authd", "registry")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scopes_never_panic(s in "\\PC{0,60}") {
        match s.parse::<Scope>() {
            // What parses prints as a scope that parses to the same.
            Ok(scope) => prop_assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope)),
            Err(ScopeError::Shape(_) | ScopeError::Empty(_) | ScopeError::Class(_) | ScopeError::TooLong) => {}
        }
    }

    #[test]
    fn scopes_round_trip(
        kind in "[a-z]{1,10}",
        class in proptest::option::of("[a-z]{1,6}"),
        name in "[a-z0-9]{1,8}((/|:)[a-z0-9._-]{1,8}){0,3}",
        actions in proptest::collection::vec("(pull|push|delete|\\*|[a-z]{1,5})", 0..4),
    ) {
        let kind_class = match &class {
            Some(c) => format!("{kind}({c})"),
            None => kind.clone(),
        };
        let text = format!("{kind_class}:{name}:{}", actions.join(","));
        let scope: Scope = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&scope.resource_type, &kind);
        prop_assert_eq!(&scope.class, &class);
        prop_assert_eq!(&scope.name, &name);
        let mut unique: Vec<String> = Vec::new();
        for a in actions {
            if !unique.contains(&a) {
                unique.push(a);
            }
        }
        prop_assert_eq!(&scope.actions, &unique);
        prop_assert_eq!(scope.to_string().parse::<Scope>(), Ok(scope));
    }

    #[test]
    fn long_scopes_are_refused(s in proptest::collection::vec("[a-z:]", MAX_SCOPE_LEN + 1..MAX_SCOPE_LEN + 40)) {
        prop_assert_eq!(s.concat().parse::<Scope>(), Err(ScopeError::TooLong));
    }

    #[test]
    fn names_and_tags_never_panic(s in "\\PC{0,300}") {
        let _ = token::name::is_valid_repository(&s);
        let _ = token::name::is_valid_tag(&s);
        let _ = token::name::glob_matches(&s, "team/app");
        let _ = token::name::glob_matches("team/*", &s);
    }

    #[test]
    fn arbitrary_tokens_are_refused(s in "\\PC{0,200}") {
        prop_assert!(token::verify::verify(&s, &issuer().1, &opts()).is_err());
    }

    #[test]
    fn forged_headers_are_refused(
        header in json_value(),
        alg in proptest::option::of(prop_oneof![
            Just(json!("ES256")), Just(json!("RS256")), Just(json!("HS256")),
            Just(json!("none")), Just(json!("EdDSA")), json_value(),
        ]),
        with_kid in any::<bool>(),
        payload in json_value(),
        signature in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut header = match header {
            Value::Object(m) => Value::Object(m),
            other => json!({"x": other}),
        };
        if let Some(alg) = alg {
            header["alg"] = alg;
        }
        if with_kid {
            header["kid"] = json!(issuer().2);
        }
        let token = format!(
            "{}.{}.{}",
            B64URL.encode(serde_json::to_vec(&header).unwrap()),
            B64URL.encode(serde_json::to_vec(&payload).unwrap()),
            B64URL.encode(&signature),
        );
        let result = token::verify::verify(&token, &issuer().1, &opts());
        prop_assert!(result.is_err(), "{token}");
    }

    #[test]
    fn signed_claims_of_any_shape_never_panic(
        aud in prop_oneof![
            Just(json!("registry")), Just(json!(["x", "registry"])), Just(json!(["x"])),
            json_value(),
        ],
        access in json_value(),
        sub in json_value(),
    ) {
        let (key, keys, kid) = issuer();
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({
            "iss": "authd", "sub": sub, "aud": aud, "exp": now + 300,
            "nbf": now - 1, "iat": now - 1, "access": access,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, key).unwrap();
        match token::verify::verify(&token, keys, &opts()) {
            Ok(c) => prop_assert_eq!(c.aud, "registry"),
            Err(
                VerifyError::Malformed
                | VerifyError::WrongAudience
                | VerifyError::MissingClaim,
            ) => {}
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }
}
