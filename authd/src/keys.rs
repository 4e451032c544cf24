//! Token-signing keys: generated into `<data_dir>/keys/` (mode 0600) on
//! first start, rotated by `authd keys rotate`, published as a JWKS and as
//! PEM certificates for distribution's `auth.token.rootcertbundle`.
//!
//! Each key is one PKCS#8 PEM file named `key-<created ms>-<random>.pem`.
//! The newest signs. An older key stays published (and trusted by the admin
//! API) until every token it signed has expired: from the moment its
//! successor was created, for the token lifetime plus the verification
//! leeway. The server notices new files by polling the directory, so a
//! rotation made by the CLI takes effect without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use p256::ecdsa::signature::{SignatureEncoding, Signer};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::pkcs1::DecodeRsaPrivateKey;
use serde::Serialize;
use sha2::Sha256;

use crate::config::{Config, KidFormat, SigningAlgorithm};
use crate::error::Error;

/// RSA modulus size of generated RS256 keys.
const RSA_BITS: usize = 2048;

enum PrivateKey {
    Es256 {
        key: p256::ecdsa::SigningKey,
        /// The same key for ring, whose P-256 signing is several times
        /// faster than p256's; only JWT signing uses it.
        fast: Box<ring::signature::EcdsaKeyPair>,
    },
    Rs256(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

/// One key able to sign tokens.
pub struct SigningKey {
    pub kid: String,
    pub public: token::PublicKey,
    private: PrivateKey,
    /// The JWS header, already base64url-encoded: it never changes.
    header_b64: String,
    pub created_ms: i64,
    pub file_name: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm())
            .field("file", &self.file_name)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn new(
        private: PrivateKey,
        kid_format: KidFormat,
        created_ms: i64,
        file_name: String,
    ) -> Result<Self, Error> {
        let public = match &private {
            PrivateKey::Es256 { key, .. } => token::PublicKey::P256(key.verifying_key().into()),
            PrivateKey::Rs256(k) => {
                token::PublicKey::Rsa(rsa::RsaPublicKey::from(k.as_ref().as_ref()))
            }
        };
        let kid = match kid_format {
            KidFormat::Libtrust => public.libtrust_key_id(),
            KidFormat::Thumbprint => public.jwk_thumbprint(),
        };
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'a str,
            typ: &'a str,
            kid: &'a str,
        }
        let alg = match &private {
            PrivateKey::Es256 { .. } => "ES256",
            PrivateKey::Rs256(_) => "RS256",
        };
        let header = serde_json::to_vec(&Header {
            alg,
            typ: "JWT",
            kid: &kid,
        })
        .map_err(Error::internal)?;
        Ok(SigningKey {
            header_b64: B64URL.encode(header),
            kid,
            public,
            private,
            created_ms,
            file_name,
        })
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        match self.private {
            PrivateKey::Es256 { .. } => SigningAlgorithm::ES256,
            PrivateKey::Rs256(_) => SigningAlgorithm::RS256,
        }
    }

