//! Smoke tests of the harness itself: process cleanup, distribution with our
//! config, a private dockerd, the image fixtures.

use std::process::Command;
use std::time::Duration;

use e2e::fixtures::{HtpasswdHash, OciImage, htpasswd, read_oci_layout};
use e2e::process::process_group_members;
use e2e::{CommandExt, Daemon, Dockerd, Impl, Registry, Skopeo};

#[test]
fn daemon_drop_kills_its_whole_process_group() {
    let dir = e2e::temp_dir("harness");
    let mut cmd = Command::new("sh");
    // A child in the background that would outlive a plain kill of `sh`.
    cmd.args([
        "-c",
        "sleep 600 & echo 'listening on http://127.0.0.1:1'; wait",
    ]);
    let mut daemon = Daemon::spawn("sleeper", &cmd, &dir.path().join("log"));
    assert_eq!(
        daemon.wait_listening(Duration::from_secs(10)),
        "http://127.0.0.1:1"
    );
    let pgid = daemon.pid();
    assert!(
        process_group_members(pgid).len() >= 2,
        "sh and sleep run in the daemon's group"
    );
    drop(daemon);
    assert_eq!(process_group_members(pgid), Vec::<u32>::new(), "no orphans");
}

#[test]
fn daemon_that_exits_early_reports_its_log() {
    let dir = e2e::temp_dir("harness");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo 'config error: no such key' >&2; exit 3"]);
    let mut daemon = Daemon::spawn("failing", &cmd, &dir.path().join("log"));
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        daemon.wait_listening(Duration::from_secs(10));
    }))
    .expect_err("wait_listening must fail");
    let message = panic
        .downcast_ref::<String>()
        .expect("panic message is a String");
    assert!(message.contains("config error: no such key"), "{message}");
}

#[test]
fn distribution_starts_with_the_shared_config_and_htpasswd() {
    let dir = e2e::temp_dir("harness");
    let file = dir.path().join("htpasswd");
    htpasswd(&file, "carol", "pa55-word", HtpasswdHash::Bcrypt);
    let dist = Registry::builder().htpasswd(&file).start_distribution();
    assert_eq!(dist.kind(), Impl::Distribution);

    let resp = dist.api().get("/v2/");
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().expect("ASCII");
    assert!(challenge.starts_with("Basic realm=\"e2e\""), "{challenge}");
    let resp = dist.api().basic("carol", "pa55-word").get("/v2/");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let skopeo = Skopeo::new();
    let image = OciImage::generate(&skopeo.scratch("src"), "v1", &[10_000, 20_000]);
    let dest = format!("docker://{}/smoke/img:v1", dist.host());
    skopeo.copy(
        &image.reference(),
        &dest,
        &["--dest-creds", "carol:pa55-word"],
    );
    let api = dist.api().basic("carol", "pa55-word");
    assert_eq!(
        api.manifest_digest("smoke/img", "v1"),
        Some(image.manifest_digest.clone())
    );
    let out = skopeo.scratch("out");
    skopeo.copy(
        &dest,
        &format!("oci:{}:v1", out.display()),
        &["--src-creds", "carol:pa55-word"],
    );
    let pulled = read_oci_layout(&out, Some("v1"));
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(pulled.blob_digests, image.blob_digests());
}

#[test]
fn dockerd_imports_and_runs_busybox_without_network() {
    let docker = Dockerd::start();
    docker.import_busybox("e2e/smoke:1", "smoke-marker-42");
    let out = docker.run_marker("e2e/smoke:1");
    assert_eq!(out, "smoke-marker-42");
    let pgid = docker.pid();
    drop(docker);
    assert_eq!(
        process_group_members(pgid),
        Vec::<u32>::new(),
        "dockerd and its containerd are gone"
    );
}

