//! Child processes: long-running daemons ([`Daemon`]) and one-shot commands
//! with a timeout ([`CommandExt`]).
//!
//! No orphans, ever: every child runs in its own process group. Dropping a
//! daemon's handle sends it SIGTERM, then SIGKILL to its whole group once it
//! exited or after a grace period; a command that times out has its group
//! killed. Daemons also get a parent-death signal
//! (through `setpriv --pdeathsig`) so that they stop even when the test
//! process itself is killed (nextest timeout, Ctrl-C) and no `Drop` runs.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

/// Lines of a daemon's log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// Default limit for one client command (`E2E_CMD_TIMEOUT` seconds overrides).
fn command_timeout() -> Duration {
    let secs = std::env::var("E2E_CMD_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// Whether `setpriv` (util-linux) is available for the parent-death signal.
fn have_setpriv() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| crate::bins::which("setpriv").is_some())
}

/// Renders a command line for messages, shell-like.
pub fn display_command(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        let k = k.to_string_lossy();
        // Only the variables that say where a client talks to are worth showing.
        if k.starts_with("DOCKER_") || k.starts_with("REGISTRY_") || k.starts_with("AUTHD_") {
            let _ = write!(
                s,
                "{k}={} ",
                v.map(OsStr::to_string_lossy).unwrap_or_default()
            );
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '"', '\'', '$']) {
            let _ = write!(s, " '{}'", a.replace('\'', "'\\''"));
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

/// Sends `sig` to the process group led by `pid`. A group that is already gone
/// is not an error.
fn signal_group(pid: u32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), sig);
}

/// Whether the child `pid` has exited, without reaping it: while it is an
/// unreaped zombie its pid (and so its process group id) cannot be reused, so
/// signalling the group afterwards cannot hit an unrelated process.
fn exited_unreaped(pid: u32) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(Pid::from_raw(pid as i32)), flags) {
        Ok(WaitStatus::StillAlive) => false,
        // Exited, or no such child (already reaped).
        Ok(_) | Err(_) => true,
    }
}

/// Pids of the live processes in process group `pgid` (from `/proc`).
pub fn process_group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the parenthesised command name: state, ppid, pgrp.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

/// A long-running child process (a server) with its log file.
///
/// stdout and stderr both go to the log file; stdout is also scanned for the
/// `listening on URL` line our binaries print once bound.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    listening: Option<mpsc::Receiver<String>>,
    grace: Duration,
    stopped: bool,
}

/// Waits up to 5 s for the JSON access line (`"target": "access"`) of the
/// request with id `id` in the log that `log` reads, and returns it. The
/// servers write that line when the response body is done, so it may come
/// after the client already has the response.
pub fn wait_access_line(log: impl Fn() -> String, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = log();
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["request_id"] == id && v["target"] == "access");
        if let Some(v) = found {
            return v;
        }
        assert!(Instant::now() < deadline, "no access line for {id}:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Daemon {
    /// Spawns `cmd` in its own process group with stdout and stderr appended
    /// to `log`. `name` is used in messages.
    pub fn spawn(name: &str, cmd: &Command, log: &Path) -> Daemon {
        let mut cmd = with_parent_death_signal(cmd);
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        let stderr = log_file.try_clone().expect("clone the log file handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .process_group(0);
        let shown = display_command(&cmd);
        eprintln!("e2e: starting {name}: {shown}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({shown}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || copy_stdout(stdout, log_file, &tx))
            .expect("spawn the stdout reader thread");
        Daemon {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            listening: Some(rx),
            grace: Duration::from_secs(10),
            stopped: false,
        }
    }

    /// How long `stop` waits after SIGTERM before SIGKILL.
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Waits for the `listening on URL` line and returns the URL. Panics with
    /// the log tail if the process exits first or the timeout passes.
    pub fn wait_listening(&mut self, timeout: Duration) -> String {
        let rx = self
            .listening
            .take()
            .expect("wait_listening is called once per daemon");
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(url) => return url,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting or exited.
                    std::thread::sleep(Duration::from_millis(100));
                    self.fail("closed stdout without printing `listening on URL`");
                }
            }
            if !self.is_running() {
                self.fail("exited before printing `listening on URL`");
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "did not print `listening on URL` within {timeout:?}"
                ));
            }
        }
    }

    /// Panics with `what` and the log tail.
    pub fn fail(&mut self, what: &str) -> ! {
        let status = self.child.try_wait().ok().flatten();
        panic!(
            "{} {what} (exit status: {status:?})\n{}",
            self.name,
            self.log_tail(LOG_TAIL_LINES)
        );
    }

    /// The process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file (stdout and stderr of the process).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log as text.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The last `n` lines of the log, with a header naming the daemon.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "----- last {} lines of {} log ({}) -----\n{}\n----- end of {} log -----",
            lines.len() - start,
            self.name,
            self.log.display(),
            lines[start..].join("\n"),
            self.name
        )
    }

    /// Whether the process is still running (not reaped, not a zombie).
    pub fn is_running(&mut self) -> bool {
        !self.stopped && !exited_unreaped(self.pid())
    }

    /// SIGKILL to the whole process group, no grace: a crash, for crash tests.
    pub fn kill_hard(&mut self) {
        if self.stopped {
            return;
        }
        signal_group(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
        self.stopped = true;
    }

    /// Sends `sig` to the process group.
    pub fn signal(&self, sig: Signal) {
        if !self.stopped {
            signal_group(self.pid(), sig);
        }
    }

    /// SIGTERM to the process (dockerd stops its own containerd); after the
    /// grace period, or once it exited, SIGKILL to whatever is left of its
    /// process group (children that outlived it); then reap. Returns the exit
    /// status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.stopped {
            return None;
        }
        let pid = self.pid();
        let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while !exited_unreaped(pid) {
            if Instant::now() > deadline {
                eprintln!(
                    "e2e: {} ignored SIGTERM for {:?}, killing",
                    self.name, self.grace
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(pid, Signal::SIGKILL);
        // SIGKILL is delivered asynchronously: wait (bounded) until the
        // group's other members are gone too, while the unreaped leader
        // still keeps its process group id from being reused.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !process_group_members(pid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = self.child.wait().ok();
        self.stopped = true;
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(LOG_TAIL_LINES));
        }
        self.stop();
    }
}

