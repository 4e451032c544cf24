//! The token-auth rows (issue 5): both servers trust authd, in the same run
//! as the rows without auth.
//!
//! One authd (release build, log level warn) issues the tokens. Each server
//! measured without auth gets a token-auth twin serving the very same root
//! directory: ours with authd's JWKS URL, distribution 2.8 with
//! `auth.token.rootcertbundle` written by `authd keys export-cert`; both with
//! authd's realm, service and issuer.
//!
//! - `token-manifest`: wrk, `GET /v2/bench/token/manifests/latest` with
//!   `Authorization: Bearer <token>` (one token from authd for
//!   `repository:bench/token:pull`, valid for the whole run; the image is
//!   pushed through the server without auth). Targets: ≥ 20,000 req/s and
//!   ≥ 10× distribution.
//! - `token-pull`: a blob of the run's blob size, pushed once, pulled with a
//!   token from each twin and without auth from a fresh twin without auth of
//!   each server (same binary, same root, started at the same time as the
//!   token twin: only the auth differs), interleaved, `8 × reps + 1` times.
//!   Target: ours with a token ≥ 95% of ours without auth, checked on the
//!   median of the ratios of adjacent pulls (one with, one without a token):
//!   single pulls spread by ±15% on a busy machine, drift included, which
//!   the pairing removes. distribution's figures are shown for reference.
//!   The note gives every median with its range and the CPU time each
//!   server spent per pull (what a token costs, without the noise).

use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use e2e::registry::{Auth, Impl};

use crate::client::{OCI_MANIFEST, RegistryClient};
use crate::data::{self, SmallImage};
use crate::report::{Better, Figure, Row, Unit};
use crate::{
    Args, Plan, Server, median, order, registry_builder, row_of, start_registry, sys, wrk_row,
};

/// The bench user's name in authd.
const USER: &str = "bench";
/// Repository of the manifest hammered by `token-manifest`.
const MANIFEST_REPO: &str = "bench/token";
/// Repository of the blob pulled by `token-pull`.
const BLOB_REPO: &str = "bench/token-blob";
/// Least manifest GET rate with a token (issue 5).
const MIN_MANIFEST_RPS: f64 = 20_000.0;
/// Least ratio ours/distribution for manifest GET with a token (issue 5).
const MANIFEST_RATIO: f64 = 10.0;
/// Least fraction of our pull rate without auth kept with a token (issue 5).
const PULL_FRACTION: f64 = 0.95;

/// authd, the bench user's password, a token-auth twin of each server and,
/// for `token-pull`, a fresh twin without auth of each server.
struct Setup {
    authd: e2e::Authd,
    password: String,
    twins: Vec<Server>,
    plain: Vec<Server>,
}

impl Setup {
    /// A token from authd for `scope`, as the bench user.
    fn token(&self, scope: &str) -> String {
        tokio::task::block_in_place(|| {
            self.authd
                .token(Some((USER, self.password.as_str())), &[scope])
        })
    }
}

/// Starts a server of the same kind as `s` over the same root, with `auth`.
fn twin(s: &Server, args: &Args, auth: Auth, what: &str) -> Result<Server> {
    let reg = start_registry(args, s.is_ours(), registry_builder(s.reg.root()).auth(auth));
    eprintln!(
        "bench: {} {what} at {} (pid {})",
        s.name,
        reg.url(),
        reg.pid()
    );
    let client = RegistryClient::new(reg.url())?;
    Ok(Server {
        name: s.name,
        reg,
        client,
    })
}

/// Starts authd (with the bench user and its grant), a token-auth twin over
/// the root of each server in `servers`, and with `plain` a twin without
/// auth of each too.
fn start(servers: &[Server], args: &Args, run_dir: &Path, plain: bool) -> Result<Setup> {
    tokio::task::block_in_place(|| {
        let mut builder = e2e::Authd::builder().env("AUTHD_LOG_LEVEL", "warn");
        if let Some(bin) = &args.authd_bin {
            builder = builder.bin(bin);
        }
        let authd = builder.start();
        let password = format!("bench-{}", e2e::fixtures::random_name(20));
        authd.add_user(USER, &password);
        authd.grant(USER, "bench/*", &["pull", "push"]);
        eprintln!("bench: authd at {}", authd.url());
        let cert = run_dir.join("authd.pem");
        let mut setup = Setup {
            authd,
            password,
            twins: Vec::new(),
            plain: Vec::new(),
        };
        for s in servers {
            let kind = if s.is_ours() {
                Impl::Ours
            } else {
                Impl::Distribution
            };
            let auth = setup.authd.registry_auth(kind, &cert);
            setup.twins.push(twin(s, args, auth, "with token auth")?);
            if plain {
                setup.plain.push(twin(s, args, Auth::None, "without auth")?);
            }
        }
        Ok(setup)
    })
}

