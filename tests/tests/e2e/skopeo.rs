//! skopeo against our registry: multi-layer images in and out, by tag and by
//! digest, with the digests of everything pulled equal to what was pushed.

use e2e::fixtures::{OCI_MANIFEST, OciImage, read_oci_layout, self_signed_cert};
use e2e::{CommandExt, Registry, Skopeo};
use serde_json::json;

#[test]
fn copy_multilayer_image_in_and_out_by_tag_and_digest() {
    let reg = Registry::start();
    let skopeo = Skopeo::new();
    let image = OciImage::generate(&skopeo.scratch("src"), "v1", &[300_000, 1 << 20, 50_000, 7]);
    let by_tag = format!("docker://{}/e2e/multi:v1", reg.host());
    skopeo.copy(&image.reference(), &by_tag, &[]);

    // The registry serves exactly the pushed manifest under the same digest.
    let api = reg.api();
    assert_eq!(
        api.manifest_digest("e2e/multi", "v1"),
        Some(image.manifest_digest.clone())
    );
    let (served, content_type) = api.manifest("e2e/multi", &image.manifest_digest);
    assert_eq!(served, image.manifest, "manifest bytes by digest");
    assert_eq!(content_type, OCI_MANIFEST);
    for digest in image.blob_digests() {
        let resp = api.get(&format!("/v2/e2e/multi/blobs/{digest}"));
        assert_eq!(resp.status(), 200, "GET blob {digest}");
        let body = resp.bytes().expect("blob body");
        assert_eq!(e2e::digest::sha256(&body), digest, "blob content");
    }
    assert_eq!(api.tags("e2e/multi", 100), vec!["v1".to_owned()]);
    assert!(api.catalog(100).contains(&"e2e/multi".to_owned()));

    // Out by tag.
    let out = skopeo.scratch("by-tag");
    skopeo.copy(&by_tag, &format!("oci:{}:v1", out.display()), &[]);
    let pulled = read_oci_layout(&out, Some("v1"));
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(pulled.blob_digests, image.blob_digests());

    // Out by digest.
    let by_digest = format!(
        "docker://{}/e2e/multi@{}",
        reg.host(),
        image.manifest_digest
    );
    let out = skopeo.scratch("by-digest");
    skopeo.copy(&by_digest, &format!("oci:{}", out.display()), &[]);
    let pulled = read_oci_layout(&out, None);
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(pulled.blob_digests, image.blob_digests());
    assert_eq!(skopeo.inspect_raw(&by_digest, &[]), image.manifest);
}

#[test]
fn copy_between_repositories_and_as_docker_schema2() {
    let reg = Registry::start();
    let skopeo = Skopeo::new();
    let image = OciImage::generate(&skopeo.scratch("src"), "v1", &[100_000, 200_000]);
    let first = format!("docker://{}/e2e/first:v1", reg.host());
    skopeo.copy(&image.reference(), &first, &[]);

    // Registry to registry, into another repository (skopeo may mount).
    let second = format!("docker://{}/e2e/second:v1", reg.host());
    skopeo.copy(&first, &second, &[]);
    let api = reg.api();
    assert_eq!(
        api.manifest_digest("e2e/second", "v1"),
        Some(image.manifest_digest.clone())
    );

    // Converted to docker schema2 on the way in: a new manifest, same blobs.
    let docker = format!("docker://{}/e2e/docker:v2s2", reg.host());
    skopeo.copy(&image.reference(), &docker, &["--format", "v2s2"]);
    let (manifest, content_type) = api.manifest("e2e/docker", "v2s2");
    assert_eq!(
        content_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let digest = e2e::digest::sha256(&manifest);
    assert_ne!(digest, image.manifest_digest);
    assert_eq!(
        api.manifest_digest("e2e/docker", "v2s2"),
        Some(digest.clone())
    );
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    let layers: Vec<&str> = parsed["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest"))
        .collect();
    let expected: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layers, expected, "layers are the same blobs");
    let raw = skopeo.inspect_raw(&format!("docker://{}/e2e/docker@{digest}", reg.host()), &[]);
    assert_eq!(raw, manifest);
}

#[test]
fn copy_over_tls_with_a_verified_self_signed_certificate() {
    let dir = e2e::temp_dir("tls");
    let (cert, key) = self_signed_cert(dir.path());
    let reg = Registry::builder()
        .yaml("http.tls", json!({ "certificate": cert, "key": key }))
        .start();
    assert!(reg.url().starts_with("https://"), "{}", reg.url());

    // skopeo verifies the server against the CA in --dest-cert-dir.
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("create cert dir");
    std::fs::copy(&cert, certs.join("ca.crt")).expect("copy the CA");
    let skopeo = Skopeo::new();
    let image = OciImage::generate(&skopeo.scratch("src"), "v1", &[40_000, 2_000]);
    let dest = format!("docker://{}/e2e/tls:v1", reg.host());
    skopeo
        .cmd()
        .args(["copy", "--dest-cert-dir"])
        .arg(&certs)
        .args([image.reference().as_str(), dest.as_str()])
        .ok();
    let out = skopeo.scratch("out");
    skopeo
        .cmd()
        .args(["copy", "--src-cert-dir"])
        .arg(&certs)
        .args([dest.as_str(), &format!("oci:{}:v1", out.display())])
        .ok();
    let pulled = read_oci_layout(&out, Some("v1"));
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(pulled.blob_digests, image.blob_digests());

    // Without the CA the certificate is refused.
    skopeo.cmd().args(["inspect", "--raw", &dest]).fails();
}
