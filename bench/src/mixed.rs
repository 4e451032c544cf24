//! A bounded mixed load on the whole stack (`bench --mixed SECS`): authd and
//! our registry in token mode, driven at once by pullers, pushers, token
//! clients, an admin and a password guesser, all on 127.0.0.1, for a fixed
//! time and at most [`MAX_REQUESTS_PER_WORKER`] requests per worker.
//!
//! It passes when every answer is the one intended (the guesser's 401s and
//! 429s are intended, nothing else but success is) and the resident memory
//! of both servers stays flat: after a warm-up quarter of the run, the peak
//! of the rest is at most 25% (and 16 MiB) above the level reached at the end
//! of the warm-up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::client::{OCI_MANIFEST, RegistryClient};
use crate::data::SmallImage;
use crate::{Args, registry_builder, start_registry, sys};

/// Hard bound on the requests of one worker, whatever the duration.
const MAX_REQUESTS_PER_WORKER: u64 = 2_000_000;
const USER: &str = "load";
const MIB: f64 = 1_048_576.0;
/// The account whose password the guesser tries: another account than the
/// one the other workers use, since throttling is per (account, address).
const VICTIM: &str = "victim";
const REPO_PULL: &str = "load/base";

/// Answers per (worker kind, status).
#[derive(Default)]
struct Tally(Mutex<BTreeMap<(&'static str, u16), u64>>);

impl Tally {
    fn add(&self, kind: &'static str, status: StatusCode) {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *t.entry((kind, status.as_u16())).or_default() += 1;
    }

    fn error(&self, kind: &'static str) {
        // 0: no HTTP answer at all (connection refused, reset, timeout).
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *t.entry((kind, 0)).or_default() += 1;
    }
}

/// Whether `status` is what `kind` is meant to get.
fn intended(kind: &str, status: u16) -> bool {
    match kind {
        "guesser" => matches!(status, 401 | 429),
        "push" => (200..=202).contains(&status),
        "admin" => matches!(status, 200 | 201 | 204),
        _ => status == 200,
    }
}

struct Ctx {
    http: Client,
    authd: String,
    registry: String,
    password: String,
    admin: (String, String),
    tally: Tally,
    deadline: Instant,
}

impl Ctx {
    async fn send(&self, kind: &'static str, req: reqwest::RequestBuilder) -> Option<Value> {
        let Ok(resp) = req.send().await else {
            self.tally.error(kind);
            return None;
        };
        self.tally.add(kind, resp.status());
        let body = resp.bytes().await.ok()?;
        serde_json::from_slice(&body).ok()
    }

    fn running(&self, n: u64) -> bool {
        Instant::now() < self.deadline && n < MAX_REQUESTS_PER_WORKER
    }

    /// A token for `scope` by password (GET, Basic) or refresh token (POST).
    /// `Login` also asks for a refresh token: only once per worker, since
    /// authd keeps 100 refresh tokens per user and drops the oldest.
    async fn token(&self, kind: &'static str, scope: &str, how: How<'_>) -> Option<Value> {
        let url = format!("{}/token", self.authd);
        let offline = if matches!(how, How::Login) {
            "true"
        } else {
            "false"
        };
        let req = match how {
            How::Login | How::Password => self
                .http
                .get(&url)
                .basic_auth(USER, Some(&self.password))
                .query(&[
                    ("service", "registry"),
                    ("scope", scope),
                    ("offline_token", offline),
                    ("client_id", "mixed-load"),
                ]),
            How::Refresh(rt) => self.http.post(&url).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", "mixed-load"),
                ("service", "registry"),
                ("scope", scope),
            ]),
        };
        self.send(kind, req).await
    }
}

#[derive(Clone, Copy)]
enum How<'a> {
    /// Basic credentials, asking for a refresh token too.
    Login,
    /// Basic credentials.
    Password,
    /// A refresh token.
    Refresh(&'a str),
}

fn token_of(v: Option<&Value>, key: &str) -> Option<String> {
    v.and_then(|v| v[key].as_str()).map(str::to_owned)
}

