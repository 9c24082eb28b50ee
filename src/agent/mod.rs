//! The agent: the actors that handle incidents. [`Agent::start`] starts one
//! `McpClientActor` per MCP server, the `LlmActor` with the chosen reasoner, and the
//! `IncidentSupervisor`, which adopts every unfinished incident and spawns one
//! `IncidentActor` per incident. The API only tells the supervisor an id once its row is
//! committed, with the [`admission::Slot`] it took before the commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef, call_t};
use uuid::Uuid;

use crate::core::policy::Limits;
use crate::mcp_client::{McpClientActor, McpClientMsg, McpServerSpec};
use crate::metrics::Metrics;
use crate::reasoner::{Reasoner, Server};
use crate::store::Store;

pub mod admission;
pub mod incident;
pub mod llm;
pub mod supervisor;
pub mod tools;

use admission::Admission;
use incident::{IncidentConfig, IncidentHooks, NoHooks};
use llm::{LlmActor, LlmArgs, LlmMsg};
use supervisor::{IncidentSupervisor, SupervisorArgs, SupervisorConfig, SupervisorMsg};
use tools::{ToolBounds, Tools};

/// Everything the agent needs besides the store.
#[derive(Clone)]
pub struct AgentConfig {
    /// The three servers, in the order mapping, observability, remediation.
    pub servers: [McpServerSpec; 3],
    pub reasoner: Arc<dyn Reasoner>,
    /// Most reasoner steps in flight at once.
    pub reasoner_concurrency_max: usize,
    /// Most incident steps running at once (see [`AgentCtx::working`]).
    pub working_max: usize,
    pub incident: IncidentConfig,
    pub supervisor: SupervisorConfig,
    pub tools: ToolBounds,
    /// Restart budgets and the blast-radius guard.
    pub limits: Limits,
    /// The window of `limits.budget.per_service_per_window_max` and of "once per pod".
    pub restart_window_secs: u64,
    /// Longest start-up waits for the servers to connect before serving anyway.
    pub connect_wait_ms: u64,
    pub hooks: Arc<dyn IncidentHooks>,
}

impl AgentConfig {
    /// The defaults for everything but the servers and the reasoner.
    pub fn new(servers: [McpServerSpec; 3], reasoner: Arc<dyn Reasoner>) -> Self {
        AgentConfig {
            servers,
            reasoner,
            reasoner_concurrency_max: 8,
            working_max: 1_024,
            incident: IncidentConfig::default(),
            supervisor: SupervisorConfig::default(),
            tools: ToolBounds {
                deadline_ms: 30_000,
                retry_backoff_initial_ms: 100,
                retry_backoff_max_ms: 2_000,
            },
            limits: Limits::default(),
            restart_window_secs: 3_600,
            connect_wait_ms: 20_000,
            hooks: Arc::new(NoHooks),
        }
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("servers", &self.servers)
            .field("reasoner", &self.reasoner.name())
            .field("reasoner_concurrency_max", &self.reasoner_concurrency_max)
            .field("working_max", &self.working_max)
            .field("incident", &self.incident)
            .field("supervisor", &self.supervisor)
            .field("tools", &self.tools)
            .field("limits", &self.limits)
            .field("restart_window_secs", &self.restart_window_secs)
            .finish_non_exhaustive()
    }
}

/// What every incident actor shares.
pub struct AgentCtx {
    pub store: Store,
    pub llm: ActorRef<LlmMsg>,
    pub tools: Tools,
    pub config: IncidentConfig,
    pub limits: Limits,
    pub restart_window_secs: u64,
    /// One lock per service, held while an incident reads the service's restart window
    /// from the database, plans, and writes its plan: two incidents planning restarts of one
    /// service at once cannot both take the last restart of the budget, nor both restart
    /// one pod. The window itself lives in the rows, so a restart of the agent forgets
    /// nothing. (Several replicas on one PostgreSQL need the lock in the database too.)
    pub restart_locks: crate::locks::KeyedLocks,
    pub reasoner_name: String,
    pub hooks: Arc<dyn IncidentHooks>,
    /// The agent's metrics, shared with the API.
    pub metrics: Arc<Metrics>,
    /// The working slots: an incident actor holds one while it runs a step (its reads,
    /// tool calls and writes), none while it waits for the model or for its next message.
    /// A storm's live incidents then queue here as small futures (FIFO), and what is in
    /// flight at the MCP servers and the database is bounded by the slots, not by the live
    /// incidents. A step that holds one waits for another incident only at a service's
    /// restart lock, whose holder is running a step, so holds one too: no cycle.
    pub working: tokio::sync::Semaphore,
    /// Set when the agent is asked to stop: every incident actor finishes the step it is in
    /// (a reasoner turn asked for is awaited and taken) and stops (its incident stays unfinished, for the next start to adopt), and nothing
    /// new is started.
    pub draining: std::sync::atomic::AtomicBool,
}

