//! Content digests (`algorithm:hex`) and the streaming hashers behind them.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorCode};

/// The digest algorithms the registry stores content under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    const fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 64,
            DigestAlgorithm::Sha512 => 128,
        }
    }

    pub fn parse(s: &str) -> Option<DigestAlgorithm> {
        match s {
            "sha256" => Some(DigestAlgorithm::Sha256),
            "sha512" => Some(DigestAlgorithm::Sha512),
            _ => None,
        }
    }
}

/// A validated digest: a known algorithm and lowercase hex of the right
/// length. Its string form is safe to use as a path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: DigestAlgorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(DigestAlgorithm::Sha256, data)
    }

    /// The digest of `data` with `algorithm`.
    pub fn of(algorithm: DigestAlgorithm, data: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(data);
        h.finish()
    }

    /// Parses a digest, answering DIGEST_INVALID when it is not one we can
    /// store (unknown algorithm, bad hex, wrong length).
    pub fn parse(s: &str) -> Result<Digest, Error> {
        s.parse()
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest, Error> {
        let invalid = || {
            Error::new(
                ErrorCode::DigestInvalid,
                format!("invalid digest {:?}", truncate(s)),
            )
        };
        let (alg, hex) = s.split_once(':').ok_or_else(invalid)?;
        let algorithm = DigestAlgorithm::parse(alg).ok_or_else(|| {
            Error::new(
                ErrorCode::DigestInvalid,
                format!("unsupported digest algorithm {:?}", truncate(alg)),
            )
        })?;
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid());
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

/// Keeps error messages short when a client sends something huge.
pub(crate) fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_owned();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message))
    }
}

/// A streaming hasher for one algorithm: ring's (BoringSSL's assembly),
/// about twice as fast as the portable `sha2` where the CPU lacks SHA
/// extensions; every blob byte pushed or mirrored goes through it.
#[derive(Clone)]
pub struct Hasher {
    algorithm: DigestAlgorithm,
    context: ring::digest::Context,
}

impl Hasher {
    pub fn new(algorithm: DigestAlgorithm) -> Hasher {
        let ring_algorithm = match algorithm {
            DigestAlgorithm::Sha256 => &ring::digest::SHA256,
            DigestAlgorithm::Sha512 => &ring::digest::SHA512,
        };
        Hasher {
            algorithm,
            context: ring::digest::Context::new(ring_algorithm),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.context.update(data);
    }

    pub fn finish(self) -> Digest {
        Digest {
            algorithm: self.algorithm,
            hex: hex::encode(self.context.finish()),
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.algorithm {
            DigestAlgorithm::Sha256 => "Hasher(sha256)",
            DigestAlgorithm::Sha512 => "Hasher(sha512)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), DigestAlgorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::sha256_of(b""), d);
        let sha512 = Digest::of(DigestAlgorithm::Sha512, b"");
        assert_eq!(sha512.hex().len(), 128);
        assert_eq!(sha512.to_string().parse::<Digest>().unwrap(), sha512);
    }

    #[test]
    fn refuses_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../../../etc/passwd",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert_eq!(err.code, ErrorCode::DigestInvalid, "{bad}");
        }
    }
}
