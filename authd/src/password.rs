//! Password hashes: argon2id for every new hash, and verification of the
//! formats an htpasswd file may hold — bcrypt (`$2y$`, `$2a$`, `$2b$`),
//! Apache's MD5 (`$apr1$`), `{SHA}`, traditional DES crypt and the glibc
//! crypt variants (`$1$`, `$5$`, `$6$`). Legacy hashes are accepted as they
//! are on import and replaced by argon2id on the user's first good login.
//!
//! Every comparison of a computed hash with a stored one is constant-time.
//!
//! The cost parameters a hash carries (argon2 `m`/`t`/`p`, the bcrypt cost,
//! SHA-crypt `rounds`) are bounded ([`LIMITS`]): a hash is parsed, costs
//! included, when it is imported and again before every verification, so a
//! hostile entry can neither exhaust memory nor pin a thread for hours —
//! it is refused at import and fails closed (logged) at login.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::config::Argon2Config;

/// Longest password accepted anywhere, in bytes: enough for any passphrase,
/// small enough that hashing it costs nothing extra.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Bounds of the cost parameters of a stored hash. They admit every
/// real-world default (Apache htpasswd bcrypt 5, PHP/Django/Rails bcrypt
/// 10–12, argon2 CLI `m=4096,t=3`, OWASP `m=19456,t=2` and `m=47104,t=1`,
/// PHP `m=65536,t=4`, libsodium up to SENSITIVE `m=1048576,t=4`, glibc
/// SHA-crypt 5000 rounds, passlib 656000) and refuse what would take more
/// than about a gigabyte or a few seconds per check.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest argon2 memory, KiB (1 GiB).
    pub argon2_max_m_kib: u32,
    /// Largest argon2 iteration count.
    pub argon2_max_t: u32,
    /// Largest argon2 parallelism.
    pub argon2_max_p: u32,
    /// Largest argon2 `m × t` (KiB × passes): 1 GiB × 4.
    pub argon2_max_work: u64,
    /// bcrypt costs accepted (Apache's htpasswd makes 4 to 17; 15 and
    /// more take seconds per check).
    pub bcrypt_cost: std::ops::RangeInclusive<u32>,
    /// Largest SHA-crypt `rounds=`.
    pub sha_crypt_max_rounds: u64,
}

pub const LIMITS: Limits = Limits {
    argon2_max_m_kib: 1024 * 1024,
    argon2_max_t: 16,
    argon2_max_p: 16,
    argon2_max_work: 4 * 1024 * 1024,
    bcrypt_cost: 4..=14,
    sha_crypt_max_rounds: 1_000_000,
};

/// Why a stored hash is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not a format authd knows, or a known prefix with a broken shape.
    #[error("unsupported or malformed hash")]
    Unsupported,
    /// A well-formed hash whose cost parameters are outside [`LIMITS`].
    #[error("hash cost out of range: {0}")]
    Cost(String),
}

/// The hash formats authd can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFormat {
    Argon2id,
    /// argon2i or argon2d: verified, then upgraded to argon2id.
    Argon2Other,
    Bcrypt,
    Apr1,
    Sha1,
    DesCrypt,
    Md5Crypt,
    Sha256Crypt,
    Sha512Crypt,
}

impl HashFormat {
    /// Recognises a stored hash, checking its whole shape, so that a
    /// malformed htpasswd entry is refused on import rather than at login.
    pub fn detect(hash: &str) -> Option<HashFormat> {
        HashFormat::parse(hash).ok()
    }

