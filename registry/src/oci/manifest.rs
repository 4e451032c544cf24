//! Manifest parsing and validation: the four manifest kinds the registry
//! stores (docker schema2, docker manifest list, OCI image manifest, OCI
//! image index) and the descriptors they reference.
//!
//! Only what the registry needs is modelled (references, subject, artifact
//! type, annotations); the stored bytes are always the client's, untouched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};
use crate::oci::digest::Digest;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Largest manifest accepted, as distribution: 4 MiB.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// The manifest kinds the registry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    DockerManifest,
    DockerManifestList,
    OciManifest,
    OciIndex,
}

impl MediaType {
    pub const fn as_str(self) -> &'static str {
        match self {
            MediaType::DockerManifest => DOCKER_MANIFEST,
            MediaType::DockerManifestList => DOCKER_MANIFEST_LIST,
            MediaType::OciManifest => OCI_MANIFEST,
            MediaType::OciIndex => OCI_INDEX,
        }
    }

    pub fn parse(s: &str) -> Option<MediaType> {
        match s {
            DOCKER_MANIFEST => Some(MediaType::DockerManifest),
            DOCKER_MANIFEST_LIST => Some(MediaType::DockerManifestList),
            OCI_MANIFEST => Some(MediaType::OciManifest),
            OCI_INDEX => Some(MediaType::OciIndex),
            _ => None,
        }
    }

    /// Whether this kind lists other manifests (an index) rather than blobs.
    pub const fn is_index(self) -> bool {
        matches!(self, MediaType::DockerManifestList | MediaType::OciIndex)
    }
}

/// A content descriptor as found in manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// The JSON shape shared by all four kinds; which fields must be present
/// depends on the kind and is checked in [`Manifest::parse`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A parsed, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: MediaType,
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::ManifestInvalid, message)
}

impl Manifest {
    /// Parses `body` sent with `content_type` (the `Content-Type` header
    /// without parameters, if any). The header and the body's `mediaType`
    /// must agree when both are present.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, Error> {
        let raw: Raw = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("manifest is not valid JSON of a known shape: {e}")))?;
        if raw.schema_version != Some(2) {
            if matches!(content_type, Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED))
                || raw.schema_version == Some(1)
            {
                return Err(invalid(
                    "docker schema 1 manifests are not supported; push with a current client",
                ));
            }
            return Err(invalid("manifest schemaVersion must be 2"));
        }
        // Generic types clients send when they have none better.
        let header = content_type
            .filter(|t| !matches!(*t, "" | "application/json" | "application/octet-stream"));
        let declared = match (header, raw.media_type.as_deref()) {
            (Some(h), Some(b)) if h != b => {
                return Err(invalid(format!(
                    "Content-Type {h:?} does not match the manifest's mediaType {b:?}"
                )));
            }
            (Some(t), _) | (None, Some(t)) => Some(t),
            (None, None) => None,
        };
        let media_type = match declared {
            Some(t) => MediaType::parse(t)
                .ok_or_else(|| invalid(format!("unsupported manifest media type {t:?}")))?,
            // The OCI spec lets mediaType be absent; tell the kinds apart by shape.
            None if raw.manifests.is_some() => MediaType::OciIndex,
            None if raw.config.is_some() => MediaType::OciManifest,
            None => {
                return Err(invalid(
                    "manifest has no mediaType and no recognisable shape",
                ));
            }
        };
        let manifest = if media_type.is_index() {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("an index must not have config or layers"));
            }
            Manifest {
                media_type,
                artifact_type: raw.artifact_type,
                config: None,
                layers: Vec::new(),
                manifests: raw
                    .manifests
                    .ok_or_else(|| invalid("index has no manifests list"))?,
                subject: raw.subject,
                annotations: raw.annotations,
            }
        } else {
            if raw.manifests.is_some() {
                return Err(invalid("an image manifest must not have a manifests list"));
            }
            Manifest {
                media_type,
                artifact_type: raw.artifact_type,
                config: Some(
                    raw.config
                        .ok_or_else(|| invalid("image manifest has no config"))?,
                ),
                layers: raw
                    .layers
                    .ok_or_else(|| invalid("image manifest has no layers"))?,
                manifests: Vec::new(),
                subject: raw.subject,
                annotations: raw.annotations,
            }
        };
        if media_type == MediaType::DockerManifest && manifest.subject.is_some() {
            return Err(invalid("docker schema2 manifests cannot have a subject"));
        }
        Ok(manifest)
    }

    /// Blobs that must be present in the repository before this manifest is
    /// accepted. Foreign layers (with `urls`) live elsewhere by design.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|d| d.urls.is_empty()))
    }

    /// The artifact type shown in referrers listings: `artifactType`, else
    /// the config's media type (OCI 1.1 §referrers).
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref().or_else(|| {
            self.config
                .as_ref()
                .map(|c| c.media_type.as_str())
                .filter(|t| !t.is_empty())
        })
    }
}

