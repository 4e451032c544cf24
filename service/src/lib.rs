//! What the registry and authd share as HTTP servers: log setup
//! ([`log`]), request ids, access lines and HTTP metrics ([`http`]), the
//! Prometheus recorder ([`metrics`]), and the listener with its timeouts,
//! connection cap and graceful shutdown ([`listen`]).

pub mod http;
pub mod listen;
pub mod log;
pub mod metrics;

pub use listen::{Limits, ServeOptions, serve, shutdown_signal};
pub use log::LogFormat;
