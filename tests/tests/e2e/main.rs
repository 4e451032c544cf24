//! End-to-end tests: our binaries as real processes on ephemeral ports,
//! driven by real clients (skopeo, podman, docker, containerd) and compared with CNCF
//! distribution 2.8. One test binary; modules group the tests by client.
//!
//! Run one: `cargo nextest run -p e2e -E 'test(skopeo::)'` (see
//! tests/README.md). `E2E_REGISTRY_IMPL=distribution` runs the tests that
//! target our registry against distribution instead, to check a test itself.

mod access_tokens;
mod conformance;
mod docker;
mod harness;
mod interop;
mod mirror;
mod notifications;
mod podman;
mod protocol;
mod replicas;
mod s3;
mod skopeo;
mod tls_proxy;
mod token_flow;
mod ui;
