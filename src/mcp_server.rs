//! `sre-agent mcp mapping|observability|remediation`: the three MCP servers of the `mcp`
//! crate, served from this binary, so `serve` and `demo` can spawn them over stdio with
//! nothing else built. The standalone binaries (`mapping-mcp`, …) take the same flags.

use std::process::ExitCode;

use clap::{Args, Parser};
use mcp::servers::common::{self, BackendArgs, ServerArgs};

#[derive(Parser)]
#[command(name = "sre-agent mcp", about = "Run one of the agent's MCP servers")]
enum McpCli {
    /// map-alert-to-service, get-runbook.
    Mapping(MappingCli),
    /// get-logs, get-metrics, on the configured backends.
    Observability(BackendCli),
    /// restart-pod, send-notification, on the configured backends.
    Remediation(BackendCli),
}

#[derive(Args)]
struct MappingCli {
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
struct BackendCli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    backends: BackendArgs,
}

/// Parses `args` (what follows `mcp`) and serves until stdin closes or a stop signal, on
/// the runtime its transport wants ([`mcp::process::run_server`]).
pub fn main(args: Vec<String>) -> ExitCode {
    let cli = match McpCli::try_parse_from(std::iter::once("sre-agent mcp".to_owned()).chain(args))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let (name, server) = match &cli {
        McpCli::Mapping(c) => ("mapping-mcp", &c.server),
        McpCli::Observability(c) => ("observability-mcp", &c.server),
        McpCli::Remediation(c) => ("remediation-mcp", &c.server),
    };
    mcp::telemetry::init(server.log_format);
    mcp::process::run_server(name, server.transport, async {
        match &cli {
            McpCli::Mapping(c) => common::run_mapping(&c.server).await,
            McpCli::Observability(c) => common::run_observability(&c.server, &c.backends).await,
            McpCli::Remediation(c) => common::run_remediation(&c.server, &c.backends).await,
        }
    })
}
