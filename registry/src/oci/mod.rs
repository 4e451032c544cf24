//! Parsed newtypes for everything a client names: repositories, tags,
//! references, digests and manifests. Invalid input never gets past here, so
//! nothing downstream (least of all the storage paths) sees an unchecked
//! string.

pub mod digest;
pub mod manifest;
pub mod name;

pub use digest::{Digest, DigestAlgorithm, Hasher};
pub use manifest::{Descriptor, Manifest, MediaType};
pub use name::{Reference, RepoName, Tag};