    /// A compact JWS of `claims`. ES256 signatures are raw `r‖s` (64
    /// bytes), as JWS requires.
    pub fn sign_jwt<T: Serialize>(&self, claims: &T) -> Result<String, Error> {
        let payload = serde_json::to_vec(claims).map_err(Error::internal)?;
        let mut jwt = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 100);
        jwt.push_str(&self.header_b64);
        jwt.push('.');
        B64URL.encode_string(&payload, &mut jwt);
        let signature = match &self.private {
            PrivateKey::Es256 { fast, .. } => {
                // FIXED_SIGNING: raw `r‖s`, as JWS wants.
                fast.sign(&ring::rand::SystemRandom::new(), jwt.as_bytes())
                    .map_err(|_| Error::internal("ES256 signing failed"))?
                    .as_ref()
                    .to_vec()
            }
            PrivateKey::Rs256(k) => k.sign(jwt.as_bytes()).to_vec(),
        };
        jwt.push('.');
        B64URL.encode_string(&signature, &mut jwt);
        Ok(jwt)
    }

    /// A self-signed PEM certificate of this key, for distribution's
    /// `rootcertbundle`: distribution matches the token's `kid` against the
    /// libtrust ID of the certificate's key.
    pub fn certificate_pem(&self, common_name: &str) -> Result<String, Error> {
        use std::str::FromStr;
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::der::{Decode, EncodePem};

        let err = |e: &dyn std::fmt::Display| Error::internal(format!("certificate: {e}"));
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
        serial[0] &= 0x7f;
        let serial = x509_cert::serial_number::SerialNumber::new(&serial).map_err(|e| err(&e))?;
        let validity =
            x509_cert::time::Validity::from_now(std::time::Duration::from_secs(10 * 365 * 86_400))
                .map_err(|e| err(&e))?;
        let subject =
            x509_cert::name::Name::from_str(&format!("CN={common_name}")).map_err(|e| err(&e))?;
        let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&self.public.spki_der())
            .map_err(|e| err(&e))?;
        let cert = match &self.private {
            PrivateKey::Es256 { key, .. } => {
                CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, key)
                    .map_err(|e| err(&e))?
                    .build::<p256::ecdsa::DerSignature>()
                    .map_err(|e| err(&e))?
            }
            PrivateKey::Rs256(k) => {
                CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, k.as_ref())
                    .map_err(|e| err(&e))?
                    .build::<rsa::pkcs1v15::Signature>()
                    .map_err(|e| err(&e))?
            }
        };
        cert.to_pem(LineEnding::LF).map_err(|e| err(&e))
    }
}

/// The keys in force at one moment.
#[derive(Debug)]
pub struct KeySet {
    /// The key new tokens are signed with.
    pub signing: Arc<SigningKey>,
    /// Every published key, newest first (the signing key included).
    pub keys: Vec<Arc<SigningKey>>,
    /// The JWKS document, rendered once.
    pub jwks: bytes::Bytes,
    /// The published keys, for verifying authd's own tokens.
    pub trusted: token::TrustedKeys,
    /// File names this set was built from.
    listing: Vec<String>,
    /// When the oldest published retired key expires (ms), if any.
    next_expiry_ms: Option<i64>,
}

/// The key directory: file names, parsing (cached) and generation.
#[derive(Debug)]
struct KeyDir {
    dir: PathBuf,
    algorithm: SigningAlgorithm,
    kid_format: KidFormat,
    /// How long a retired key stays published, ms.
    keep_ms: i64,
    parsed: Mutex<HashMap<String, Arc<SigningKey>>>,
}

/// The key directory and the current [`KeySet`].
#[derive(Debug)]
pub struct KeyStore {
    dir: KeyDir,
    current: RwLock<Arc<KeySet>>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `key-<ms>-<hex>.pem` → ms.
fn created_ms(file_name: &str) -> Option<i64> {
    let rest = file_name.strip_prefix("key-")?.strip_suffix(".pem")?;
    let (ms, tag) = rest.split_once('-')?;
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    ms.parse().ok()
}

fn read_private_key(pem: &str) -> Result<PrivateKey, String> {
    if let Ok(k) =
        p256::SecretKey::from_pkcs8_pem(pem).or_else(|_| p256::SecretKey::from_sec1_pem(pem))
    {
        let public =
            p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k.public_key(), false);
        let fast = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &k.to_bytes(),
            public.as_bytes(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| format!("P-256 key: {e}"))?;
        return Ok(PrivateKey::Es256 {
            key: k.into(),
            fast: Box::new(fast),
        });
    }
    let rsa = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| "not a P-256 or RSA private key in PEM".to_owned())?;
    Ok(PrivateKey::Rs256(Box::new(rsa::pkcs1v15::SigningKey::new(
        rsa,
    ))))
}

fn generate_pem(algorithm: SigningAlgorithm) -> Result<String, Error> {
    let mut rng = rand::rngs::OsRng;
    let pem = match algorithm {
        SigningAlgorithm::ES256 => p256::SecretKey::random(&mut rng).to_pkcs8_pem(LineEnding::LF),
        SigningAlgorithm::RS256 => rsa::RsaPrivateKey::new(&mut rng, RSA_BITS)
            .map_err(|e| Error::internal(format!("generating RSA key: {e}")))?
            .to_pkcs8_pem(LineEnding::LF),
    }
    .map_err(|e| Error::internal(format!("encoding key: {e}")))?;
    Ok(pem.to_string())
}

