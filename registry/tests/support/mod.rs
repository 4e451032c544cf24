//! `TestApp`: the registry's router over a temporary storage root, driven
//! in-process with `tower::ServiceExt::oneshot`, plus helpers that push
//! blobs and manifests the way clients do.

#![allow(dead_code)]

pub mod process;

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use registry::config::Config;
use registry::oci::Digest;
use tower::ServiceExt;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A storage over the filesystem root `root`, as the offline commands open
/// it.
pub fn offline_storage(root: &Path) -> registry::storage::Storage {
    let backend = registry::storage::backend::fs::FsBackend::new(root);
    registry::storage::Storage::new(std::sync::Arc::new(backend))
}

pub struct TestApp {
    pub dir: tempfile::TempDir,
    root: PathBuf,
    pub app: Router,
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The OCI error code of an error response, checking its shape.
    pub fn error_code(&self) -> String {
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "error without JSON content type: {self:?}"
        );
        let v = self.json();
        let code = v["errors"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {v}"));
        assert!(
            v["errors"][0]["message"].is_string(),
            "no error message in {v}"
        );
        code.to_owned()
    }

    /// Asserts status and OCI error code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{self:?} body {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.error_code(), code);
    }
}

impl TestApp {
    /// A registry with deletes enabled and no auth.
    pub async fn new() -> TestApp {
        TestApp::with_config("storage:\n  delete:\n    enabled: true\n").await
    }

    /// A registry from a YAML configuration (the storage root is set here).
    pub async fn with_config(yaml: &str) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        TestApp::with_root(dir, root, yaml).await
    }

    /// A registry storing under `root`, kept alive with `dir`.
    pub async fn with_root(dir: tempfile::TempDir, root: PathBuf, yaml: &str) -> TestApp {
        let config = Config::from_yaml(
            yaml,
            [(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".to_owned(),
                root.display().to_string(),
            )],
        )
        .expect("config");
        let state = registry::build_state(config).await.expect("state");
        TestApp {
            dir,
            root,
            app: registry::app(state),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.root.clone()
    }

    /// A second storage over the same root, as the offline commands
    /// (`registry gc`, `fsck`) open it: its own caches, nothing shared
    /// with the serving app but the files.
    pub fn offline_storage(&self) -> registry::storage::Storage {
        offline_storage(&self.root)
    }

    pub async fn send(&self, req: Request<Body>) -> TestResponse {
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        assert_eq!(
            headers
                .get("docker-distribution-api-version")
                .and_then(|v| v.to_str().ok()),
            Some("registry/2.0"),
            "every response carries the API version"
        );
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(body.into()).expect("request")).await
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.request(Method::GET, uri, &[], Body::empty()).await
    }

    pub async fn head(&self, uri: &str) -> TestResponse {
        self.request(Method::HEAD, uri, &[], Body::empty()).await
    }

    pub async fn delete(&self, uri: &str) -> TestResponse {
        self.request(Method::DELETE, uri, &[], Body::empty()).await
    }

    /// Pushes a blob in one POST and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let r = self
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        digest
    }

    /// Starts an upload and returns its location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        r.header("location").expect("location").to_owned()
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &str,
    ) -> TestResponse {
        self.request(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            body.to_owned(),
        )
        .await
    }

    /// Pushes config + one layer + an OCI manifest tagged `tag`; returns
    /// the manifest digest and body.
    pub async fn push_image(&self, repo: &str, tag: &str, seed: &str) -> (Digest, String) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = format!("layer of {seed}").repeat(10);
        let config_digest = self.push_blob(repo, config.as_bytes()).await;
        let layer_digest = self.push_blob(repo, layer.as_bytes()).await;
        let manifest = image_manifest(
            &config_digest,
            config.len(),
            &[(&layer_digest, layer.len())],
        );
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        (Digest::sha256_of(manifest.as_bytes()), manifest)
    }

    /// Every file under the storage root, relative, sorted.
    pub fn files(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(
                        p.strip_prefix(base)
                            .expect("under base")
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root(), &self.root(), &mut out);
        out.sort();
        out
    }
}

/// The data file of blob `d` under the storage `root`, in distribution's
/// layout (spelled out here, not taken from the registry's own paths).
pub fn blob_data_path(root: &Path, d: &Digest) -> PathBuf {
    root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &d.hex()[..2],
        d.hex()
    ))
}

pub fn image_manifest(config: &Digest, config_size: usize, layers: &[(&Digest, usize)]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{s}}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{}]}}"#,
        layers.join(",")
    )
}