    /// Recognises a stored hash and checks its cost parameters against
    /// [`LIMITS`].
    pub fn parse(hash: &str) -> Result<HashFormat, HashError> {
        if hash.starts_with("$argon2") {
            let parsed = PasswordHash::new(hash)
                .ok()
                .filter(|h| h.salt.is_some() && h.hash.is_some())
                .ok_or(HashError::Unsupported)?;
            let format = match parsed.algorithm.as_str() {
                "argon2id" => HashFormat::Argon2id,
                "argon2i" | "argon2d" => HashFormat::Argon2Other,
                _ => return Err(HashError::Unsupported),
            };
            let params = argon2::Params::try_from(&parsed).map_err(|_| HashError::Unsupported)?;
            check_argon2_cost(params.m_cost(), params.t_cost(), params.p_cost())?;
            return Ok(format);
        }
        if ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
            let parts = hash
                .parse::<bcrypt::HashParts>()
                .map_err(|_| HashError::Unsupported)?;
            let cost = parts.get_cost();
            if !LIMITS.bcrypt_cost.contains(&cost) {
                return Err(HashError::Cost(format!(
                    "bcrypt cost {cost} (accepted: {} to {})",
                    LIMITS.bcrypt_cost.start(),
                    LIMITS.bcrypt_cost.end()
                )));
            }
            return Ok(HashFormat::Bcrypt);
        }
        let shaped = |ok: bool, format| {
            if ok {
                Ok(format)
            } else {
                Err(HashError::Unsupported)
            }
        };
        if let Some(rest) = hash.strip_prefix("$apr1$") {
            return shaped(md5_shape(rest), HashFormat::Apr1);
        }
        if let Some(rest) = hash.strip_prefix("$1$") {
            return shaped(md5_shape(rest), HashFormat::Md5Crypt);
        }
        if let Some(rest) = hash.strip_prefix("$5$") {
            return sha_crypt_shape(rest, 43).map(|()| HashFormat::Sha256Crypt);
        }
        if let Some(rest) = hash.strip_prefix("$6$") {
            return sha_crypt_shape(rest, 86).map(|()| HashFormat::Sha512Crypt);
        }
        if let Some(b64) = hash.strip_prefix("{SHA}") {
            let ok = B64.decode(b64).is_ok_and(|d| d.len() == 20);
            return shaped(ok, HashFormat::Sha1);
        }
        shaped(
            hash.len() == 13 && hash.bytes().all(is_crypt64),
            HashFormat::DesCrypt,
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            HashFormat::Argon2id => "argon2id",
            HashFormat::Argon2Other => "argon2",
            HashFormat::Bcrypt => "bcrypt",
            HashFormat::Apr1 => "apr1",
            HashFormat::Sha1 => "sha1",
            HashFormat::DesCrypt => "crypt",
            HashFormat::Md5Crypt => "md5-crypt",
            HashFormat::Sha256Crypt => "sha256-crypt",
            HashFormat::Sha512Crypt => "sha512-crypt",
        }
    }

    /// Whether a good login should replace the hash with argon2id.
    pub fn is_legacy(self) -> bool {
        self != HashFormat::Argon2id
    }
}

fn is_crypt64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// `salt$checksum` of MD5 crypt: a salt of up to 8 characters, 22 of
/// checksum.
fn md5_shape(rest: &str) -> bool {
    match rest.split_once('$') {
        Some((salt, sum)) => {
            salt.len() <= 8
                && salt.bytes().all(is_crypt64)
                && sum.len() == 22
                && sum.bytes().all(is_crypt64)
        }
        None => false,
    }
}

/// Refuses argon2 costs outside [`LIMITS`].
fn check_argon2_cost(m: u32, t: u32, p: u32) -> Result<(), HashError> {
    let work = u64::from(m) * u64::from(t);
    if m > LIMITS.argon2_max_m_kib
        || t > LIMITS.argon2_max_t
        || p > LIMITS.argon2_max_p
        || work > LIMITS.argon2_max_work
    {
        return Err(HashError::Cost(format!(
            "argon2 m={m},t={t},p={p} (accepted: m up to {} KiB, t up to {}, p up to {}, \
             m*t up to {})",
            LIMITS.argon2_max_m_kib,
            LIMITS.argon2_max_t,
            LIMITS.argon2_max_p,
            LIMITS.argon2_max_work
        )));
    }
    Ok(())
}

