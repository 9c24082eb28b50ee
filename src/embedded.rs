//! The simulated fleet and the agent in this process, each on a free loopback port: what
//! `demo`, `eval` and `storm` run against. Stopping either waits a bounded time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{AppError, Application};
use crate::config::{Config, LogFormat, McpTransportKind, ServeArgs};

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

/// Statuses an incident ends in.
pub const TERMINAL: [&str; 3] = ["resolved", "escalated", "failed"];

/// The fleet with faults injected and an agent on it, on a SQLite file of its own, with the
/// service's settings except where it runs: every backend is the fleet's and the MCP servers
/// are stdio children, whatever the environment says, so nothing reaches a real cluster or
/// a real pager.
pub struct Simulated {
    pub fleet: Fleet,
    pub agent: Agent,
    /// The SQLite file.
    pub db: PathBuf,
}

impl Simulated {
    pub async fn start(
        scenarios: &[&str],
        serve: &ServeArgs,
        program: &Path,
        log_format: LogFormat,
        prefix: &str,
    ) -> anyhow::Result<Simulated> {
        let fleet = Fleet::start(scenarios).await?;
        let db = temp_sqlite(prefix);
        let mut serve = serve.clone();
        serve.listen = "127.0.0.1:0".parse()?;
        serve.db.database_url = format!("sqlite://{}", db.display());
        serve.agent.mcp_transport = McpTransportKind::Stdio;
        let backends = &mut serve.agent.backends;
        backends.fleet_url = fleet.url.clone();
        backends.metrics_backend = mcp::backend::select::MetricsKind::Fleet;
        backends.logs_backend = mcp::backend::select::LogsKind::Fleet;
        backends.restart_backend = mcp::backend::select::RestartKind::Fleet;
        backends.notify_backend = mcp::backend::select::NotifyKind::Fleet;
        let agent = match serve.to_config(program, log_format) {
            Ok(config) => Agent::start(config).await,
            Err(e) => Err(e.into()),
        };
        match agent {
            Ok(agent) => Ok(Simulated { fleet, agent, db }),
            Err(error) => {
                fleet.stop().await;
                remove_sqlite(&db);
                Err(error)
            }
        }
    }

    /// Stops both; the database file is deleted unless `keep_database`.
    pub async fn stop(self, keep_database: bool) {
        self.agent.stop().await;
        self.fleet.stop().await;
        if !keep_database {
            remove_sqlite(&self.db);
        }
    }
}

/// An incident `POST /incidents` accepted.
pub struct Posted {
    pub id: String,
    pub trace_id: String,
}

/// Posts an incident; anything but 202 is an error with the answer's text.
pub async fn post_incident(
    http: &reqwest::Client,
    api: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<Posted> {
    let response = http
        .post(format!("{api}/incidents"))
        .json(body)
        .send()
        .await
        .context("posting an incident")?;
    if response.status() != reqwest::StatusCode::ACCEPTED {
        anyhow::bail!(
            "POST /incidents answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let answer: serde_json::Value = response.json().await?;
    let field = |key: &str| {
        answer[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the answer has no {key}"))
    };
    Ok(Posted {
        id: field("id")?,
        trace_id: field("trace_id")?,
    })
}

/// The fleet's ledger: every mutating call that reached it, in order.
pub async fn ledger(
    http: &reqwest::Client,
    fleet: &str,
) -> anyhow::Result<Vec<mcp::fleet::model::LedgerEntry>> {
    let mut ledger: serde_json::Value = http
        .get(format!("{fleet}/v1/ledger"))
        .send()
        .await?
        .json()
        .await?;
    serde_json::from_value(ledger["entries"].take()).context("reading the fleet's ledger")
}

/// Reads `GET /incidents/{id}` until the incident is terminal (`Ok`) or `wait_ms` passed
/// (`Err` with the incident as last read).
pub async fn wait_terminal(
    http: &reqwest::Client,
    api: &str,
    id: &str,
    wait_ms: u64,
) -> anyhow::Result<Result<serde_json::Value, serde_json::Value>> {
    let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let incident: serde_json::Value = http
            .get(format!("{api}/incidents/{id}"))
            .send()
            .await?
            .json()
            .await?;
        if TERMINAL.contains(&incident["status"].as_str().unwrap_or("")) {
            return Ok(Ok(incident));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Err(incident));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
