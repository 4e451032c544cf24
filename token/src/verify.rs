//! Verification of registry bearer tokens.
//!
//! The rules (PROTOCOL.md §4): the signing algorithm must be on an
//! allow-list of asymmetric algorithms; the key is found by `kid` among keys
//! configured by the operator — a key carried in the token header (`jwk`,
//! `x5c`, `jku`) is never used; `iss` and `aud` must match; `exp` and `nbf`
//! are checked with [`LEEWAY_SECS`](crate::LEEWAY_SECS) of leeway.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::claims::Claims;
use crate::keys::{JwkSet, KeyError, PublicKey};

/// The only algorithms a token may be signed with. HMAC is excluded: its
/// "key" would be a public key known to everyone.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
];

struct TrustedKey {
    key: PublicKey,
    decoding: DecodingKey,
}

/// The issuer keys a registry trusts, indexed by every key ID under which a
/// token may name them: the `kid` given in a JWKS, the RFC 7638 thumbprint
/// and the libtrust key ID.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    by_kid: HashMap<String, Arc<TrustedKey>>,
    all: Vec<Arc<TrustedKey>>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKeys")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TrustedKeys {
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Adds a key, reachable by its thumbprint, its libtrust ID and `kid`.
    pub fn insert(&mut self, key: PublicKey, kid: Option<&str>) {
        let trusted = Arc::new(TrustedKey {
            decoding: key.decoding_key(),
            key,
        });
        let mut ids = vec![trusted.key.jwk_thumbprint(), trusted.key.libtrust_key_id()];
        ids.extend(kid.map(str::to_owned));
        for id in ids {
            self.by_kid.insert(id, trusted.clone());
        }
        self.all.push(trusted);
    }

    /// Keys of a JWKS document. Entries of unsupported types are skipped
    /// (a JWKS may legitimately hold keys for other uses); the result is an
    /// error only when no usable key remains.
    pub fn from_jwks(json: &[u8]) -> Result<TrustedKeys, KeyError> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| KeyError::Malformed(format!("JWKS: {e}")))?;
        let mut keys = TrustedKeys::new();
        for jwk in &set.keys {
            if jwk.key_use.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            if let Ok(k) = PublicKey::from_jwk(jwk) {
                keys.insert(k, jwk.kid.as_deref());
            }
        }
        if keys.is_empty() {
            return Err(KeyError::Unsupported(
                "JWKS holds no usable signing key".into(),
            ));
        }
        Ok(keys)
    }

    /// Keys of a PEM bundle of certificates and/or public keys.
    pub fn from_pem(pem: &[u8]) -> Result<TrustedKeys, KeyError> {
        let mut keys = TrustedKeys::new();
        for k in PublicKey::from_pem_bundle(pem)? {
            keys.insert(k, None);
        }
        Ok(keys)
    }

    /// Merges the keys of `other` into `self`.
    pub fn extend(&mut self, other: TrustedKeys) {
        self.by_kid.extend(other.by_kid);
        self.all.extend(other.all);
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// What a token must say to be accepted.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub issuer: String,
    /// The service name; `aud` must be (or contain) it.
    pub audience: String,
    pub leeway_secs: u64,
}

impl VerifyOptions {
    pub fn new(issuer: &str, audience: &str) -> VerifyOptions {
        VerifyOptions {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs: crate::LEEWAY_SECS,
        }
    }
}

/// Why a token was refused. The messages are safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("token is signed by an unknown key")]
    UnknownKey { kid: Option<String> },
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience does not match this service")]
    WrongAudience,
    #[error("token issuer is not trusted")]
    WrongIssuer,
    #[error("token lacks a required claim")]
    MissingClaim,
}

