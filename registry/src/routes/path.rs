//! Parses the path of a `/v2/…` request into the endpoint it names.
//!
//! Repository names contain `/`, so a path is read from its end: the last
//! segments say which endpoint it is, and everything before is the name.
//! The raw (undecoded) path is parsed: no valid name, tag, digest or upload
//! ID contains `%`, so any percent-encoding is refused instead of decoded —
//! `%2e%2e` never becomes `..`.

use uuid::Uuid;

use crate::error::{Error, ErrorCode};
use crate::oci::{Digest, Reference, RepoName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, Uuid),
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
    /// `/v2/<name>/`: the repository itself (our extension, for deleting it).
    Repository(RepoName),
}

fn not_found(path: &str) -> Error {
    Error::new(
        ErrorCode::Unsupported,
        format!(
            "no such endpoint: /v2/{}",
            crate::oci::digest::truncate(path)
        ),
    )
    .with_status(http::StatusCode::NOT_FOUND)
}

/// Parses the part of the path after `/v2/`.
pub fn parse(path: &str) -> Result<Endpoint, Error> {
    if path.is_empty() {
        return Ok(Endpoint::Base);
    }
    if path == "_catalog" {
        return Ok(Endpoint::Catalog);
    }
    if path.contains('%') {
        return Err(Error::new(
            ErrorCode::NameInvalid,
            "percent-encoded paths are not accepted",
        ));
    }
    let segments: Vec<&str> = path.split('/').collect();
    let name = |n: usize| RepoName::parse(&segments[..segments.len() - n].join("/"));
    match segments.as_slice() {
        [_, .., "blobs", "uploads", ""] | [_, .., "blobs", "uploads"] => {
            let n = if path.ends_with('/') { 3 } else { 2 };
            Ok(Endpoint::UploadStart(name(n)?))
        }
        [_, .., "blobs", "uploads", id] => {
            let name = name(3)?;
            // Only the canonical form we hand out: no braces, URNs or
            // uppercase variants that map to the same ID.
            let id = Uuid::try_parse(id)
                .ok()
                .filter(|u| u.hyphenated().to_string() == *id)
                .ok_or_else(Error::upload_unknown)?;
            Ok(Endpoint::Upload(name, id))
        }
        [_, .., "blobs", digest] => Ok(Endpoint::Blob(name(2)?, Digest::parse(digest)?)),
        [_, .., "manifests", reference] => {
            Ok(Endpoint::Manifest(name(2)?, Reference::parse(reference)?))
        }
        [_, .., "tags", "list"] => Ok(Endpoint::Tags(name(2)?)),
        [_, .., "referrers", digest] => Ok(Endpoint::Referrers(name(2)?, Digest::parse(digest)?)),
        [_, .., ""] => Ok(Endpoint::Repository(name(1)?)),
        _ => Err(not_found(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn endpoints() {
        assert_eq!(parse("").unwrap(), Endpoint::Base);
        assert_eq!(parse("_catalog").unwrap(), Endpoint::Catalog);
        assert_eq!(
            parse("a/b/manifests/latest").unwrap(),
            Endpoint::Manifest(name("a/b"), Reference::parse("latest").unwrap())
        );
        assert_eq!(
            parse(&format!("a/blobs/{D}")).unwrap(),
            Endpoint::Blob(name("a"), D.parse().unwrap())
        );
        assert_eq!(
            parse("a/b/blobs/uploads/").unwrap(),
            Endpoint::UploadStart(name("a/b"))
        );
        assert_eq!(
            parse("a/b/blobs/uploads").unwrap(),
            Endpoint::UploadStart(name("a/b"))
        );
        let id = Uuid::new_v4();
        assert_eq!(
            parse(&format!("a/blobs/uploads/{id}")).unwrap(),
            Endpoint::Upload(name("a"), id)
        );
        assert_eq!(parse("x/tags/list").unwrap(), Endpoint::Tags(name("x")));
        assert_eq!(
            parse("team/app/").unwrap(),
            Endpoint::Repository(name("team/app"))
        );
        assert_eq!(
            parse(&format!("x/referrers/{D}")).unwrap(),
            Endpoint::Referrers(name("x"), D.parse().unwrap())
        );
        // Endpoint words are valid name components.
        assert_eq!(
            parse("manifests/blobs/manifests/v1").unwrap(),
            Endpoint::Manifest(name("manifests/blobs"), Reference::parse("v1").unwrap())
        );
    }

    #[test]
    fn refusals() {
        let code = |p: &str| parse(p).unwrap_err().code;
        assert_eq!(code("../etc/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("a/%2e%2e/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("%2e%2e/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("/etc/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("a//b/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("a\0b/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("a/manifests/.."), ErrorCode::TagInvalid);
        assert_eq!(code("a/manifests/sha256:../../x"), ErrorCode::Unsupported);
        assert_eq!(code("a/manifests/sha256:.."), ErrorCode::DigestInvalid);
        assert_eq!(code("a/blobs/latest"), ErrorCode::DigestInvalid);
        assert_eq!(
            code("a/blobs/uploads/not-a-uuid"),
            ErrorCode::BlobUploadUnknown
        );
        assert_eq!(code("a/blobs/uploads/../../x"), ErrorCode::Unsupported);
        let upper = Uuid::new_v4().hyphenated().to_string().to_uppercase();
        assert_eq!(
            code(&format!("a/blobs/uploads/{upper}")),
            ErrorCode::BlobUploadUnknown
        );
        assert_eq!(code("a/frobnicate"), ErrorCode::Unsupported);
        assert_eq!(code("manifests/latest"), ErrorCode::Unsupported);
    }
}
