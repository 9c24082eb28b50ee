//! The simulated fleet and the agent in this process, each on a free loopback port: what
//! `demo`, `eval` and `storm` run against. Stopping either waits a bounded time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{AppError, Application};
use crate::config::Config;

/// Longest a stop waits for the fleet or the agent to end.
const STOP_WAIT_MS: u64 = 30_000;

/// The simulated fleet (`sre-fleet`'s API) with faults injected.
pub struct Fleet {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Fleet {
    /// The shipped fleet with these scenarios injected, now.
    pub async fn start(scenarios: &[&str]) -> anyhow::Result<Fleet> {
        let mut fleet =
            mcp::data::load_fleet(None, chrono::Utc::now()).map_err(anyhow::Error::msg)?;
        for scenario in scenarios {
            fleet
                .inject(scenario)
                .with_context(|| format!("injecting the scenario {scenario:?}"))?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(mcp::fleet::http::serve(listener, fleet, async {
            let _ = stopped.await;
        }));
        Ok(Fleet { url, stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_millis(STOP_WAIT_MS), self.task).await;
    }
}

/// The agent and its API.
pub struct Agent {
    /// `http://127.0.0.1:PORT`.
    pub api: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), AppError>>,
}

impl Agent {
    pub async fn start(config: Config) -> anyhow::Result<Agent> {
        let app = Application::build(config).await?;
        let api = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Ok(Agent { api, stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_millis(STOP_WAIT_MS), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, "the embedded agent stopped with an error")
            }
            Ok(Err(error)) => tracing::warn!(%error, "the embedded agent's task failed"),
            Err(_) => tracing::warn!("the embedded agent did not stop in time"),
        }
    }
}

/// A SQLite file of this run's own in the temporary directory (`{prefix}-{pid}-{µs}.db`).
pub fn temp_sqlite(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{:x}.db",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ))
}

/// Deletes a SQLite file and its WAL and shared-memory files.
pub fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
