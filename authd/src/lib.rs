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
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use state::AppState;

/// How often the key directory is checked for a rotation.
const KEY_POLL: Duration = Duration::from_secs(2);
/// How often refresh tokens unused for too long are deleted.
const REFRESH_CLEANUP: Duration = Duration::from_secs(3600);
/// How long in-flight requests get to finish on shutdown.
const GRACE: Duration = Duration::from_secs(10);

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    routes::router(state).layer(
        // Method and path only: query strings and headers can carry secrets.
        TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
        }),
    )
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
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%local, tls = tls.is_some(), kid = %state.keys.current().signing.kid, "authd started");

    let background = spawn_background(&state);
    let handle = axum_server::Handle::new();
    let signal_handle = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        signal_handle.graceful_shutdown(Some(GRACE));
    });
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        Some(tls) => {
            axum_server::from_tcp_rustls(listener, tls)?
                .handle(handle)
                .serve(service)
                .await
        }
        None => {
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(service)
                .await
        }
    };
    for task in background {
        task.abort();
    }
    state.db.close().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Key rotation pick-up and refresh-token cleanup.
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
    vec![poll_keys, clean_tokens]
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
