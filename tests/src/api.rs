//! A small blocking client for the distribution API, for assertions that a
//! real client cannot make (the digest a registry reports, catalog and tag
//! lists, status codes and error codes).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

/// Every manifest media type a registry may serve, for `Accept`.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// A blocking HTTP client with the crypto provider installed and timeouts set.
pub fn http_client() -> Client {
    crate::init_crypto();
    Client::builder()
        .timeout(Duration::from_secs(120))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("build the HTTP client")
}

/// A registry's `/v2/` API at `base` (`http://127.0.0.1:PORT`).
pub struct Api {
    base: String,
    client: Client,
    basic: Option<(String, String)>,
    bearer: Option<String>,
}

impl Api {
    /// A client for the registry at `base`, without credentials.
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            client: http_client(),
            basic: None,
            bearer: None,
        }
    }

    /// Sends Basic credentials with every request.
    #[must_use]
    pub fn basic(mut self, user: &str, password: &str) -> Api {
        self.basic = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Sends a bearer token with every request.
    #[must_use]
    pub fn bearer(mut self, token: &str) -> Api {
        self.bearer = Some(token.to_owned());
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (absolute, e.g. `/v2/`) with the credentials.
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.client.request(method, url);
        if let Some((u, p)) = &self.basic {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        req
    }

    /// `GET path`, panicking on a transport error.
    pub fn get(&self, path: &str) -> Response {
        send(self.request(reqwest::Method::GET, path), path)
    }

    /// The digest the registry reports for `repo:reference` (HEAD on the
    /// manifest), or `None` on 404. Panics on any other status.
    pub fn manifest_digest(&self, repo: &str, reference: &str) -> Option<String> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = send(
            self.request(reqwest::Method::HEAD, &path)
                .header("Accept", MANIFEST_ACCEPT),
            &path,
        );
        match resp.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(
                resp.headers()
                    .get("docker-content-digest")
                    .unwrap_or_else(|| panic!("HEAD {path}: no Docker-Content-Digest header"))
                    .to_str()
                    .expect("ASCII digest header")
                    .to_owned(),
            ),
            s => panic!("HEAD {path}: unexpected status {s}"),
        }
    }

    /// The manifest bytes of `repo:reference` and its content type.
    pub fn manifest(&self, repo: &str, reference: &str) -> (Vec<u8>, String) {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = send(
            self.request(reqwest::Method::GET, &path)
                .header("Accept", MANIFEST_ACCEPT),
            &path,
        );
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (resp.bytes().expect("read manifest body").to_vec(), ct)
    }

    /// Pushes `data` as a blob of `repo` (POST, then PUT with the digest);
    /// returns its digest. Panics unless the registry answers 202 and 201.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = crate::digest::sha256(data);
        let path = format!("/v2/{repo}/blobs/uploads/");
        let resp = send(self.request(reqwest::Method::POST, &path), &path);
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "POST {path}");
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("POST {path}: no Location"))
            .to_owned();
        let resp = send(
            self.request(reqwest::Method::PUT, &with_digest(&location, &digest))
                .header("Content-Type", "application/octet-stream")
                .body(data.to_vec()),
            "PUT blob",
        );
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT blob into {repo}");
        digest
    }

    /// Puts a manifest of `media_type` as `repo:reference`; returns its
    /// digest (checked against `Docker-Content-Digest`). Panics unless 201.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = send(
            self.request(reqwest::Method::PUT, &path)
                .header("Content-Type", media_type)
                .body(body.to_vec()),
            &path,
        );
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT {path}");
        let digest = crate::digest::sha256(body);
        assert_eq!(
            resp.headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok()),
            Some(digest.as_str()),
            "PUT {path}: Docker-Content-Digest"
        );
        digest
    }

    /// Every repository in `/v2/_catalog`, following `Link` pages of `page`.
    pub fn catalog(&self, page: usize) -> Vec<String> {
        self.list(&format!("/v2/_catalog?n={page}"), "repositories")
    }

    /// Every tag of `repo`, following `Link` pages of `page`.
    pub fn tags(&self, repo: &str, page: usize) -> Vec<String> {
        self.list(&format!("/v2/{repo}/tags/list?n={page}"), "tags")
    }

    fn list(&self, first: &str, field: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(path) = next.take() {
            let resp = self.get(&path);
            assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
            next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_next_link);
            let body: Value = resp.json().expect("JSON list body");
            if let Some(items) = body[field].as_array() {
                out.extend(items.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
        }
        out
    }
}

/// The target of `Link: <URL>; rel="next"`.
pub fn parse_next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// An upload `location` with `digest=` added to its query, to complete the
/// upload with a PUT.
pub fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The `errors[].code` values of an error body.
pub fn error_codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errs| {
            errs.iter()
                .filter_map(|e| e["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn send(req: RequestBuilder, what: &str) -> Response {
    req.send().unwrap_or_else(|e| panic!("request {what}: {e}"))
}