/// Pulls the base image again and again (manifest, config, layer), with a
/// token renewed by refresh token every 50 pulls.
async fn puller(ctx: Arc<Ctx>, image: SmallImage) {
    let scope = format!("repository:{REPO_PULL}:pull");
    let first = ctx.token("pull", &scope, How::Login).await;
    let Some(refresh) = token_of(first.as_ref(), "refresh_token") else {
        return;
    };
    let mut token = token_of(first.as_ref(), "token").unwrap_or_default();
    let mut n = 0u64;
    while ctx.running(n) {
        if n % 50 == 49
            && let Some(t) = token_of(
                ctx.token("pull", &scope, How::Refresh(&refresh))
                    .await
                    .as_ref(),
                "token",
            )
        {
            token = t;
        }
        let base = format!("{}/v2/{REPO_PULL}", ctx.registry);
        let manifest = ctx
            .http
            .get(format!("{base}/manifests/latest"))
            .bearer_auth(&token)
            .header("Accept", OCI_MANIFEST);
        ctx.send("pull", manifest).await;
        for digest in [&image.config.1, &image.layer.1] {
            let blob = ctx
                .http
                .get(format!("{base}/blobs/{digest}"))
                .bearer_auth(&token);
            ctx.send("pull", blob).await;
        }
        n += 3;
    }
}

