use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use sre_agent::app::Application;
use sre_agent::config::{Cli, Command, Config};
use sre_agent::store::{DbConfig, Store};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    mcp::telemetry::init(cli.telemetry.log_format);
    // One line an operator can act on: the error and its causes, no backtrace.
    mcp::process::exit_code("sre-agent", run(cli.command).await)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let app = Application::build(Config::from(args)).await?;
            app.run_until_stopped(mcp::process::shutdown_signal())
                .await?;
        }
        Command::Migrate(args) => {
            let store = Store::connect(&DbConfig::from(args)).await?;
            store.migrate().await.context("migrating the database")?;
            tracing::info!(database = store.backend(), "schema is up to date");
            store.close().await;
        }
    }
    Ok(())
}
