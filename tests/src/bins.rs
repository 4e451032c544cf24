//! Finding programs: the workspace's own binaries (built on demand, next to
//! the running test executable) and system tools (installed with apt-get when
//! missing, or a clear failure — never a silent skip).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::process::{CommandExt, describe_output};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_owned()
}

/// The cargo profile directory the running executable was built into, e.g.
/// `target/debug` for `target/debug/deps/e2e-…` or `target/release` for
/// `target/release/bench`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running executable");
    let mut dir = exe.parent().expect("executable has a directory").to_owned();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary (`registry`, `authd`).
///
/// `E2E_<NAME>_BIN` (e.g. `E2E_REGISTRY_BIN`) names it explicitly. Otherwise
/// it is `<profile dir>/<name>`, and unless `E2E_NO_BUILD` is set it is
/// (re)built once per process with `cargo build -p <name>` in the same
/// profile, so that a test never runs a stale binary. (`scripts/test` builds
/// everything first and sets `E2E_NO_BUILD`.)
pub fn workspace_bin(name: &str) -> PathBuf {
    let var = format!("E2E_{}_BIN", name.to_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{var}={} is not a file", path.display());
        return path;
    }
    let dir = profile_dir();
    let path = dir.join(name);
    if std::env::var_os("E2E_NO_BUILD").is_none() {
        build_once(name, &dir);
    }
    assert!(
        path.is_file(),
        "{} not found; build it with `cargo build -p {name}` or set {var}",
        path.display()
    );
    path
}

fn build_once(name: &str, profile_dir: &Path) {
    static BUILT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if built.contains(name) {
        return;
    }
    let profile = profile_dir
        .file_name()
        .expect("profile directory has a name")
        .to_string_lossy()
        .into_owned();
    let target_dir = profile_dir
        .parent()
        .expect("profile directory has a parent");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", name, "--bin", name])
        .env("CARGO_TARGET_DIR", target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.run();
    assert!(
        out.status.success(),
        "building {name} failed:\n{}",
        describe_output(&out)
    );
    built.insert(name.to_owned());
}

/// The first `name` on `PATH` (plus the sbin directories, which a non-login
/// root shell may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Path of the system tool `name`, installing the Debian package `package`
/// when it is missing (as root with apt-get; serialised across processes with
/// `flock`). Panics with a clear message when it cannot be had: a test that
/// needs a client never skips silently.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    if let Some(p) = which(name) {
        return p;
    }
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = which(name) {
        return p;
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    assert!(
        is_root && which("apt-get").is_some(),
        "`{name}` is not installed and cannot be installed here (needs root and apt-get): \
         install the Debian package `{package}` (scripts/test does)"
    );
    eprintln!("e2e: `{name}` missing, installing the Debian package `{package}`");
    let script = format!(
        "export DEBIAN_FRONTEND=noninteractive; \
         apt-get install -y -o DPkg::Lock::Timeout=600 {package} || \
         {{ apt-get update -o DPkg::Lock::Timeout=600 && \
            apt-get install -y -o DPkg::Lock::Timeout=600 {package}; }}"
    );
    let out = Command::new("flock")
        .args(["/tmp/e2e-apt.lock", "sh", "-c", &script])
        .run();
    assert!(
        out.status.success(),
        "installing `{package}` for `{name}` failed:\n{}",
        describe_output(&out)
    );
    which(name).unwrap_or_else(|| panic!("`{name}` still missing after installing `{package}`"))
}

/// A free TCP port on 127.0.0.1 at the time of the call (bind :0, read,
/// release). Only for programs that cannot bind port 0 and report it; callers
/// retry on a conflict.
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct free TCP ports on 127.0.0.1 (all bound at once, then
/// released): two `free_port` calls in a row may give the same port.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [std::net::TcpListener; N] = std::array::from_fn(|_| {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
    });
    listeners.map(|l| l.local_addr().expect("local address").port())
}
