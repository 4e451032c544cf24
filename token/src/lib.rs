//! The contract between authd and the registry.
//!
//! Everything both sides must agree on lives here, once: the scope grammar
//! clients send to the token endpoint (`scope`), the repository name grammar,
//! the JWT claims authd signs (`claims`), the key IDs and key formats that let
//! a registry find the right public key (`keys`), and the verification rules
//! the registry applies to every bearer token (`verify`).

pub mod claims;
pub mod keys;
pub mod name;
pub mod scope;
pub mod verify;

pub use claims::{Access, Claims, ResourceActions};
pub use keys::PublicKey;
pub use scope::{Action, Scope};
pub use verify::{TrustedKeys, VerifyError, VerifyOptions};

/// Service name (`aud` of tokens, `service` of challenges) both binaries use
/// when nothing is configured.
pub const DEFAULT_SERVICE: &str = "registry";
/// Issuer name (`iss` of tokens) both binaries use when nothing is configured.
pub const DEFAULT_ISSUER: &str = "authd";
/// Where authd listens with its embedded defaults.
pub const DEFAULT_AUTHD_URL: &str = "http://127.0.0.1:5001";
/// Path of the token endpoint on authd.
pub const TOKEN_PATH: &str = "/token";
/// Path of the JWKS document on authd.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Resource type and name of the grant that allows listing the whole catalog.
pub const CATALOG_TYPE: &str = "registry";
pub const CATALOG_NAME: &str = "catalog";
/// Resource type of the glob entries authd adds to a token issued for a
/// `registry:catalog:*` request that the account may not fully hold:
/// `{"type":"repository-pattern","name":"team/*","actions":["pull"]}`.
/// The registry lists the repositories matching them (and nothing else);
/// they grant no access to the repositories themselves.
pub const REPOSITORY_PATTERN_TYPE: &str = "repository-pattern";
/// Resource type and name carried by tokens that allow authd's admin API.
pub const ADMIN_TYPE: &str = "authd";
pub const ADMIN_NAME: &str = "admin";