impl KeyDir {
    /// Key file names, oldest first.
    fn listing(&self) -> Result<Vec<String>, Error> {
        let mut names: Vec<(i64, String)> = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(ms) = created_ms(&name) {
                names.push((ms, name));
            }
        }
        names.sort();
        Ok(names.into_iter().map(|(_, n)| n).collect())
    }

    fn parse(&self, name: &str) -> Result<Arc<SigningKey>, Error> {
        let mut parsed = self
            .parsed
            .lock()
            .map_err(|_| Error::internal("key cache poisoned"))?;
        if let Some(k) = parsed.get(name) {
            return Ok(k.clone());
        }
        let path = self.dir.join(name);
        if crate::util::is_group_or_world_readable(&path) {
            tracing::warn!(file = %path.display(), "signing key is readable by others; chmod 600 it");
        }
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| Error::internal(format!("reading {}: {e}", path.display())))?;
        let private = read_private_key(&pem)
            .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
        let key = Arc::new(SigningKey::new(
            private,
            self.kid_format,
            created_ms(name).unwrap_or(0),
            name.to_owned(),
        )?);
        parsed.insert(name.to_owned(), key.clone());
        Ok(key)
    }

    /// Writes a new key file; returns its name.
    fn generate(&self) -> Result<String, Error> {
        let pem = generate_pem(self.algorithm)?;
        let mut tag = [0u8; 4];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tag);
        let name = format!("key-{:015}-{}.pem", now_ms(), hex::encode(tag));
        crate::util::write_private_file_new(&self.dir.join(&name), pem.as_bytes())?;
        Ok(name)
    }

    /// The published keys among `listing` (oldest first) at `now`, newest
    /// first, and when the next one of them expires.
    fn live<'a>(&self, listing: &'a [String], now: i64) -> (Vec<&'a String>, Option<i64>) {
        let mut live = Vec::new();
        let mut next_expiry = None;
        for (i, name) in listing.iter().enumerate() {
            match listing.get(i + 1) {
                None => live.push(name),
                Some(successor) => {
                    let until = created_ms(successor).unwrap_or(0) + self.keep_ms;
                    if now <= until {
                        live.push(name);
                        next_expiry = Some(next_expiry.map_or(until, |n: i64| n.min(until)));
                    }
                }
            }
        }
        live.reverse();
        (live, next_expiry)
    }

    fn build(&self, listing: Vec<String>, now: i64) -> Result<KeySet, Error> {
        let (live, next_expiry_ms) = self.live(&listing, now);
        let keys: Vec<Arc<SigningKey>> = live
            .iter()
            .map(|name| self.parse(name))
            .collect::<Result<_, _>>()?;
        let Some(signing) = keys.first().cloned() else {
            return Err(Error::internal(format!(
                "no signing key in {}",
                self.dir.display()
            )));
        };
        let jwks = token::keys::JwkSet {
            keys: keys.iter().map(|k| k.public.to_jwk(Some(&k.kid))).collect(),
        };
        let mut trusted = token::TrustedKeys::new();
        for k in &keys {
            trusted.insert(k.public.clone(), Some(&k.kid));
        }
        Ok(KeySet {
            signing,
            jwks: serde_json::to_vec(&jwks).map_err(Error::internal)?.into(),
            keys,
            trusted,
            listing,
            next_expiry_ms,
        })
    }
}

