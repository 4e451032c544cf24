//! Benchmark: our registry and CNCF distribution 2.8 side by side, in one
//! run, with the same client and the same data, printing both figures, the
//! ratio ours/distribution and pass/fail against the targets of issue 3
//! (no auth) and issue 5 (token auth against authd, see [`token`]).
//!
//! Run through `bench/run.sh` (builds the release binaries first). Each
//! server gets a copy of one seeded data set (catalog and tag lists) in its own
//! root, log level warn and no access log. Servers are measured one after the
//! other (alternating who goes first), never at the same time.

mod client;
mod data;
mod gc;
mod issuance;
mod mirror;
mod mixed;
mod report;
mod s3;
mod sys;
mod token;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::Parser;

use crate::client::{OCI_MANIFEST, RegistryClient};
use crate::data::{BASE_REPO, BASE_TAG, MANY_TAGS_REPO, SeedSpec, SmallImage};
use crate::report::{Better, Figure, Row, Unit};

/// Every metric, in the order they run (lists before pushes, so that the
/// catalog holds exactly the seeded repositories when it is timed).
const METRICS: &[&str] = &[
    "disk",
    "catalog",
    "tags-5000",
    "ui",
    "tags-list",
    "manifest-get",
    "small-push",
    "push",
    "push-chunked",
    "pull",
    "gc",
    "mirror",
    "token-manifest",
    "token-pull",
];

#[derive(Parser, Debug)]
#[command(about = "Registry benchmark: ours vs CNCF distribution 2.8, same client, same data")]
struct Args {
    /// Smaller sizes for a fast sanity run (64 MiB blobs, 1,000 repos, 3 s wrk).
    #[arg(long)]
    quick: bool,
    /// Comma-separated metrics to run (default all): disk, catalog,
    /// tags-5000, ui, tags-list, manifest-get, small-push, push, push-chunked, pull,
    /// gc, mirror, token-manifest, token-pull. RSS is always reported.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Which servers: ours, distribution (default both).
    #[arg(long, value_delimiter = ',', default_value = "ours,distribution")]
    servers: Vec<String>,
    /// Our registry binary (default: the workspace's, same profile as this).
    #[arg(long)]
    ours_bin: Option<PathBuf>,
    /// The authd binary for the token rows (default: the workspace's, same
    /// profile as this).
    #[arg(long)]
    authd_bin: Option<PathBuf>,
    /// Working directory (blob files, server roots, cached seed data).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Repetitions of blob push/pull (median reported).
    #[arg(long)]
    reps: Option<usize>,
    /// Blob size in MiB for push/pull.
    #[arg(long)]
    blob_mib: Option<u64>,
    /// Chunk size in MiB for the chunked push.
    #[arg(long, default_value_t = 16)]
    chunk_mib: usize,
    /// wrk duration in seconds.
    #[arg(long)]
    duration: Option<u64>,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Small images pushed in total (split over the clients).
    #[arg(long)]
    small_images: Option<usize>,
    /// Concurrent clients for small-image pushes.
    #[arg(long, default_value_t = 8)]
    small_clients: usize,
    /// Layer size in bytes of a small image.
    #[arg(long, default_value_t = 4096)]
    small_layer: usize,
    /// Repositories in the catalog data set.
    #[arg(long)]
    repos: Option<usize>,
    /// Tags in the large tag list.
    #[arg(long)]
    tags: Option<usize>,
    /// Blobs in the GC data set (default 10,000; 2,000 with --quick).
    #[arg(long)]
    gc_blobs: Option<usize>,
    /// Timed repetitions of the catalog and tag-list requests (median).
    #[arg(long, default_value_t = 5)]
    list_reps: usize,
    /// Instead of the comparison: a mixed load on authd and our registry
    /// (token auth) for this many seconds — pulls, pushes, token requests,
    /// admin calls and a password guesser — that fails on any unintended
    /// answer or growing memory.
    #[arg(long, value_name = "SECS")]
    mixed: Option<u64>,
    /// Instead of the comparison: authd's token issuance (the flows of
    /// bench/token.sh: Basic GET, refresh-token POST, access-token GET) with
    /// authd on SQLite and on a PostgreSQL started for the run, one after
    /// the other; fails below issue 12's PostgreSQL targets (2,000/s Basic,
    /// 5,000/s refresh) or issue 14's 5,000/s with an access token.
    #[arg(long)]
    token_issue: bool,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Both servers store in one Garage (S3) started for the run, each under
    /// its own root prefix, instead of a directory, and the seeded data sets
    /// are uploaded into it. Every metric but disk and
    /// the token rows.
    #[arg(long)]
    s3: bool,
}

