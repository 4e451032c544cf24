//! Harness for the end-to-end tests: our binaries and CNCF distribution as
//! real processes on ephemeral ports, driven by real clients (skopeo, podman,
//! docker) with isolated state.
//!
//! Every handle owns a temporary directory and its processes; dropping the
//! handle stops the processes (their whole process group) and removes the
//! directory. When a test panics, the handles print the tail of their logs.
//!
//! - [`Registry`]: our `registry` binary, or distribution 2.8 with the very
//!   same YAML config ([`RegistryBuilder::start_distribution`]).
//! - [`Authd`]: our `authd` binary.
//! - [`Dockerd`]: a private docker daemon (vfs, no iptables, own socket).
//! - [`Containerd`]: a private containerd and its `ctr`.
//! - [`Skopeo`], [`Podman`]: client wrappers with their own auth files.
//! - [`fixtures`]: images made without network, htpasswd files.
//! - [`postgres::database`]: a fresh database on a PostgreSQL shared by
//!   the processes of one test binary.
//! - [`mount::Tmpfs`]: a small filesystem for full-disk tests.
//! - [`browser::Browser`]: headless Chromium over WebDriver, for the web UI.
//! - [`proxy`]: a private non-loopback address and nginx in front of our
//!   servers, for TLS with a private CA.

pub mod api;
pub mod authd;
pub mod bins;
pub mod browser;
pub mod clients;
pub mod containerd;
pub mod digest;
pub mod dockerd;
pub mod fixtures;
pub mod garage;
pub mod mount;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod registry;

pub use api::Api;
pub use authd::{Authd, AuthdBuilder};
pub use clients::{Podman, Skopeo};
pub use containerd::Containerd;
pub use dockerd::Dockerd;
pub use process::{CommandExt, Daemon};
pub use registry::{Auth, Impl, Registry, RegistryBuilder};

use std::path::Path;

/// A fresh temporary directory under `$TMPDIR` with a short name: unix socket
/// paths inside it (dockerd, containerd) must stay under 108 bytes.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("e2e-{prefix}-"))
        .tempdir()
        .expect("create a temporary directory")
}

/// Installs the process-wide rustls crypto provider (ring) that reqwest needs
/// with the workspace's `rustls-no-provider` feature. Idempotent.
pub fn init_crypto() {
    // Err only means another provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a file that must exist; panics with the path otherwise.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Writes a file, creating parent directories; panics with the path on error.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
