//! What every binary of the project (the agent, the MCP servers, the fleet) does around its
//! work: the runtime a server runs on, wait for the signal to stop, and turn its result into
//! an exit code.

use std::future::Future;

use crate::servers::common::Transport;

/// Runs a server's `work` to its end on the runtime its transport wants, and turns the
/// result into the exit code (as [`exit_code`]).
///
/// Over stdio a server has one client, the agent that spawned it, and answers one small
/// message after another: a runtime on this one thread, so that a message is read, handled
/// and answered without waking another thread (a multi-thread runtime parks and wakes its
/// workers around every message, which cost these servers about half their CPU in a storm).
/// Over HTTP it may serve several agents at once: a worker per core.
pub fn run_server(
    name: &str,
    transport: Transport,
    work: impl Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let runtime = match transport {
        Transport::Stdio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Transport::Http => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(runtime) => exit_code(name, runtime.block_on(work)),
        Err(e) => exit_code(
            name,
            Err(anyhow::Error::from(e).context("cannot start the async runtime")),
        ),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// The process exit code for a binary's result, printing the error as one line
/// (`name: error: cause`) for the operator, without a backtrace.
pub fn exit_code(name: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
