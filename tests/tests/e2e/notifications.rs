//! Event notifications (issue 15): a receiver on 127.0.0.1 gets
//! distribution's events for pushes, mounts, pulls and deletes, and, with
//! the receiver down during 100 pushes and the registry restarted twice
//! meanwhile (SIGTERM, then SIGKILL), every event once it is back.
//!
//! The receiver is a small HTTP/1.1 server on a std `TcpListener`, started
//! and stopped by the test (stopping closes the port and every connection
//! the registry kept open). `E2E_REGISTRY_IMPL=distribution` runs
//! `receiver_gets_distributions_events` against distribution 2.8, to check
//! the expected shapes against the reference.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::fixtures::{HtpasswdHash, htpasswd, random_bytes};
use e2e::{Api, Registry};
use reqwest::Method;
use reqwest::header::USER_AGENT;
use serde_json::{Value, json};

const EVENTS_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    content_type: String,
    authorization: String,
    body: Value,
}

/// What the receiver got, shared with its threads.
#[derive(Debug, Default)]
struct Inbox {
    deliveries: Mutex<Vec<Delivery>>,
    /// Requests still to be answered with 503 (to see retries).
    fail_next: AtomicUsize,
}

impl Inbox {
    /// Every event received on `path`, in order of arrival.
    fn events(&self, path: &str) -> Vec<Value> {
        self.deliveries
            .lock()
            .expect("inbox lock")
            .iter()
            .filter(|d| d.path == path)
            .flat_map(|d| d.body["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until `done` holds for the events of `path`.
    fn wait(&self, path: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let events = self.events(path);
            if done(&events) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "receiver: {what} did not arrive within 90 s; got {} events: {events:#?}",
                events.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A webhook receiver listening on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `port` (0: any free one), retrying while the port is
    /// still taken by the previous receiver's connections.
    fn start(port: u16, inbox: Arc<Inbox>) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("receiver: bind 127.0.0.1:{port}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("receiver: bind 127.0.0.1:{port}: {e}"),
            }
        };
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (s, c) = (stop.clone(), connections.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(clone) = conn.try_clone() {
                    c.lock().expect("inbox lock").push(clone);
                }
                let inbox = inbox.clone();
                std::thread::spawn(move || serve(conn, &inbox));
            }
        });
        Receiver {
            addr,
            stop,
            connections,
            accept: Some(accept),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Closes the port and every open connection.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            t.join().expect("receiver accept thread");
        }
        for c in self.connections.lock().expect("inbox lock").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Answers HTTP/1.1 requests on one connection (keep-alive) until it
/// closes.
fn serve(conn: TcpStream, inbox: &Inbox) {
    let mut out = conn.try_clone().expect("clone the connection");
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut length, mut content_type, mut authorization) =
            (0usize, String::new(), String::new());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim().to_owned();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "content-type" => content_type = value,
                    "authorization" => authorization = value,
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let failing = inbox
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let answer: &[u8] = if failing {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        } else {
            let body: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| json!({ "unparsable": e.to_string() }));
            inbox.deliveries.lock().expect("inbox lock").push(Delivery {
                path,
                content_type,
                authorization,
                body,
            });
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        };
        if out.write_all(answer).is_err() {
            return;
        }
    }
}

/// One notification endpoint's config.
fn endpoint(name: &str, url: &str, extra: Value) -> Value {
    let mut e = json!({
        "name": name,
        "url": url,
        "timeout": "2s",
        "threshold": 2,
        "backoff": "200ms",
    });
    if let (Some(e), Value::Object(extra)) = (e.as_object_mut(), extra) {
        e.extend(extra);
    }
    e
}

/// An image of one random layer: (config, layer, manifest) bytes.
fn small_image(layer_size: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let layer = random_bytes(layer_size);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [e2e::digest::sha256(&layer)] },
    }))
    .expect("config JSON");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": e2e::digest::sha256(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": e2e::digest::sha256(&layer),
            "size": layer.len(),
        }],
    }))
    .expect("manifest JSON");
    (config, layer, manifest)
}

/// Pushes config, layer and manifest as `repo:tag`; returns their digests.
fn push(api: &Api, repo: &str, tag: &str, image: &(Vec<u8>, Vec<u8>, Vec<u8>)) -> [String; 3] {
    let config = api.push_blob(repo, &image.0);
    let layer = api.push_blob(repo, &image.1);
    let manifest = api.put_manifest(repo, tag, OCI_MANIFEST, &image.2);
    [config, layer, manifest]
}

