//! The `registry` binary as a process: the `listening on` line, the
//! configuration file given positionally (as `registry serve FILE`), TLS
//! through rustls, graceful shutdown on SIGTERM, and no Nagle delays.
#![allow(clippy::unwrap_used)]

mod support;

use support::process::Server;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
    let log = std::env::temp_dir().join(format!("registry-serve-test-{}.log", std::process::id()));
    Server::spawn(args, envs, &log)
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is needed by this test (Debian package curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (body.to_owned(), code.to_owned())
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n{extra}",
            dir.join("data").display()
        ),
    )
    .expect("write config");
    path
}

#[test]
fn positional_config_and_env_override() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let server = start(
        &["serve", cfg.to_str().unwrap()],
        &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")],
    );
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let (body, code) = curl(&[&format!("{}/v2/", server.url)]);
    assert_eq!((body.as_str(), code.as_str()), ("{}", "200"));
    assert!(dir.path().join("data").is_dir(), "storage root created");
}

#[test]
fn tls_with_rustls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = e2e::fixtures::self_signed_cert(dir.path());
    let cfg = write_config(
        dir.path(),
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ),
    );
    let server = start(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let (body, code) = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("{}/v2/", server.url),
    ]);
    assert_eq!((body.as_str(), code.as_str()), ("{}", "200"));
    // Plain HTTP on the TLS port gets no API answer.
    let plain = server.url.replace("https://", "http://");
    let (_, code) = curl(&[&format!("{plain}/v2/")]);
    assert_ne!(code, "200");
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "  draintimeout: 5s\n");
    let mut server = start(&["serve", cfg.to_str().unwrap()], &[]);
    let (_, code) = curl(&[&format!("{}/v2/", server.url)]);
    assert_eq!(code, "200");
    // SIGTERM, then SIGKILL after 10 s: only a clean exit in time succeeds.
    server.daemon.set_grace(Duration::from_secs(10));
    let status = server.daemon.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "registry did not stop cleanly on SIGTERM within 10 s: exit status {status:?}"
    );
}

#[test]
fn bad_configuration_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yml");
    for (yaml, says) in [
        (
            "storage:\n  azure:\n    accountname: x\n",
            "storage driver azure is not supported",
        ),
        (
            "storage:\n  s3:\n    bucket: x\n",
            "storage.s3 needs a region",
        ),
        (
            // Nothing listens on port 9 of 127.0.0.1: the start fails at once.
            "storage:\n  s3:\n    bucket: x\n    region: r\n    regionendpoint: http://127.0.0.1:9\n    \
             accesskey: a\n    secretkey: s\n",
            "cannot reach bucket \"x\" at http://127.0.0.1:9",
        ),
    ] {
        std::fs::write(&cfg, yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_registry"))
            .args(["serve", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        // One line says what is wrong (log lines of retries may precede it).
        let said: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("registry: "))
            .collect();
        assert_eq!(said.len(), 1, "{err}");
        assert!(said[0].contains(says), "{yaml}: {err}");
    }
}

#[tokio::test]
async fn small_responses_are_not_held_back_by_nagle() {
    // Without TCP_NODELAY, each pull below stalls ~40 ms on a delayed ACK.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let server = support::process::Server::start(&root, &[]);
    let client = support::process::Client::new(&server.url);
    let image = support::process::Image::new(1, &[b"layer".to_vec()]);
    assert_eq!(
        client
            .push_image("nagle", "v1", &image, false)
            .await
            .unwrap(),
        201
    );
    client.pull_verified("nagle", "v1").await.unwrap();
    let started = Instant::now();
    for _ in 0..60 {
        client.pull_verified("nagle", "v1").await.unwrap();
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "60 pulls of a tiny image took {elapsed:?}"
    );
}