impl KeyStore {
    /// Opens the key directory of `config`, generating a key when there is
    /// none or when the newest one is not of the configured algorithm.
    pub fn open(config: &Config) -> Result<KeyStore, Error> {
        let dir = KeyDir {
            dir: config.keys_dir(),
            algorithm: config.token.algorithm,
            kid_format: config.token.kid_format,
            keep_ms: (config.token.expiration + token::LEEWAY_SECS) as i64 * 1000,
            parsed: Mutex::new(HashMap::new()),
        };
        crate::util::create_private_dir(&dir.dir)?;
        let needs_key = match dir.listing()?.last() {
            None => true,
            Some(newest) => dir.parse(newest)?.algorithm() != dir.algorithm,
        };
        if needs_key {
            let name = dir.generate()?;
            tracing::info!(file = %name, algorithm = ?dir.algorithm, "generated a signing key");
        }
        let set = dir.build(dir.listing()?, now_ms())?;
        Ok(KeyStore {
            dir,
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir.dir
    }

    /// Rebuilds the key set if the directory changed or a retired key
    /// expired (or always, with `force`). Returns whether it was rebuilt.
    pub fn reload(&self, force: bool) -> Result<bool, Error> {
        let listing = self.dir.listing()?;
        let now = now_ms();
        let current = self.current();
        let expired = current.next_expiry_ms.is_some_and(|t| now > t);
        if !force && !expired && listing == current.listing {
            return Ok(false);
        }
        let set = self.dir.build(listing, now)?;
        if set.signing.kid != current.signing.kid {
            tracing::info!(kid = %set.signing.kid, "now signing with a new key");
        }
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(true)
    }

    /// Makes a new key the signing key and deletes the files of keys no
    /// longer published. Returns the new key and the deleted file names.
    pub fn rotate(&self) -> Result<(Arc<SigningKey>, Vec<String>), Error> {
        self.dir.generate()?;
        let listing = self.dir.listing()?;
        let (live, _) = self.dir.live(&listing, now_ms());
        let mut removed = Vec::new();
        for name in &listing {
            if !live.contains(&name) {
                std::fs::remove_file(self.dir.dir.join(name))?;
                removed.push(name.clone());
            }
        }
        self.reload(true)?;
        Ok((self.current().signing.clone(), removed))
    }

    /// PEM certificates of every published key, the signing key first.
    pub fn certificates_pem(&self, common_name: &str) -> Result<String, Error> {
        let set = self.current();
        let mut out = String::new();
        for key in &set.keys {
            out.push_str(&key.certificate_pem(common_name)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        }
    }

    fn verify_opts() -> token::VerifyOptions {
        token::VerifyOptions::new("authd", "registry")
    }

    fn claims() -> serde_json::Value {
        let now = crate::util::now();
        serde_json::json!({"iss": "authd", "sub": "a", "aud": "registry",
                           "exp": now + 300, "nbf": now, "iat": now, "jti": "j", "access": []})
    }

    #[test]
    fn generates_once_with_private_mode_and_libtrust_kid() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(&config(dir.path())).unwrap();
        let set = store.current();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.signing.kid, set.signing.public.libtrust_key_id());
        let path = store.dir().join(&set.signing.file_name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Reopening keeps the same key.
        let again = KeyStore::open(&config(dir.path())).unwrap();
        assert_eq!(again.current().signing.kid, set.signing.kid);
    }

    #[test]
    fn tokens_verify_through_the_published_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(&config(dir.path())).unwrap();
        let set = store.current();
        let jwt = set.signing.sign_jwt(&claims()).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(set.signing.kid.as_str()));
        let jwks: serde_json::Value = serde_json::from_slice(&set.jwks).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], set.signing.kid.as_str());
        assert_eq!(jwks["keys"][0]["use"], "sig");
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        let trusted = token::TrustedKeys::from_jwks(&set.jwks).unwrap();
        let c = token::verify::verify(&jwt, &trusted, &verify_opts()).unwrap();
        assert_eq!(c.sub, "a");
        // The raw signature is r‖s, 64 bytes.
        let sig = B64URL.decode(jwt.rsplit('.').next().unwrap()).unwrap();
        assert_eq!(sig.len(), 64);
    }

    #[test]
    fn rotation_keeps_the_old_key_published_then_prunes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(&config(dir.path())).unwrap();
        let old = store.current().signing.clone();
        let old_jwt = old.sign_jwt(&claims()).unwrap();
        let (new, removed) = store.rotate().unwrap();
        assert!(removed.is_empty());
        assert_ne!(new.kid, old.kid);
        let set = store.current();
        assert_eq!(set.signing.kid, new.kid);
        assert_eq!(set.keys.len(), 2);
        let trusted = token::TrustedKeys::from_jwks(&set.jwks).unwrap();
        assert!(token::verify::verify(&old_jwt, &trusted, &verify_opts()).is_ok());

        // With a zero keep time, the retired key leaves at once.
        let mut short = KeyStore::open(&config(dir.path())).unwrap();
        short.dir.keep_ms = -1;
        short.reload(true).unwrap();
        assert_eq!(short.current().keys.len(), 1);
        let (_, removed) = short.rotate().unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(short.dir.listing().unwrap().len(), 1);
    }

    #[test]
    fn thumbprint_kids_and_rs256() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.token.algorithm = SigningAlgorithm::RS256;
        c.token.kid_format = KidFormat::Thumbprint;
        let store = KeyStore::open(&c).unwrap();
        let set = store.current();
        assert_eq!(set.signing.algorithm(), SigningAlgorithm::RS256);
        assert_eq!(set.signing.kid, set.signing.public.jwk_thumbprint());
        let jwt = set.signing.sign_jwt(&claims()).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&jwt).unwrap().alg,
            jsonwebtoken::Algorithm::RS256
        );
        let trusted = token::TrustedKeys::from_jwks(&set.jwks).unwrap();
        assert!(token::verify::verify(&jwt, &trusted, &verify_opts()).is_ok());
        let pem = store.certificates_pem("authd").unwrap();
        let keys = token::PublicKey::from_pem_bundle(pem.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0], set.signing.public);

        // Switching back to ES256 generates an ES256 key; the RSA key stays
        // published until its tokens expire.
        c.token.algorithm = SigningAlgorithm::ES256;
        let store = KeyStore::open(&c).unwrap();
        let set = store.current();
        assert_eq!(set.signing.algorithm(), SigningAlgorithm::ES256);
        assert_eq!(set.keys.len(), 2);
    }

    #[test]
    fn certificate_key_id_is_the_kid() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(&config(dir.path())).unwrap();
        store.rotate().unwrap();
        let pem = store.certificates_pem("authd token signer").unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
        let keys = token::PublicKey::from_pem_bundle(pem.as_bytes()).unwrap();
        let set = store.current();
        let kids: Vec<String> = keys.iter().map(token::PublicKey::libtrust_key_id).collect();
        let expected: Vec<String> = set.keys.iter().map(|k| k.kid.clone()).collect();
        assert_eq!(kids, expected);
    }

    #[test]
    fn foreign_files_are_ignored_and_bad_keys_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(&config(dir.path())).unwrap();
        std::fs::write(store.dir().join("README"), "x").unwrap();
        assert!(!store.reload(false).unwrap());
        std::fs::write(store.dir().join("key-999999999999999-00.pem"), "junk").unwrap();
        assert!(store.reload(false).is_err());
        assert_eq!(created_ms("key-000000000000123-ab.pem"), Some(123));
        assert_eq!(created_ms("key-12-.pem"), None);
        assert_eq!(created_ms("other.pem"), None);
    }
}

/// A hand-run measurement of signing speed:
/// `cargo test --release -p authd --lib sign_speed -- --ignored --nocapture`.
#[cfg(test)]
mod speed {
    #[test]
    #[ignore = "timing, run by hand with --release"]
    fn sign_speed() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::Config {
            data_dir: dir.path().to_owned(),
            ..crate::Config::default()
        };
        let store = super::KeyStore::open(&c).unwrap();
        let key = store.current().signing.clone();
        let claims = serde_json::json!({"iss": "authd", "sub": "bench", "aud": "registry",
            "exp": 1, "nbf": 1, "iat": 1, "jti": "0123456789abcdef0123456789abcdef",
            "access": [{"type": "repository", "name": "bench/app", "actions": ["pull", "push"]}]});
        let n = 3000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(key.sign_jwt(&claims).unwrap());
        }
        eprintln!("ES256 sign_jwt: {:?} per token", t.elapsed() / n);
    }
}
