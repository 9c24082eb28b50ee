//! `remediation-mcp`: restart-pod, send-notification over stdio or streamable HTTP, backed by the configured backends.

use clap::Parser;
use mcp::servers::common::{self, BackendArgs, ServerArgs};

/// MCP server: restart-pod, send-notification.
#[derive(Parser)]
#[command(name = "remediation-mcp", version)]
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
        "remediation-mcp",
        cli.server.transport,
        common::run_remediation(&cli.server, &cli.backends),
    )
}
