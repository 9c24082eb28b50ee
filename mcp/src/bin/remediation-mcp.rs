//! `remediation-mcp`: restart-pod, send-notification over stdio or streamable HTTP, backed by the fleet.

use clap::Parser;
use mcp::servers::common::{self, FleetArgs, ServerArgs};
use mcp::servers::remediation::RemediationServer;

/// MCP server: restart-pod, send-notification.
#[derive(Parser)]
#[command(name = "remediation-mcp", version)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    fleet: FleetArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mcp::telemetry::init(cli.server.log_format);
    let result =
        common::run_with_fleet(&cli.server, &cli.fleet, 8703, RemediationServer::new).await;
    mcp::process::exit_code("remediation-mcp", result)
}
