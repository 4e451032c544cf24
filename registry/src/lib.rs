//! The registry: the OCI distribution API over distribution's on-disk
//! layout. [`app`] builds the router from a state (tests use it without a
//! socket); [`run`] serves it from a configuration until SIGTERM/SIGINT.

pub mod auth;
pub mod config;
pub mod error;
pub mod notify;
pub mod oci;
pub mod proxy;
pub mod routes;
pub mod state;
pub mod storage;
pub mod ui;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;

use crate::auth::{Authenticator, Htpasswd, TokenAuth};
use crate::config::{AuthConfig, Config, ListenAddr};
use crate::state::{App, AppState};

/// The registry's router over `state`, observed (request ids, access log,
/// metrics).
pub fn app(state: AppState) -> Router {
    let observer = service::http::Observer {
        service: "registry",
        access_log: state.config.access_log,
        classify: routes::classify,
    };
    service::http::observe(routes::router(state), observer)
}

/// Builds the shared state from a configuration: storage root, auth.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    // The metrics recorder before any task that registers a series (the
    // notification workers): one registered earlier would be lost.
    service::metrics::handle();
    // TLS for the JWKS URL (and the server) uses ring; a second install is
    // harmlessly refused.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let authenticator = match &config.auth {
        AuthConfig::None => Authenticator::None,
        AuthConfig::Htpasswd { realm, path } => {
            let (realm, path) = (realm.clone(), path.clone());
            let h = tokio::task::spawn_blocking(move || Htpasswd::load(realm, path)).await??;
            Authenticator::Htpasswd(Box::new(h))
        }
        AuthConfig::Token(t) => {
            let auth = Arc::new(TokenAuth::new(t.clone())?);
            let fetcher = auth.clone();
            tokio::spawn(async move { fetcher.fetch_until_ready().await });
            Authenticator::Token(auth)
        }
    };
    let storage = Arc::new(storage::open(&config).context("opening the storage")?);
    let ui = ui::UiState::new(&authenticator)?;
    let mirror = proxy::Mirror::new(&config.proxy)?;
    let notifier = notify::Notifier::start(&config.notifications)?;
    Ok(AppState(Arc::new(App {
        config,
        storage,
        authenticator,
        ui,
        mirror,
        notifier,
    })))
}

/// Sets up logging as configured (`log.level`, `log.formatter`).
pub fn init_logging(config: &Config) {
    service::log::init(&config.log_level, config.log_format);
}

fn bind(addr: &ListenAddr) -> anyhow::Result<TcpListener> {
    let listener = match addr {
        // Every interface: IPv6 with IPv4 mapped where the host has IPv6.
        ListenAddr::AnyHost(port) => TcpListener::bind(SocketAddr::from(([0u16; 8], *port)))
            .or_else(|_| TcpListener::bind(SocketAddr::from(([0u8; 4], *port)))),
        ListenAddr::Socket(sa) => TcpListener::bind(sa),
    }
    .with_context(|| format!("listening on {addr:?}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the registry until SIGTERM or SIGINT, then drains in-flight
/// requests for up to `http.draintimeout`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let listener = bind(&config.addr)?;
    let local = listener.local_addr()?;
    let debug = match &config.metrics {
        config::Metrics::Debug { addr, path } => Some((bind(addr)?, path.clone())),
        config::Metrics::Off | config::Metrics::Main { .. } => None,
    };
    let tls = match &config.tls {
        Some(tls) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.certificate, &tls.key)
                .await
                .with_context(|| {
                    format!(
                        "loading TLS certificate {} and key {}",
                        tls.certificate.display(),
                        tls.key.display()
                    )
                })?,
        ),
        None => None,
    };
    let options = service::ServeOptions {
        limits: config.limits,
        tls,
        drain: config.drain_timeout,
    };
    let state = build_state(config).await?;
    spawn_maintenance(&state);
    let notifier = state.notifier.clone();
    if let Some(n) = &notifier {
        n.set_port(local.port());
    }
    let app = app(state);

    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // The one line on stdout harnesses read the bound port from (and the
    // metrics listener's, when there is one).
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {scheme}://{local}")?;
    if let Some((l, path)) = &debug {
        writeln!(out, "metrics on http://{}{path}", l.local_addr()?)?;
    }
    out.flush()?;
    drop(out);
    tracing::info!("registry listening on {scheme}://{local}, web UI at /ui/");

    if let Some((listener, path)) = debug {
        service::metrics::spawn_listener(listener, &path, &options);
    }
    let served = service::serve(listener, app, options, service::shutdown_signal()).await;
    // After the requests in flight: their events are in the queue.
    if let Some(n) = notifier {
        n.shutdown().await;
    }
    served?;
    Ok(())
}

/// Starts the periodic jobs the configuration asks for: upload purging
/// (distribution's `uploadpurging`, on by default) and garbage collection
/// (`storage.maintenance.gc`).
fn spawn_maintenance(state: &AppState) {
    use crate::storage::gc::GcOptions;
    let mut jobs: Vec<(&'static str, std::time::Duration, GcOptions)> = Vec::new();
    if let Some(p) = &state.config.upload_purging {
        jobs.push((
            "upload purging",
            p.interval,
            GcOptions {
                dry_run: p.dry_run,
                upload_max_age: Some(p.age),
                empty_upload_max_age: Some(state.config.upload_limits.empty_age),
                uploads_only: true,
                ..GcOptions::default()
            },
        ));
    }
    if let Some(g) = &state.config.gc_schedule {
        jobs.push((
            "garbage collection",
            g.interval,
            GcOptions {
                dry_run: g.dry_run,
                grace: g.grace,
                delete_untagged: g.delete_untagged,
                upload_max_age: state.config.upload_purging.as_ref().map(|p| p.age),
                empty_upload_max_age: state
                    .config
                    .upload_purging
                    .as_ref()
                    .map(|_| state.config.upload_limits.empty_age),
                uploads_only: false,
                expire_tags: state.config.proxy_ttls(),
            },
        ));
    }
    for (what, interval, opts) in jobs {
        let state = state.clone();
        let storage = state.storage.clone();
        tokio::spawn(async move {
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                ticker.tick().await;
                let opts = opts.clone();
                let started = std::time::SystemTime::now();
                let result = storage.run(move |s| s.gc(&opts)).await;
                record_gc(what, result.as_ref().ok());
                if what == "garbage collection" {
                    // The web UI's GC page shows the last run.
                    let shown = result
                        .as_ref()
                        .map(Clone::clone)
                        .map_err(ToString::to_string);
                    state.ui.record_gc("the schedule", started, shown);
                }
                match result {
                    Ok(report) => tracing::info!(
                        "scheduled {what}: {}",
                        report.to_string().replace('\n', "; ")
                    ),
                    Err(e) => tracing::warn!("scheduled {what} failed: {e}"),
                }
            }
        });
    }
}

/// Counts a scheduled collection: runs by job and outcome, what it freed.
fn record_gc(job: &'static str, report: Option<&storage::gc::GcReport>) {
    let job = if job == "upload purging" {
        "uploadpurging"
    } else {
        "gc"
    };
    let Some(r) = report else {
        metrics::counter!("registry_gc_runs_total", "job" => job, "result" => "error").increment(1);
        return;
    };
    metrics::counter!("registry_gc_runs_total", "job" => job, "result" => "ok").increment(1);
    if !r.dry_run {
        metrics::counter!("registry_gc_bytes_freed_total", "job" => job)
            .increment(r.bytes_freed + r.upload_bytes_freed);
        metrics::counter!("registry_gc_blobs_deleted_total", "job" => job)
            .increment(r.blobs_deleted as u64);
    }
}