/// The metrics `--s3` leaves out: the disk's own rate, the web UI, the
/// mirror and the token rows run on directories only.
const NOT_ON_S3: &[&str] = &["disk", "ui", "mirror", "token-manifest", "token-pull"];

/// Resolved sizes.
struct Plan {
    blob_size: u64,
    chunk: usize,
    reps: usize,
    wrk_duration: Duration,
    small_images: usize,
    seed: SeedSpec,
    gc: gc::GcSpec,
}

impl Args {
    fn plan(&self) -> Plan {
        let q = self.quick;
        Plan {
            blob_size: self.blob_mib.unwrap_or(if q { 64 } else { 1024 }) << 20,
            chunk: self.chunk_mib << 20,
            reps: self.reps.unwrap_or(if q { 1 } else { 3 }),
            wrk_duration: Duration::from_secs(self.duration.unwrap_or(if q { 3 } else { 10 })),
            small_images: self.small_images.unwrap_or(if q { 80 } else { 800 }),
            seed: SeedSpec {
                repos: self.repos.unwrap_or(if q { 1_000 } else { 10_000 }),
                tags: self.tags.unwrap_or(if q { 500 } else { 5_000 }),
            },
            gc: {
                let blobs = self.gc_blobs.unwrap_or(if q { 2_000 } else { 10_000 });
                gc::GcSpec {
                    blobs,
                    manifests: (blobs / 5).max(1),
                }
            },
        }
    }

    fn wants(&self, metric: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|m| m == metric))
            && (!self.s3 || !NOT_ON_S3.contains(&metric))
    }
}

/// One server under test.
struct Server {
    name: &'static str,
    reg: e2e::Registry,
    client: RegistryClient,
}

impl Server {
    fn is_ours(&self) -> bool {
        self.name == "ours"
    }
}

