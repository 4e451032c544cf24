//! The registry: the OCI distribution API over distribution's on-disk
//! layout. [`app`] builds the router from a state (tests use it without a
//! socket); [`run`] serves it from a configuration until SIGTERM/SIGINT.

pub mod auth;
pub mod config;
pub mod error;
pub mod oci;
pub mod routes;
pub mod state;
pub mod storage;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;

use crate::auth::{Authenticator, Htpasswd, TokenAuth};
use crate::config::{AuthConfig, Config, ListenAddr};
use crate::state::{App, AppState};
use crate::storage::{FsBackend, Storage};

/// The registry's router over `state`.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// Builds the shared state from a configuration: storage root, auth.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    // TLS for the JWKS URL (and the server) uses ring; a second install is
    // harmlessly refused.
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&config.root_directory)
        .with_context(|| format!("creating storage root {}", config.root_directory.display()))?;
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
    let storage = Arc::new(Storage::new(FsBackend::new(&config.root_directory)));
    Ok(AppState(Arc::new(App {
        config,
        storage,
        authenticator,
    })))
}

/// Sets up logging as configured (`log.level`, `log.formatter`).
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
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
    let tls = config.tls.clone();
    let drain = config.drain_timeout;
    let state = build_state(config).await?;
    spawn_maintenance(&state);
    let app = app(state);

    let handle = axum_server::Handle::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The one line on stdout: harnesses read the bound port from it.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {scheme}://{local}")?;
    out.flush()?;
    drop(out);
    tracing::info!("registry listening on {scheme}://{local}");

    let shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down; draining requests for up to {drain:?}");
        shutdown.graceful_shutdown(Some(drain));
    });
    // The peer address identifies anonymous clients (upload session caps).
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Small responses must not wait for delayed ACKs (40 ms each).
    let nodelay = axum_server::accept::NoDelayAcceptor::new();
    match tls {
        Some(tls) => {
            let rustls =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.certificate, &tls.key)
                    .await
                    .with_context(|| {
                        format!(
                            "loading TLS certificate {} and key {}",
                            tls.certificate.display(),
                            tls.key.display()
                        )
                    })?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls).acceptor(nodelay);
            axum_server::from_tcp(listener)?
                .acceptor(acceptor)
                .handle(handle)
                .serve(service)
                .await?;
        }
        None => {
            axum_server::from_tcp(listener)?
                .acceptor(nodelay)
                .handle(handle)
                .serve(service)
                .await?;
        }
    }
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
            },
        ));
    }
    for (what, interval, opts) in jobs {
        let storage = state.storage.clone();
        tokio::spawn(async move {
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                ticker.tick().await;
                let opts = opts.clone();
                match storage.run(move |s| s.gc(&opts)).await {
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
