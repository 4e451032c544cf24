//! Test inputs made locally, without network: OCI image layouts with random
//! gzip'd layers (for `skopeo copy oci:DIR:TAG`), a static busybox root
//! filesystem tarball (for `docker import` / `podman import`, runnable with
//! `docker run`), htpasswd files made by the real `htpasswd`, self-signed TLS
//! certificates made by `openssl`, and a reader for OCI layouts that clients
//! pulled into.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::RngCore as _;
use serde_json::{Value, json};

use crate::bins::{require_tool, which};
use crate::digest::{hex_part, sha256, sha256_file};
use crate::process::CommandExt;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip'd layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A content descriptor: digest, size, media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    buf
}

/// A random lowercase alphanumeric string, for unique names.
pub fn random_name(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = random_bytes(len);
    bytes
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect()
}

/// A GNU tar header with owner root and mtime 0, so that equal inputs give
/// equal bytes.
fn tar_header(entry_type: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size as u64);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// A tar archive (in memory) of `(path, mode, contents)` regular files.
fn tar_of(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, contents) in files {
        let mut header = tar_header(tar::EntryType::Regular, *mode, contents.len());
        builder
            .append_data(&mut header, path, *contents)
            .expect("append a file to the tar");
    }
    builder.into_inner().expect("finish the tar")
}

/// A gzip'd tar archive (in memory) of `(path, mode, contents)` files: a
/// layer blob.
pub fn tar_gz(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    gzip(&tar_of(files))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("finish gzip")
}

/// An OCI image layout directory holding one tagged multi-layer image.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// The layout directory.
    pub dir: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// The manifest bytes, exactly as stored.
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, in order.
    pub layers: Vec<Descriptor>,
}

impl OciImage {
    /// Writes an OCI layout at `dir` with one image tagged `tag` whose layers
    /// hold `layer_sizes[i]` random bytes each (random content: every call
    /// makes distinct blobs).
    pub fn generate(dir: &Path, tag: &str, layer_sizes: &[usize]) -> OciImage {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("create the layout's blob directory");
        let put = |data: &[u8], media_type: &str| {
            let digest = sha256(data);
            crate::write(&blobs.join(hex_part(&digest)), data);
            Descriptor {
                digest,
                size: data.len() as u64,
                media_type: media_type.to_owned(),
            }
        };
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (i, size) in layer_sizes.iter().enumerate() {
            let data = random_bytes(*size);
            let name = format!("layer{i}/random.bin");
            let note = format!("layer {i} of an e2e test image\n");
            let tar = tar_of(&[
                (&name, 0o644, &data),
                (&format!("layer{i}/README"), 0o644, note.as_bytes()),
            ]);
            diff_ids.push(sha256(&tar));
            layers.push(put(&gzip(&tar), OCI_LAYER_GZIP));
        }
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "e2e.nonce": random_name(16) } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = put(
            &serde_json::to_vec(&config).expect("config JSON"),
            OCI_CONFIG,
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor_json(&config),
            "layers": layers.iter().map(descriptor_json).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest JSON");
        let manifest_desc = put(&manifest, OCI_MANIFEST);
        let mut index_entry = descriptor_json(&manifest_desc);
        index_entry["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        crate::write(
            &dir.join("index.json"),
            serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [index_entry] }))
                .expect("index JSON"),
        );
        crate::write(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        OciImage {
            dir: dir.to_owned(),
            tag: tag.to_owned(),
            manifest,
            manifest_digest: manifest_desc.digest,
            config,
            layers,
        }
    }

    /// The skopeo reference `oci:DIR:TAG`.
    pub fn reference(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// Digests of the config and every layer.
    pub fn blob_digests(&self) -> Vec<String> {
        std::iter::once(&self.config)
            .chain(&self.layers)
            .map(|d| d.digest.clone())
            .collect()
    }
}

fn descriptor_json(d: &Descriptor) -> Value {
    json!({ "mediaType": d.media_type, "digest": d.digest, "size": d.size })
}

/// An image read back from an OCI layout that a client wrote (e.g. `skopeo
/// copy docker://… oci:DIR`), with every blob's digest verified.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// Digest of the manifest bytes (computed, not trusted from index.json).
    pub manifest_digest: String,
    /// Digests of config and layers, as listed in the manifest.
    pub blob_digests: Vec<String>,
}