/// Per-server figures of one metric, assembled into a row.
fn row_of(mut row: Row, servers: &[Server], figures: Vec<Figure>) -> Row {
    for (s, f) in servers.iter().zip(figures) {
        if s.is_ours() {
            row.ours = Some(f);
        } else {
            row.dist = Some(f);
        }
    }
    row
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// Server indices in the order for repetition `rep` (alternating).
fn order(n: usize, rep: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if rep % 2 == 1 {
        idx.reverse();
    }
    idx
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    for m in &args.only {
        ensure!(
            METRICS.contains(&m.as_str()),
            "unknown metric {m}; known: {METRICS:?}"
        );
    }
    let plan = args.plan();
    let workdir = args
        .workdir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("registry-bench"));
    std::fs::create_dir_all(&workdir)?;
    let run_dir = workdir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let result = match args.mixed {
        Some(secs) => mixed::run(&args, secs, &run_dir).await,
        None if args.token_issue => issuance::run(&args, plan.wrk_duration, &run_dir),
        None => run(&args, &plan, &workdir, &run_dir).await,
    };
    // Server roots and blob files of this run; the seed cache stays.
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

async fn run(args: &Args, plan: &Plan, workdir: &Path, run_dir: &Path) -> Result<()> {
    let mut rows: Vec<Row> = Vec::new();
    let mut fsync_rate = None;
    if args.wants("disk") {
        let size = plan.blob_size.min(1 << 30);
        let rate = sys::fsync_write_rate(run_dir, size)?;
        eprintln!("bench: disk write with fsync: {:.1} MB/s", rate / 1e6);
        fsync_rate = Some((rate, size));
    }

    let seed_root = if ["catalog", "tags-5000", "ui", "tags-list", "manifest-get"]
        .iter()
        .any(|m| args.wants(m))
    {
        Some(data::seeded_root(workdir, plan.seed, 16).await?)
    } else {
        None
    };

    let garage = args.s3.then(|| {
        eprintln!("bench: starting Garage (S3) for both servers");
        e2e::garage::Garage::start("bench")
    });
    // On S3 each server's root prefix gets its own copy of the seeded data.
    if let (Some(g), Some(seed)) = (&garage, &seed_root) {
        for name in &args.servers {
            let n = s3::upload_tree(g, &seed.join("data"), name).await?;
            eprintln!("bench: seeded data uploaded for {name}: {n} objects");
        }
    }
    let on_disk = if garage.is_some() {
        None
    } else {
        seed_root.as_deref()
    };
    let servers = start_servers(args, on_disk, run_dir, garage.as_ref())?;
    ensure!(!servers.is_empty(), "no server to measure");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = Row::new("RSS idle", Unit::Bytes, Better::Lower, Some(1.0)).with_note(
        if seed_root.is_some() {
            "VmRSS 2 s after start, seeded data present"
        } else {
            "VmRSS 2 s after start"
        },
    );
    let idle = row_of(
        idle,
        &servers,
        servers
            .iter()
            .map(|s| {
                sys::proc_status_kb(s.reg.pid(), "VmRSS")
                    .map(|b| b as f64)
                    .map_err(|e| e.to_string())
            })
            .collect(),
    );

    if args.wants("catalog") {
        rows.extend(catalog(&servers, plan, args.list_reps).await);
    }
    if args.wants("tags-5000") {
        rows.push(tags_many(&servers, plan, args.list_reps).await);
    }
    if args.wants("ui") {
        rows.extend(ui_pages(&servers, plan, args.list_reps).await);
    }
    if args.wants("tags-list") {
        let url = format!("/v2/{BASE_REPO}/tags/list");
        let row = Row::new(
            &format!(
                "tags list req/s ({} tags, c={})",
                data::BASE_TAGS,
                args.connections
            ),
            Unit::PerSec,
            Better::Higher,
            Some(3.0),
        );
        rows.push(wrk_row(
            row,
            &servers,
            &url,
            &[],
            args.connections,
            plan.wrk_duration,
        ));
    }
    if args.wants("manifest-get") {
        let url = format!("/v2/{BASE_REPO}/manifests/{BASE_TAG}");
        let row = Row::new(
            &format!("manifest GET req/s (c={})", args.connections),
            Unit::PerSec,
            Better::Higher,
            Some(5.0),
        );
        let accept = format!("Accept: {OCI_MANIFEST}");
        rows.push(wrk_row(
            row,
            &servers,
            &url,
            &[accept.as_str()],
            args.connections,
            plan.wrk_duration,
        ));
    }
    let mut engine_figures: Vec<String> = Vec::new();
    if args.wants("small-push") {
        rows.push(small_push(&servers, plan, args).await);
    }
    if args.wants("push") || args.wants("push-chunked") || args.wants("pull") {
        let engine = garage.as_ref().map(s3::Engine::new).transpose()?;
        let (blob_rows, engine_rates) = blobs(
            &servers,
            plan,
            args,
            run_dir,
            fsync_rate.map(|(r, _)| r),
            engine.as_ref(),
        )
        .await?;
        rows.extend(blob_rows);
        engine_figures = engine_rates;
    }
    if args.wants("gc") {
        let ours_bin = args
            .ours_bin
            .clone()
            .unwrap_or_else(|| e2e::bins::workspace_bin("registry"));
        rows.extend(gc::rows(plan.gc, &ours_bin, run_dir, garage.as_ref()).await?);
    }
    if args.wants("mirror") {
        rows.extend(mirror::rows(args, plan, run_dir).await?);
    }
    if args.wants("token-manifest") || args.wants("token-pull") {
        rows.extend(token::rows(&servers, plan, args, run_dir).await?);
    }

    rows.push(idle);
    let loaded = Row::new("RSS peak under load", Unit::Bytes, Better::Lower, Some(1.0))
        .with_note("VmHWM (peak resident set) at the end of the run");
    rows.push(row_of(
        loaded,
        &servers,
        servers
            .iter()
            .map(|s| {
                sys::proc_status_kb(s.reg.pid(), "VmHWM")
                    .map(|b| b as f64)
                    .map_err(|e| e.to_string())
            })
            .collect(),
    ));

    println!();
    println!(
        "registry benchmark: ours vs CNCF distribution 2.8 ({}{}; {} cores)",
        if args.quick { "quick" } else { "full" },
        if args.s3 {
            ", both on S3: one Garage on 127.0.0.1"
        } else {
            ""
        },
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "blobs {} MiB x{} reps (chunks {} MiB); wrk {} s, {} connections; {} small images by {} clients; catalog {} repos; tag list {} tags",
        plan.blob_size >> 20,
        plan.reps,
        plan.chunk >> 20,
        plan.wrk_duration.as_secs(),
        args.connections,
        plan.small_images,
        args.small_clients,
        plan.seed.repos,
        plan.seed.tags
    );
    if let Some((rate, size)) = fsync_rate {
        println!(
            "disk write rate with fsync (same run, {} MiB in 1 MiB writes + one fsync): {:.1} MB/s",
            size >> 20,
            rate / 1e6
        );
    }
    if !engine_figures.is_empty() {
        println!(
            "S3 engine alone (Garage; curl with SigV4 for PUT and GET, object_store for the parts; {} MiB, median of {}, in the same reps as the registries): {}",
            plan.blob_size >> 20,
            plan.reps,
            engine_figures.join(", ")
        );
    }
    println!();
    print!("{}", report::render(&rows));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report::to_json(&rows))?)?;
    }
    Ok(())
}

