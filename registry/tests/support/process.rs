//! The `registry` binary as a child process on an ephemeral port, and a
//! small HTTP client that pushes and pulls the way registry clients do.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::Daemon;
use registry::oci::Digest;

/// A running registry, in its own process group (its log tail is printed
/// when a test panics); killed when dropped.
pub struct Server {
    pub daemon: Daemon,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.daemon.kill_hard();
    }
}

impl Server {
    /// Starts `registry serve` on 127.0.0.1:0 over `root` with extra env.
    pub fn start(root: &Path, envs: &[(&str, &str)]) -> Server {
        let root_env = root.display().to_string();
        let mut all = vec![
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:0"),
            (
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                root_env.as_str(),
            ),
            ("REGISTRY_LOG_LEVEL", "warn"),
        ];
        all.extend_from_slice(envs);
        Server::spawn(&["serve"], &all, &root.with_extension("log"))
    }

    /// Runs `registry <args>` with `envs`, its output appended to `log`, and
    /// waits for its `listening on` line.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)], log: &Path) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_registry"));
        cmd.args(args).envs(envs.iter().copied());
        let mut daemon = Daemon::spawn("registry", &cmd, log);
        let url = daemon.wait_listening(Duration::from_secs(30));
        Server { daemon, url }
    }

    /// SIGKILL, as a crash.
    pub fn kill_hard(&mut self) {
        self.daemon.kill_hard();
    }
}

/// Where a test's registry keeps its data: a directory, or a bucket of a
/// Garage the test started.
pub enum Store {
    Dir(std::path::PathBuf),
    S3(Box<e2e::garage::Garage>),
}

impl Store {
    /// The `REGISTRY_STORAGE_*` variables that select this store.
    pub fn envs(&self) -> Vec<(String, String)> {
        match self {
            Store::Dir(root) => vec![(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".into(),
                root.display().to_string(),
            )],
            Store::S3(g) => g
                .storage_settings()
                .into_iter()
                .map(|(k, v)| (format!("REGISTRY_STORAGE_S3_{}", k.to_uppercase()), v))
                .collect(),
        }
    }

    /// Starts `registry serve` on 127.0.0.1:0 over this store, with `log`
    /// as its log file and `extra` settings (`REGISTRY_*` pairs).
    pub fn serve(&self, log: &Path, extra: &[(&str, &str)]) -> Server {
        let mut envs = self.envs();
        envs.push(("REGISTRY_HTTP_ADDR".into(), "127.0.0.1:0".into()));
        envs.push(("REGISTRY_LOG_LEVEL".into(), "warn".into()));
        envs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Server::spawn(&["serve"], &envs, log)
    }

    /// Whether the data of blob `d` is in the store (whatever links it).
    pub fn blob_exists(&self, d: &Digest) -> bool {
        match self {
            Store::Dir(root) => super::blob_data_path(root, d).exists(),
            Store::S3(_) => {
                let config = registry::config::Config::from_yaml("", self.envs())
                    .expect("the store's settings");
                registry::storage::open(&config)
                    .expect("open the bucket")
                    .blob_data_exists(d)
                    .expect("look up a blob")
            }
        }
    }

    /// Runs `registry <args>` to completion over this store.
    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        run_registry(&self.envs(), args)
    }
}

/// Runs `registry <args>` to completion with these `REGISTRY_*` settings
/// (a [`Store::envs`], for a thread the store cannot go to).
pub fn run_registry(envs: &[(String, String)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_registry"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .env("REGISTRY_LOG_LEVEL", "warn")
        .output()
        .expect("run registry")
}

/// An image as pushed: config, layers, manifest.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: String,
    pub digest: Digest,
}

impl Image {
    pub fn new(seed: u64, layers: &[Vec<u8>]) -> Image {
        let config =
            format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let layer_digests: Vec<Digest> = layers.iter().map(|l| Digest::sha256_of(l)).collect();
        let descs: Vec<(&Digest, usize)> = layer_digests
            .iter()
            .zip(layers)
            .map(|(d, l)| (d, l.len()))
            .collect();
        let manifest = super::image_manifest(&Digest::sha256_of(&config), config.len(), &descs);
        let digest = Digest::sha256_of(manifest.as_bytes());
        Image {
            config,
            layers: layers.to_vec(),
            manifest,
            digest,
        }
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Vec<u8>> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// A registry client over reqwest.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
}

#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure(e.to_string())
    }
}

