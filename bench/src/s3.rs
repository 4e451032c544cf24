//! The bench's own access to the Garage of a `--s3` run: copying a data set
//! written to disk into the bucket under a server's root prefix (the seeded
//! catalog and tag lists, the GC data set), and counting what lies under a
//! prefix afterwards.

use std::path::Path;

use anyhow::{Context as _, Result};
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore as _, ObjectStoreExt as _};

/// Uploads in flight at once.
const PARALLEL: usize = 64;

/// A client for the run's bucket.
pub fn store(g: &e2e::garage::Garage) -> Result<AmazonS3> {
    AmazonS3Builder::new()
        .with_endpoint(&g.endpoint)
        .with_allow_http(true)
        .with_region(e2e::garage::REGION)
        .with_bucket_name(&g.bucket)
        .with_access_key_id(&g.access_key)
        .with_secret_access_key(&g.secret_key)
        .with_virtual_hosted_style_request(false)
        .with_unsigned_payload(true)
        .build()
        .context("an S3 client for Garage")
}

/// Copies the tree at `dir` into the bucket under `prefix` (a registry's
/// `rootdirectory` without slashes); returns the number of objects.
pub async fn upload_tree(g: &e2e::garage::Garage, dir: &Path, prefix: &str) -> Result<usize> {
    let store = store(g)?;
    let files = crate::data::files_under(dir)?;
    let n = files.len();
    futures_util::stream::iter(files)
        .map(|rel| {
            let store = &store;
            async move {
                let data = tokio::fs::read(dir.join(&rel)).await?;
                let key = Key::from(format!("{prefix}/{}", rel.to_string_lossy()));
                store
                    .put(&key, data.into())
                    .await
                    .with_context(|| format!("upload {key}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await?;
    Ok(n)
}

/// How many objects under `prefix` have keys ending in `suffix`.
pub async fn count(g: &e2e::garage::Garage, prefix: &str, suffix: &str) -> Result<usize> {
    let store = store(g)?;
    let key = Key::from(prefix);
    let mut n = 0;
    let mut listing = store.list(Some(&key));
    while let Some(o) = listing.next().await {
        if o.context("list the bucket")?
            .location
            .as_ref()
            .ends_with(suffix)
        {
            n += 1;
        }
    }
    Ok(n)
}

/// Garage itself as a contender in the blob rows: what the same kind of
/// client gets from the engine directly, measured in the same repetitions
/// as the registries (so that a slower phase of the machine or of Garage
/// weighs on both sides of a ratio alike).
pub struct Engine {
    store: AmazonS3,
    url: String,
    region_service: String,
    user: String,
}

impl Engine {
    pub fn new(g: &e2e::garage::Garage) -> Result<Engine> {
        Ok(Engine {
            store: store(g)?,
            url: format!("{}/{}/engine/blob", g.endpoint, g.bucket),
            region_service: format!("aws:amz:{}:s3", e2e::garage::REGION),
            user: format!("{}:{}", g.access_key, g.secret_key),
        })
    }

    /// curl with SigV4 on the engine's object; returns curl's seconds.
    async fn curl(&self, extra: &[&str]) -> Result<f64> {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total}"])
            .args(["--aws-sigv4", &self.region_service, "--user", &self.user])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(extra)
            .arg(&self.url)
            .output()
            .await
            .context("run curl")?;
        anyhow::ensure!(
            out.status.success(),
            "curl {extra:?} {}: {}",
            self.url,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }

    /// One PUT of `file`, as a monolithic blob push sends it.
    pub async fn put(&self, file: &Path) -> Result<f64> {
        let path = file.to_str().context("a blob path in UTF-8")?;
        self.curl(&["-T", path]).await
    }

    /// One GET of what `put` stored.
    pub async fn get(&self) -> Result<f64> {
        self.curl(&[]).await
    }

    /// A multipart upload of `file` in parts of `chunk` bytes sent one
    /// after the other, each read into memory first: what a chunked blob
    /// push (one PATCH at a time) amounts to against the engine itself.
    pub async fn put_in_parts(&self, file: &Path, chunk: usize) -> Result<f64> {
        use object_store::multipart::MultipartStore as _;
        use tokio::io::AsyncReadExt as _;
        let key = Key::from("engine/blob-in-parts");
        let size = tokio::fs::metadata(file).await?.len();
        let mut f = tokio::fs::File::open(file).await?;
        let started = std::time::Instant::now();
        let id = self.store.create_multipart(&key).await?;
        let mut parts = Vec::new();
        let mut offset = 0u64;
        while offset < size {
            let len = usize::try_from(size - offset)
                .unwrap_or(usize::MAX)
                .min(chunk);
            let mut buf = vec![0u8; len];
            f.read_exact(&mut buf).await?;
            parts.push(
                self.store
                    .put_part(&key, &id, parts.len(), bytes::Bytes::from(buf).into())
                    .await
                    .context("upload a part to Garage")?,
            );
            offset += len as u64;
        }
        self.store
            .complete_multipart(&key, &id, parts)
            .await
            .context("complete a multipart upload on Garage")?;
        Ok(started.elapsed().as_secs_f64())
    }
}
