//! Parses the path of a `/v2/…` request into the endpoint it names.
//!
//! Repository names contain `/`, so a path is read from its end: the last
//! segments say which endpoint it is, and everything before is the name.
//! The raw (undecoded) path is parsed: no valid name, tag, digest or upload
//! ID contains `%`, so any percent-encoding is refused instead of decoded —
//! `%2e%2e` never becomes `..`.

use http::Method;
use token::Action;
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

/// What an endpoint is, in one place: its name (the metrics label), what
/// it is authorised against, and per allowed method (in the order of the
/// `Allow` header) the actions the caller needs.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub target: Target,
    pub methods: &'static [(Method, &'static [Action])],
}

/// What an endpoint's actions apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any authenticated caller (`/v2/`).
    Authenticated,
    /// The catalog.
    Catalog,
    /// The endpoint's repository.
    Repository,
}

const NONE: &[Action] = &[];
const PULL: &[Action] = &[Action::Pull];
const PUSH: &[Action] = &[Action::Pull, Action::Push];
const DELETE: &[Action] = &[Action::Delete];
// Deleting a whole repository is for whoever holds everything on it.
const ALL: &[Action] = &[Action::All];

static BASE: Spec = Spec {
    name: "base",
    target: Target::Authenticated,
    methods: &[(Method::GET, NONE), (Method::HEAD, NONE)],
};
static CATALOG: Spec = Spec {
    name: "catalog",
    target: Target::Catalog,
    methods: &[(Method::GET, NONE), (Method::HEAD, NONE)],
};
static MANIFEST: Spec = Spec {
    name: "manifest",
    target: Target::Repository,
    methods: &[
        (Method::GET, PULL),
        (Method::HEAD, PULL),
        (Method::PUT, PUSH),
        (Method::DELETE, DELETE),
    ],
};
static BLOB: Spec = Spec {
    name: "blob",
    target: Target::Repository,
    methods: &[
        (Method::GET, PULL),
        (Method::HEAD, PULL),
        (Method::DELETE, DELETE),
    ],
};
static UPLOAD_START: Spec = Spec {
    name: "upload_start",
    target: Target::Repository,
    methods: &[(Method::POST, PUSH)],
};
static UPLOAD: Spec = Spec {
    name: "upload",
    target: Target::Repository,
    methods: &[
        (Method::GET, PULL),
        (Method::PATCH, PUSH),
        (Method::PUT, PUSH),
        (Method::DELETE, DELETE),
    ],
};
static TAGS: Spec = Spec {
    name: "tags",
    target: Target::Repository,
    methods: &[(Method::GET, PULL), (Method::HEAD, PULL)],
};
static REFERRERS: Spec = Spec {
    name: "referrers",
    target: Target::Repository,
    methods: &[(Method::GET, PULL), (Method::HEAD, PULL)],
};
static REPOSITORY: Spec = Spec {
    name: "repository",
    target: Target::Repository,
    methods: &[(Method::DELETE, ALL)],
};

impl Endpoint {
    pub fn spec(&self) -> &'static Spec {
        match self {
            Endpoint::Base => &BASE,
            Endpoint::Catalog => &CATALOG,
            Endpoint::Manifest(..) => &MANIFEST,
            Endpoint::Blob(..) => &BLOB,
            Endpoint::UploadStart(_) => &UPLOAD_START,
            Endpoint::Upload(..) => &UPLOAD,
            Endpoint::Tags(_) => &TAGS,
            Endpoint::Referrers(..) => &REFERRERS,
            Endpoint::Repository(_) => &REPOSITORY,
        }
    }

    /// The repository the endpoint is about, if any.
    pub fn repository(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Manifest(name, _)
            | Endpoint::Blob(name, _)
            | Endpoint::UploadStart(name)
            | Endpoint::Upload(name, _)
            | Endpoint::Tags(name)
            | Endpoint::Referrers(name, _)
            | Endpoint::Repository(name) => Some(name),
        }
    }

    /// The actions `method` needs here; `None` when it is not allowed.
    pub fn required(&self, method: &Method) -> Option<&'static [Action]> {
        self.spec()
            .methods
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, actions)| *actions)
    }
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
    fn specs_name_every_endpoint_once() {
        let id = Uuid::new_v4();
        let all = [
            parse("").unwrap(),
            parse("_catalog").unwrap(),
            parse("a/manifests/v1").unwrap(),
            parse(&format!("a/blobs/{D}")).unwrap(),
            parse("a/blobs/uploads/").unwrap(),
            parse(&format!("a/blobs/uploads/{id}")).unwrap(),
            parse("a/tags/list").unwrap(),
            parse(&format!("a/referrers/{D}")).unwrap(),
            parse("a/").unwrap(),
        ];
        let mut names: Vec<&str> = all.iter().map(|e| e.spec().name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "{names:?}");
        for e in &all {
            assert!(!e.spec().methods.is_empty());
            assert_eq!(
                e.repository().is_some(),
                e.spec().target == Target::Repository
            );
        }
        let manifest = &all[2];
        assert_eq!(manifest.required(&Method::GET), Some(PULL));
        assert_eq!(manifest.required(&Method::PUT), Some(PUSH));
        assert_eq!(manifest.required(&Method::DELETE), Some(DELETE));
        assert_eq!(manifest.required(&Method::POST), None);
        assert_eq!(all[8].required(&Method::DELETE), Some(ALL));
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