/// `[rounds=N$]salt$checksum` of SHA-crypt, with N within [`LIMITS`].
fn sha_crypt_shape(rest: &str, sum_len: usize) -> Result<(), HashError> {
    let rest = match rest.strip_prefix("rounds=") {
        Some(r) => match r.split_once('$') {
            Some((n, r)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                // Digits only, so a parse failure means "too many".
                let rounds = n.parse::<u64>().unwrap_or(u64::MAX);
                if rounds > LIMITS.sha_crypt_max_rounds {
                    return Err(HashError::Cost(format!(
                        "SHA-crypt rounds={} (accepted: up to {})",
                        n.chars().take(20).collect::<String>(),
                        LIMITS.sha_crypt_max_rounds
                    )));
                }
                r
            }
            _ => return Err(HashError::Unsupported),
        },
        None => rest,
    };
    let ok = match rest.split_once('$') {
        Some((salt, sum)) => {
            salt.len() <= 16
                && salt.bytes().all(is_crypt64)
                && sum.len() == sum_len
                && sum.bytes().all(is_crypt64)
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(HashError::Unsupported)
    }
}

/// Whether `password` matches the stored `hash`. Unknown or malformed
/// hashes never match, and neither do hashes whose cost is out of bounds
/// (logged: such a hash can only come from a database written by hand or
/// by an older authd, and its user cannot log in until it is replaced).
pub fn verify(password: &[u8], hash: &str) -> bool {
    let format = match HashFormat::parse(hash) {
        Ok(f) => f,
        Err(HashError::Unsupported) => return false,
        Err(e @ HashError::Cost(_)) => {
            tracing::error!(error = %e, "stored password hash refused; set a new password");
            return false;
        }
    };
    match format {
        HashFormat::Argon2id | HashFormat::Argon2Other => PasswordHash::new(hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password, &h)
                .is_ok()
        }),
        HashFormat::Bcrypt => bcrypt::verify(password, hash).unwrap_or(false),
        HashFormat::Apr1 => ct_eq_str(&apr1(password, apr1_salt(hash)), hash),
        HashFormat::Sha1 => {
            use sha1::Digest;
            let computed = format!("{{SHA}}{}", B64.encode(Sha1::digest(password)));
            ct_eq_str(&computed, hash)
        }
        HashFormat::DesCrypt
        | HashFormat::Md5Crypt
        | HashFormat::Sha256Crypt
        | HashFormat::Sha512Crypt => {
            pwhash::unix::crypt(password, hash).is_ok_and(|computed| ct_eq_str(&computed, hash))
        }
    }
}

fn ct_eq_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn apr1_salt(hash: &str) -> &str {
    hash.strip_prefix("$apr1$")
        .and_then(|rest| rest.split_once('$'))
        .map_or("", |(salt, _)| salt)
}

/// Apache's `$apr1$` hash: FreeBSD's MD5 crypt with the magic `$apr1$`
/// (not implemented by `pwhash`, whose MD5 crypt knows only `$1$`).
fn apr1(password: &[u8], salt: &str) -> String {
    use md5::{Digest, Md5};
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt.as_bytes()[..salt.len().min(8)];

    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(MAGIC)
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i != 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut sum = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(sum);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(sum);
        } else {
            c.update(password);
        }
        sum = c.finalize();
    }

    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(6 + salt.len() + 1 + 22);
    out.push_str("$apr1$");
    out.push_str(std::str::from_utf8(salt).unwrap_or_default());
    out.push('$');
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(sum[i]);
    put((b(0) << 16) | (b(6) << 8) | b(12), 4);
    put((b(1) << 16) | (b(7) << 8) | b(13), 4);
    put((b(2) << 16) | (b(8) << 8) | b(14), 4);
    put((b(3) << 16) | (b(9) << 8) | b(15), 4);
    put((b(4) << 16) | (b(10) << 8) | b(5), 4);
    put(b(11), 2);
    out
}

/// Makes argon2id hashes with the configured cost.
#[derive(Clone)]
pub struct Hasher {
    argon2: argon2::Argon2<'static>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", self.argon2.params())
            .finish()
    }
}

impl Hasher {
    /// Refuses costs that [`verify`] would refuse (see [`LIMITS`]).
    pub fn new(cfg: Argon2Config) -> Result<Hasher, anyhow::Error> {
        check_argon2_cost(cfg.memory_kib, cfg.iterations, cfg.parallelism)?;
        let params = argon2::Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Hasher {
            argon2: argon2::Argon2::new(
                argon2::Algorithm::Argon2id,
                argon2::Version::V0x13,
                params,
            ),
        })
    }

    /// A new argon2id PHC string for `password`, with a random salt.
    pub fn hash(&self, password: &[u8]) -> Result<String, crate::error::Error> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2
            .hash_password(password, &salt)
            .map(|h| h.to_string())
            .map_err(|e| crate::error::Error::internal(format!("argon2: {e}")))
    }
}