impl AgentCtx {
    /// Whether the agent is stopping (see [`AgentCtx::draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The running agent.
pub struct Agent {
    pub supervisor: ActorRef<SupervisorMsg>,
    /// The slots new incidents take before they are committed (see [`admission`]).
    pub admission: Arc<Admission>,
    pub llm: ActorRef<LlmMsg>,
    pub clients: HashMap<Server, ActorRef<McpClientMsg>>,
    ctx: Arc<AgentCtx>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start the {what} actor: {error}")]
    Spawn { what: String, error: String },
}

impl Agent {
    /// Starts the clients (and waits up to `connect_wait_ms` for them), the reasoner and
    /// the supervisor, which then adopts the unfinished incidents.
    pub async fn start(
        config: AgentConfig,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Agent, AgentError> {
        let spawn_err = |what: &str, e: ractor::SpawnErr| AgentError::Spawn {
            what: what.into(),
            error: e.to_string(),
        };
        let mut clients = HashMap::new();
        for (server, spec) in Server::ALL.into_iter().zip(config.servers.iter().cloned()) {
            let name = format!("mcp/{}", server.as_str());
            let (client, _) = Actor::spawn(Some(name.clone()), McpClientActor, spec)
                .await
                .map_err(|e| spawn_err(&name, e))?;
            clients.insert(server, client);
        }
        wait_connected(&clients, config.connect_wait_ms).await;
        let reasoner_name = config.reasoner.name();
        let (llm, _) = Actor::spawn(
            Some("llm".into()),
            LlmActor,
            LlmArgs {
                reasoner: config.reasoner.clone(),
                concurrency_max: config.reasoner_concurrency_max,
                step_timeout_ms: config.incident.reasoner_step_timeout_ms,
                metrics: metrics.clone(),
            },
        )
        .await
        .map_err(|e| spawn_err("llm", e))?;
        let ctx = Arc::new(AgentCtx {
            store,
            llm: llm.clone(),
            tools: Tools::new(clients.clone(), config.tools, metrics.clone()),
            config: config.incident.clone(),
            limits: config.limits,
            restart_window_secs: config.restart_window_secs,
            restart_locks: crate::locks::KeyedLocks::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            reasoner_name,
            hooks: config.hooks.clone(),
            metrics: metrics.clone(),
            working: tokio::sync::Semaphore::new(config.working_max.max(1)),
        });
        let admission = Admission::new(config.supervisor.live_max, config.supervisor.queue_max);
        metrics
            .admission_capacity
            .set(i64::try_from(admission.capacity()).unwrap_or(i64::MAX));
        let (supervisor, _) = Actor::spawn(
            Some("incidents".into()),
            IncidentSupervisor,
            SupervisorArgs {
                ctx: ctx.clone(),
                config: config.supervisor.clone(),
                admission: admission.clone(),
            },
        )
        .await
        .map_err(|e| spawn_err("incident supervisor", e))?;
        Ok(Agent {
            supervisor,
            admission,
            llm,
            clients,
            ctx,
        })
    }

    /// Hands a committed incident to its actor (taking a slot for it when one is free;
    /// otherwise the periodic adoption picks it up).
    pub fn handle(&self, id: Uuid) {
        if let Err(e) = self.supervisor.cast(SupervisorMsg::Spawn(id, None)) {
            // The periodic adoption picks it up.
            tracing::error!(incident_id = %id, error = %e, "the supervisor did not take the incident");
        }
    }

    /// Lets every incident actor finish the step it is in (a mutating call and its result
    /// included), then stop, starting nothing new; waits up to `grace` for them. Returns
    /// how many were still working when the grace ran out.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.ctx
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        loop {
            let live = call_t!(self.supervisor, SupervisorMsg::Live, 1_000).unwrap_or(0);
            if live == 0 || Instant::now() >= deadline {
                tracing::info!(live, "incident actors drained");
                return live;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the supervisor (and with it every incident actor), the reasoner and the
    /// clients (and with them the server processes). Call [`Agent::drain`] first for a
    /// clean stop.
    pub async fn stop(self) {
        let grace = Some(Duration::from_secs(5));
        let _ = self.supervisor.stop_and_wait(None, grace).await;
        let _ = self.llm.stop_and_wait(None, grace).await;
        for client in self.clients.into_values() {
            let _ = client.stop_and_wait(None, grace).await;
        }
    }
}

async fn wait_connected(clients: &HashMap<Server, ActorRef<McpClientMsg>>, wait_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    for (server, client) in clients {
        loop {
            let status = call_t!(client, McpClientMsg::Status, 5_000).ok();
            if status.as_ref().is_some_and(|s| s.connected) {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(server = server.as_str(), last_error = ?status.and_then(|s| s.last_error), "server not connected yet; starting anyway");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
