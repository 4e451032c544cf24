//! The pull-through cache (issue 15): one layer of `plan.blob_size` in an
//! upstream (distribution 2.8 on a directory), pulled with curl directly
//! from it and through a mirror of it (`REGISTRY_PROXY_REMOTEURL`) that
//! has not cached it yet — ours and distribution's proxy mode, and nginx's
//! `proxy_cache` as a yardstick, one after the other, each on a fresh root
//! for every repetition. The target: ours runs at 80% or more of the
//! direct pull.
//!
//! Two rows, two places of the upstream:
//! - on 127.0.0.1. Every byte then costs CPU only, and the upstream, the
//!   mirror and curl share this machine's cores: a mirror receives, writes
//!   and re-sends every byte, so the row is bound by CPU. Its note gives
//!   the CPU seconds of each process, and nginx relaying without storing
//!   (`proxy_buffering` to memory, no file) as the cost of the relay alone.
//! - in a network namespace behind a veth link limited to [`LINK_MBIT`]
//!   (`tc` token bucket on the upstream's side), as an upstream across a
//!   network is: the row shows whether the mirror streams the blob while
//!   it stores it, or makes the first client wait.

use std::path::Path;

use anyhow::{Result, ensure};
use e2e::proxy::{Nginx, PrivateNet};

use crate::client::RegistryClient;
use crate::data;
use crate::report::{Better, Figure, Row, Unit};
use crate::sys::cpu_seconds;
use crate::{Args, Plan, median, order, registry_builder, start_registry};

const REPO: &str = "lib/big";

/// The speed of the upstream's link in the second row, in Mbit/s.
pub const LINK_MBIT: u32 = 1000;

/// What serves the pull through a mirror.
#[derive(Clone, Copy, PartialEq)]
enum Mirror {
    Ours,
    Distribution,
    /// nginx `proxy_cache`: streams to the client while it writes the
    /// cache file.
    NginxCache,
    /// nginx relaying through memory buffers, storing nothing.
    NginxRelay,
}

impl Mirror {
    fn name(self) -> &'static str {
        match self {
            Mirror::Ours => "ours",
            Mirror::Distribution => "distribution's",
            Mirror::NginxCache => "nginx proxy_cache",
            Mirror::NginxRelay => "nginx relay (stores nothing)",
        }
    }
}

/// A running mirror and the processes whose CPU time it spends.
enum Running {
    Registry(Box<e2e::Registry>),
    Nginx(Nginx),
}

impl Running {
    fn cpu(&mut self) -> Result<f64> {
        match self {
            Running::Registry(r) => cpu_seconds(r.pid()),
            Running::Nginx(n) => e2e::process::process_group_members(n.daemon().pid())
                .into_iter()
                .map(cpu_seconds)
                .sum(),
        }
    }
}

/// Both rows. The layer is generated and pushed once; each row's upstream
/// serves it from the same root.
pub async fn rows(args: &Args, plan: &Plan, run_dir: &Path) -> Result<Vec<Row>> {
    let root = run_dir.join("mirror-upstream");
    let file = run_dir.join("mirror-layer.bin");
    let digest = data::blob_file(&file, plan.blob_size, 15)?;
    let seeding = registry_builder(&root).start_distribution();
    RegistryClient::new(seeding.url())?
        .push_blob_monolithic(REPO, &file, &digest)
        .await?;
    drop(seeding);
    let _ = std::fs::remove_file(&file);
    Ok(vec![
        row(args, plan, run_dir, &root, &digest, None).await?,
        row(args, plan, run_dir, &root, &digest, Some(LINK_MBIT)).await?,
    ])
}

