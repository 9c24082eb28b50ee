//! Logging for every binary of the project (the agent and the MCP servers): to stderr only
//! (on stdio, stdout carries the protocol), human lines or JSON lines whose span fields
//! (`trace_id`, `incident_id`, `tool`, …) are structured keys. The level comes from
//! `RUST_LOG` (default `info`). Exit codes and the stop signal are in [`crate::process`].

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line, with the current span's fields under `span`.
    Json,
}

/// Installs the global subscriber. A second call changes nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
