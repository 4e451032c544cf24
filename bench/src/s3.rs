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
