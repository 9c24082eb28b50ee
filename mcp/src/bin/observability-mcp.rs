//! `observability-mcp`: get-logs, get-metrics over stdio or streamable HTTP, backed by the fleet.

use std::sync::Arc;

use clap::Parser;
use mcp::backend::FleetClient;
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
    let result = async {
        let backend = Arc::new(
            FleetClient::new(&cli.fleet.fleet_url, cli.fleet.fleet_timeout_ms)
                .map_err(anyhow::Error::msg)?,
        );
        common::run(&cli.server, 8702, move || {
            ObservabilityServer::new(backend.clone())
        })
        .await
    }
    .await;
    mcp::telemetry::exit_code("observability-mcp", result)
}
