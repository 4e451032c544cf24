//! Public keys of token issuers, in the forms both sides exchange them: JWK
//! (authd's JWKS), PEM certificates or SPKI (distribution's
//! `rootcertbundle`), and the two key-ID schemes in use: the RFC 7638 JWK
//! thumbprint and the libtrust key ID that distribution 2.x matches `kid`
//! against.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::{Algorithm, DecodingKey};
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

/// A token-signing public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    P256(p256::PublicKey),
    Rsa(rsa::RsaPublicKey),
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported key: {0}")]
    Unsupported(String),
    #[error("malformed key: {0}")]
    Malformed(String),
}

/// One entry of a JWKS document. Only public parameters are modelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// A JWKS document: `{"keys":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl PublicKey {
    /// The JWS algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::P256(_) => Algorithm::ES256,
            PublicKey::Rsa(_) => Algorithm::RS256,
        }
    }

    /// DER of the SubjectPublicKeyInfo, as Go's `x509.MarshalPKIXPublicKey`.
    pub fn spki_der(&self) -> Vec<u8> {
        let der = match self {
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::Rsa(k) => k.to_public_key_der(),
        };
        der.expect("encoding a valid public key cannot fail")
            .into_vec()
    }

    /// The libtrust key ID: SHA-256 of the SPKI DER, first 240 bits, base32
    /// without padding, in 12 groups of 4 joined by `:`.
    pub fn libtrust_key_id(&self) -> String {
        let digest = Sha256::digest(self.spki_der());
        let b32 = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &digest[..30]);
        let groups: Vec<&str> = (0..b32.len()).step_by(4).map(|i| &b32[i..i + 4]).collect();
        groups.join(":")
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn jwk_thumbprint(&self) -> String {
        // Required members only, in lexicographic order, no whitespace.
        let canonical = match self.to_jwk(None) {
            Jwk {
                kty,
                crv: Some(crv),
                x: Some(x),
                y: Some(y),
                ..
            } => {
                format!(r#"{{"crv":"{crv}","kty":"{kty}","x":"{x}","y":"{y}"}}"#)
            }
            Jwk {
                kty,
                n: Some(n),
                e: Some(e),
                ..
            } => {
                format!(r#"{{"e":"{e}","kty":"{kty}","n":"{n}"}}"#)
            }
            _ => unreachable!("to_jwk always fills the members of its key type"),
        };
        B64URL.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The JWK of this key, with `kid`, `alg` and `use` set.
    pub fn to_jwk(&self, kid: Option<&str>) -> Jwk {
        let mut jwk = Jwk {
            kty: String::new(),
            kid: kid.map(str::to_owned),
            alg: Some(format!("{:?}", self.algorithm())),
            key_use: Some("sig".to_owned()),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match self {
            PublicKey::P256(k) => {
                let point = k.to_encoded_point(false);
                jwk.kty = "EC".into();
                jwk.crv = Some("P-256".into());
                jwk.x = point.x().map(|x| B64URL.encode(x));
                jwk.y = point.y().map(|y| B64URL.encode(y));
            }
            PublicKey::Rsa(k) => {
                jwk.kty = "RSA".into();
                jwk.n = Some(B64URL.encode(k.n().to_bytes_be()));
                jwk.e = Some(B64URL.encode(k.e().to_bytes_be()));
            }
        }
        jwk
    }

    /// Reads a key from a JWK. Symmetric (`oct`) keys are refused: token
    /// verification keys are public by design.
    pub fn from_jwk(jwk: &Jwk) -> Result<PublicKey, KeyError> {
        let b64 = |v: &Option<String>, what: &str| {
            let v = v
                .as_deref()
                .ok_or_else(|| KeyError::Malformed(format!("JWK without {what}")))?;
            B64URL
                .decode(v)
                .map_err(|_| KeyError::Malformed(format!("JWK {what} is not base64url")))
        };
        match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) => {
                let (x, y) = (b64(&jwk.x, "x")?, b64(&jwk.y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::Malformed(
                        "P-256 coordinates must be 32 bytes".into(),
                    ));
                }
                let point = p256::EncodedPoint::from_affine_coordinates(
                    x.as_slice().into(),
                    y.as_slice().into(),
                    false,
                );
                let key: Option<p256::PublicKey> =
                    p256::PublicKey::from_encoded_point(&point).into();
                key.map(PublicKey::P256)
                    .ok_or_else(|| KeyError::Malformed("point is not on P-256".into()))
            }
            ("RSA", _) => {
                let n = rsa::BigUint::from_bytes_be(&b64(&jwk.n, "n")?);
                let e = rsa::BigUint::from_bytes_be(&b64(&jwk.e, "e")?);
                rsa::RsaPublicKey::new(n, e)
                    .map(PublicKey::Rsa)
                    .map_err(|e| KeyError::Malformed(e.to_string()))
            }
            (kty, crv) => Err(KeyError::Unsupported(format!(
                "key type {kty}{}",
                crv.map(|c| format!(" curve {c}")).unwrap_or_default()
            ))),
        }
    }

    /// Reads a key from the DER of a SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(k));
        }
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
            return Ok(PublicKey::Rsa(k));
        }
        Err(KeyError::Unsupported(
            "public key is neither P-256 nor RSA".into(),
        ))
    }

    /// Reads every key of a PEM bundle: `CERTIFICATE` blocks (the key of the
    /// certificate) and `PUBLIC KEY` blocks. Other blocks are an error, so a
    /// private key pasted by mistake is noticed.
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Vec<PublicKey>, KeyError> {
        let text =
            std::str::from_utf8(pem).map_err(|_| KeyError::Malformed("PEM is not UTF-8".into()))?;
        let mut keys = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN ") {
            let block_and_rest = &rest[start..];
            let label_end = block_and_rest[11..]
                .find("-----")
                .ok_or_else(|| KeyError::Malformed("unterminated PEM header".into()))?;
            let label = &block_and_rest[11..11 + label_end];
            let end_marker = format!("-----END {label}-----");
            let end = block_and_rest
                .find(&end_marker)
                .ok_or_else(|| KeyError::Malformed(format!("PEM block {label} has no end")))?
                + end_marker.len();
            let block = &block_and_rest[..end];
            rest = &block_and_rest[end..];
            let (_, der) = x509_cert::der::pem::decode_vec(block.as_bytes())
                .map_err(|e| KeyError::Malformed(format!("PEM block {label}: {e}")))?;
            let spki = match label {
                "CERTIFICATE" => {
                    let cert = x509_cert::Certificate::from_der(&der)
                        .map_err(|e| KeyError::Malformed(format!("certificate: {e}")))?;
                    cert.tbs_certificate
                        .subject_public_key_info
                        .to_der()
                        .map_err(|e| KeyError::Malformed(format!("certificate key: {e}")))?
                }
                "PUBLIC KEY" => der,
                other => {
                    return Err(KeyError::Unsupported(format!(
                        "PEM block {other} (expected CERTIFICATE or PUBLIC KEY)"
                    )));
                }
            };
            keys.push(PublicKey::from_spki_der(&spki)?);
        }
        if keys.is_empty() {
            return Err(KeyError::Malformed("no PEM block found".into()));
        }
        Ok(keys)
    }

    /// The key in the form jsonwebtoken verifies with.
    pub fn decoding_key(&self) -> DecodingKey {
        match self {
            PublicKey::P256(k) => DecodingKey::from_ec_der(k.to_encoded_point(false).as_bytes()),
            PublicKey::Rsa(k) => {
                DecodingKey::from_rsa_raw_components(&k.n().to_bytes_be(), &k.e().to_bytes_be())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A fixed P-256 key, so that the key IDs below are known answers.
    const SPKI_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2KFEBCgDAijUzL44rVlot8IRMxJZ
222nWwC+pyf7E9hqz+FeorxVYQgIJqXrZhXL+28NytH/3euXgnZjuKA9fA==
-----END PUBLIC KEY-----
";

    fn key() -> PublicKey {
        PublicKey::from_pem_bundle(SPKI_PEM.as_bytes())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn libtrust_key_id_shape_and_value() {
        let kid = key().libtrust_key_id();
        // Computed independently (openssl DER + Python hashlib/base64).
        assert_eq!(
            kid,
            "M3PR:EGOD:TOVX:DAIN:YXEG:WD2C:OUJ4:7HDS:I7EH:QDDR:3OMK:KEZZ"
        );
        assert_eq!(kid.len(), 12 * 4 + 11);
        assert_eq!(kid.split(':').count(), 12);
        assert!(kid.split(':').all(|g| {
            g.len() == 4
                && g.chars()
                    .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        }));
        // Independent computation: sha256(spki der)[..30] in base32.
        let der = key().spki_der();
        let digest = Sha256::digest(&der);
        let b32 = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &digest[..30]);
        assert_eq!(kid.replace(':', ""), b32);
    }

    #[test]
    fn jwk_round_trip_and_thumbprint() {
        let k = key();
        let jwk = k.to_jwk(Some("kid1"));
        assert_eq!(jwk.kty, "EC");
        assert_eq!(jwk.alg.as_deref(), Some("ES256"));
        assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), k);
        // RFC 7638 thumbprint is 32 bytes of SHA-256 in base64url.
        assert_eq!(k.jwk_thumbprint().len(), 43);
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // The RSA example key of RFC 7638 section 3.1.
        let jwk = Jwk {
            kty: "RSA".into(),
            kid: None,
            alg: None,
            key_use: None,
            crv: None,
            x: None,
            y: None,
            n: Some("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into()),
            e: Some("AQAB".into()),
        };
        let k = PublicKey::from_jwk(&jwk).unwrap();
        assert_eq!(
            k.jwk_thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn refuses_symmetric_and_private_material() {
        let oct = Jwk {
            kty: "oct".into(),
            kid: None,
            alg: Some("HS256".into()),
            key_use: None,
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        };
        assert!(matches!(
            PublicKey::from_jwk(&oct),
            Err(KeyError::Unsupported(_))
        ));
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(PublicKey::from_pem_bundle(private.as_bytes()).is_err());
        assert!(PublicKey::from_pem_bundle(b"").is_err());
    }
}