/// One row: the uncached pull's rate through each mirror, with the direct
/// pull's beside it; the upstream (serving `root`, which holds the layer)
/// on 127.0.0.1 (`link` `None`) or behind a link of `link` Mbit/s.
async fn row(
    args: &Args,
    plan: &Plan,
    run_dir: &Path,
    root: &Path,
    digest: &str,
    link: Option<u32>,
) -> Result<Row> {
    let net = link.map(|mbit| {
        let net = PrivateNet::create();
        net.limit_rate(mbit);
        net
    });
    let tag = link.map_or("loopback".to_owned(), |m| format!("link-{m}"));
    let mut builder = registry_builder(root);
    if let Some(net) = &net {
        builder = builder.inside(net);
    }
    let upstream = builder.start_distribution();
    let up = RegistryClient::new(upstream.url())?;
    eprintln!(
        "bench: mirror: {} MiB layer in the upstream at {} ({tag})",
        plan.blob_size >> 20,
        upstream.url()
    );

    let mut mirrors: Vec<Mirror> = args
        .servers
        .iter()
        .map(|s| {
            if s == "ours" {
                Mirror::Ours
            } else {
                Mirror::Distribution
            }
        })
        .collect();
    mirrors.push(Mirror::NginxCache);
    if link.is_none() {
        mirrors.push(Mirror::NginxRelay);
    }
    let mut direct = Vec::new();
    let mut direct_cpu = Vec::new();
    let mut through: Vec<Vec<f64>> = vec![Vec::new(); mirrors.len()];
    // Per mirror: (upstream's, mirror's) CPU seconds of each pull.
    let mut cpu: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); mirrors.len()];
    for rep in 0..plan.reps.max(1) {
        let before = cpu_seconds(upstream.pid())?;
        let (bytes, secs) = up.pull_blob(REPO, digest).await?;
        ensure!(bytes == plan.blob_size, "direct pull: {bytes} bytes");
        direct.push(bytes as f64 / secs);
        direct_cpu.push(cpu_seconds(upstream.pid())? - before);
        for i in order(mirrors.len(), rep) {
            let root = run_dir.join(format!("mirror-{tag}-{i}-{rep}"));
            let (mut mirror, url) = start_mirror(args, mirrors[i], &root, upstream.url());
            let client = RegistryClient::new(&url)?;
            let before = (cpu_seconds(upstream.pid())?, mirror.cpu()?);
            let (bytes, secs) = client.pull_blob(REPO, digest).await?;
            cpu[i].0.push(cpu_seconds(upstream.pid())? - before.0);
            cpu[i].1.push(mirror.cpu()? - before.1);
            ensure!(
                bytes == plan.blob_size,
                "pull through {}: {bytes} bytes",
                mirrors[i].name()
            );
            through[i].push(bytes as f64 / secs);
            drop(mirror);
            let _ = std::fs::remove_dir_all(&root);
        }
    }
    drop(upstream);
    let direct = median(direct);
    let rates: Vec<f64> = through.into_iter().map(median).collect();
    let per_mirror: Vec<String> = mirrors
        .iter()
        .zip(&rates)
        .zip(cpu)
        .map(|((m, rate), (upstream, mirror))| {
            format!(
                "{} {:.1} MB/s ({:.0}%), CPU {:.2} s + upstream {:.2} s",
                m.name(),
                rate / 1e6,
                100.0 * rate / direct,
                median(mirror),
                median(upstream)
            )
        })
        .collect();
    let (place, why) = match link {
        None => (
            "upstream on 127.0.0.1".to_owned(),
            format!(
                "bound by CPU: {} cores for upstream, mirror and curl",
                std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
            ),
        ),
        Some(mbit) => (
            format!("upstream behind a {mbit} Mbit/s link"),
            "veth pair to a network namespace, tc token bucket".to_owned(),
        ),
    };
    let mut row = Row::new(
        &format!(
            "pull through a mirror, uncached {} MiB layer, {place}",
            plan.blob_size >> 20
        ),
        Unit::BytesPerSec,
        Better::Higher,
        None,
    )
    .with_note(format!(
        "{why}; direct pull from the upstream (distribution, same curl): {:.1} MB/s, \
         upstream CPU {:.2} s; through each mirror (median of {}): {}",
        direct / 1e6,
        median(direct_cpu),
        plan.reps.max(1),
        per_mirror.join("; ")
    ));
    for (mirror, rate) in mirrors.iter().zip(rates) {
        let figure: Figure = Ok(rate);
        match mirror {
            Mirror::Ours => {
                row.require.push((
                    format!(
                        "ours ≥ 80% of the direct pull ({:.0}%)",
                        100.0 * rate / direct
                    ),
                    rate >= 0.8 * direct,
                ));
                row.ours = Some(figure);
            }
            Mirror::Distribution => row.dist = Some(figure),
            Mirror::NginxCache | Mirror::NginxRelay => {}
        }
    }
    Ok(row)
}

/// Starts `mirror` of `upstream` on a fresh `root`; returns it and its URL.
fn start_mirror(args: &Args, mirror: Mirror, root: &Path, upstream: &str) -> (Running, String) {
    let registry = |ours: bool| {
        let r = start_registry(
            args,
            ours,
            registry_builder(root).env("REGISTRY_PROXY_REMOTEURL", upstream),
        );
        let url = r.url().to_owned();
        (Running::Registry(Box::new(r)), url)
    };
    match mirror {
        Mirror::Ours => registry(true),
        Mirror::Distribution => registry(false),
        Mirror::NginxCache | Mirror::NginxRelay => {
            let [port] = e2e::bins::free_ports();
            let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let upstream = upstream.trim_start_matches("http://");
            let store = if mirror == Mirror::NginxCache {
                "proxy_cache mirror; proxy_cache_valid 200 1h; proxy_max_temp_file_size 4096m;"
            } else {
                "proxy_buffer_size 1m; proxy_buffers 16 1m; proxy_busy_buffers_size 8m; \
                 proxy_max_temp_file_size 0;"
            };
            let http = format!(
                "proxy_cache_path {cache} levels=1:2 keys_zone=mirror:10m max_size=4g \
                 use_temp_path=off;\n\
                 upstream up {{ server {upstream}; keepalive 4; }}\n\
                 server {{ listen {listen}; location / {{ proxy_pass http://up; \
                 proxy_http_version 1.1; proxy_set_header Connection \"\"; {store} }} }}",
                cache = root.join("cache").display(),
            );
            std::fs::create_dir_all(root.join("cache")).expect("create nginx's cache dir");
            (
                Running::Nginx(Nginx::start(&http, listen)),
                format!("http://{listen}"),
            )
        }
    }
}