/// Reads the image tagged `tag` (or the only image, when `tag` is `None`)
/// from the OCI layout at `dir`, and checks that every blob file hashes to its
/// name.
pub fn read_oci_layout(dir: &Path, tag: Option<&str>) -> PulledImage {
    let index: Value =
        serde_json::from_slice(&crate::read(&dir.join("index.json"))).expect("index.json is JSON");
    let manifests = index["manifests"]
        .as_array()
        .expect("index.json has manifests");
    let entry = if let Some(tag) = tag {
        manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no manifest tagged {tag} in {}", dir.display()))
    } else {
        assert_eq!(
            manifests.len(),
            1,
            "expected one manifest in {}",
            dir.display()
        );
        &manifests[0]
    };
    let blob_path = |digest: &str| dir.join("blobs/sha256").join(hex_part(digest));
    let listed = entry["digest"]
        .as_str()
        .expect("manifest digest in index.json");
    let manifest = crate::read(&blob_path(listed));
    let manifest_digest = sha256(&manifest);
    assert_eq!(
        manifest_digest, listed,
        "manifest blob content matches its name"
    );
    checked_image(dir, manifest, blob_path)
}

/// Reads the image that `skopeo copy … dir:DIR` wrote at `dir` (manifest
/// kept byte for byte, whatever its type), checking every blob's content.
pub fn read_dir_image(dir: &Path) -> PulledImage {
    let manifest = crate::read(&dir.join("manifest.json"));
    checked_image(dir, manifest, |digest| dir.join(hex_part(digest)))
}

/// The image of `manifest` (an image manifest: config and layers), after
/// checking that the file `blob_path` gives for each blob hashes to its
/// digest.
fn checked_image(
    dir: &Path,
    manifest: Vec<u8>,
    blob_path: impl Fn(&str) -> PathBuf,
) -> PulledImage {
    let manifest_digest = sha256(&manifest);
    let parsed: Value = serde_json::from_slice(&manifest).expect("manifest is JSON");
    let mut blob_digests = vec![
        parsed["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_owned(),
    ];
    for layer in parsed["layers"].as_array().expect("layers") {
        blob_digests.push(layer["digest"].as_str().expect("layer digest").to_owned());
    }
    for digest in &blob_digests {
        assert_eq!(
            &sha256_file(&blob_path(digest)),
            digest,
            "blob content in {} matches its digest",
            dir.display()
        );
    }
    PulledImage {
        manifest,
        manifest_digest,
        blob_digests,
    }
}

/// Path of a statically linked busybox, installing `busybox-static` if the
/// one on the machine is missing or dynamic (it must run in an empty rootfs).
pub fn static_busybox() -> PathBuf {
    if let Some(p) = which("busybox").filter(|p| is_static_elf(p)) {
        return p;
    }
    if which("busybox").is_some() {
        // A dynamic busybox is installed: busybox-static replaces it.
        let out = Command::new("sh")
            .args([
                "-c",
                "DEBIAN_FRONTEND=noninteractive flock /tmp/e2e-apt.lock \
                 apt-get install -y -o DPkg::Lock::Timeout=600 busybox-static",
            ])
            .run();
        assert!(
            out.status.success(),
            "installing busybox-static failed:\n{}",
            crate::process::describe_output(&out)
        );
    }
    let p = require_tool("busybox", "busybox-static");
    assert!(
        is_static_elf(&p),
        "{} is not statically linked",
        p.display()
    );
    p
}

/// Whether `path` is an ELF executable without a program interpreter.
fn is_static_elf(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    // 64-bit little-endian ELF only (x86_64, aarch64).
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        // PT_INTERP = 3
        data.get(o..o + 4) != Some(&3u32.to_le_bytes()[..])
    })
}