/// The media type of a stored manifest, read from its own bytes. Stored
/// manifests were validated on the way in; a file that no longer parses is
/// served as an OCI manifest rather than refused.
pub fn stored_media_type(body: &[u8]) -> MediaType {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Peek>(body) {
        Ok(Peek {
            media_type: Some(t),
            ..
        }) => MediaType::parse(&t).unwrap_or(MediaType::OciManifest),
        Ok(Peek {
            manifests: Some(_), ..
        }) => MediaType::OciIndex,
        _ => MediaType::OciManifest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":3}},{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":3,"urls":["https://example.com/l"]}}]}}"#
        )
    }

    #[test]
    fn image_manifest_kinds() {
        let m = Manifest::parse(Some(OCI_MANIFEST), image(Some(OCI_MANIFEST)).as_bytes()).unwrap();
        assert_eq!(m.media_type, MediaType::OciManifest);
        assert_eq!(m.required_blobs().count(), 2, "foreign layer skipped");
        assert_eq!(
            m.effective_artifact_type(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let m = Manifest::parse(None, image(None).as_bytes()).unwrap();
        assert_eq!(m.media_type, MediaType::OciManifest);
        let m = Manifest::parse(Some(DOCKER_MANIFEST), image(None).as_bytes()).unwrap();
        assert_eq!(m.media_type, MediaType::DockerManifest);
        assert_eq!(
            stored_media_type(image(Some(DOCKER_MANIFEST)).as_bytes()),
            MediaType::DockerManifest
        );
    }

    #[test]
    fn index_kinds() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let m = Manifest::parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.media_type, MediaType::OciIndex);
        assert_eq!(m.manifests.len(), 1);
        let m = Manifest::parse(Some(DOCKER_MANIFEST_LIST), body.as_bytes()).unwrap();
        assert_eq!(m.media_type, MediaType::DockerManifestList);
        assert_eq!(stored_media_type(body.as_bytes()), MediaType::OciIndex);
    }

    #[test]
    fn refusals() {
        let cases: &[(Option<&str>, String)] = &[
            (Some(OCI_MANIFEST), "not json".into()),
            (Some(OCI_MANIFEST), "[]".into()),
            (Some(OCI_INDEX), image(Some(OCI_MANIFEST))),
            (Some("application/vnd.example+json"), image(None)),
            (
                Some(DOCKER_SCHEMA1_SIGNED),
                r#"{"schemaVersion":1,"name":"a","tag":"b"}"#.into(),
            ),
            (Some(OCI_MANIFEST), image(None).replace(D1, "sha256:nothex")),
            (
                Some(OCI_MANIFEST),
                image(None).replace(r#""size":2"#, r#""size":-2"#),
            ),
            (
                Some(OCI_MANIFEST),
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                    .into(),
            ),
            (None, r#"{"schemaVersion":2}"#.into()),
            (
                Some(OCI_INDEX),
                r#"{"schemaVersion":2,"manifests":[],"layers":[]}"#.to_string(),
            ),
        ];
        for (ct, body) in cases {
            let err = Manifest::parse(*ct, body.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::ManifestInvalid, "{ct:?} {body}");
        }
    }

    #[test]
    fn subject_and_artifact_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x-sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D1}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":9}}}}"#
        );
        let m = Manifest::parse(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.subject.as_ref().unwrap().digest.to_string(), D2);
        assert_eq!(m.effective_artifact_type(), Some("application/x-sig"));
    }
}
