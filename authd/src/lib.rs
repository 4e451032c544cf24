//! authd, the token auth service of the registry: users in SQLite, grants,
//! htpasswd import, scoped JWTs per Docker's token protocol, an admin API
//! and a CLI on the same database.
//!
//! [`app`] builds the router (tests drive it without a socket); [`run`]
//! serves it until SIGTERM or SIGINT. The `authd` binary only parses its
//! command line and calls [`cli::run`].

pub mod access_tokens;
pub mod actions;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod db;
pub mod error;
pub mod grant_cache;
pub mod grants;
pub mod htpasswd;
pub mod keys;
pub mod login;
pub mod minting;
pub mod names;
pub mod password;
pub mod policy;
pub mod routes;
pub mod state;
pub mod target;
pub mod throttle;
pub mod token;
pub mod util;

use std::io::Write;
use std::time::Duration;

use axum::Router;

pub use config::Config;
pub use state::AppState;

/// How often the key directory is checked for a rotation.
const KEY_POLL: Duration = Duration::from_secs(2);
/// How often refresh tokens unused for too long are deleted.
const REFRESH_CLEANUP: Duration = Duration::from_secs(3600);

/// The whole HTTP application, observed (request ids, access log, metrics),
/// with `/metrics` unless it is served on its own listener or disabled.
pub fn app(state: AppState) -> Router {
    let observer = service::http::Observer {
        service: "authd",
        access_log: state.config.log.access,
        classify: route_label,
    };
    let prometheus = &state.config.debug.prometheus;
    let metrics_path =
        (prometheus.enabled && state.config.debug.addr.is_empty()).then(|| prometheus.path.clone());
    let mut router = routes::router(state);
    if let Some(path) = metrics_path {
        router = router.route(&path, axum::routing::get(service::metrics::render));
    }
    service::http::observe(router, observer)
}

/// The metrics label of a request: one per family of routes.
fn route_label(path: &str) -> &'static str {
    match path {
        "/token" | "/token/revoke" => "token",
        "/.well-known/jwks.json" => "jwks",
        "/healthz" | "/readyz" => "health",
        p if p.starts_with("/api/") => "admin",
        p if p.ends_with("metrics") => "metrics",
        _ => "other",
    }
}

/// Opens everything, prints the admin password if one was generated and
/// `listening on <url>`, then serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // rustls needs a process-wide provider when more than one is compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = config.listen_addr()?;
    let tls = match (&config.tls.certificate, &config.tls.key) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| anyhow::anyhow!("loading TLS certificate and key: {e}"))?,
        ),
        _ => None,
    };
    // Bound before the first admin is created, so that a taken port cannot
    // swallow the only copy of its generated password.
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let metrics_listener = match config.metrics_addr()? {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("binding the metrics listener {addr}: {e}"))?,
        ),
        None => None,
    };
    let (state, generated_password) = AppState::init(config).await?;

    let mut stdout = std::io::stdout().lock();
    if let Some(password) = generated_password {
        writeln!(
            stdout,
            "created admin user {:?} with password: {password}",
            state.config.admin.user
        )?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    writeln!(stdout, "listening on {scheme}://{local}")?;
    if let Some(l) = &metrics_listener {
        writeln!(
            stdout,
            "metrics on http://{}{}",
            l.local_addr()?,
            state.config.debug.prometheus.path
        )?;
    }
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%local, tls = tls.is_some(), kid = %state.keys.current().signing.kid, "authd started");

    let background = spawn_background(&state);
    let options = service::ServeOptions {
        limits: state.config.limits(),
        tls,
        drain: Duration::from_secs(state.config.http.drain_timeout),
    };
    if let Some(listener) = metrics_listener {
        service::metrics::spawn_listener(listener, &state.config.debug.prometheus.path, &options);
    }
    let served = service::serve(
        listener,
        app(state.clone()),
        options,
        service::shutdown_signal(),
    )
    .await;
    for task in background {
        task.abort();
    }
    state.db.close().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Key rotation pick-up, refresh-token cleanup and the throttle's view of
/// the failures other replicas record.
fn spawn_background(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let keys = state.clone();
    let poll_keys = tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEY_POLL);
        loop {
            tick.tick().await;
            let s = keys.clone();
            match tokio::task::spawn_blocking(move || s.keys.reload(false)).await {
                Ok(Err(e)) => tracing::error!(error = %e, "reloading signing keys"),
                Err(e) => tracing::error!(error = %e, "reloading signing keys"),
                Ok(Ok(_)) => {}
            }
        }
    });
    let cleanup = state.clone();
    let clean_tokens = tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_CLEANUP);
        loop {
            tick.tick().await;
            let cutoff = util::now() - cleanup.config.token.refresh_ttl_days as i64 * 86_400;
            match db::refresh_tokens::delete_unused_since(&cleanup.db, cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "deleted unused refresh tokens"),
                Err(e) => tracing::error!(error = %e, "deleting unused refresh tokens"),
            }
        }
    });
    let throttle = tokio::spawn(state.auth.throttle().clone().run_sync());
    vec![poll_keys, clean_tokens, throttle]
}
