//! `bench --token-issue`: authd's own token issuance — the three flows of
//! `bench/token.sh` — with authd on SQLite and on a PostgreSQL started for
//! the run (`e2e::postgres`: the Debian package's server on 127.0.0.1,
//! started as for the tests, i.e. without fsync), one after the other in
//! the same run, each authd the release build with log level warn:
//!
//! - `basic-get`: `GET /token` with Basic credentials (docker before login,
//!   podman, skopeo); after the first request the password check is a hit
//!   of authd's verification cache;
//! - `refresh-post`: `POST /token` with `grant_type=refresh_token` (docker
//!   after login);
//! - `access-token-get`: `GET /token` with an access token as the password
//!   (a CI job).
//!
//! Targets (checked, the run fails below them): on PostgreSQL at least
//! 2,000/s `basic-get` and 5,000/s `refresh-post` (issue 12); on both
//! engines at least 5,000/s `access-token-get` (issue 14). The machine's
//! load (`uptime`) is printed before and after, with the figures.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::{Args, sys};

const USER: &str = "bench";
const SCOPE: &str = "repository:bench/app:pull,push";
const PG_MIN_BASIC: f64 = 2_000.0;
const PG_MIN_REFRESH: f64 = 5_000.0;
const MIN_ACCESS_TOKEN: f64 = 5_000.0;

/// One engine's rates: basic-get, refresh-post, access-token-get.
struct Rates {
    engine: &'static str,
    basic: f64,
    refresh: f64,
    access: f64,
}

fn uptime() -> String {
    std::process::Command::new("uptime").output().map_or_else(
        |e| format!("uptime: {e}"),
        |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
    )
}

/// wrk for `duration` after a 1 s warm-up; every answer must be a 2xx.
fn measure(
    url: &str,
    connections: u32,
    duration: Duration,
    headers: &[&str],
    script: Option<&Path>,
) -> Result<f64> {
    sys::wrk_with(url, connections, Duration::from_secs(1), headers, script)?;
    let r = sys::wrk_with(url, connections, duration, headers, script)?;
    ensure!(r.non_2xx == 0, "{url}: {} non-2xx responses", r.non_2xx);
    ensure!(
        r.socket_errors == 0,
        "{url}: {} socket errors",
        r.socket_errors
    );
    Ok(r.rps)
}

fn engine(args: &Args, engine: &'static str, duration: Duration, run_dir: &Path) -> Result<Rates> {
    let mut builder = e2e::Authd::builder().env("AUTHD_LOG_LEVEL", "warn");
    if let Some(bin) = &args.authd_bin {
        builder = builder.bin(bin);
    }
    if engine == "postgres" {
        builder = builder.env("AUTHD_DATABASE_URL", &e2e::postgres::database());
    }
    let authd = builder.start();
    eprintln!("bench: authd on {engine} at {}", authd.url());
    let password = format!("bench-{}", e2e::fixtures::random_name(20));
    authd.add_user(USER, &password);
    authd.grant(USER, "bench/*", &["pull", "push"]);
    let (_, access_token) = authd.access_token(USER, "bench-ci", &[("bench/*", "pull,push")], None);

    let http = e2e::api::http_client();
    let resp = http
        .post(format!("{}/token", authd.url()))
        .form(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", password.as_str()),
            ("client_id", "bench"),
            ("access_type", "offline"),
            ("service", "registry"),
            ("scope", SCOPE),
        ])
        .send()
        .context("password login")?;
    ensure!(
        resp.status().is_success(),
        "password login: {}",
        resp.status()
    );
    let login: Value = resp.json().context("login response")?;
    let refresh = login["refresh_token"]
        .as_str()
        .context("no refresh token in the login response")?;
    let script = run_dir.join(format!("refresh-{engine}.lua"));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n\
             wrk.body = \"grant_type=refresh_token&client_id=bench&service=registry\
             &scope={SCOPE}&refresh_token={refresh}\"\n"
        ),
    )?;
    let header = |secret: &str| {
        format!(
            "Authorization: Basic {}",
            B64.encode(format!("{USER}:{secret}"))
        )
    };
    let (basic, token_basic) = (header(&password), header(&access_token));
    let get = format!("{}/token?service=registry&scope={SCOPE}", authd.url());
    let c = args.connections;
    Ok(Rates {
        engine,
        basic: measure(&get, c, duration, &[&basic], None)?,
        refresh: measure(
            &format!("{}/token", authd.url()),
            c,
            duration,
            &[],
            Some(&script),
        )?,
        access: measure(&get, c, duration, &[&token_basic], None)?,
    })
}

/// Measures both engines, prints the table and the load, and fails when a
/// target is missed.
pub fn run(args: &Args, duration: Duration, run_dir: &Path) -> Result<()> {
    tokio::task::block_in_place(|| {
        let before = uptime();
        let rates = [
            engine(args, "sqlite", duration, run_dir)?,
            engine(args, "postgres", duration, run_dir)?,
        ];
        let after = uptime();
        let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let mut out = format!(
            "authd token issuance: wrk -t2 -c{} -d{}s, {cores} cores\n\
             load before: {before}\n\
             {:<10} {:>14} {:>14} {:>18}\n",
            args.connections,
            duration.as_secs(),
            "engine",
            "basic-get/s",
            "refresh-post/s",
            "access-token-get/s"
        );
        for r in &rates {
            writeln!(
                out,
                "{:<10} {:>14.0} {:>14.0} {:>18.0}",
                r.engine, r.basic, r.refresh, r.access
            )?;
        }
        let pg = &rates[1];
        let mut missed = Vec::new();
        let mut check = |what: String, value: f64, min: f64| {
            let pass = value >= min;
            if !pass {
                missed.push(what.clone());
            }
            format!(
                "{what} >= {min:.0}/s: {}",
                if pass { "PASS" } else { "FAIL" }
            )
        };
        let lines = [
            check("postgres basic-get".into(), pg.basic, PG_MIN_BASIC),
            check("postgres refresh-post".into(), pg.refresh, PG_MIN_REFRESH),
            check(
                "sqlite access-token-get".into(),
                rates[0].access,
                MIN_ACCESS_TOKEN,
            ),
            check(
                "postgres access-token-get".into(),
                pg.access,
                MIN_ACCESS_TOKEN,
            ),
        ];
        for l in lines {
            writeln!(out, "{l}")?;
        }
        writeln!(out, "load after: {after}")?;
        print!("{out}");
        ensure!(missed.is_empty(), "below target: {}", missed.join(", "));
        Ok(())
    })
}