fn start_servers(
    args: &Args,
    seed_root: Option<&Path>,
    run_dir: &Path,
    garage: Option<&e2e::garage::Garage>,
) -> Result<Vec<Server>> {
    let mut servers = Vec::new();
    for name in &args.servers {
        let root = run_dir.join(format!("root-{name}"));
        if let Some(seed) = seed_root {
            data::copy_seed(seed, &root)?;
        }
        let (name, ours) = match name.as_str() {
            "ours" => ("ours", true),
            "distribution" => ("distribution", false),
            other => anyhow::bail!("unknown server {other} (ours, distribution)"),
        };
        let mut builder = registry_builder(&root);
        if let Some(g) = garage {
            builder = builder.s3(g, &format!("/{name}"));
        }
        let reg = start_registry(args, ours, builder);
        let client = RegistryClient::new(reg.url())?;
        eprintln!("bench: {name} at {} (pid {})", reg.url(), reg.pid());
        servers.push(Server { name, reg, client });
    }
    Ok(servers)
}

/// How every benchmarked server runs: over `root`, log level warn, no access
/// log, deletes enabled.
fn registry_builder(root: &Path) -> e2e::RegistryBuilder {
    e2e::Registry::builder()
        .root(root)
        .log_level("warn")
        .access_log(false)
        .delete_enabled(true)
}

/// Starts ours (`--ours-bin`, or the workspace's) or distribution.
fn start_registry(args: &Args, ours: bool, builder: e2e::RegistryBuilder) -> e2e::Registry {
    if ours {
        let bin = args
            .ours_bin
            .clone()
            .unwrap_or_else(|| e2e::bins::workspace_bin("registry"));
        builder.bin(bin).start()
    } else {
        builder.start_distribution()
    }
}

/// Times `f` `reps` times after one untimed warm-up; returns the median
/// seconds and the last call's value.
async fn timed<T, F, Fut>(reps: usize, mut f: F) -> Result<(f64, T)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut last = f().await?;
    let mut times = Vec::new();
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        last = f().await?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok((median(times), last))
}