/// Checks that `twin` refuses a request without a token (auth is really
/// on) and serves it with `token`.
async fn check_auth(twin: &Server, path: &str, token: &str) -> Result<()> {
    let anonymous = twin
        .client
        .request(reqwest::Method::HEAD, path)
        .send()
        .await?;
    ensure!(
        anonymous.status() == reqwest::StatusCode::UNAUTHORIZED,
        "{}: {path} without a token answered {}, want 401",
        twin.name,
        anonymous.status()
    );
    let with = twin
        .client
        .clone()
        .with_bearer(token)
        .request(reqwest::Method::HEAD, path)
        .header("Accept", OCI_MANIFEST)
        .send()
        .await?;
    ensure!(
        with.status() == reqwest::StatusCode::OK,
        "{}: {path} with authd's token answered {}, want 200",
        twin.name,
        with.status()
    );
    Ok(())
}

/// The token-auth rows that `args` asks for.
pub async fn rows(
    servers: &[Server],
    plan: &Plan,
    args: &Args,
    run_dir: &Path,
) -> Result<Vec<Row>> {
    let setup = start(servers, args, run_dir, args.wants("token-pull"))?;
    let mut rows = Vec::new();
    if args.wants("token-manifest") {
        rows.push(manifest(servers, &setup, plan, args).await);
    }
    if args.wants("token-pull") {
        rows.push(pull(&setup, plan, run_dir).await?);
    }
    // Twins and authd stop here (drop), before the RSS rows are read.
    drop(setup);
    Ok(rows)
}

/// Manifest GET with a bearer token, wrk with `args.connections`.
async fn manifest(servers: &[Server], setup: &Setup, plan: &Plan, args: &Args) -> Row {
    let path = format!("/v2/{MANIFEST_REPO}/manifests/latest");
    let mut row = Row::new(
        &format!("manifest GET req/s, bearer token (c={})", args.connections),
        Unit::PerSec,
        Better::Higher,
        Some(MANIFEST_RATIO),
    );
    let image = SmallImage::new(5_000_000, 512);
    let token = setup.token(&format!("repository:{MANIFEST_REPO}:pull"));
    let mut prepared = Ok(());
    for (s, twin) in servers.iter().zip(&setup.twins) {
        prepared = async {
            image.push(&s.client, MANIFEST_REPO, "latest").await?;
            check_auth(twin, &path, &token).await
        }
        .await
        .with_context(|| format!("preparing {}", s.name));
        if prepared.is_err() {
            break;
        }
    }
    if let Err(e) = prepared {
        let err: Figure = Err(format!("{e:#}"));
        return row_of(row, &setup.twins, vec![err; setup.twins.len()]);
    }
    let accept = format!("Accept: {OCI_MANIFEST}");
    let bearer = format!("Authorization: Bearer {token}");
    row = tokio::task::block_in_place(|| {
        wrk_row(
            row,
            &setup.twins,
            &path,
            &[accept.as_str(), bearer.as_str()],
            args.connections,
            plan.wrk_duration,
        )
    });
    let ours = match &row.ours {
        Some(Ok(v)) => Some(*v),
        _ => None,
    };
    row.require.push((
        format!(">= {MIN_MANIFEST_RPS:.0} /s"),
        ours.is_some_and(|v| v >= MIN_MANIFEST_RPS),
    ));
    row
}

