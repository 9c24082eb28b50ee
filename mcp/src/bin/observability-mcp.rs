//! `observability-mcp`: get-logs, get-metrics over stdio or streamable HTTP, backed by the fleet.

use clap::Parser;
use mcp::servers::common::{self, FleetArgs, ServerArgs};
use mcp::servers::observability::ObservabilityServer;

/// MCP server: get-logs, get-metrics.
#[derive(Parser)]
#[command(name = "observability-mcp", version)]
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
        common::run_with_fleet(&cli.server, &cli.fleet, 8702, ObservabilityServer::new).await;
    mcp::process::exit_code("observability-mcp", result)
}
