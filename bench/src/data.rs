//! The data every server gets identically: large blob files generated from a
//! seed (so each repetition pushes new content), small images, and the seeded
//! catalog / tag-list data set (written once through distribution's API,
//! cached, and copied into each server's root before it starts).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use e2e::digest::sha256;
use rand::{RngCore as _, SeedableRng as _};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::client::{OCI_MANIFEST, RegistryClient};

/// Writes `size` pseudo-random bytes derived from `seed` to `path` and
/// returns their digest. Content is incompressible and differs per seed.
pub fn blob_file(path: &Path, size: u64, seed: u64) -> Result<String> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// A small image: one layer, one config, one manifest (all in memory).
#[derive(Clone)]
pub struct SmallImage {
    /// Layer bytes and digest.
    pub layer: (Bytes, String),
    /// Config bytes and digest.
    pub config: (Bytes, String),
    /// OCI manifest bytes.
    pub manifest: Bytes,
}

impl SmallImage {
    /// A distinct image derived from `seed`, with a `layer_size`-byte layer.
    pub fn new(seed: u64, layer_size: usize) -> SmallImage {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5eed_1a7e);
        let mut layer = vec![0u8; layer_size];
        rng.fill_bytes(&mut layer);
        let layer_digest = sha256(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "bench.seed": seed.to_string() } },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        }))
        .expect("config JSON");
        let config_digest = sha256(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest, "size": layer.len(),
            }],
        }))
        .expect("manifest JSON");
        SmallImage {
            layer: (Bytes::from(layer), layer_digest),
            config: (Bytes::from(config), config_digest),
            manifest: Bytes::from(manifest),
        }
    }

    /// Pushes layer, config and manifest (tagged `tag`) into `repo`.
    pub async fn push(&self, client: &RegistryClient, repo: &str, tag: &str) -> Result<()> {
        client
            .push_small_blob(repo, self.layer.0.clone(), &self.layer.1)
            .await?;
        client
            .push_small_blob(repo, self.config.0.clone(), &self.config.1)
            .await?;
        client
            .put_manifest(repo, tag, OCI_MANIFEST, self.manifest.clone())
            .await
    }
}

/// Sizes of the seeded data set.
#[derive(Debug, Clone, Copy)]
pub struct SeedSpec {
    /// Repositories `seed/r00000…` for the catalog.
    pub repos: usize,
    /// Tags of `seed/many-tags`.
    pub tags: usize,
}

/// Repository whose manifest `GET` and small tag list wrk hammers.
pub const BASE_REPO: &str = "seed/base";
/// Tag of [`BASE_REPO`]'s image.
pub const BASE_TAG: &str = "latest";
/// Number of tags of [`BASE_REPO`] (for the tags-list req/s metric).
pub const BASE_TAGS: usize = 10;
/// Repository with [`SeedSpec::tags`] tags.
pub const MANY_TAGS_REPO: &str = "seed/many-tags";

/// The seeded data set at `cache/seed-<repos>-<tags>`, made once through
/// distribution's API and reused by later runs. Returns the root directory.
pub async fn seeded_root(cache: &Path, spec: SeedSpec, concurrency: usize) -> Result<PathBuf> {
    let root = cache.join(format!("seed-{}-{}", spec.repos, spec.tags));
    let done = root.join("seed.done");
    if done.exists() {
        eprintln!("bench: reusing the seeded data set {}", root.display());
        return Ok(root);
    }
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    eprintln!(
        "bench: seeding {} repositories and {} tags through distribution (once; cached in {})",
        spec.repos,
        spec.tags,
        root.display()
    );
    let server = e2e::Registry::builder()
        .root(root.join("data"))
        .log_level("warn")
        .access_log(false)
        .start_distribution();
    let client = RegistryClient::new(server.url())?;
    let image = SmallImage::new(0, 512);
    image.push(&client, BASE_REPO, BASE_TAG).await?;
    for i in 1..BASE_TAGS {
        client
            .put_manifest(
                BASE_REPO,
                &format!("v{i}"),
                OCI_MANIFEST,
                image.manifest.clone(),
            )
            .await?;
    }
    let started = std::time::Instant::now();
    let image = Arc::new(image);
    parallel(spec.repos, concurrency, {
        let (client, image) = (client.clone(), image.clone());
        move |i| {
            let (client, image) = (client.clone(), image.clone());
            async move {
                let repo = format!("seed/r{i:05}");
                for d in [&image.layer.1, &image.config.1] {
                    if !client.mount_blob(&repo, d, BASE_REPO).await? {
                        let blob = if d == &image.layer.1 {
                            &image.layer.0
                        } else {
                            &image.config.0
                        };
                        client.push_small_blob(&repo, blob.clone(), d).await?;
                    }
                }
                client
                    .put_manifest(&repo, BASE_TAG, OCI_MANIFEST, image.manifest.clone())
                    .await
            }
        }
    })
    .await?;
    for d in [&image.layer, &image.config] {
        client
            .push_small_blob(MANY_TAGS_REPO, d.0.clone(), &d.1)
            .await?;
    }
    parallel(spec.tags, concurrency, {
        let (client, image) = (client.clone(), image.clone());
        move |i| {
            let (client, image) = (client.clone(), image.clone());
            async move {
                client
                    .put_manifest(
                        MANY_TAGS_REPO,
                        &format!("t{i:05}"),
                        OCI_MANIFEST,
                        image.manifest.clone(),
                    )
                    .await
            }
        }
    })
    .await?;
    eprintln!("bench: seeded in {:.1?}", started.elapsed());
    drop(server);
    std::fs::write(&done, format!("{spec:?}\n"))?;
    Ok(root)
}

/// Every file under `dir`, with its path relative to `dir`.
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))
            .with_context(|| format!("read {}", dir.join(&rel).display()))?
        {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// Copies the seeded data set into `dest` (which must not exist).
pub fn copy_seed(seed_root: &Path, dest: &Path) -> Result<()> {
    ensure!(!dest.exists(), "{} already exists", dest.display());
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(seed_root.join("data"))
        .arg(dest)
        .status()?;
    ensure!(status.success(), "cp -a of the seeded data failed");
    Ok(())
}

/// Runs `f(0..n)` with `concurrency` workers; fails on the first error.
pub async fn parallel<F, Fut>(n: usize, concurrency: usize, f: F) -> Result<()>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, f) = (next.clone(), f.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                f(i).await.with_context(|| format!("item {i}"))?;
            }
        });
    }
    while let Some(res) = set.join_next().await {
        res.context("worker task panicked")??;
    }
    Ok(())
}
