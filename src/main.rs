use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use sre_agent::app::Application;
use sre_agent::config::{Cli, Command};
use sre_agent::store::{DbConfig, Store};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Storm(_)) && std::env::var_os("RUST_LOG").is_none() {
        // A storm's embedded agent and the MCP servers it spawns (they inherit the
        // environment) log errors only, and not each 503 the HTTP layer answers (the storm
        // counts them): the lines of thousands of incidents (an unmapped alert is a warning
        // each time) would bury the storm's progress and table.
        // SAFETY: no other thread exists yet (the runtime is built below), so nothing reads
        // the environment while it is written.
        unsafe { std::env::set_var("RUST_LOG", "error,tower_http=off") };
    }
    if let Command::Mcp { args } = cli.command {
        // A server picks its own runtime and logs with its own `--log-format`, to stderr only.
        return sre_agent::mcp_server::main(args);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sre-agent: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> ExitCode {
    mcp::telemetry::init(cli.telemetry.log_format);
    if let Command::Eval(args) = cli.command {
        // Its own exit codes: 1 when a case went wrong, 3 when an action was unsafe, 2 when it
        // could not run.
        let program = std::env::current_exe();
        let verdict = match program {
            Ok(program) => sre_agent::eval::run(args, &program, cli.telemetry.log_format).await,
            Err(e) => Err(anyhow::Error::from(e).context("finding this program's path")),
        };
        return match verdict {
            Ok(verdict) => ExitCode::from(verdict.exit_code()),
            Err(error) => {
                eprintln!("sre-agent: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    // One line an operator can act on: the error and its causes, no backtrace.
    mcp::process::exit_code(
        "sre-agent",
        run(cli.command, cli.telemetry.log_format).await,
    )
}

async fn run(command: Command, log_format: sre_agent::config::LogFormat) -> anyhow::Result<()> {
    let program = std::env::current_exe().context("finding this program's path")?;
    match command {
        Command::Serve(args) => {
            let app = Application::build(args.to_config(&program, log_format)?).await?;
            app.run_until_stopped(mcp::process::shutdown_signal())
                .await?;
        }
        Command::Demo(args) => sre_agent::demo::run(args, &program, log_format).await?,
        Command::Storm(args) => sre_agent::storm::run(args, &program, log_format).await?,
        Command::Migrate(args) => {
            let store = Store::connect(&DbConfig::from(args)).await?;
            store.migrate().await.context("migrating the database")?;
            tracing::info!(database = store.backend(), "schema is up to date");
            store.close().await;
        }
        Command::Mcp { .. } => unreachable!("handled before telemetry starts"),
        Command::Eval(_) => unreachable!("handled before run"),
    }
    Ok(())
}
