//! `sre-fleet`: the simulated fleet as an HTTP service (see `mcp::fleet::http`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use mcp::fleet::http::serve;
use mcp::servers::common::LogFormat;

/// A simulated cluster for the MCP servers: services, pods, logs, metrics, injected
/// failures, an append-only ledger of mutating calls and a notification inbox.
#[derive(Parser)]
#[command(name = "sre-fleet", version)]
struct Cli {
    #[arg(long, env = "SRE_FLEET_LISTEN", default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// Read fleet.toml and scenarios/ from this folder instead of the embedded copies.
    #[arg(long, env = "SRE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Scenarios to inject at start, by name (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    inject: Vec<String>,
    #[arg(long, env = "SRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Write a kubeconfig naming this fleet's Kubernetes API (`--listen`) to this file, for
    /// the agent's `--kubeconfig`.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mcp::telemetry::init(cli.log_format);
    let result = async {
        let mut fleet = mcp::data::load_fleet(cli.data_dir.as_deref(), chrono::Utc::now())
            .map_err(anyhow::Error::msg)?;
        for name in &cli.inject {
            fleet.inject(name)?;
        }
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.listen))?;
        let addr = listener.local_addr()?;
        if let Some(path) = &cli.write_kubeconfig {
            mcp::fleet::kube_api::write_kubeconfig(path, &format!("http://{addr}"))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        }
        tracing::info!(listen = %addr, "fleet serving");
        serve(listener, fleet, mcp::process::shutdown_signal()).await?;
        anyhow::Ok(())
    }
    .await;
    mcp::process::exit_code("sre-fleet", result)
}
