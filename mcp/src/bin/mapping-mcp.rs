//! `mapping-mcp`: maps alerts to services and serves runbooks, over stdio or streamable HTTP.

use clap::Parser;
use mcp::servers::common::{self, ServerArgs};

/// MCP server: map-alert-to-service, get-runbook.
#[derive(Parser)]
#[command(name = "mapping-mcp", version)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mcp::telemetry::init(cli.server.log_format);
    mcp::process::run_server(
        "mapping-mcp",
        cli.server.transport,
        common::run_mapping(&cli.server),
    )
}