/// Checks a password chosen through the API or CLI.
pub fn check_new_password(password: &str, min_length: usize) -> Result<(), crate::error::Error> {
    if password.chars().count() < min_length {
        return Err(crate::error::Error::bad_request(
            "invalid_password",
            format!("password must have at least {min_length} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(crate::error::Error::bad_request(
            "invalid_password",
            format!("password must have at most {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    if password.contains('\0') {
        return Err(crate::error::Error::bad_request(
            "invalid_password",
            "password must not contain NUL",
        ));
    }
    Ok(())
}

/// A random password for the first admin: 24 characters from an alphabet
/// without look-alikes (~140 bits).
pub fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with Apache's htpasswd 2.4: -B, -m, -s, -d, -2, -5.
    const BCRYPT: &str = "$2y$05$dWA3c6e4nZuRLDxbbtoZteW1rXyGqt.DqMYKeEje.MLT6Tgw8VX0W";
    const APR1: &str = "$apr1$nVMz3fmk$XKJOzvjBhn1Eui1LnJobG1"; // "pässword"
    const APR1_EMPTY: &str = "$apr1$d3J7T4H3$QpZkDnmCDhqyWjILu1y5/0"; // ""
    const SHA: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="; // "secret"
    const CRYPT: &str = "StGr/F2re28kk"; // "crypt01"
    const SHA256_CRYPT: &str = "$5$FUW6oTw7bGMQmsbB$JtmcGLf.e62.7V.9wYpbywZgLjftxeGOLjvCUppU701";
    const SHA512_CRYPT: &str = "$6$4xRqk8gdxzK6BQCR$6jDosfh7n2KIK7cO.oZ9/GuqJcXNUxvZW6bt3.r.BLfJ.yfXeRlKVpL95fE/5yCJg2DYGHC3whSaPrlaKIiSr1";
    // pwhash's documentation vector.
    const MD5_CRYPT: &str = "$1$5pZSV9va$azfrPr6af3Fc7dLblQXVa0"; // "password"

    fn cheap() -> Hasher {
        Hasher::new(Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn real_htpasswd_vectors() {
        let cases = [
            (BCRYPT, "correct horse", HashFormat::Bcrypt),
            (APR1, "pässword", HashFormat::Apr1),
            (APR1_EMPTY, "", HashFormat::Apr1),
            (SHA, "secret", HashFormat::Sha1),
            (CRYPT, "crypt01", HashFormat::DesCrypt),
            (SHA256_CRYPT, "sha256pw", HashFormat::Sha256Crypt),
            (SHA512_CRYPT, "sha512pw", HashFormat::Sha512Crypt),
            (MD5_CRYPT, "password", HashFormat::Md5Crypt),
        ];
        for (hash, password, format) in cases {
            assert_eq!(HashFormat::detect(hash), Some(format), "{hash}");
            assert!(format.is_legacy());
            assert!(
                verify(password.as_bytes(), hash),
                "{hash} rejects its password"
            );
            assert!(!verify(b"wrong", hash), "{hash} accepts a wrong password");
            let mut other = password.to_owned();
            other.push('x');
            assert!(!verify(other.as_bytes(), hash), "{hash}");
        }
    }

    #[test]
    fn bcrypt_prefixes() {
        for prefix in ["$2a$", "$2b$"] {
            let hash = BCRYPT.replacen("$2y$", prefix, 1);
            assert_eq!(HashFormat::detect(&hash), Some(HashFormat::Bcrypt));
            assert!(verify(b"correct horse", &hash));
        }
    }

    #[test]
    fn apr1_matches_known_answer() {
        assert_eq!(apr1("pässword".as_bytes(), "nVMz3fmk"), APR1);
        assert_eq!(apr1(b"", "d3J7T4H3"), APR1_EMPTY);
        // A password longer than one MD5 block exercises the loops.
        let long = "x".repeat(40);
        assert_eq!(apr1(long.as_bytes(), "abc").len(), "$apr1$abc$".len() + 22);
    }

    #[test]
    fn argon2id_round_trip_and_format() {
        let h = cheap();
        let hash = h.hash(b"hunter22").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"));
        assert_eq!(HashFormat::detect(&hash), Some(HashFormat::Argon2id));
        assert!(!HashFormat::Argon2id.is_legacy());
        assert!(verify(b"hunter22", &hash));
        assert!(!verify(b"hunter23", &hash));
        // Salts differ.
        assert_ne!(hash, h.hash(b"hunter22").unwrap());
    }

    #[test]
    fn default_params_are_not_weakened() {
        let hash = Hasher::new(Argon2Config::default())
            .unwrap()
            .hash(b"x")
            .unwrap();
        assert!(hash.contains("m=19456,t=2,p=1"), "{hash}");
    }

    #[test]
    fn malformed_and_plaintext_hashes_are_refused() {
        for bad in [
            "",
            "plaintext",
            "secret",
            "{SHA}notbase64!",
            "{SHA}c2hvcnQ=",
            "$apr1$salt",
            "$apr1$toolongsalt$XKJOzvjBhn1Eui1LnJobG1",
            "$2y$05$short",
            "$argon2id$garbage",
            "$5$rounds=x$salt$abc",
            "StGr/F2re28k!",
            "$9$whatever",
        ] {
            assert_eq!(HashFormat::detect(bad), None, "{bad:?}");
            assert!(!verify(bad.as_bytes(), bad));
        }
    }

    #[test]
    fn hostile_costs_are_refused_and_fail_fast() {
        let good = cheap().hash(b"pw").unwrap();
        let argon2 = |params: &str| good.replace("m=64,t=1,p=1", params);
        let sum86 = "a".repeat(86);
        let hostile = [
            argon2("m=4294967295,t=1,p=1"),
            argon2("m=2097152,t=1,p=1"),
            argon2("m=65536,t=17,p=1"),
            argon2("m=1048576,t=5,p=1"),
            argon2("m=1024,t=1,p=17"),
            BCRYPT.replacen("$05$", "$15$", 1),
            BCRYPT.replacen("$05$", "$31$", 1),
            format!("$6$rounds=1000001$salt${sum86}"),
            format!("$6$rounds=99999999999999999999999$salt${sum86}"),
        ];
        for hash in hostile {
            assert!(
                matches!(HashFormat::parse(&hash), Err(HashError::Cost(_))),
                "{hash}"
            );
            assert_eq!(HashFormat::detect(&hash), None);
            let started = std::time::Instant::now();
            assert!(!verify(b"pw", &hash));
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        // Real-world defaults are admitted (parsed only: some are slow).
        for hash in [
            argon2("m=4096,t=3,p=1"),
            argon2("m=19456,t=2,p=1"),
            argon2("m=47104,t=1,p=1"),
            argon2("m=65536,t=4,p=1"),
            argon2("m=1048576,t=4,p=1"),
            argon2("m=262144,t=3,p=4"),
            BCRYPT.replacen("$05$", "$04$", 1),
            BCRYPT.replacen("$05$", "$12$", 1),
            BCRYPT.replacen("$05$", "$14$", 1),
            format!("$6$rounds=656000$salt${sum86}"),
            format!("$5$rounds=535000$salt${}", "a".repeat(43)),
        ] {
            assert!(HashFormat::parse(&hash).is_ok(), "{hash}");
        }
        // authd's own argon2 setting must be verifiable.
        assert!(
            Hasher::new(Argon2Config {
                memory_kib: 2 * 1024 * 1024,
                iterations: 1,
                parallelism: 1,
            })
            .is_err()
        );
    }

    #[test]
    fn new_password_rules() {
        assert!(check_new_password("12345678", 8).is_ok());
        assert!(check_new_password("1234567", 8).is_err());
        assert!(check_new_password("ééééééééé", 8).is_ok());
        assert!(check_new_password(&"a".repeat(MAX_PASSWORD_LEN + 1), 8).is_err());
        assert!(check_new_password("abcdefgh\0", 8).is_err());
        let p = random_password();
        assert_eq!(p.len(), 24);
        assert_ne!(p, random_password());
    }
}
