//! Garbage collection at scale: our `registry gc` against distribution's
//! `registry garbage-collect` on identical copies of one data set — 10,000
//! 1 KiB blobs shared out over 2,000 images in 100 repositories, every
//! fifth image deleted — on disk, or in the run's Garage bucket with
//! `--s3` (where distribution#1950 reports 13 hours for 700 GB). Both run
//! as the offline commands, each timed from start to exit with its peak
//! memory; the row fails unless ours deleted exactly the blobs only the
//! deleted images referenced.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use rand::{RngCore as _, SeedableRng as _};

use crate::report::{Better, Row, Unit};
use crate::sys;

const V2: &str = "docker/registry/v2";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Repositories the images are spread over.
const REPOSITORIES: usize = 100;

/// Sizes of the data set.
#[derive(Debug, Clone, Copy)]
pub struct GcSpec {
    pub blobs: usize,
    pub manifests: usize,
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))
}

/// Stores `data` as a blob under `root`; returns its digest.
fn blob(root: &Path, data: &[u8]) -> Result<String> {
    let digest = e2e::digest::sha256(data);
    let hex = &digest["sha256:".len()..];
    write(
        &root.join(format!("{V2}/blobs/sha256/{}/{hex}/data", &hex[..2])),
        data,
    )?;
    Ok(digest)
}

fn link(root: &Path, rel: &str, digest: &str) -> Result<()> {
    write(&root.join(rel), digest.as_bytes())
}

/// Writes the data set under `root` in distribution's layout: every image
/// has a config and layers of its own, links to them, and a tag; a deleted
/// image keeps its blobs and layer links but loses its revision and tag
/// (what a manifest delete leaves). Returns the number of blobs only the
/// deleted images reference (their configs, layers and manifests).
pub fn seed(root: &Path, spec: GcSpec) -> Result<usize> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let per = (spec.blobs / spec.manifests).max(1);
    let mut digests = Vec::with_capacity(spec.blobs);
    let mut content = vec![0u8; 1024];
    for _ in 0..spec.blobs {
        rng.fill_bytes(&mut content);
        digests.push(blob(root, &content)?);
    }
    let mut doomed: HashSet<String> = HashSet::new();
    for i in 0..spec.manifests {
        let repo = format!("{V2}/repositories/gc/r{}", i % REPOSITORIES);
        let refs = &digests[(i * per).min(spec.blobs)..((i + 1) * per).min(spec.blobs)];
        let Some((config, layers)) = refs.split_first() else {
            break;
        };
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|d| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d, "size": 1024,
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config, "size": 1024},
            "layers": layers,
        }))?;
        let md = blob(root, &body)?;
        for d in refs {
            link(root, &format!("{repo}/_layers/sha256/{}/link", &d[7..]), d)?;
        }
        if i % 5 == 0 {
            doomed.extend(refs.iter().cloned());
            doomed.insert(md);
            continue;
        }
        let hex = &md[7..];
        link(
            root,
            &format!("{repo}/_manifests/revisions/sha256/{hex}/link"),
            &md,
        )?;
        link(
            root,
            &format!("{repo}/_manifests/tags/t{i}/current/link"),
            &md,
        )?;
        link(
            root,
            &format!("{repo}/_manifests/tags/t{i}/index/sha256/{hex}/link"),
            &md,
        )?;
    }
    Ok(doomed.len())
}

/// Runs `cmd` to its end; its wall time and peak resident memory (read
/// from `/proc` while it runs). Its output goes to `log`.
fn run(mut cmd: Command, log: &Path) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let out = std::fs::File::create(log)?;
    let mut child = cmd
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("start {cmd:?}"))?;
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Ok(hwm) = sys::proc_status_kb(child.id(), "VmHWM") {
            peak = peak.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    if !status.success() {
        let err = std::fs::read_to_string(log).unwrap_or_default();
        anyhow::bail!("{cmd:?} failed ({status}): {}", err.trim());
    }
    Ok((elapsed, peak))
}