/// Writes a root filesystem tarball at `path`: a static busybox with `sh`,
/// `echo`, `cat`, `ls` and `sha256sum` links, and `/etc/e2e-marker` holding
/// `marker` (so that each test's image is distinct). Returns `path`.
///
/// `docker import PATH REF` / `podman import PATH REF` make an image of it;
/// `docker run --network none REF cat /etc/e2e-marker` prints `marker`.
pub fn busybox_rootfs_tar(path: &Path, marker: &str) -> PathBuf {
    let busybox = crate::read(&static_busybox());
    let mut builder = tar::Builder::new(Vec::new());
    for dir in ["bin", "etc", "tmp"] {
        let mut header = tar_header(tar::EntryType::Directory, 0o755, 0);
        builder
            .append_data(&mut header, dir, std::io::empty())
            .expect("append a directory");
    }
    let mut header = tar_header(tar::EntryType::Regular, 0o755, busybox.len());
    builder
        .append_data(&mut header, "bin/busybox", busybox.as_slice())
        .expect("append busybox");
    for applet in ["sh", "echo", "cat", "ls", "sha256sum"] {
        let mut header = tar_header(tar::EntryType::Symlink, 0o777, 0);
        builder
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("append an applet link");
    }
    let mut header = tar_header(tar::EntryType::Regular, 0o644, marker.len());
    builder
        .append_data(&mut header, "etc/e2e-marker", marker.as_bytes())
        .expect("append the marker");
    crate::write(path, builder.into_inner().expect("finish the rootfs tar"));
    path.to_owned()
}

/// How `htpasswd` hashes a password.
#[derive(Debug, Clone, Copy)]
pub enum HtpasswdHash {
    /// `-B`: bcrypt (`$2y$`), what registry:2 users have.
    Bcrypt,
    /// `-m`: Apache MD5 (`$apr1$`).
    Apr1,
    /// `-s`: `{SHA}`.
    Sha1,
}

/// Adds `user:password` to the htpasswd file at `path` (created if absent)
/// with the real `htpasswd` tool.
pub fn htpasswd(path: &Path, user: &str, password: &str, hash: HtpasswdHash) {
    let bin = require_tool("htpasswd", "apache2-utils");
    let flag = match hash {
        HtpasswdHash::Bcrypt => "-B",
        HtpasswdHash::Apr1 => "-m",
        HtpasswdHash::Sha1 => "-s",
    };
    let mut cmd = Command::new(bin);
    cmd.arg("-b").arg(flag);
    if !path.exists() {
        cmd.arg("-c");
    }
    cmd.arg(path).arg(user).arg(password).ok();
}

/// Reads every `user:hash` line of an htpasswd file.
pub fn htpasswd_entries(path: &Path) -> BTreeMap<String, String> {
    String::from_utf8_lossy(&crate::read(path))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(u, h)| (u.to_owned(), h.to_owned()))
        .collect()
}

/// A self-signed P-256 certificate for `127.0.0.1` and `localhost`, valid
/// for a day, made by `openssl req -x509`: writes `cert.pem` and `key.pem`
/// in `dir` and returns their paths (certificate, key).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    Command::new(require_tool("openssl", "openssl"))
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .ok();
    (cert, key)
}

/// A private certificate authority for TLS tests, made with `openssl`: its
/// certificate is what clients are told to trust (docker's `certs.d`,
/// skopeo's `--cert-dir`).
pub struct TestCa {
    cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

impl TestCa {
    /// A P-256 CA valid for a day, written to `dir` (`ca.crt`, `ca.key`).
    pub fn new(dir: &Path) -> TestCa {
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        Command::new(require_tool("openssl", "openssl"))
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=e2e test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .ok();
        TestCa {
            cert,
            key,
            dir: dir.to_owned(),
        }
    }

    /// The CA certificate (PEM).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// A server certificate for `ip` signed by this CA: writes
    /// `server-IP.crt` and `server-IP.key` and returns their paths
    /// (certificate, key).
    pub fn issue(&self, ip: std::net::IpAddr) -> (PathBuf, PathBuf) {
        let openssl = require_tool("openssl", "openssl");
        let base = self.dir.join(format!("server-{ip}"));
        let (cert, key, csr, ext) = (
            base.with_extension("crt"),
            base.with_extension("key"),
            base.with_extension("csr"),
            base.with_extension("ext"),
        );
        Command::new(&openssl)
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", &format!("/CN={ip}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .ok();
        crate::write(
            &ext,
            format!(
                "subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        );
        Command::new(&openssl)
            .args(["x509", "-req", "-days", "1", "-set_serial", "2"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert)
            .ok();
        (cert, key)
    }
}
