//! A registry host that is not loopback, and nginx in front of our servers.
//!
//! docker treats every registry on `127.0.0.0/8` as insecure: it skips
//! certificate checks there and falls back to plain HTTP, so a TLS test on
//! loopback proves nothing about the CA. [`PrivateNet`] makes the test its own
//! small network instead: a network namespace holding one end of a veth
//! pair, the other end in ours with an address from `10.213.0.0/16`. That
//! address is local to this machine (traffic to it never leaves), and docker
//! sees an ordinary secure registry there.
//!
//! [`Nginx`] runs Debian's nginx with a configuration of the test's own
//! (`daemon off`, every path inside the test's directory).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bins::require_tool;
use crate::process::{CommandExt, Daemon};

/// A network namespace joined to ours by a veth pair; our end's address is
/// [`PrivateNet::host_ip`]. Removed on drop.
///
/// A server can also run inside the namespace ([`PrivateNet::inside`]), at
/// [`Inside::addr`]: its traffic with us then crosses the veth pair, like
/// traffic with another host, and [`PrivateNet::limit_rate`] can make that
/// link slower.
pub struct PrivateNet {
    ip: PathBuf,
    namespace: String,
    link: String,
    peer: String,
    host_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
}

/// Where a command runs inside a [`PrivateNet`]: its namespace and its
/// address there.
#[derive(Debug, Clone)]
pub struct Inside {
    ip: PathBuf,
    namespace: String,
    addr: Ipv4Addr,
}

impl Inside {
    /// The namespace end's address, where a server inside listens.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// `cmd` (program, arguments, environment and directory) run inside the
    /// namespace by `ip netns exec`, which execs it: the process id is the
    /// program's own.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut netns = Command::new(&self.ip);
        netns.args(["netns", "exec", &self.namespace]);
        crate::process::launched_by(netns, cmd)
    }
}