/// Blobs left on disk under `root`.
fn count_on_disk(root: &Path) -> Result<usize> {
    let files = crate::data::files_under(&root.join(V2).join("blobs"))?;
    Ok(files
        .iter()
        .filter(|f| f.file_name() == Some("data".as_ref()))
        .count())
}

/// The GC rows: time and peak memory, ours against distribution.
pub async fn rows(
    spec: GcSpec,
    ours_bin: &Path,
    run_dir: &Path,
    garage: Option<&e2e::garage::Garage>,
) -> Result<Vec<Row>> {
    // `copy_seed` copies `<seed>/data`.
    let seed_root = run_dir.join("gc-seed");
    let seed_data = seed_root.join("data");
    let doomed = seed(&seed_data, spec)?;
    let total = spec.blobs + spec.manifests;
    eprintln!("bench: gc data set: {total} blobs, {doomed} referenced only by deleted images");
    let mut results = Vec::new();
    for (name, ours) in [("ours", true), ("distribution", false)] {
        let root = run_dir.join(format!("gc-{name}"));
        let prefix = format!("gc-{name}");
        let mut builder = e2e::Registry::builder()
            .root(&root)
            .log_level("info")
            .delete_enabled(true);
        match garage {
            Some(g) => {
                let n = crate::s3::upload_tree(g, &seed_data, &prefix).await?;
                eprintln!("bench: gc data set uploaded for {name}: {n} objects");
                builder = builder.s3(g, &format!("/{prefix}"));
            }
            None => crate::data::copy_seed(&seed_root, &root)?,
        }
        let config = run_dir.join(format!("gc-{name}.yml"));
        std::fs::write(&config, builder.config_yaml("127.0.0.1:0", &root))?;
        let cmd = if ours {
            let mut c = Command::new(ours_bin);
            c.args(["gc", "--grace", "0s", "--config"]).arg(&config);
            c
        } else {
            let mut c = Command::new("docker-registry");
            c.arg("garbage-collect").arg(&config);
            // See e2e's start_distribution: its AWS SDK panics on a CA bundle.
            c.env_remove("AWS_CA_BUNDLE");
            c
        };
        let log = run_dir.join(format!("gc-{name}.log"));
        // The copy of the data set is written out first: neither collector
        // pays for the writeback of the files it was just given.
        crate::sys::settle();
        let (elapsed, peak) = {
            let log = log.clone();
            tokio::task::spawn_blocking(move || run(cmd, &log)).await??
        };
        if ours {
            // Our report: what it scanned and deleted, and its own timing.
            eprint!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        let left = match garage {
            Some(g) => crate::s3::count(g, &format!("{prefix}/{V2}/blobs"), "/data").await?,
            None => count_on_disk(&root)?,
        };
        eprintln!(
            "bench: gc {name}: {:.2} s, peak {} MiB, deleted {} blobs",
            elapsed.as_secs_f64(),
            peak >> 20,
            total - left
        );
        results.push((elapsed, peak, total - left));
    }
    let [
        (ours_t, ours_mem, ours_deleted),
        (dist_t, dist_mem, dist_deleted),
    ] = results[..]
    else {
        anyhow::bail!("gc ran {} times", results.len());
    };
    let exact = ours_deleted == doomed;
    let mut time = Row::new(
        &format!(
            "GC of {total} blobs / {} manifests{}",
            spec.manifests,
            if garage.is_some() { " on S3" } else { "" }
        ),
        Unit::Seconds,
        Better::Lower,
        Some(0.2),
    )
    .with_note(format!(
        "deleted: ours {ours_deleted}, distribution {dist_deleted}, expected {doomed}"
    ));
    time.require.push((
        "ours deletes exactly the blobs only deleted images reference".into(),
        exact,
    ));
    time.ours = Some(Ok(ours_t.as_secs_f64()));
    time.dist = Some(Ok(dist_t.as_secs_f64()));
    let mut mem = Row::new("GC peak memory", Unit::Bytes, Better::Lower, Some(1.0));
    mem.ours = Some(Ok(ours_mem as f64));
    mem.dist = Some(Ok(dist_mem as f64));
    ensure!(total >= ours_deleted, "more blobs deleted than seeded");
    Ok(vec![time, mem])
}