/// `_catalog` with one `n=<all>` request, and walking pages of 100.
async fn catalog(servers: &[Server], plan: &Plan, reps: usize) -> Vec<Row> {
    // The seeded repositories plus seed/base and seed/many-tags.
    let expected = plan.seed.repos + 2;
    let mut single = Vec::new();
    let mut walk = Vec::new();
    let mut notes = Vec::new();
    for s in servers {
        let c = &s.client;
        let path = format!("/v2/_catalog?n={}", plan.seed.repos);
        let res = timed(reps, || async {
            let (body, next) = c.get_list(&path).await?;
            Ok((
                body["repositories"].as_array().map_or(0, Vec::len),
                next.is_some(),
            ))
        })
        .await;
        let res = match res {
            Ok((t, (count, has_link))) => {
                if count != plan.seed.repos {
                    notes.push(format!(
                        "{}: n={} returned {count} repositories{}",
                        s.name,
                        plan.seed.repos,
                        if has_link { " and a Link" } else { "" }
                    ));
                }
                Ok(t)
            }
            // distribution 2.8 caps n at 1000: time the walk with its
            // largest page instead, which is what its clients must do.
            Err(e) if format!("{e:#}").contains("PAGINATION_NUMBER_INVALID") => {
                notes.push(format!(
                    "{}: refuses n={} (PAGINATION_NUMBER_INVALID); timed as a walk with n=1000",
                    s.name, plan.seed.repos
                ));
                timed(reps, || walk_catalog(c, 1000, expected))
                    .await
                    .map(|(t, ())| t)
            }
            Err(e) => Err(e),
        };
        single.push(res.map_err(|e| format!("{e:#}")));
        let res = timed(reps, || walk_catalog(c, 100, expected)).await;
        walk.push(res.map(|(t, ())| t).map_err(|e| format!("{e:#}")));
    }
    let mut r1 = row_of(
        Row::new(
            &format!(
                "catalog of {} repos, n={}",
                plan.seed.repos, plan.seed.repos
            ),
            Unit::Seconds,
            Better::Lower,
            Some(0.2),
        ),
        servers,
        single,
    );
    r1.note = notes.join("; ");
    let r2 = row_of(
        Row::new(
            &format!("catalog walk n=100 ({} pages)", expected.div_ceil(100)),
            Unit::Seconds,
            Better::Lower,
            Some(0.2),
        ),
        servers,
        walk,
    );
    vec![r1, r2]
}

/// The web UI (ours only; `auth: none`): the first page of the repository
/// list and of the tag list of the repository with `plan.seed.tags` tags,
/// each sorted by name and by push time. Issue 13 asks for < 100 ms.
async fn ui_pages(servers: &[Server], plan: &Plan, reps: usize) -> Vec<Row> {
    let Some(s) = servers.iter().find(|s| s.is_ours()) else {
        return Vec::new();
    };
    let pages = [
        (
            format!(
                "web UI: repositories page 1 of {} (by name)",
                plan.seed.repos
            ),
            "/ui/".to_owned(),
            "seed/",
        ),
        (
            format!(
                "web UI: repositories page 1 of {} (by last push)",
                plan.seed.repos
            ),
            "/ui/?sort=pushed".to_owned(),
            "seed/",
        ),
        (
            format!("web UI: tags page 1 of {} (by name)", plan.seed.tags),
            format!("/ui/repo?name={MANY_TAGS_REPO}"),
            "data-tag=",
        ),
        (
            format!("web UI: tags page 1 of {} (by push time)", plan.seed.tags),
            format!("/ui/repo?name={MANY_TAGS_REPO}&sort=pushed"),
            "data-tag=",
        ),
    ];
    let mut rows = Vec::new();
    for (name, path, expect) in pages {
        let c = &s.client;
        let figure = timed(reps.max(5), || async {
            let page = c.get_text(&path).await?;
            ensure!(page.contains(expect), "{path}: the page lists nothing");
            Ok(())
        })
        .await
        .map(|(t, ())| t)
        .map_err(|e| format!("{e:#}"));
        let fast = figure.as_ref().is_ok_and(|t| *t < 0.1);
        let mut row = Row::new(&name, Unit::Seconds, Better::Lower, None)
            .with_note("median; the by-push list reuses its index for 5 s");
        row.require.push(("< 100 ms".to_owned(), fast));
        row.ours = Some(figure);
        rows.push(row);
    }
    rows
}

/// Walks `_catalog` with pages of `page` following `Link`; checks the total.
async fn walk_catalog(c: &RegistryClient, page: usize, expected: usize) -> Result<()> {
    let mut walked = 0usize;
    let mut next = Some(format!("/v2/_catalog?n={page}"));
    while let Some(p) = next.take() {
        let (body, link) = c.get_list(&p).await?;
        walked += body["repositories"].as_array().map_or(0, Vec::len);
        next = link;
    }
    ensure!(
        walked == expected,
        "walk found {walked} repositories, want {expected}"
    );
    Ok(())
}

