//! Our registry on S3 (a real Garage on 127.0.0.1): one bucket shared with
//! CNCF distribution 2.8's s3 driver in both directions, and by two of our
//! replicas (an upload started on one completes on the other); docker
//! pushes, pulls and runs an image kept in the bucket.

use e2e::garage::Garage;
use e2e::{CommandExt, Registry, Skopeo};
use reqwest::StatusCode;

use crate::interop::{assert_serves, push_images};

#[test]
fn bucket_written_by_distribution_is_served_by_ours() {
    let garage = Garage::start("images");
    let out = e2e::temp_dir("s3-interop");
    let skopeo = Skopeo::new();
    let dist = Registry::builder()
        .s3(&garage, "/registry")
        .start_distribution();
    let (app, tool) = push_images(&dist, &skopeo);
    drop(dist);

    let ours = Registry::builder().s3(&garage, "/registry").start();
    assert_serves(&ours, &skopeo, &app, &tool, out.path());
}

#[test]
fn bucket_written_by_ours_is_served_by_distribution() {
    let garage = Garage::start("images");
    let out = e2e::temp_dir("s3-interop");
    let skopeo = Skopeo::new();
    let ours = Registry::builder().s3(&garage, "/registry").start();
    let (app, tool) = push_images(&ours, &skopeo);
    drop(ours);

    let dist = Registry::builder()
        .s3(&garage, "/registry")
        .start_distribution();
    assert_serves(&dist, &skopeo, &app, &tool, out.path());
}

/// Sends `chunk` of an upload at `location` from `offset`; returns the
/// upload's next location.
fn patch(api: &e2e::Api, location: &str, offset: usize, chunk: Vec<u8>) -> String {
    let patched = api
        .request(reqwest::Method::PATCH, location)
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{offset}-{}", offset + chunk.len() - 1),
        )
        .body(chunk)
        .send()
        .expect("PATCH the upload");
    assert_eq!(patched.status(), StatusCode::ACCEPTED);
    patched.headers()["location"]
        .to_str()
        .expect("a textual Location")
        .to_owned()
}

#[test]
fn two_replicas_on_one_bucket() {
    let garage = Garage::start("images");
    let a = Registry::builder().s3(&garage, "").start();
    // b serves blob bytes itself; a sends clients to the bucket
    // (`storage.redirect`, on by default as in distribution).
    let b = Registry::builder()
        .s3(&garage, "")
        .yaml("storage.redirect.disable", serde_json::Value::Bool(true))
        .start();
    let (api_a, api_b) = (a.api(), b.api());

    // A chunked upload: started and fed on a, fed and finished on b. The
    // first chunk is larger than an S3 part, the second is not.
    let first = vec![b'a'; 6 * 1024 * 1024 + 5];
    let second = b"the end".to_vec();
    let whole = [first.clone(), second.clone()].concat();
    let digest = e2e::digest::sha256(&whole);
    let started = api_a
        .request(reqwest::Method::POST, "/v2/replicas/blob/blobs/uploads/")
        .send()
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let location = patch(&api_a, &location, 0, first.clone());
    // b knows where the upload stands.
    let status = api_b.get(&location);
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status.headers()["range"].to_str().unwrap(),
        format!("0-{}", first.len() - 1)
    );
    let location = patch(&api_b, &location, first.len(), second);
    let done = api_b
        .request(
            reqwest::Method::PUT,
            &e2e::api::with_digest(&location, &digest),
        )
        .send()
        .unwrap();
    assert_eq!(done.status(), StatusCode::CREATED, "{:?}", done.text());
    let blob = format!("/v2/replicas/blob/blobs/{digest}");
    let got = api_b.get(&blob);
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().unwrap().as_ref(), &whole[..]);

    // a answers 307 to a presigned URL of the bucket, which needs no
    // credentials, and where a Range works as it does with us.
    let redirected = api_a.get(&blob);
    assert_eq!(redirected.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        redirected.headers()["docker-content-digest"],
        digest.as_str()
    );
    let url = redirected.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(url.starts_with(&garage.endpoint), "{url}");
    let direct = e2e::api::http_client();
    let fetched = direct.get(&url).send().unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().unwrap().as_ref(), &whole[..]);
    let tail = direct
        .get(&url)
        .header("range", format!("bytes={}-", first.len()))
        .send()
        .unwrap();
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.bytes().unwrap().as_ref(), b"the end");
    // HEAD is answered here; an unknown blob is our 404, not the bucket's.
    assert_eq!(
        api_a
            .request(reqwest::Method::HEAD, &blob)
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let unknown = api_a.get(&format!(
        "/v2/replicas/blob/blobs/{}",
        e2e::digest::sha256(b"never pushed")
    ));
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        e2e::api::error_codes(&unknown.json().unwrap()),
        ["BLOB_UNKNOWN"]
    );

    // An image pushed through a is pulled through b.
    let skopeo = Skopeo::new();
    let out = e2e::temp_dir("s3-replicas");
    let (app, tool) = push_images(&a, &skopeo);
    assert_serves(&b, &skopeo, &app, &tool, out.path());
}

#[test]
fn docker_push_pull_run_on_s3() {
    let garage = Garage::start("images");
    let reg = Registry::builder().s3(&garage, "/registry").start();
    let docker = e2e::Dockerd::start();
    let marker = e2e::fixtures::random_name(24);
    let remote = format!("{}/s3/busybox:1", reg.host());
    docker.import_busybox(&remote, &marker);
    let pushed = docker.push(&remote);
    let repo = format!("{}/s3/busybox", reg.host());
    assert_eq!(
        reg.api().manifest_digest("s3/busybox", "1"),
        Some(pushed.clone())
    );
    docker.docker().args(["rmi", &remote]).ok();
    docker.docker().args(["pull", &remote]).ok();
    assert_eq!(docker.repo_digest(&remote, &repo), pushed);
    assert_eq!(
        docker.run_marker(&remote),
        marker,
        "the pulled image runs and has the pushed content"
    );
}
