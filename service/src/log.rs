//! Log setup shared by both binaries: one format, one set of defaults.
//! Lines go to stderr, as text (colours only on a terminal) or as one JSON
//! object per line; `RUST_LOG` overrides the configured level.

use std::io::IsTerminal;

/// `log.formatter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// `text` or `json` (distribution's `logstash` is read as `json`).
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(LogFormat::Text),
            "json" | "logstash" => Ok(LogFormat::Json),
            other => Err(format!("log formatter {other:?} is not text or json")),
        }
    }
}

/// Installs the subscriber: `level` is a level or `tracing` directives.
/// A second call (tests) is a no-op.
pub fn init(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