/// The tag list of the repository with `plan.seed.tags` tags, one request.
async fn tags_many(servers: &[Server], plan: &Plan, reps: usize) -> Row {
    let mut figures = Vec::new();
    for s in servers {
        let c = &s.client;
        let want = plan.seed.tags;
        figures.push(
            timed(reps, || async {
                let (body, _) = c
                    .get_list(&format!("/v2/{MANY_TAGS_REPO}/tags/list"))
                    .await?;
                let n = body["tags"].as_array().map_or(0, Vec::len);
                ensure!(n == want, "tags list returned {n} tags, want {want}");
                Ok(())
            })
            .await
            .map(|(t, ())| t)
            .map_err(|e| format!("{e:#}")),
        );
    }
    row_of(
        Row::new(
            &format!("tags list of {} tags (1 request)", plan.seed.tags),
            Unit::Seconds,
            Better::Lower,
            Some(0.2),
        ),
        servers,
        figures,
    )
}

/// wrk against `path` on each server (1 s warm-up, then the timed run).
fn wrk_row(
    mut row: Row,
    servers: &[Server],
    path: &str,
    headers: &[&str],
    connections: u32,
    duration: Duration,
) -> Row {
    let mut notes = Vec::new();
    let mut figures = Vec::new();
    for s in servers {
        let url = format!("{}{path}", s.reg.url());
        let fig = (|| {
            sys::wrk(&url, connections, Duration::from_secs(1), headers)?;
            let r = sys::wrk(&url, connections, duration, headers)?;
            ensure!(r.non_2xx == 0, "{} non-2xx responses", r.non_2xx);
            if r.socket_errors > 0 {
                notes.push(format!("{}: {} socket errors", s.name, r.socket_errors));
            }
            Ok(r.rps)
        })();
        figures.push(fig.map_err(|e: anyhow::Error| e.to_string()));
    }
    row.note = notes.join("; ");
    row_of(row, servers, figures)
}

/// Small images (1 layer, 1 config, 1 manifest) pushed by concurrent clients.
async fn small_push(servers: &[Server], plan: &Plan, args: &Args) -> Row {
    let images: Vec<SmallImage> = (0..plan.small_images)
        .map(|i| SmallImage::new(100_000 + i as u64, args.small_layer))
        .collect();
    let images = std::sync::Arc::new(images);
    let clients = args.small_clients.max(1);
    let mut figures = Vec::new();
    for s in servers {
        let started = Instant::now();
        let client = s.client.clone();
        let imgs = images.clone();
        let res = data::parallel(imgs.len(), clients, move |i| {
            let (client, imgs) = (client.clone(), imgs.clone());
            async move {
                imgs[i]
                    .push(
                        &client,
                        &format!("bench/small-{}", i % clients),
                        &format!("i{i}"),
                    )
                    .await
            }
        })
        .await;
        figures.push(
            res.map(|()| plan.small_images as f64 / started.elapsed().as_secs_f64())
                .map_err(|e| format!("{e:#}")),
        );
    }
    row_of(
        Row::new(
            &format!("small-image pushes/s ({clients} clients)"),
            Unit::PerSec,
            Better::Higher,
            Some(3.0),
        ),
        servers,
        figures,
    )
}