#[test]
fn tmpfs_fills_up_and_unmounts_on_drop() {
    let fs = e2e::mount::Tmpfs::mount(1 << 20);
    let path = fs.path().to_owned();
    let err = std::fs::write(path.join("big"), vec![0u8; 2 << 20])
        .expect_err("2 MiB do not fit in a 1 MiB tmpfs");
    assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
    drop(fs);
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read mounts");
    assert!(
        !mounts.contains(path.to_str().expect("UTF-8 path")),
        "still mounted"
    );
}

#[test]
fn authd_serves_tokens_and_its_cli_shares_the_data_dir() {
    use e2e::authd::{ADMIN_PASSWORD, ADMIN_USER};
    let authd = e2e::Authd::builder().start();
    let api = e2e::Api::new(authd.url());
    assert_eq!(api.get("/healthz").status(), 200);
    let jwks: serde_json::Value = api.get("/.well-known/jwks.json").json().expect("JWKS JSON");
    assert!(
        jwks["keys"].as_array().is_some_and(|k| !k.is_empty()),
        "{jwks}"
    );

    let resp = e2e::Api::new(authd.url())
        .basic(ADMIN_USER, ADMIN_PASSWORD)
        .get("/token");
    assert_eq!(resp.status(), 200, "admin token");
    let body: serde_json::Value = resp.json().expect("token JSON");
    assert!(
        body["token"].is_string() && body["access_token"] == body["token"],
        "{body}"
    );
    let resp = e2e::Api::new(authd.url())
        .basic(ADMIN_USER, "wrong-password")
        .get("/token");
    assert_eq!(resp.status(), 401, "bad credentials");

    // The CLI writes to the running server's database.
    let out = authd
        .cli()
        .args(["user", "add", "erin", "--password-stdin"])
        .run_with_stdin(b"erin-password-1\n");
    assert!(
        out.status.success(),
        "{}",
        e2e::process::describe_output(&out)
    );
    let resp = e2e::Api::new(authd.url())
        .basic("erin", "erin-password-1")
        .get("/token");
    assert_eq!(resp.status(), 200, "token for a user added by the CLI");
}

/// Regression: the stdout copier wrote a line and its newline in two
/// writes, so a stderr line could land between them (a JSON log line glued
/// to `listening on …`, then an empty line: a flaky access-log test).
#[test]
fn stdout_and_stderr_lines_stay_whole_in_the_log() {
    let dir = e2e::temp_dir("interleave");
    let log = dir.path().join("log");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "i=0; while [ $i -lt 3000 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done; \
         echo done; exec sleep 60",
    ]);
    let daemon = Daemon::spawn("interleave", &cmd, &log);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !daemon.log().lines().any(|l| l == "done") {
        assert!(
            std::time::Instant::now() < deadline,
            "the script did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = daemon.log();
    for l in text.lines() {
        let whole = l == "done"
            || l.strip_prefix("out ")
                .or_else(|| l.strip_prefix("err "))
                .is_some_and(|n| n.parse::<u32>().is_ok());
        assert!(whole, "a torn line: {l:?}");
    }
    assert_eq!(text.lines().count(), 6001);
}

/// nginx binds its ports one by one, each accepting connections at once,
/// and retries a busy one for seconds before it exits: a start that waited
/// only for the first port took a half-started nginx for a running one
/// (the replicas test then sent authd's requests to whatever held the
/// other port).
#[test]
fn nginx_is_started_only_once_every_port_is_its_own() {
    let [free, busy] = e2e::bins::free_ports();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", busy)).expect("hold a port");
    let config = format!(
        "server {{ listen 127.0.0.1:{free}; return 204; }}\n\
         server {{ listen 127.0.0.1:{busy}; return 204; }}\n"
    );
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free));
    let refused = e2e::proxy::Nginx::try_start(&config, listen).map(drop);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("Address already in use")),
        "{refused:?}"
    );
    let [other] = e2e::bins::free_ports();
    let config = format!(
        "server {{ listen 127.0.0.1:{free}; return 204; }}\n\
         server {{ listen 127.0.0.1:{other}; return 204; }}\n"
    );
    let nginx = e2e::proxy::Nginx::try_start(&config, listen).expect("nginx on free ports");
    drop(nginx);
}
