//! Content digests (`sha256:<hex>`) of bytes and files.

use std::io::Read;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `sha256:<hex>` of a file's contents, streamed.
pub fn sha256_file(path: &Path) -> String {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    sha256_reader(file, &path.display().to_string()).0
}

/// `sha256:<hex>` of everything `reader` yields (`what` names it in a
/// panic), and its length.
pub fn sha256_reader(mut reader: impl Read, what: &str) -> (String, u64) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0;
    loop {
        let n = reader
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {what}: {e}"));
        if n == 0 {
            break;
        }
        len += n as u64;
        hasher.update(&buf[..n]);
    }
    (format!("sha256:{}", hex::encode(hasher.finalize())), len)
}

/// The hex part of `algorithm:hex`.
pub fn hex_part(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, h)| h)
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_sha256() {
        assert_eq!(
            super::sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
