//! Interop with CNCF distribution 2.8 through the data directory: what one
//! wrote, the other serves (by tag and by digest), with equal digests.

use std::path::Path;

use e2e::fixtures::{OciImage, read_dir_image, read_oci_layout};
use e2e::{Impl, Registry, Skopeo};

/// Pushes two images (one converted to docker schema2) and a second tag into
/// `reg`; returns the images.
pub(crate) fn push_images(reg: &Registry, skopeo: &Skopeo) -> (OciImage, OciImage) {
    let app = OciImage::generate(&skopeo.scratch("app"), "v1", &[150_000, 300_000, 5_000]);
    let tool = OciImage::generate(&skopeo.scratch("tool"), "latest", &[80_000]);
    skopeo.copy(
        &app.reference(),
        &format!("docker://{}/interop/app:v1", reg.host()),
        &[],
    );
    skopeo.copy(
        &app.reference(),
        &format!("docker://{}/interop/app:stable", reg.host()),
        &[],
    );
    skopeo.copy(
        &tool.reference(),
        &format!("docker://{}/interop/tools/tool:latest", reg.host()),
        &["--format", "v2s2"],
    );
    (app, tool)
}

/// Everything `push_images` pushed is served by `reg`: catalog, tags,
/// manifests by tag and digest, blobs pulled with skopeo.
pub(crate) fn assert_serves(
    reg: &Registry,
    skopeo: &Skopeo,
    app: &OciImage,
    tool: &OciImage,
    out: &Path,
) {
    let api = reg.api();
    assert_eq!(
        api.catalog(100),
        vec!["interop/app".to_owned(), "interop/tools/tool".to_owned()]
    );
    let mut tags = api.tags("interop/app", 100);
    if reg.kind() == Impl::Distribution {
        // distribution 2.8 lists tags in directory order; ours must sort.
        tags.sort();
    }
    assert_eq!(tags, vec!["stable".to_owned(), "v1".to_owned()]);
    for tag in ["v1", "stable"] {
        assert_eq!(
            api.manifest_digest("interop/app", tag),
            Some(app.manifest_digest.clone()),
            "interop/app:{tag}"
        );
    }

    let by_tag = out.join("app-by-tag");
    skopeo.copy(
        &format!("docker://{}/interop/app:v1", reg.host()),
        &format!("oci:{}:v1", by_tag.display()),
        &[],
    );
    let pulled = read_oci_layout(&by_tag, Some("v1"));
    assert_eq!(pulled.manifest_digest, app.manifest_digest);
    assert_eq!(pulled.blob_digests, app.blob_digests());

    let by_digest = out.join("app-by-digest");
    skopeo.copy(
        &format!(
            "docker://{}/interop/app@{}",
            reg.host(),
            app.manifest_digest
        ),
        &format!("oci:{}", by_digest.display()),
        &[],
    );
    let pulled = read_oci_layout(&by_digest, None);
    assert_eq!(pulled.manifest_digest, app.manifest_digest);
    assert_eq!(pulled.blob_digests, app.blob_digests());

    // The schema2 image: the digest the registry reports is the digest of
    // the bytes it serves, and its blobs pull with the right content.
    let (manifest, content_type) = api.manifest("interop/tools/tool", "latest");
    assert_eq!(
        content_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let digest = e2e::digest::sha256(&manifest);
    assert_eq!(
        api.manifest_digest("interop/tools/tool", "latest"),
        Some(digest.clone())
    );
    let tool_out = out.join("tool-by-digest");
    skopeo.copy(
        &format!("docker://{}/interop/tools/tool@{digest}", reg.host()),
        &format!("dir:{}", tool_out.display()),
        &[],
    );
    let pulled = read_dir_image(&tool_out);
    assert_eq!(pulled.manifest_digest, digest);
    assert_eq!(pulled.blob_digests, tool.blob_digests());
}

#[test]
fn data_dir_written_by_distribution_is_served_by_ours() {
    let data = e2e::temp_dir("interop");
    let root = data.path().join("registry");
    let skopeo = Skopeo::new();
    let dist = Registry::builder().root(&root).start_distribution();
    let (app, tool) = push_images(&dist, &skopeo);
    drop(dist);

    let ours = Registry::builder().root(&root).start();
    assert_serves(&ours, &skopeo, &app, &tool, data.path());
}

#[test]
fn data_dir_written_by_ours_is_served_by_distribution() {
    let data = e2e::temp_dir("interop");
    let root = data.path().join("registry");
    let skopeo = Skopeo::new();
    let ours = Registry::builder().root(&root).start();
    let (app, tool) = push_images(&ours, &skopeo);
    drop(ours);

    let dist = Registry::builder().root(&root).start_distribution();
    assert_serves(&dist, &skopeo, &app, &tool, data.path());
}
