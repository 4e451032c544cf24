//! What the benchmark reads from the machine: a process's resident memory
//! (`/proc/PID/status`), the disk's write rate with fsync, and `wrk` runs;
//! and `settle`, which writes dirty pages out between timed runs.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed status line")?
        .parse()?;
    Ok(kb * 1024)
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may
    // itself hold spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second()?)
}

/// The unit of the times in `/proc/PID/stat` (`getconf CLK_TCK`).
fn clock_ticks_per_second() -> Result<f64> {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    if let Some(hz) = HZ.get() {
        return Ok(*hz);
    }
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("run getconf")?;
    let hz: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    ensure!(hz > 0.0, "getconf CLK_TCK printed {hz}");
    Ok(*HZ.get_or_init(|| hz))
}

/// Writes `size` bytes in 1 MiB writes and fsyncs, like
/// `dd bs=1M conv=fsync`; returns bytes per second.
pub fn fsync_write_rate(dir: &Path, size: u64) -> Result<f64> {
    let path = dir.join("fsync-probe.bin");
    let buf: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let started = Instant::now();
    {
        let mut f = std::fs::File::create(&path)?;
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(size as f64 / secs)
}

/// The result of one wrk run.
#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Requests answered with a status other than 2xx/3xx.
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout).
    pub socket_errors: u64,
}

/// Runs `wrk -t2 -c<connections> -d<duration>` against `url` with `headers`.
pub fn wrk(url: &str, connections: u32, duration: Duration, headers: &[&str]) -> Result<WrkResult> {
    wrk_with(url, connections, duration, headers, None)
}

/// [`wrk`], with a Lua `script` (`-s`) when given (e.g. a POST body).
pub fn wrk_with(
    url: &str,
    connections: u32,
    duration: Duration,
    headers: &[&str],
    script: Option<&Path>,
) -> Result<WrkResult> {
    let bin = e2e::bins::require_tool("wrk", "wrk");
    let mut cmd = Command::new(bin);
    cmd.args(["-t2", &format!("-c{connections}")])
        .arg(format!("-d{}s", duration.as_secs().max(1)));
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(url);
    let out = cmd.output().context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rps = None;
    let mut non_2xx = 0;
    let mut socket_errors = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>()?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        }
    }
    let Some(rps) = rps else {
        bail!("no Requests/sec in wrk output:\n{text}")
    };
    Ok(WrkResult {
        rps,
        non_2xx,
        socket_errors,
    })
}

/// Writes dirty pages out (`sync`), so that a timed run that follows does
/// not pay for the writeback of what came before it (a copied data set,
/// the previous transfer; Garage's blocks are files on this disk too).
pub fn settle() {
    let _ = std::process::Command::new("sync").status();
}