/// Pushes distinct small images into its own repository, one token per 20.
async fn pusher(ctx: Arc<Ctx>, worker: u64) {
    let repo = format!("load/push-{worker}");
    let scope = format!("repository:{repo}:pull,push");
    let Ok(anonymous) = RegistryClient::new(&ctx.registry) else {
        return;
    };
    let mut client = anonymous.clone();
    let mut n = 0u64;
    while ctx.running(n) {
        if n.is_multiple_of(20) {
            let Some(t) = token_of(
                ctx.token("push", &scope, How::Password).await.as_ref(),
                "token",
            ) else {
                n += 1;
                continue;
            };
            client = anonymous.clone().with_bearer(&t);
        }
        let image = SmallImage::new(worker << 32 | n, 4096);
        // The client's helpers fail on an unexpected status; count each
        // push as one answer: 201 when all of it went through.
        match image.push(&client, &repo, &format!("t{}", n % 50)).await {
            Ok(()) => ctx.tally.add("push", StatusCode::CREATED),
            Err(e) => {
                eprintln!("mixed: push failed: {e:#}");
                ctx.tally.add("push", StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
        n += 1;
    }
}

/// Asks for tokens: Basic GETs and refresh-token POSTs, alternating.
async fn token_client(ctx: Arc<Ctx>) {
    let scope = format!("repository:{REPO_PULL}:pull");
    let first = ctx.token("token", &scope, How::Login).await;
    let Some(refresh) = token_of(first.as_ref(), "refresh_token") else {
        return;
    };
    let mut n = 0u64;
    while ctx.running(n) {
        let how = if n % 2 == 1 {
            How::Refresh(&refresh)
        } else {
            How::Password
        };
        ctx.token("token", &scope, how).await;
        n += 1;
    }
}

/// Lists users and grants, adds and removes a grant, reads the audit trail.
async fn admin(ctx: Arc<Ctx>) {
    let api = format!("{}/api/v1", ctx.authd);
    let (user, password) = ctx.admin.clone();
    let mut n = 0u64;
    while ctx.running(n) {
        let auth = |r: reqwest::RequestBuilder| r.basic_auth(&user, Some(&password));
        ctx.send("admin", auth(ctx.http.get(format!("{api}/users"))))
            .await;
        ctx.send("admin", auth(ctx.http.get(format!("{api}/grants"))))
            .await;
        let grant =
            json!({"subject": USER, "pattern": format!("load/tmp-{n}"), "actions": ["pull"]});
        let created = ctx
            .send(
                "admin",
                auth(ctx.http.post(format!("{api}/grants")).json(&grant)),
            )
            .await;
        if let Some(id) = created.as_ref().and_then(|v| v["id"].as_i64()) {
            ctx.send("admin", auth(ctx.http.delete(format!("{api}/grants/{id}"))))
                .await;
        }
        ctx.send("admin", auth(ctx.http.get(format!("{api}/audit?limit=20"))))
            .await;
        n += 5;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Guesses the user's password from one address: 401s, then 429s.
async fn guesser(ctx: Arc<Ctx>) {
    let mut n = 0u64;
    while ctx.running(n) {
        let req = ctx
            .http
            .get(format!("{}/token", ctx.authd))
            .basic_auth(VICTIM, Some(format!("wrong-{n}")));
        ctx.send("guesser", req).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the mixed load for `secs` seconds and prints its report; fails on
/// an unintended answer or growing memory.
pub async fn run(args: &Args, secs: u64, run_dir: &std::path::Path) -> Result<()> {
    let (mut authd, reg) = tokio::task::block_in_place(|| {
        let mut builder = e2e::Authd::builder().env("AUTHD_LOG_LEVEL", "warn");
        if let Some(bin) = &args.authd_bin {
            builder = builder.bin(bin);
        }
        let authd = builder.start();
        let cert = run_dir.join("authd.pem");
        let auth = authd.registry_auth(e2e::registry::Impl::Ours, &cert);
        let reg = start_registry(
            args,
            true,
            registry_builder(&run_dir.join("root")).auth(auth),
        );
        (authd, reg)
    });
    let password = format!("load-{}", e2e::fixtures::random_name(20));
    tokio::task::block_in_place(|| {
        authd.add_user(USER, &password);
        authd.add_user(
            VICTIM,
            &format!("victim-{}", e2e::fixtures::random_name(20)),
        );
        authd.grant(USER, "load/*", &["pull", "push"]);
    });
    e2e::init_crypto();
    let http = Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .context("build the HTTP client")?;
    let ctx = Arc::new(Ctx {
        http,
        authd: authd.url().to_owned(),
        registry: reg.url().to_owned(),
        password,
        admin: authd.admin_credentials(),
        tally: Tally::default(),
        deadline: Instant::now() + Duration::from_secs(secs),
    });

    // The image the pullers fetch.
    let base = SmallImage::new(42, 256 << 10);
    let scope = format!("repository:{REPO_PULL}:pull,push");
    let token = token_of(
        ctx.token("setup", &scope, How::Password).await.as_ref(),
        "token",
    )
    .context("a push token for the base image")?;
    base.push(
        &RegistryClient::new(reg.url())?.with_bearer(&token),
        REPO_PULL,
        "latest",
    )
    .await?;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(puller(ctx.clone(), base.clone())));
    }
    for w in 0..2 {
        tasks.push(tokio::spawn(pusher(ctx.clone(), w)));
    }
    for _ in 0..2 {
        tasks.push(tokio::spawn(token_client(ctx.clone())));
    }
    tasks.push(tokio::spawn(admin(ctx.clone())));
    tasks.push(tokio::spawn(guesser(ctx.clone())));

    // RSS of both servers (bytes) once a second.
    let pids = [("registry", reg.pid()), ("authd", authd.daemon().pid())];
    let mut samples: Vec<(f64, [u64; 2])> = Vec::new();
    while Instant::now() < ctx.deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = pids.map(|(_, pid)| sys::proc_status_kb(pid, "VmRSS").unwrap_or(0));
        samples.push((started.elapsed().as_secs_f64(), rss));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();

    println!("\nmixed load: {secs} s, 127.0.0.1, authd + registry (token auth)");
    println!(
        "{:<10} {:>7} {:>10} {:>9}",
        "worker", "status", "answers", "per s"
    );
    let tally = ctx
        .tally
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut unintended = Vec::new();
    for ((kind, status), count) in &tally {
        let mark = if intended(kind, *status) {
            ""
        } else {
            "  <- unintended"
        };
        println!(
            "{kind:<10} {status:>7} {count:>10} {:>9.0}{mark}",
            *count as f64 / elapsed
        );
        if !intended(kind, *status) && *kind != "setup" {
            unintended.push(format!("{kind} {status} x{count}"));
        }
    }
    let warm = samples.len() / 4;
    let mut flat = Vec::new();
    for (i, (name, _)) in pids.iter().enumerate() {
        let series: Vec<u64> = samples.iter().map(|s| s.1[i]).collect();
        let at_warm = series.get(warm.saturating_sub(1)).copied().unwrap_or(0);
        let peak = series[warm..].iter().copied().max().unwrap_or(0);
        let last = series.last().copied().unwrap_or(0);
        let limit = (at_warm as f64 * 1.25).max(at_warm as f64 + f64::from(16u32 << 20));
        let ok = (peak as f64) <= limit;
        println!(
            "RSS {name:<8}: after warm-up {:.1} MiB, peak after {:.1} MiB, end {:.1} MiB, limit {:.1} MiB: {}",
            at_warm as f64 / MIB,
            peak as f64 / MIB,
            last as f64 / MIB,
            limit / MIB,
            if ok { "flat" } else { "GROWS" }
        );
        flat.push(ok);
        let trace: Vec<String> = series
            .iter()
            .step_by((series.len() / 12).max(1))
            .map(|b| format!("{:.0}", *b as f64 / MIB))
            .collect();
        println!("  RSS MiB over time: {}", trace.join(" "));
    }
    ensure!(
        unintended.is_empty(),
        "unintended answers: {}",
        unintended.join(", ")
    );
    ensure!(
        flat.iter().all(|f| *f),
        "resident memory grew under a steady load"
    );
    drop((authd, reg));
    Ok(())
}