/// Verifies `token` and returns its claims.
///
/// The header is read only for `alg` and `kid`; anything else it carries is
/// ignored. Without a `kid`, every trusted key of the token's algorithm
/// family is tried: all of them are trusted, so any that verifies is good.
pub fn verify(
    token: &str,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<Claims, VerifyError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        // `alg` values jsonwebtoken does not model at all ("none", "HS1"…).
        ErrorKind::Json(_) | ErrorKind::InvalidAlgorithmName => VerifyError::AlgorithmNotAllowed,
        _ => VerifyError::Malformed,
    })?;
    if !ALLOWED_ALGORITHMS.contains(&header.alg) {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    let mut validation = Validation::new(header.alg);
    validation.leeway = opts.leeway_secs;
    validation.validate_nbf = true;
    validation.set_issuer(&[&opts.issuer]);
    validation.set_audience(&[&opts.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);

    let candidates: Vec<&Arc<TrustedKey>> = match &header.kid {
        Some(kid) => keys.by_kid.get(kid).into_iter().collect(),
        None => keys
            .all
            .iter()
            .filter(|k| {
                k.key.algorithm() == header.alg
                    || matches!(
                        (&k.key, header.alg),
                        (PublicKey::Rsa(_), Algorithm::RS384 | Algorithm::RS512)
                    )
            })
            .collect(),
    };
    if candidates.is_empty() {
        return Err(VerifyError::UnknownKey { kid: header.kid });
    }
    let mut last = VerifyError::BadSignature;
    for key in candidates {
        // Decoded as a JSON value first so that a missing claim is reported
        // as such by the validation, not as a deserialization error.
        match jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation) {
            Ok(data) => {
                check_audience(&data.claims, &opts.audience)?;
                let mut claims: Claims =
                    serde_json::from_value(data.claims).map_err(|_| VerifyError::Malformed)?;
                // An array was reduced to one of its elements when read;
                // what was verified is that it names us.
                claims.aud.clone_from(&opts.audience);
                return Ok(claims);
            }
            Err(e) => {
                last = match e.kind() {
                    ErrorKind::ExpiredSignature => VerifyError::Expired,
                    ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
                    ErrorKind::InvalidAudience => VerifyError::WrongAudience,
                    ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
                    ErrorKind::MissingRequiredClaim(_) => VerifyError::MissingClaim,
                    ErrorKind::InvalidAlgorithm => VerifyError::AlgorithmNotAllowed,
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidKeyFormat => VerifyError::BadSignature,
                    _ => VerifyError::Malformed,
                };
                // A claim error means the signature was good: no other key
                // will change the verdict.
                if last != VerifyError::BadSignature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

/// `aud` must be our service: a string equal to it, or an array of strings
/// holding it (RFC 7519 §4.1.3). Checked here rather than left to the JWT
/// library so the rule is ours: anything else — other types, an empty
/// array, an array of other services — is refused.
fn check_audience(claims: &serde_json::Value, service: &str) -> Result<(), VerifyError> {
    let ok = match claims.get("aud") {
        Some(serde_json::Value::String(s)) => s == service,
        Some(serde_json::Value::Array(items)) => {
            items.iter().all(serde_json::Value::is_string)
                && items.iter().any(|i| i.as_str() == Some(service))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(VerifyError::WrongAudience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::ResourceActions;
    use crate::scope::Action;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use jsonwebtoken::{EncodingKey, Header};
    use p256::pkcs8::EncodePrivateKey;

    struct Issuer {
        secret: p256::SecretKey,
        public: PublicKey,
    }

    impl Issuer {
        fn new() -> Issuer {
            let secret = p256::SecretKey::random(&mut rand::thread_rng());
            let public = PublicKey::P256(secret.public_key());
            Issuer { secret, public }
        }

        fn encoding_key(&self) -> EncodingKey {
            EncodingKey::from_ec_der(self.secret.to_pkcs8_der().unwrap().as_bytes())
        }

        fn sign(&self, header: &Header, claims: &serde_json::Value) -> String {
            jsonwebtoken::encode(header, claims, &self.encoding_key()).unwrap()
        }

        fn header(&self) -> Header {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(self.public.libtrust_key_id());
            h
        }
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": "authd", "sub": "alice", "aud": "registry",
            "exp": now() + 300, "nbf": now() - 1, "iat": now() - 1, "jti": "x",
            "access": [ResourceActions::new("repository", "a/b", &[Action::Pull])],
        })
    }

    fn opts() -> VerifyOptions {
        VerifyOptions::new("authd", "registry")
    }

    fn trusting(issuer: &Issuer) -> TrustedKeys {
        let mut keys = TrustedKeys::new();
        keys.insert(issuer.public.clone(), Some("jwks-kid"));
        keys
    }

    #[test]
    fn good_token_by_every_kid() {
        let iss = Issuer::new();
        let keys = trusting(&iss);
        for kid in [
            Some(iss.public.libtrust_key_id()),
            Some(iss.public.jwk_thumbprint()),
            Some("jwks-kid".to_owned()),
            None,
        ] {
            let mut h = iss.header();
            h.kid = kid;
            let claims = verify(&iss.sign(&h, &claims()), &keys, &opts()).unwrap();
            assert_eq!(claims.sub, "alice");
            assert_eq!(claims.access[0].name, "a/b");
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let iss = Issuer::new();
        let good = iss.sign(&iss.header(), &claims());
        let payload = good.split('.').nth(1).unwrap();
        let header = B64URL.encode(format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            iss.public.libtrust_key_id()
        ));
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let err = verify(&token, &trusting(&iss), &opts()).unwrap_err();
            assert!(
                matches!(
                    err,
                    VerifyError::AlgorithmNotAllowed | VerifyError::Malformed
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn hs256_with_public_key_as_secret_is_refused() {
        let iss = Issuer::new();
        let keys = trusting(&iss);
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(iss.public.libtrust_key_id());
        for secret in [
            iss.public.spki_der(),
            PublicKey::P256(iss.secret.public_key())
                .decoding_key()
                .try_get_as_bytes()
                .unwrap()
                .to_vec(),
        ] {
            let token =
                jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
            assert_eq!(
                verify(&token, &keys, &opts()),
                Err(VerifyError::AlgorithmNotAllowed)
            );
        }
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let iss = Issuer::new();
        let keys = trusting(&iss);
        let mut c = claims();
        c["exp"] = (now() - 61).into();
        assert_eq!(
            verify(&iss.sign(&iss.header(), &c), &keys, &opts()),
            Err(VerifyError::Expired)
        );
        // Within the leeway it is still good.
        c["exp"] = (now() - 30).into();
        assert!(verify(&iss.sign(&iss.header(), &c), &keys, &opts()).is_ok());
        let mut c = claims();
        c["nbf"] = (now() + 120).into();
        assert_eq!(
            verify(&iss.sign(&iss.header(), &c), &keys, &opts()),
            Err(VerifyError::NotYetValid)
        );
    }

    #[test]
    fn wrong_audience_and_issuer() {
        let iss = Issuer::new();
        let keys = trusting(&iss);
        let mut c = claims();
        c["aud"] = "other-registry".into();
        assert_eq!(
            verify(&iss.sign(&iss.header(), &c), &keys, &opts()),
            Err(VerifyError::WrongAudience)
        );
        let mut c = claims();
        c["iss"] = "evil".into();
        assert_eq!(
            verify(&iss.sign(&iss.header(), &c), &keys, &opts()),
            Err(VerifyError::WrongIssuer)
        );
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            verify(&iss.sign(&iss.header(), &c), &keys, &opts()),
            Err(VerifyError::MissingClaim)
        );
    }

    #[test]
    fn audience_array_must_hold_our_service_and_reads_as_it() {
        let iss = Issuer::new();
        let keys = trusting(&iss);
        let with_aud = |aud: serde_json::Value| {
            let mut c = claims();
            c["aud"] = aud;
            verify(&iss.sign(&iss.header(), &c), &keys, &opts())
        };
        for aud in [
            serde_json::json!(["other", "registry"]),
            serde_json::json!(["registry"]),
        ] {
            let c = with_aud(aud.clone()).unwrap_or_else(|e| panic!("{aud}: {e}"));
            assert_eq!(c.aud, "registry", "{aud}");
        }
        for aud in [
            serde_json::json!(["other"]),
            serde_json::json!([]),
            serde_json::json!("registry2"),
            serde_json::json!(["registry", 7]),
            serde_json::json!({"registry": true}),
            serde_json::json!(7),
            serde_json::Value::Null,
        ] {
            assert!(with_aud(aud.clone()).is_err(), "{aud} must be refused");
        }
    }

    #[test]
    fn unknown_kid_is_reported() {
        let iss = Issuer::new();
        let other = Issuer::new();
        let err = verify(
            &other.sign(&other.header(), &claims()),
            &trusting(&iss),
            &opts(),
        );
        assert_eq!(
            err,
            Err(VerifyError::UnknownKey {
                kid: Some(other.public.libtrust_key_id())
            })
        );
    }

    #[test]
    fn key_embedded_in_header_is_never_used() {
        let iss = Issuer::new();
        let attacker = Issuer::new();
        // The attacker names the trusted kid but signs with their own key and
        // ships it in the header as `jwk`.
        let mut h = iss.header();
        h.jwk = Some(
            serde_json::from_value(serde_json::to_value(attacker.public.to_jwk(None)).unwrap())
                .unwrap(),
        );
        let token = attacker.sign(&h, &claims());
        assert_eq!(
            verify(&token, &trusting(&iss), &opts()),
            Err(VerifyError::BadSignature)
        );
        // Without a kid, only trusted keys are tried either way.
        h.kid = None;
        let token = attacker.sign(&h, &claims());
        assert_eq!(
            verify(&token, &trusting(&iss), &opts()),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn altered_payload_is_refused() {
        let iss = Issuer::new();
        let good = iss.sign(&iss.header(), &claims());
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims();
        c["access"][0]["actions"] = serde_json::json!(["*"]);
        parts[1] = B64URL.encode(serde_json::to_vec(&c).unwrap());
        let forged = parts.join(".");
        assert_eq!(
            verify(&forged, &trusting(&iss), &opts()),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn jwks_and_pem_loading() {
        let iss = Issuer::new();
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            iss.public.to_jwk(Some("k1")),
        ]});
        let keys = TrustedKeys::from_jwks(serde_json::to_vec(&jwks).unwrap().as_slice()).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains_kid("k1"));
        assert!(!keys.contains_kid("hmac"));
        assert!(keys.contains_kid(&iss.public.libtrust_key_id()));
        assert!(TrustedKeys::from_jwks(br#"{"keys":[]}"#).is_err());
        assert!(TrustedKeys::from_jwks(b"nonsense").is_err());
    }
}
