//! Repository names, tags and manifest references.

use std::fmt;

use crate::error::{Error, ErrorCode};
use crate::oci::digest::{Digest, truncate};

/// A repository name matching the distribution grammar (at most 255 bytes,
/// lowercase components separated by `/`, no `.`/`..` components).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, Error> {
        if token::name::is_valid_repository(s) {
            Ok(RepoName(s.to_owned()))
        } else {
            Err(Error::new(
                ErrorCode::NameInvalid,
                format!("invalid repository name {:?}", truncate(s)),
            )
            .with_detail(serde_json::json!({ "name": truncate(s) })))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Tag, Error> {
        if token::name::is_valid_tag(s) {
            Ok(Tag(s.to_owned()))
        } else {
            Err(Error::new(
                ErrorCode::TagInvalid,
                format!("invalid tag {:?}", truncate(s)),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What a manifest URL names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A reference holding `:` must be a digest; anything else must be a tag.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse(
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
            Ok(Reference::Digest(_))
        ));
        assert_eq!(
            Reference::parse("sha256:zz").unwrap_err().code,
            ErrorCode::DigestInvalid
        );
        assert_eq!(
            Reference::parse("..").unwrap_err().code,
            ErrorCode::TagInvalid
        );
        assert_eq!(
            Reference::parse("a/b").unwrap_err().code,
            ErrorCode::TagInvalid
        );
        assert_eq!(
            RepoName::parse("a/../b").unwrap_err().code,
            ErrorCode::NameInvalid
        );
    }
}