/// 1 GiB blob push (monolithic and chunked) and pull, `reps` times each with
/// fresh content, servers alternating. Every contender pushes bytes of its
/// own: on S3 they all share one Garage, which writes a block it already
/// holds only once, so a second push of the same bytes would be spared the
/// disk writes the first one paid for. With `engine` (the S3 runs), Garage
/// itself takes a turn in every repetition (PUT, parts, GET) and each
/// registry's figure is also given as a share of it; the second value
/// returned describes the engine's own figures.
async fn blobs(
    servers: &[Server],
    plan: &Plan,
    args: &Args,
    run_dir: &Path,
    fsync_rate: Option<f64>,
    engine: Option<&s3::Engine>,
) -> Result<(Vec<Row>, Vec<String>)> {
    let n = servers.len();
    // Per contender (the servers, then the engine), per kind: rates.
    let contenders = n + usize::from(engine.is_some());
    let mut rates: Vec<[Vec<f64>; 3]> = vec![Default::default(); contenders];
    let mut errors: Vec<[Option<String>; 3]> = vec![[None, None, None]; contenders];
    const MONO: usize = 0;
    const CHUNKED: usize = 1;
    const PULL: usize = 2;
    let size = plan.blob_size;
    let mono_file = run_dir.join("blob-mono.bin");
    let chunk_file = run_dir.join("blob-chunked.bin");
    // The content of contender `i`'s push of `kind` in repetition `rep`.
    let seed = |kind: u64, rep: usize, i: usize| kind * 1_000 + (rep * contenders + i) as u64;
    // Per contender: the digest of its monolithic push, for its pull.
    let mut mono_digests = vec![String::new(); contenders];
    for rep in 0..plan.reps {
        eprintln!(
            "bench: blob rep {}/{}: {} MiB of new content for each push",
            rep + 1,
            plan.reps,
            size >> 20
        );
        let repo = format!("bench/blob-{rep}");
        for i in order(contenders, rep) {
            let mono_digest = data::blob_file(&mono_file, size, seed(1, rep, i))?;
            mono_digests[i].clone_from(&mono_digest);
            // Its own content reaches the disk before, not during, the
            // timed push.
            sys::settle();
            let t = Instant::now();
            let done = match (servers.get(i), engine) {
                (Some(s), _) => s
                    .client
                    .push_blob_monolithic(&repo, &mono_file, &mono_digest)
                    .await
                    .map(|()| t.elapsed().as_secs_f64()),
                (None, Some(e)) => e.put(&mono_file).await,
                (None, None) => continue,
            };
            match done {
                Ok(secs) => rates[i][MONO].push(size as f64 / secs),
                Err(e) => errors[i][MONO] = Some(format!("{e:#}")),
            }
        }
        if args.wants("pull") {
            for i in order(contenders, rep + 1) {
                if errors[i][MONO].is_some() {
                    continue;
                }
                sys::settle();
                let got = match (servers.get(i), engine) {
                    (Some(s), _) => s.client.pull_blob(&repo, &mono_digests[i]).await,
                    (None, Some(e)) => e.get().await.map(|secs| (size, secs)),
                    (None, None) => continue,
                };
                match got {
                    Ok((got, secs)) if got == size => rates[i][PULL].push(size as f64 / secs),
                    Ok((got, _)) => errors[i][PULL] = Some(format!("pulled {got} bytes of {size}")),
                    Err(e) => errors[i][PULL] = Some(format!("{e:#}")),
                }
            }
        }
        if args.wants("push-chunked") {
            for i in order(contenders, rep) {
                let digest = data::blob_file(&chunk_file, size, seed(2, rep, i))?;
                sys::settle();
                let t = Instant::now();
                let done = match (servers.get(i), engine) {
                    (Some(s), _) => s
                        .client
                        .push_blob_chunked(&repo, &chunk_file, &digest, plan.chunk)
                        .await
                        .map(|()| t.elapsed().as_secs_f64()),
                    (None, Some(e)) => e.put_in_parts(&chunk_file, plan.chunk).await,
                    (None, None) => continue,
                };
                match done {
                    Ok(secs) => rates[i][CHUNKED].push(size as f64 / secs),
                    Err(e) => errors[i][CHUNKED] = Some(format!("{e:#}")),
                }
            }
        }
    }
    let _ = std::fs::remove_file(&mono_file);
    let _ = std::fs::remove_file(&chunk_file);

    let figure = |samples: &Vec<f64>, err: &Option<String>| -> Figure {
        match err {
            Some(e) => Err(e.clone()),
            None => Ok(median(samples.clone())),
        }
    };
    let mib = size >> 20;
    let specs = [
        (
            "push",
            MONO,
            format!("blob push {mib} MiB monolithic"),
            1.5,
            "PUT",
        ),
        (
            "push-chunked",
            CHUNKED,
            format!("blob push {mib} MiB chunked ({} MiB)", plan.chunk >> 20),
            1.5,
            "upload in parts of the chunk size",
        ),
        ("pull", PULL, format!("blob pull {mib} MiB"), 1.2, "GET"),
    ];
    let mut rows = Vec::new();
    let mut engine_figures = Vec::new();
    for (metric, kind, name, target, engine_op) in specs {
        if !args.wants(metric) {
            continue;
        }
        let mut row = Row::new(&name, Unit::BytesPerSec, Better::Higher, Some(target));
        let figures: Vec<Figure> = (0..n)
            .map(|i| figure(&rates[i][kind], &errors[i][kind]))
            .collect();
        if let Some(rate) = fsync_rate.filter(|_| kind != PULL) {
            let ours = servers
                .iter()
                .zip(&figures)
                .find(|(s, _)| s.is_ours())
                .and_then(|(_, f)| f.as_ref().ok().copied());
            row.alt = Some((
                ">= 85% of fsync rate".to_owned(),
                ours.is_some_and(|o| o >= 0.85 * rate),
            ));
            let fractions: Vec<String> = servers
                .iter()
                .zip(&figures)
                .filter_map(|(s, f)| {
                    f.as_ref()
                        .ok()
                        .map(|v| format!("{} {:.0}%", s.name, 100.0 * v / rate))
                })
                .collect();
            row.note = format!("of the disk's fsync write rate: {}", fractions.join(", "));
        }
        if engine.is_some() {
            let e = &rates[n][kind];
            engine_figures.push(match &errors[n][kind] {
                Some(err) => format!("{engine_op} failed: {err}"),
                None => format!("{engine_op} {:.1} MB/s", median(e.clone()) / 1e6),
            });
            // Each repetition's figure over the engine's in the same
            // repetition, then the median of those.
            let share = |i: usize| {
                (errors[i][kind].is_none() && errors[n][kind].is_none() && !e.is_empty())
                    .then(|| median(rates[i][kind].iter().zip(e).map(|(r, e)| r / e).collect()))
            };
            let ours = servers.iter().position(Server::is_ours).and_then(share);
            row.alt = Some((
                format!(">= 80% of Garage's {engine_op}"),
                ours.is_some_and(|o| o >= 0.8),
            ));
            let shares: Vec<String> = (0..n)
                .filter_map(|i| share(i).map(|v| format!("{} {:.0}%", servers[i].name, 100.0 * v)))
                .collect();
            row.note = format!(
                "of Garage's own {engine_op} in the same reps (median of the per-rep ratios): {}",
                shares.join(", ")
            );
        }
        rows.push(row_of(row, servers, figures));
    }
    Ok((rows, engine_figures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert!((median(vec![3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(vec![4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
    }

    #[test]
    fn verdicts_follow_direction_and_alternative() {
        let mut r = Row::new("x", Unit::PerSec, Better::Higher, Some(2.0));
        r.ours = Some(Ok(300.0));
        r.dist = Some(Ok(100.0));
        assert_eq!(r.verdict(), Some(true));
        let mut r = Row::new("t", Unit::Seconds, Better::Lower, Some(0.2));
        r.ours = Some(Ok(0.5));
        r.dist = Some(Ok(1.0));
        assert_eq!(r.verdict(), Some(false));
        r.alt = Some(("alt".to_owned(), true));
        assert_eq!(r.verdict(), Some(true));
        let mut r = Row::new("e", Unit::PerSec, Better::Higher, Some(1.0));
        r.ours = Some(Err("boom".to_owned()));
        r.dist = Some(Ok(1.0));
        assert_eq!(r.verdict(), Some(false));
    }

    #[test]
    fn requirements_must_hold_as_well_as_the_ratio() {
        let mut r = Row::new("m", Unit::PerSec, Better::Higher, Some(10.0));
        r.ours = Some(Ok(25_000.0));
        r.dist = Some(Ok(1_000.0));
        r.require.push((">= 20000 /s".to_owned(), true));
        assert_eq!(r.verdict(), Some(true));
        r.require.push(("other".to_owned(), false));
        assert_eq!(r.verdict(), Some(false));
        // Ratio short, requirements met: fail.
        let mut r = Row::new("m", Unit::PerSec, Better::Higher, Some(10.0));
        r.ours = Some(Ok(25_000.0));
        r.dist = Some(Ok(5_000.0));
        r.require.push((">= 20000 /s".to_owned(), true));
        assert_eq!(r.verdict(), Some(false));
        // No ratio target: the requirements decide.
        let mut r = Row::new("p", Unit::BytesPerSec, Better::Higher, None);
        r.ours = Some(Ok(1.0));
        r.require.push(("within 5%".to_owned(), true));
        assert_eq!(r.verdict(), Some(true));
        r.require[0].1 = false;
        assert_eq!(r.verdict(), Some(false));
    }
}
