//! `observability-mcp`: get-logs, get-metrics over stdio or streamable HTTP, backed by the configured backends.

use clap::Parser;
use mcp::servers::common::{self, BackendArgs, ServerArgs};

/// MCP server: get-logs, get-metrics.
#[derive(Parser)]
#[command(name = "observability-mcp", version)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    backends: BackendArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mcp::telemetry::init(cli.server.log_format);
    mcp::process::run_server(
        "observability-mcp",
        cli.server.transport,
        common::run_observability(&cli.server, &cli.backends),
    )
}
