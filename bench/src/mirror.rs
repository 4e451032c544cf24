//! The pull-through cache (issue 15): one layer of `plan.blob_size` in an
//! upstream (distribution 2.8 on a directory), pulled with curl directly
//! from it and through a mirror of it (`REGISTRY_PROXY_REMOTEURL`) that
//! has not cached it yet — ours and distribution's proxy mode, one after the
//! other, each on a fresh root for every repetition. The target: ours runs
//! at 80% or more of the direct pull.
//!
//! Every process runs on this machine, so the row's note also gives the
//! CPU time the upstream and each mirror spend per pull: a mirror receives,
//! writes and sends every byte, and with two cores the upstream, the mirror
//! and curl share them.

use std::path::Path;

use anyhow::{Result, ensure};

use crate::client::RegistryClient;
use crate::data;
use crate::report::{Better, Figure, Row, Unit};
use crate::sys::cpu_seconds;
use crate::{Args, Plan, median, order, registry_builder, start_registry};

const REPO: &str = "lib/big";

/// The row: the uncached pull's rate through each mirror, with the direct
/// pull's beside it.
pub async fn row(args: &Args, plan: &Plan, run_dir: &Path) -> Result<Row> {
    let upstream = registry_builder(&run_dir.join("mirror-upstream")).start_distribution();
    let up = RegistryClient::new(upstream.url())?;
    let file = run_dir.join("mirror-layer.bin");
    let digest = data::blob_file(&file, plan.blob_size, 15)?;
    up.push_blob_monolithic(REPO, &file, &digest).await?;
    let _ = std::fs::remove_file(&file);
    eprintln!(
        "bench: mirror: {} MiB layer in the upstream at {}",
        plan.blob_size >> 20,
        upstream.url()
    );

    let mirrors: Vec<bool> = args.servers.iter().map(|s| s == "ours").collect();
    let mut direct = Vec::new();
    let mut direct_cpu = Vec::new();
    let mut through: Vec<Vec<f64>> = vec![Vec::new(); mirrors.len()];
    // Per mirror: (upstream's, mirror's) CPU seconds of each pull.
    let mut cpu: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); mirrors.len()];
    for rep in 0..plan.reps.max(1) {
        let before = cpu_seconds(upstream.pid())?;
        let (bytes, secs) = up.pull_blob(REPO, &digest).await?;
        ensure!(bytes == plan.blob_size, "direct pull: {bytes} bytes");
        direct.push(bytes as f64 / secs);
        direct_cpu.push(cpu_seconds(upstream.pid())? - before);
        for i in order(mirrors.len(), rep) {
            let root = run_dir.join(format!("mirror-{i}-{rep}"));
            let mirror = start_registry(
                args,
                mirrors[i],
                registry_builder(&root).env("REGISTRY_PROXY_REMOTEURL", upstream.url()),
            );
            let client = RegistryClient::new(mirror.url())?;
            let before = (cpu_seconds(upstream.pid())?, cpu_seconds(mirror.pid())?);
            let (bytes, secs) = client.pull_blob(REPO, &digest).await?;
            cpu[i].0.push(cpu_seconds(upstream.pid())? - before.0);
            cpu[i].1.push(cpu_seconds(mirror.pid())? - before.1);
            ensure!(
                bytes == plan.blob_size,
                "pull through a mirror: {bytes} bytes"
            );
            through[i].push(bytes as f64 / secs);
            drop(mirror);
            let _ = std::fs::remove_dir_all(&root);
        }
    }
    let direct = median(direct);
    let cpu_note: Vec<String> = cpu
        .into_iter()
        .zip(&mirrors)
        .map(|((upstream, mirror), ours)| {
            format!(
                "{} mirror {:.2} s + upstream {:.2} s",
                if *ours { "ours" } else { "distribution's" },
                median(mirror),
                median(upstream)
            )
        })
        .collect();
    let mut row = Row::new(
        &format!(
            "pull through a mirror, uncached {} MiB layer",
            plan.blob_size >> 20
        ),
        Unit::BytesPerSec,
        Better::Higher,
        None,
    )
    .with_note(format!(
        "direct pull from the upstream (distribution, same curl): {:.1} MB/s, \
         upstream CPU {:.2} s; CPU per pull through a mirror (median; {} cores \
         for upstream, mirror and curl): {}",
        direct / 1e6,
        median(direct_cpu),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cpu_note.join(", ")
    ));
    for (i, rates) in through.into_iter().enumerate() {
        let rate = median(rates);
        let figure: Figure = Ok(rate);
        if mirrors[i] {
            row.require.push((
                format!(
                    "ours ≥ 80% of the direct pull ({:.0}%)",
                    100.0 * rate / direct
                ),
                rate >= 0.8 * direct,
            ));
            row.ours = Some(figure);
        } else {
            row.dist = Some(figure);
        }
    }
    Ok(row)
}