/// Blob pull with a token from each twin, and from our server without
/// auth, interleaved; the medians.
async fn pull(setup: &Setup, plan: &Plan, run_dir: &Path) -> Result<Row> {
    let size = plan.blob_size;
    let mut row = Row::new(
        &format!("blob pull {} MiB, bearer token", size >> 20),
        Unit::BytesPerSec,
        Better::Higher,
        None,
    );
    let file = run_dir.join("blob-token.bin");
    eprintln!("bench: token-pull: generating {} MiB", size >> 20);
    let digest = data::blob_file(&file, size, 3_000)?;
    for s in &setup.plain {
        s.client
            .push_blob_monolithic(BLOB_REPO, &file, &digest)
            .await
            .with_context(|| format!("pushing the token-pull blob to {}", s.name))?;
    }
    let _ = std::fs::remove_file(&file);
    let token = setup.token(&format!("repository:{BLOB_REPO}:pull"));
    // Who pulls: each twin with the token, and each fresh twin without auth
    // (ours is the baseline: same binary, same root, started at the same
    // time, only the auth differs; distribution's is shown for reference).
    // The two of one server are next to each other, so that alternating the
    // order keeps them adjacent in time: indices 2k (token) and 2k+1.
    let pullers: Vec<(String, RegistryClient, u32)> = setup
        .twins
        .iter()
        .zip(&setup.plain)
        .flat_map(|(t, p)| {
            [
                (
                    format!("{} token", t.name),
                    t.client.clone().with_bearer(&token),
                    t.reg.pid(),
                ),
                (format!("{} no auth", p.name), p.client.clone(), p.reg.pid()),
            ]
        })
        .collect();
    let baseline = setup
        .plain
        .iter()
        .position(Server::is_ours)
        .map(|k| 2 * k + 1);
    let reps = plan.reps * 8 + 1;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); pullers.len()];
    let mut errors: Vec<Option<String>> = vec![None; pullers.len()];
    // CPU seconds each server spent on its pulls.
    let mut cpu = vec![0.0; pullers.len()];
    for rep in 0..reps {
        for i in order(pullers.len(), rep) {
            if errors[i].is_some() {
                continue;
            }
            let cpu_before = sys::cpu_seconds(pullers[i].2).unwrap_or(f64::NAN);
            let pulled = pullers[i].1.pull_blob(BLOB_REPO, &digest).await;
            cpu[i] += sys::cpu_seconds(pullers[i].2).unwrap_or(f64::NAN) - cpu_before;
            match pulled {
                Ok((got, secs)) if got == size => {
                    let rate = size as f64 / secs;
                    eprintln!(
                        "bench: token-pull {}/{reps}: {}: {:.1} MB/s",
                        rep + 1,
                        pullers[i].0,
                        rate / 1e6
                    );
                    samples[i].push(rate);
                }
                Ok((got, _)) => errors[i] = Some(format!("pulled {got} bytes of {size}")),
                Err(e) => errors[i] = Some(format!("{e:#}")),
            }
        }
    }
    let figure = |i: usize| -> Figure {
        match &errors[i] {
            Some(e) => Err(format!("{}: {e}", pullers[i].0)),
            None => Ok(median(samples[i].clone())),
        }
    };
    let twin_figures: Vec<Figure> = (0..setup.twins.len()).map(|k| figure(2 * k)).collect();
    row = row_of(row, &setup.twins, twin_figures);
    match baseline.map(figure) {
        Some(Ok(no_auth)) => {
            // The two pulls of one rep are adjacent in time, so their ratio
            // is free of the machine's drift between reps; its median is
            // what the target is checked against.
            let paired = baseline.and_then(|b| {
                let (t, n) = (&samples[b - 1], &samples[b]);
                (errors[b - 1].is_none() && t.len() == n.len() && !t.is_empty())
                    .then(|| median(t.iter().zip(n).map(|(t, n)| t / n).collect()))
            });
            row.require.push((
                format!(
                    ">= {:.0}% of ours without auth ({:.1} MB/s)",
                    PULL_FRACTION * 100.0,
                    no_auth / 1e6
                ),
                paired.is_some_and(|r| r >= PULL_FRACTION),
            ));
            if let Some(r) = paired {
                let per_pull = |i: usize| cpu[i] / samples[i].len().max(1) as f64;
                row.note = format!(
                    "ours with a token / ours without auth = {r:.3} (median of the ratios of \
                     {reps} adjacent pairs of pulls); every median in MB/s [min-max]: {}; \
                     server CPU seconds per pull: {}",
                    spread(&pullers, &samples),
                    pullers
                        .iter()
                        .enumerate()
                        .map(|(i, p)| format!("{} {:.3}", p.0, per_pull(i)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Some(Err(e)) => {
            row.require
                .push(("ours without auth measured".to_owned(), false));
            row.note = e;
        }
        None => "ours not measured: no baseline without auth".clone_into(&mut row.note),
    }
    Ok(row)
}

/// `name median [min-max]` of each puller's samples in MB/s, for the note:
/// how noisy the machine was tells how far the 5% verdict can be trusted.
fn spread(pullers: &[(String, RegistryClient, u32)], samples: &[Vec<f64>]) -> String {
    pullers
        .iter()
        .zip(samples)
        .filter(|(_, s)| !s.is_empty())
        .map(|((name, _, _), s)| {
            let min = s.iter().copied().fold(f64::INFINITY, f64::min);
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{name} {:.0} [{:.0}-{:.0}]",
                median(s.clone()) / 1e6,
                min / 1e6,
                max / 1e6
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
