//! The benchmark's registry client: the same code drives ours and
//! distribution. Blob bodies are streamed from files (monolithic PUT) or sent
//! in bounded chunks (PATCH); nothing larger than one chunk is held in memory.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use e2e::api::with_digest;
use reqwest::{Client, Method, Response, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;

/// OCI manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry at `base` (`http://127.0.0.1:PORT`).
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    http: Client,
    bearer: Option<String>,
}

impl RegistryClient {
    /// A client with a connection pool large enough for the concurrent
    /// phases.
    pub fn new(base: &str) -> Result<RegistryClient> {
        e2e::init_crypto();
        let http = Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(900))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("build the HTTP client")?;
        Ok(RegistryClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
            bearer: None,
        })
    }

    /// The same client sending `Authorization: Bearer <token>` with every
    /// request.
    #[must_use]
    pub fn with_bearer(mut self, token: &str) -> RegistryClient {
        self.bearer = Some(token.to_owned());
        self
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// A request to a path (`/v2/…`) or an absolute URL.
    pub fn request(&self, method: Method, path_or_url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, self.url(path_or_url));
        match &self.bearer {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Starts an upload; returns the absolute upload URL.
    pub async fn start_upload(&self, repo: &str) -> Result<String> {
        let resp = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .header("Content-Length", "0")
            .send()
            .await?;
        let resp = expect_status(resp, StatusCode::ACCEPTED, "POST upload").await?;
        self.location(&resp)
    }

    /// The `Location` header of `resp`, made absolute.
    fn location(&self, resp: &Response) -> Result<String> {
        let loc = resp
            .headers()
            .get("location")
            .context("no Location header")?
            .to_str()
            .context("Location is not ASCII")?;
        Ok(self.url(loc))
    }

    /// Monolithic upload: POST, then one PUT `?digest=` streaming the file.
    pub async fn push_blob_monolithic(&self, repo: &str, file: &Path, digest: &str) -> Result<()> {
        let size = tokio::fs::metadata(file).await?.len();
        let location = self.start_upload(repo).await?;
        let f = tokio::fs::File::open(file).await?;
        let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(f, 1 << 20));
        let resp = self
            .request(Method::PUT, &with_digest(&location, digest))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", size.to_string())
            .body(body)
            .send()
            .await?;
        expect_status(resp, StatusCode::CREATED, "PUT blob").await?;
        Ok(())
    }

    /// Chunked upload: POST, PATCH chunks of `chunk` bytes with
    /// `Content-Range`, then PUT `?digest=` with an empty body.
    pub async fn push_blob_chunked(
        &self,
        repo: &str,
        file: &Path,
        digest: &str,
        chunk: usize,
    ) -> Result<()> {
        let size = tokio::fs::metadata(file).await?.len();
        let mut location = self.start_upload(repo).await?;
        let mut f = tokio::fs::File::open(file).await?;
        f.seek(std::io::SeekFrom::Start(0)).await?;
        let mut offset = 0u64;
        while offset < size {
            let len = chunk.min((size - offset) as usize);
            let mut buf = vec![0u8; len];
            f.read_exact(&mut buf).await?;
            let resp = self
                .request(Method::PATCH, &location)
                .header("Content-Type", "application/octet-stream")
                .header(
                    "Content-Range",
                    format!("{offset}-{}", offset + len as u64 - 1),
                )
                .header("Content-Length", len.to_string())
                .body(Bytes::from(buf))
                .send()
                .await?;
            let resp = expect_status(resp, StatusCode::ACCEPTED, "PATCH chunk").await?;
            location = self.location(&resp)?;
            offset += len as u64;
        }
        let resp = self
            .request(Method::PUT, &with_digest(&location, digest))
            .header("Content-Length", "0")
            .send()
            .await?;
        expect_status(resp, StatusCode::CREATED, "PUT upload completion").await?;
        Ok(())
    }

    /// Uploads small in-memory content: HEAD (as clients do), POST, PUT.
    pub async fn push_small_blob(&self, repo: &str, data: Bytes, digest: &str) -> Result<()> {
        let resp = self
            .request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await?;
        if resp.status() == StatusCode::OK {
            return Ok(());
        }
        let location = self.start_upload(repo).await?;
        let resp = self
            .request(Method::PUT, &with_digest(&location, digest))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", data.len().to_string())
            .body(data)
            .send()
            .await?;
        expect_status(resp, StatusCode::CREATED, "PUT small blob").await?;
        Ok(())
    }

    /// Cross-repository mount of `digest` from `from` into `repo`. Returns
    /// whether the registry mounted it (201) rather than opening an upload.
    pub async fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> Result<bool> {
        let resp = self
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
            )
            .header("Content-Length", "0")
            .send()
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => Ok(false),
            s => bail!("mount {digest} into {repo}: {s}: {}", body_text(resp).await),
        }
    }

    /// PUT a manifest under `reference` (tag or digest).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        manifest: Bytes,
    ) -> Result<()> {
        let resp = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(manifest)
            .send()
            .await?;
        expect_status(resp, StatusCode::CREATED, "PUT manifest").await?;
        Ok(())
    }

    /// Downloads a blob with `curl -o /dev/null` and returns the bytes and
    /// the transfer's seconds, as curl measured them. Downloads are measured
    /// with curl rather than this crate's reqwest client: on these 2-core
    /// machines reqwest's body loop saturates around 2.5 GB/s and would
    /// measure itself, not the server.
    pub async fn pull_blob(&self, repo: &str, digest: &str) -> Result<(u64, f64)> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args([
            "-sS",
            "--fail",
            // distribution on S3 answers a blob GET with a redirect to a
            // presigned URL, which clients follow.
            "--location",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
        ]);
        if let Some(token) = &self.bearer {
            cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
        }
        let out = cmd
            .arg(&url)
            .output()
            .await
            .context("run curl (Debian package curl)")?;
        ensure!(
            out.status.success(),
            "curl GET {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace();
        let bytes: u64 = parts.next().context("curl printed no size")?.parse()?;
        let secs: f64 = parts.next().context("curl printed no time")?.parse()?;
        Ok((bytes, secs))
    }

    /// GET `path` and return the JSON body and the `Link` next URL, if any.
    /// `GET path` as text (a web UI page); an error unless 200.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let resp = self.request(Method::GET, path).send().await?;
        let resp = expect_status(resp, StatusCode::OK, path).await?;
        Ok(resp.text().await?)
    }

    pub async fn get_list(&self, path: &str) -> Result<(serde_json::Value, Option<String>)> {
        let resp = self.request(Method::GET, path).send().await?;
        let resp = expect_status(resp, StatusCode::OK, path).await?;
        let next = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(e2e::api::parse_next_link);
        let body = resp.json().await?;
        Ok((body, next))
    }
}

async fn body_text(resp: Response) -> String {
    resp.text().await.unwrap_or_default()
}

/// Checks the status; on a mismatch the error carries the body (the OCI
/// error JSON).
async fn expect_status(resp: Response, want: StatusCode, what: &str) -> Result<Response> {
    let got = resp.status();
    ensure!(
        got == want,
        "{what}: {got} (want {want}): {}",
        body_text(resp).await
    );
    Ok(resp)
}
