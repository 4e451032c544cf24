//! The pull-through cache (issue 15): one layer of `plan.blob_size` in an
//! upstream (distribution 2.8 on a directory), pulled with curl directly
//! from it and through a mirror of it (`REGISTRY_PROXY_REMOTEURL`) that
//! has not cached it yet — ours and distribution's proxy mode, one after the
//! other, each on a fresh root for every repetition. The target: ours runs
//! at 80% or more of the direct pull.

use std::path::Path;

use anyhow::{Result, ensure};

use crate::client::RegistryClient;
use crate::data;
use crate::report::{Better, Figure, Row, Unit};
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
    let mut through: Vec<Vec<f64>> = vec![Vec::new(); mirrors.len()];
    for rep in 0..plan.reps.max(1) {
        let (bytes, secs) = up.pull_blob(REPO, &digest).await?;
        ensure!(bytes == plan.blob_size, "direct pull: {bytes} bytes");
        direct.push(bytes as f64 / secs);
        for i in order(mirrors.len(), rep) {
            let root = run_dir.join(format!("mirror-{i}-{rep}"));
            let mirror = start_registry(
                args,
                mirrors[i],
                registry_builder(&root).env("REGISTRY_PROXY_REMOTEURL", upstream.url()),
            );
            let client = RegistryClient::new(mirror.url())?;
            let (bytes, secs) = client.pull_blob(REPO, &digest).await?;
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
        "direct pull from the upstream (distribution, same curl): {:.1} MB/s",
        direct / 1e6
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