fn digests_of(events: &[Value], action: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["action"] == action)
        .map(|e| {
            e["target"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn metric(registry: &Registry, series: &str) -> Option<f64> {
    let text = registry.api().get("/metrics").text().expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn receiver_gets_distributions_events() {
    let dir = e2e::temp_dir("notify");
    let passwords = dir.path().join("htpasswd");
    htpasswd(&passwords, "alice", "alice-pw", HtpasswdHash::Bcrypt);
    let inbox = Arc::new(Inbox::default());
    // The first delivery is refused: it is retried, in order.
    inbox.fail_next.store(1, Ordering::SeqCst);
    let receiver = Receiver::start(0, inbox.clone());
    let registry = Registry::builder()
        .htpasswd(&passwords)
        .delete_enabled(true)
        .yaml(
            "notifications.endpoints",
            json!([
                endpoint(
                    "all",
                    &receiver.url("/all"),
                    json!({ "headers": { "Authorization": ["Bearer s3cret"] } })
                ),
                endpoint(
                    "manifests-only",
                    &receiver.url("/filtered"),
                    json!({
                        "ignoredmediatypes": ["application/octet-stream"],
                        "ignore": { "actions": ["pull"] }
                    })
                ),
                endpoint("off", &receiver.url("/off"), json!({ "disabled": true })),
            ]),
        )
        .start();
    let api = registry.api().basic("alice", "alice-pw");
    let image = small_image(2000);
    let [config, layer, manifest] = push(&api, "team/app", "v1", &image);

    // A mount into another repository.
    let mounted = api
        .request(
            Method::POST,
            &format!("/v2/team/copy/blobs/uploads/?mount={layer}&from=team/app"),
        )
        .send()
        .expect("mount");
    assert_eq!(mounted.status(), 201);

    // Pulls: HEAD makes no event, GET does.
    assert_eq!(
        api.manifest_digest("team/app", "v1").as_deref(),
        Some(manifest.as_str())
    );
    let pulled = api
        .request(Method::GET, "/v2/team/app/manifests/v1")
        .header("Accept", OCI_MANIFEST)
        .header(USER_AGENT, "e2e-puller/1.0")
        .send()
        .expect("GET manifest");
    assert_eq!(pulled.status(), 200);
    let pull_request_id = pulled
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let blob = api
        .request(Method::GET, &format!("/v2/team/app/blobs/{layer}"))
        .send()
        .expect("GET blob");
    assert_eq!(blob.status(), 200);
    assert_eq!(blob.bytes().unwrap().len(), image.1.len());

    // Deletes: the manifest, then a blob.
    for path in [
        format!("/v2/team/app/manifests/{manifest}"),
        format!("/v2/team/app/blobs/{config}"),
    ] {
        let resp = api.request(Method::DELETE, &path).send().expect("DELETE");
        assert_eq!(resp.status(), 202, "DELETE {path}");
    }

    let events = inbox.wait("/all", "8 events", |e| e.len() >= 8);
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["target"]["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("push", &config),
        ("push", &layer),
        ("push", &manifest),
        ("mount", &layer),
        ("pull", &manifest),
        ("pull", &layer),
        ("delete", &manifest),
        ("delete", &config),
    ]
    .iter()
    .map(|(a, d)| ((*a).to_owned(), (*d).clone()))
    .collect();
    assert_eq!(summary, expected, "{events:#?}");

    let host = registry.host().to_owned();
    let url =
        |kind: &str, repo: &str, digest: &str| format!("http://{host}/v2/{repo}/{kind}/{digest}");
    let target = |i: usize| events[i]["target"].clone();
    // Blob push: distribution's octet-stream type, size and length, URL.
    assert_eq!(
        target(1),
        json!({
            "mediaType": "application/octet-stream",
            "size": image.1.len(),
            "length": image.1.len(),
            "digest": layer,
            "repository": "team/app",
            "url": url("blobs", "team/app", &layer),
        })
    );
    assert_eq!(
        target(2),
        json!({
            "mediaType": OCI_MANIFEST,
            "size": image.2.len(),
            "length": image.2.len(),
            "digest": manifest,
            "repository": "team/app",
            "url": url("manifests", "team/app", &manifest),
            "tag": "v1",
        })
    );
    assert_eq!(target(3)["fromRepository"], "team/app");
    assert_eq!(target(3)["repository"], "team/copy");
    assert_eq!(target(3)["url"], url("blobs", "team/copy", &layer));
    assert_eq!(target(4)["tag"], "v1");
    assert_eq!(target(4)["size"], image.2.len());
    assert_eq!(target(5)["size"], image.1.len());
    assert_eq!(target(5)["mediaType"], "application/octet-stream");
    // Deletes carry the digest and the repository only.
    assert_eq!(
        target(6),
        json!({ "digest": manifest, "repository": "team/app" })
    );
    assert_eq!(
        target(7),
        json!({ "digest": config, "repository": "team/app" })
    );

    let methods = [
        "PUT", "PUT", "PUT", "POST", "GET", "GET", "DELETE", "DELETE",
    ];
    let mut ids = std::collections::BTreeSet::new();
    for (e, method) in events.iter().zip(methods) {
        assert!(
            ids.insert(e["id"].as_str().unwrap().to_owned()),
            "ids are unique"
        );
        assert!(e["timestamp"].as_str().unwrap().contains('T'), "{e}");
        assert_eq!(e["request"]["method"], method, "{e}");
        assert_eq!(e["request"]["host"], host.as_str());
        assert!(
            e["request"]["addr"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{e}"
        );
        assert!(!e["request"]["id"].as_str().unwrap().is_empty());
        assert!(e["request"]["useragent"].is_string());
        assert_eq!(e["actor"], json!({ "name": "alice" }));
        assert!(!e["source"]["instanceID"].as_str().unwrap().is_empty());
        let source = e["source"]["addr"].as_str().unwrap();
        assert!(source.contains(':'), "{source}");
    }
    assert_eq!(events[4]["request"]["useragent"], "e2e-puller/1.0");
    if let Some(id) = pull_request_id {
        assert_eq!(events[4]["request"]["id"], id.as_str());
    }

    // The filtered endpoint: no blobs, no pulls; deletes have no media type.
    let filtered = inbox.wait("/filtered", "3 events", |e| e.len() >= 3);
    let summary: Vec<(&str, &str)> = filtered
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default(),
                e["target"]["digest"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("push", manifest.as_str()),
            ("delete", manifest.as_str()),
            ("delete", config.as_str())
        ]
    );
    for d in inbox.deliveries.lock().expect("inbox lock").iter() {
        assert_eq!(d.content_type, EVENTS_TYPE);
        assert_ne!(d.path, "/off", "a disabled endpoint gets nothing");
        let expected_auth = if d.path == "/all" {
            "Bearer s3cret"
        } else {
            ""
        };
        assert_eq!(d.authorization, expected_auth, "headers per endpoint");
    }
    // Nothing more comes (no HEAD event, no duplicate): wait for the
    // registry to have nothing pending, then compare.
    if registry.kind() == e2e::Impl::Ours {
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(
            &registry,
            "registry_notifications_pending{endpoint=\"all\"}",
        ) != Some(0.0)
        {
            assert!(Instant::now() < deadline, "events stay pending");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            metric(
                &registry,
                "registry_notifications_delivered_total{endpoint=\"all\"}"
            ),
            Some(8.0)
        );
        assert!(
            metric(
                &registry,
                "registry_notifications_failures_total{endpoint=\"all\",reason=\"status\"}"
            )
            .unwrap_or(0.0)
                + metric(
                    &registry,
                    "registry_notifications_failures_total{endpoint=\"manifests-only\",reason=\"status\"}"
                )
                .unwrap_or(0.0)
                >= 1.0,
            "the refused delivery was counted"
        );
    }
    assert_eq!(inbox.events("/all").len(), 8);
    receiver.stop();
}

/// The acceptance test: the receiver is down during 100 pushes; the
/// registry is stopped (SIGTERM) after 40 and killed (SIGKILL) after 70,
/// and started again on the same data each time; once the receiver is
/// back, every event of the 100 pushes arrives, in order.
#[test]
fn events_queued_while_the_receiver_is_down_survive_restarts() {
    if e2e::registry::requested_impl() == e2e::Impl::Distribution {
        eprintln!("distribution's queue is in memory: nothing to compare");
        return;
    }
    let inbox = Arc::new(Inbox::default());
    // Take a free port for the receiver, then close it.
    let receiver = Receiver::start(0, inbox.clone());
    let port = receiver.addr.port();
    let url = receiver.url("/events");
    receiver.stop();

    // Our own root: it outlives each registry process.
    let data = e2e::temp_dir("notify-acc");
    let mut registry = Registry::builder()
        .root(data.path().join("data"))
        .yaml(
            "notifications.endpoints",
            json!([endpoint("acc", &url, json!({}))]),
        )
        .start();
    let mut expected: Vec<[String; 3]> = Vec::new();
    let pushes =
        |registry: &Registry, range: std::ops::Range<usize>, expected: &mut Vec<[String; 3]>| {
            let api = registry.api();
            for i in range {
                expected.push(push(&api, "acc/app", &format!("v{i}"), &small_image(64)));
            }
        };
    let started = Instant::now();
    pushes(&registry, 0..40, &mut expected);
    eprintln!("40 pushes with the receiver down: {:?}", started.elapsed());
    // Queued, not delivered; the endpoint was tried and failed.
    assert_eq!(
        metric(
            &registry,
            "registry_notifications_pending{endpoint=\"acc\"}"
        ),
        Some(120.0)
    );
    let failures: f64 = ["error", "timeout", "status"]
        .iter()
        .filter_map(|r| {
            metric(
                &registry,
                &format!(
                    "registry_notifications_failures_total{{endpoint=\"acc\",reason=\"{r}\"}}"
                ),
            )
        })
        .sum();
    assert!(failures >= 1.0, "failures are counted");
    assert!(
        registry.stop().is_some_and(|s| s.success()),
        "a clean exit on SIGTERM"
    );
    registry = registry.builder_again().start();
    pushes(&registry, 40..70, &mut expected);
    registry.kill_hard();
    registry = registry.builder_again().start();
    pushes(&registry, 70..100, &mut expected);
    assert_eq!(
        metric(
            &registry,
            "registry_notifications_pending{endpoint=\"acc\"}"
        ),
        Some(300.0),
        "nothing was lost in the restarts"
    );
    assert!(inbox.events("/events").is_empty());

    let receiver = Receiver::start(port, inbox.clone());
    let events = inbox.wait("/events", "the events of 100 pushes", |e| e.len() >= 300);
    // At least once: every digest, and in order: the first time each
    // event arrives follows the order of the pushes.
    let mut firsts: Vec<String> = Vec::new();
    for d in digests_of(&events, "push") {
        if !firsts.contains(&d) {
            firsts.push(d);
        }
    }
    let wanted: Vec<String> = expected.iter().flatten().cloned().collect();
    assert_eq!(firsts, wanted, "every event, in push order");
    let tags: Vec<String> = events
        .iter()
        .filter_map(|e| e["target"]["tag"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(tags.first().map(String::as_str), Some("v0"));
    assert_eq!(tags.last().map(String::as_str), Some("v99"));
    // The restarts show as three instances.
    let instances: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["source"]["instanceID"].as_str())
        .collect();
    assert_eq!(instances.len(), 3, "{instances:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(
        &registry,
        "registry_notifications_pending{endpoint=\"acc\"}",
    ) != Some(0.0)
    {
        assert!(Instant::now() < deadline, "events stay pending");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{} events delivered for 300 queued (duplicates after the SIGKILL allowed)",
        events.len()
    );
    receiver.stop();
}

/// Small-image push throughput with notifications off and on (receiver
/// up). Prints figures; run with `--run-ignored only`.
#[test]
#[ignore = "a measurement, not a check"]
fn push_throughput_with_and_without_notifications() {
    const N: usize = 200;
    let inbox = Arc::new(Inbox::default());
    let receiver = Receiver::start(0, inbox.clone());
    let images: Vec<_> = (0..N).map(|_| small_image(64)).collect();
    let measure = |registry: &Registry, repo: &str| {
        let api = registry.api();
        // Warm-up.
        push(&api, repo, "warm", &small_image(64));
        let started = Instant::now();
        for (i, image) in images.iter().enumerate() {
            push(&api, repo, &format!("v{i}"), image);
        }
        started.elapsed()
    };
    let mut report = Vec::new();
    for round in 0..2 {
        for mode in ["off", "on", "on+fsync"] {
            let mut builder = Registry::builder().access_log(false);
            if mode != "off" {
                builder = builder.yaml(
                    "notifications",
                    json!({
                        "endpoints": [endpoint("bench", &receiver.url("/bench"), json!({}))],
                        "queue": { "fsync": mode == "on+fsync" },
                    }),
                );
            }
            let registry = builder.start();
            let took = measure(&registry, &format!("bench/r{round}"));
            let line = format!(
                "round {round}, notifications {mode:>8}: {N} pushes (2 blobs + manifest each) in {took:?}: {:.1} pushes/s",
                N as f64 / took.as_secs_f64()
            );
            eprintln!("{line}");
            report.push(line);
        }
    }
    println!("{}", report.join("\n"));
    receiver.stop();
}