/// Copies a daemon's stdout into its log and reports the first
/// `listening on URL` line through `tx`.
fn copy_stdout(stdout: impl Read, mut log: File, tx: &mpsc::Sender<String>) {
    let mut sent = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        // One write for the line and its newline: the child's stderr
        // appends to the same file and must not land in between.
        let _ = log.write_all(format!("{line}\n").as_bytes());
        if !sent && let Some(url) = line.trim().strip_prefix("listening on ") {
            let _ = tx.send(url.trim().to_owned());
            sent = true;
        }
    }
}

/// A copy of `cmd` run under `setpriv --pdeathsig TERM` where available, so
/// that the child gets SIGTERM when the thread that spawned it dies.
fn with_parent_death_signal(cmd: &Command) -> Command {
    if have_setpriv() {
        let mut setpriv = Command::new("setpriv");
        setpriv.args(["--pdeathsig", "TERM", "--"]);
        launched_by(setpriv, cmd)
    } else {
        with_settings_of(Command::new(cmd.get_program()), cmd)
    }
}

/// `cmd` run by `launcher`, a program (with its own arguments) that execs
/// the rest of its command line: `launcher… program args…`, with `cmd`'s
/// environment and directory.
pub fn launched_by(mut launcher: Command, cmd: &Command) -> Command {
    launcher.arg(cmd.get_program());
    with_settings_of(launcher, cmd)
}

/// `out` given `cmd`'s arguments, environment and directory.
fn with_settings_of(mut out: Command, cmd: &Command) -> Command {
    out.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => out.env(k, v),
            None => out.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    out
}

/// Running one-shot client commands (skopeo, podman, docker, htpasswd) with a
/// timeout, in their own process group, echoing the command line.
pub trait CommandExt {
    /// Runs to completion (or the timeout, then kills the group and panics)
    /// and returns the output whatever the exit status.
    fn run(&mut self) -> Output;
    /// Like [`CommandExt::run`] with `input` written to stdin.
    fn run_with_stdin(&mut self, input: &[u8]) -> Output;
    /// Like [`CommandExt::run`] with another time limit.
    fn run_for(&mut self, timeout: Duration) -> Output;
    /// Runs and requires success; returns stdout as text. Panics with the
    /// command line, status, stdout and stderr otherwise.
    fn ok(&mut self) -> String;
    /// Runs and requires failure; returns the output (stderr holds the
    /// client's message). Panics if the command succeeded.
    fn fails(&mut self) -> Output;
}

impl CommandExt for Command {
    fn run(&mut self) -> Output {
        run_with_timeout(self, None, command_timeout())
    }

    fn run_with_stdin(&mut self, input: &[u8]) -> Output {
        run_with_timeout(self, Some(input), command_timeout())
    }

    fn run_for(&mut self, timeout: Duration) -> Output {
        run_with_timeout(self, None, timeout)
    }

    fn ok(&mut self) -> String {
        let out = self.run();
        assert!(
            out.status.success(),
            "command failed: {}\n{}",
            display_command(self),
            describe_output(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&mut self) -> Output {
        let out = self.run();
        assert!(
            !out.status.success(),
            "command succeeded but must fail: {}\n{}",
            display_command(self),
            describe_output(&out)
        );
        out
    }
}

/// Status, stdout and stderr of a finished command, for messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_with_timeout(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    let shown = display_command(cmd);
    eprintln!("$ {shown}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{shown}`: {e} (is it installed?)"));
    let pid = child.id();
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).expect("write the command's stdin");
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let started = Instant::now();
    let Ok(out) = rx.recv_timeout(timeout) else {
        signal_group(pid, Signal::SIGKILL);
        let out = rx.recv().ok().and_then(Result::ok);
        panic!(
            "command timed out after {timeout:?}: {shown}\n{}",
            out.as_ref().map(describe_output).unwrap_or_default()
        );
    };
    let out = out.unwrap_or_else(|e| panic!("wait for `{shown}`: {e}"));
    let elapsed = started.elapsed();
    if elapsed > Duration::from_secs(5) {
        eprintln!("e2e: `{shown}` took {elapsed:.1?}");
    }
    out
}
