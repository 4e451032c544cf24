//! A real PostgreSQL for tests, shared by every test process of one test
//! binary (nextest runs each test in a process of its own): one server,
//! one fresh database per test ([`database`]).
//!
//! The server comes from the Debian package `postgresql` (`initdb`,
//! `pg_ctl` from `/usr/lib/postgresql/*/bin`), runs in a directory of
//! `$TMPDIR` named after the test binary, on a free port of 127.0.0.1,
//! as `nobody` when the tests run as root (PostgreSQL refuses root),
//! without fsync. Who uses it is told by file locks: each test process
//! holds a shared lock on `users.lock` for its lifetime; a reaper started
//! with the server stops it and removes its directory once nobody has held
//! that lock for a few seconds. `setup.lock` serialises starting and
//! stopping.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::bins::{free_port, require_tool, which};
use crate::process::{CommandExt, describe_output};

/// Seconds without users after which the reaper stops the server.
const IDLE_SECS: u32 = 4;

struct Server {
    port: u16,
    /// Held (shared) until the process ends: the server stays up meanwhile.
    _users: File,
}

/// A new, empty database on this binary's server; returns its URL.
pub fn database() -> String {
    let server = server();
    let name = format!("t_{:016x}", rand::random::<u64>());
    psql(server.port, &format!("CREATE DATABASE {name}"));
    format!("postgres://postgres@127.0.0.1:{}/{name}", server.port)
}

/// Runs one SQL command as the superuser on the server's `postgres`
/// database.
fn psql(port: u16, sql: &str) {
    let out = Command::new(require_tool("psql", "postgresql-client"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &port.to_string(), "-d", "postgres", "-c", sql])
        .run();
    assert!(
        out.status.success(),
        "psql {sql:?}:\n{}",
        describe_output(&out)
    );
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start_or_join)
}

/// PostgreSQL's programs: not on `PATH` in Debian.
fn pg_bin(name: &str) -> PathBuf {
    require_tool("psql", "postgresql-client");
    if which("pg_ctlcluster").is_none() {
        require_tool("pg_ctlcluster", "postgresql");
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|p| p.is_file());
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("{name} not found under /usr/lib/postgresql/*/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args…`, as `nobody` when we are root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start_or_join() -> Server {
    let exe = std::env::current_exe().expect("current test binary");
    let stem = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let home = std::env::temp_dir().join(format!("e2e-pg-{uid}-{stem}"));
    std::fs::create_dir_all(&home).expect("create the PostgreSQL home");
    let open = |name: &str| {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(home.join(name))
            .expect("open a lock file")
    };
    let setup = open("setup.lock");
    setup.lock().expect("lock setup.lock");
    let users = open("users.lock");
    users.lock_shared().expect("lock users.lock");
    let port_file = home.join("port");
    let port = std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok())
        .filter(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        .unwrap_or_else(|| {
            let port = start(&home);
            std::fs::write(&port_file, port.to_string()).expect("write the port file");
            port
        });
    drop(setup);
    Server {
        port,
        _users: users,
    }
}

/// `initdb` and `pg_ctl start` in `home/data`; starts the reaper.
fn start(home: &Path) -> u16 {
    let data = home.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("create the data directory");
    if is_root() {
        Command::new("chown").arg("-R").arg("nobody").arg(home).ok();
    }
    let out = as_owner(&pg_bin("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .run();
    assert!(out.status.success(), "initdb:\n{}", describe_output(&out));
    let port = free_port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
        data.display()
    );
    let out = as_owner(&pg_bin("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-o", &options, "-l"])
        .arg(home.join("server.log"))
        .args(["-w", "start"])
        .stdin(Stdio::null())
        .run();
    assert!(
        out.status.success(),
        "pg_ctl start:\n{}\n{}",
        describe_output(&out),
        std::fs::read_to_string(home.join("server.log")).unwrap_or_default()
    );
    // The reaper: a detached shell that stops the server once no test
    // process has held users.lock for IDLE_SECS seconds in a row.
    let stop = format!(
        "{} {} -D {} -m fast stop",
        if is_root() {
            "runuser -u nobody --"
        } else {
            ""
        },
        pg_bin("pg_ctl").display(),
        data.display()
    );
    let script = format!(
        "cd {home}; idle=0; while sleep 1; do \
           if flock -n -x users.lock true; then idle=$((idle+1)); else idle=0; fi; \
           if [ $idle -ge {IDLE_SECS} ]; then \
             flock -x setup.lock sh -c 'flock -n -x users.lock sh -c \"{stop}; rm -rf data port server.log\"' \
               && [ ! -e port ] && exit 0; idle=0; \
           fi; \
         done",
        home = home.display()
    );
    // `setsid -f` forks it off and returns at once.
    let started = Command::new("setsid")
        .args(["-f", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start the PostgreSQL reaper");
    assert!(started.success(), "setsid: {started}");
    port
}
