//! `mapping-mcp`: maps alerts to services and serves runbooks, over stdio or streamable HTTP.

use std::sync::Arc;

use clap::Parser;
use mcp::servers::common::{self, ServerArgs};
use mcp::servers::mapping::MappingServer;

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
    mcp::process::run_server("mapping-mcp", cli.server.transport, async {
        let catalog = Arc::new(
            mcp::data::load_catalog(cli.server.data_dir.as_deref()).map_err(anyhow::Error::msg)?,
        );
        common::run(&cli.server, 8701, move || {
            MappingServer::new(catalog.clone())
        })
        .await
    })
}