impl Client {
    pub fn new(url: &str) -> Client {
        e2e::init_crypto();
        Client {
            http: reqwest::Client::new(),
            url: url.to_owned(),
        }
    }

    fn abs(&self, location: &str) -> String {
        if location.starts_with("http") {
            location.to_owned()
        } else {
            format!("{}{location}", self.url)
        }
    }

    /// Uploads a blob unless the repository has it; `chunked` uses
    /// POST + PATCH + PUT, else a single POST with the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8], chunked: bool) -> Result<(), Failure> {
        let d = Digest::sha256_of(data);
        let head = self
            .http
            .head(format!("{}/v2/{repo}/blobs/{d}", self.url))
            .send()
            .await?;
        if head.status() == 200 {
            return Ok(());
        }
        if !chunked {
            let r = self
                .http
                .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", self.url))
                .body(data.to_vec())
                .send()
                .await?;
            return if r.status() == 201 {
                Ok(())
            } else {
                Err(Failure(format!("POST blob: {}", r.status())))
            };
        }
        let r = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.url))
            .send()
            .await?;
        if r.status() != 202 {
            return Err(Failure(format!("start upload: {}", r.status())));
        }
        let mut loc = self.abs(r.headers()["location"].to_str()?);
        let mid = data.len() / 2;
        for (start, chunk) in [(0, &data[..mid]), (mid, &data[mid..])] {
            if chunk.is_empty() {
                continue;
            }
            let r = self
                .http
                .patch(&loc)
                .header(
                    "content-range",
                    format!("{start}-{}", start + chunk.len() - 1),
                )
                .body(chunk.to_vec())
                .send()
                .await?;
            if r.status() != 202 {
                return Err(Failure(format!("PATCH: {}", r.status())));
            }
            loc = self.abs(r.headers()["location"].to_str()?);
        }
        let r = self
            .http
            .put(e2e::api::with_digest(&loc, &d.to_string()))
            .send()
            .await?;
        if r.status() == 201 {
            Ok(())
        } else {
            Err(Failure(format!("PUT blob: {}", r.status())))
        }
    }

    pub async fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        image: &Image,
    ) -> Result<reqwest::StatusCode, Failure> {
        let r = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.url))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(image.manifest.clone())
            .send()
            .await?;
        Ok(r.status())
    }

    /// Pushes the image's blobs then its manifest; the manifest's status.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        image: &Image,
        chunked: bool,
    ) -> Result<reqwest::StatusCode, Failure> {
        for b in image.blobs() {
            self.push_blob(repo, b, chunked).await?;
        }
        self.push_manifest(repo, tag, image).await
    }

    /// Pulls `repo:reference` and checks every digest; returns the manifest
    /// digest.
    pub async fn pull_verified(&self, repo: &str, reference: &str) -> Result<Digest, Failure> {
        let r = self
            .http
            .get(format!("{}/v2/{repo}/manifests/{reference}", self.url))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await?;
        if r.status() != 200 {
            return Err(Failure(format!(
                "GET manifest {repo}:{reference}: {}",
                r.status()
            )));
        }
        let header = r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = r.bytes().await?;
        let digest = Digest::sha256_of(&body);
        if header.as_deref() != Some(digest.to_string().as_str()) {
            return Err(Failure(format!(
                "{repo}:{reference}: digest header {header:?} != content {digest}"
            )));
        }
        let m: serde_json::Value = serde_json::from_slice(&body)?;
        let mut wanted = vec![
            m["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ];
        for l in m["layers"].as_array().into_iter().flatten() {
            wanted.push(l["digest"].as_str().unwrap_or_default().to_owned());
        }
        for d in wanted {
            let r = self
                .http
                .get(format!("{}/v2/{repo}/blobs/{d}", self.url))
                .send()
                .await?;
            if r.status() != 200 {
                return Err(Failure(format!("{repo}: blob {d}: {}", r.status())));
            }
            let got = Digest::sha256_of(&r.bytes().await?);
            if got.to_string() != d {
                return Err(Failure(format!("{repo}: blob {d} has content {got}")));
            }
        }
        Ok(digest)
    }
}