impl PrivateNet {
    /// Creates the namespace and the pair (root only; installs iproute2 if
    /// missing). The /30 subnet is picked from the process id, so that
    /// concurrent test processes do not collide.
    pub fn create() -> PrivateNet {
        let ip = require_tool("ip", "iproute2");
        let pid = std::process::id();
        let namespace = format!("e2e-{pid}");
        let link = format!("e2eh{}", pid % 10_000_000);
        let peer = format!("e2en{}", pid % 10_000_000);
        // 16,384 /30 subnets in 10.213.0.0/16.
        let slot = pid % 16_384;
        let (third, fourth) = ((slot / 64) as u8, ((slot % 64) * 4) as u8);
        let host_ip = Ipv4Addr::new(10, 213, third, fourth + 1);
        let peer_ip = Ipv4Addr::new(10, 213, third, fourth + 2);
        // Leftovers of a killed earlier process with the same pid.
        let _ = Command::new(&ip).args(["link", "del", &link]).output();
        let _ = Command::new(&ip)
            .args(["netns", "del", &namespace])
            .output();
        let net = PrivateNet {
            ip,
            namespace,
            link,
            peer,
            host_ip,
            peer_ip,
        };
        let run = |args: &[&str]| {
            Command::new(&net.ip).args(args).ok();
        };
        run(&["netns", "add", &net.namespace]);
        run(&[
            "link", "add", &net.link, "type", "veth", "peer", "name", &net.peer,
        ]);
        run(&["link", "set", &net.peer, "netns", &net.namespace]);
        run(&["addr", "add", &format!("{host_ip}/30"), "dev", &net.link]);
        run(&["link", "set", &net.link, "up"]);
        let ns = ["netns", "exec", &net.namespace, "ip"];
        let in_ns = |args: &[&str]| {
            Command::new(&net.ip).args(ns).args(args).ok();
        };
        in_ns(&["addr", "add", &format!("{peer_ip}/30"), "dev", &net.peer]);
        in_ns(&["link", "set", &net.peer, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        net
    }

    /// Our end's address: a local, non-loopback address.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// How to run a command inside the namespace, at the other end of the
    /// pair.
    pub fn inside(&self) -> Inside {
        Inside {
            ip: self.ip.clone(),
            namespace: self.namespace.clone(),
            addr: self.peer_ip,
        }
    }

    /// Limits what leaves the namespace towards us to `mbit` megabits per
    /// second (a token bucket on the namespace's end of the pair, `tc`
    /// from iproute2): a server inside then answers over a link of that
    /// speed, as a registry across a network does.
    pub fn limit_rate(&self, mbit: u32) {
        let tc = require_tool("tc", "iproute2");
        // The bucket holds at least one timer tick of traffic (a tick is
        // 4 ms at most), or the link runs slower than asked.
        let burst_kib = (mbit / 8 * 4).max(64);
        let mut cmd = Command::new(&tc);
        cmd.args(["qdisc", "replace", "dev", &self.peer, "root", "tbf"])
            .args(["rate", &format!("{mbit}mbit")])
            .args(["burst", &format!("{burst_kib}kb")])
            .args(["latency", "50ms"]);
        self.inside().wrap(&cmd).ok();
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        let _ = Command::new(&self.ip)
            .args(["link", "del", &self.link])
            .output();
        let _ = Command::new(&self.ip)
            .args(["netns", "del", &self.namespace])
            .output();
    }
}

/// A running nginx (`nginx -p DIR -c nginx.conf`, `daemon off`), stopped on
/// drop.
pub struct Nginx {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `http_block` (the contents of its `http { }`
    /// block) and waits until it has bound every `listen` of it and
    /// `listen` accepts connections.
    pub fn start(http_block: &str, listen: SocketAddr) -> Nginx {
        Nginx::try_start(http_block, listen).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As `start`, but an nginx that exits during startup (a port taken
    /// meanwhile by another program) is an error to retry, not a panic.
    pub fn try_start(http_block: &str, listen: SocketAddr) -> Result<Nginx, String> {
        let nginx = require_tool("nginx", "nginx");
        let dir = crate::temp_dir("nginx");
        let d = dir.path();
        std::fs::create_dir_all(d.join("tmp")).expect("create nginx temp dir");
        let pid_file = d.join("nginx.pid");
        let conf = format!(
            "daemon off;\n\
             user root;\n\
             worker_processes 1;\n\
             pid {pid};\n\
             error_log {log} info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               access_log {access};\n\
               client_body_temp_path {tmp}/body;\n\
               proxy_temp_path {tmp}/proxy;\n\
               fastcgi_temp_path {tmp}/fastcgi;\n\
               uwsgi_temp_path {tmp}/uwsgi;\n\
               scgi_temp_path {tmp}/scgi;\n\
             {http_block}\n\
             }}\n",
            pid = pid_file.display(),
            log = d.join("error.log").display(),
            access = d.join("access.log").display(),
            tmp = d.join("tmp").display(),
        );
        crate::write(&d.join("nginx.conf"), conf);
        // Refuse a bad configuration with nginx's own message.
        Command::new(&nginx)
            .arg("-t")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .ok();
        // `-t` leaves no pid file; the server writes it once every listen
        // socket is bound (while it retries a busy port, the ports bound
        // before it already accept connections).
        let _ = std::fs::remove_file(&pid_file);
        let mut cmd = Command::new(&nginx);
        cmd.arg("-p").arg(d).arg("-c").arg(d.join("nginx.conf"));
        let mut daemon = Daemon::spawn("nginx", &cmd, &d.join("nginx.out"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pid_file.exists()
            || TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err()
        {
            if !daemon.is_running() {
                return Err(format!(
                    "nginx exited during startup:\n{}",
                    std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
                ));
            }
            if Instant::now() >= deadline {
                daemon.fail(&format!(
                    "does not accept connections on {listen} after 30 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Nginx { daemon, dir })
    }

    /// nginx's access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The directory holding nginx's configuration and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The nginx master process.
    pub fn daemon(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}
