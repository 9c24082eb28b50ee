//! Configuration: command-line flags with environment fallbacks. Every bound and timeout is a
//! named field with its unit; nothing relies on a library's default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
pub use mcp::telemetry::LogFormat;

use crate::agent::AgentConfig;
use crate::core::policy::{BlastRadius, Limits, RestartBudget};
use crate::mcp_client::{McpServerSpec, ServerTransport};
use crate::reasoner::openai::{OpenAiConfig, OpenAiReasoner, TEMPERATURE_MAX};
use crate::reasoner::rules::RulesReasoner;
use crate::reasoner::{Reasoner, Server};
use crate::store::DbConfig;

#[derive(Debug, Parser)]
#[command(name = "sre-agent", version, about = "An AI site-reliability agent")]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent and its HTTP API (migrates the database first, starts the MCP servers).
    Serve(ServeArgs),
    /// The end-to-end demo: a simulated fleet with an OOM crash and a database outage, the
    /// three MCP servers, the agent on a temporary SQLite file; posts one incident for each
    /// and prints their timelines.
    Demo(DemoArgs),
    /// Scenario cases through the chosen reasoner, each on a fresh simulated fleet: a fault
    /// injected, an alert posted, what was done read from the fleet's ledger and scored
    /// against what an SRE expects (restart a pod, notify only, no action). Prints each
    /// case and a confusion matrix; exits 0 when every case is right, 1 when some are
    /// wrong, 3 when an action was unsafe (a restart that should not have happened, any
    /// restart of a database or stateful pod), 2 when it could not run.
    Eval(EvalArgs),
    /// A storm of alerts against the agent, with figures: an embedded agent (simulated fleet
    /// with an OOM crash and a database outage, SQLite in a temporary file, the rules
    /// reasoner) or `--target URL`; prints what was accepted, coalesced, refused, restarted,
    /// paged and lost, latencies and memory; exits non-zero if anything was lost, a mutating
    /// call was repeated or the timeout passed.
    Storm(StormArgs),
    /// Bring the database schema up to date, then exit.
    Migrate(DbArgs),
    /// Run one of the three MCP servers (what `serve` spawns over stdio):
    /// `sre-agent mcp mapping|observability|remediation [--help]`.
    #[command(disable_help_flag = true)]
    Mcp {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Keep the demo's SQLite file (its path is printed) instead of deleting it.
    #[arg(long)]
    pub keep_database: bool,
    /// Longest the demo waits for both incidents to finish.
    #[arg(long, default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub wait_ms: u64,
    /// The service's settings; the demo puts the API on a free loopback port, the database in
    /// a temporary file and the fleet where it starts it.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A directory of case files (`*.toml`, the layout of `eval/cases/`); default: the
    /// shipped cases, compiled in.
    #[arg(long)]
    pub cases: Option<std::path::PathBuf>,
    /// Run only the cases with these names (repeatable).
    #[arg(long = "case")]
    pub only: Vec<String>,
    /// Longest one case may take to finish.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub wait_ms: u64,
    /// Print the result as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// The service's settings (the reasoner above all); each case gets its own API on a
    /// free loopback port, its own database in a temporary file and its own fleet.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Alerts to send.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub alerts: u64,
    /// Distinct failures the alerts describe. Default: every alert its own (reports through
    /// `POST /incidents` with `"coalesce": false`); fewer than `--alerts`: Alertmanager
    /// webhook deliveries, repeated and with several alerts per failure, so that alerts
    /// coalesce.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub failures: Option<u64>,
    /// Concurrent clients sending alerts.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4_096))]
    pub concurrency: u64,
    /// Each reasoner turn of the embedded agent takes this long (the rules' decisions after
    /// a wait: a slow model).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600_000), conflicts_with = "target")]
    pub model_latency_ms: u64,
    /// The embedded agent's cap on reasoner turns in flight (`--llm-concurrency-max`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_024), conflicts_with = "target")]
    pub model_concurrency: Option<u64>,
    /// The embedded agent's `--incidents-live-max`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000), conflicts_with = "target")]
    pub live_max: Option<u64>,
    /// The embedded agent's `--incidents-queue-max` (past live max plus this, new incidents
    /// are refused with 503 and `Retry-After`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000), conflicts_with = "target")]
    pub queue_max: Option<u64>,
    /// Longest the storm runs, from its first alert until every incident it opened is
    /// finished; then it reports what it has and fails.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
    /// `GET /incidents/{id}` probes of recent incidents per second during the storm.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub probe_rate_per_sec: u64,
    /// Print one JSON object with the figures instead of the table.
    #[arg(long)]
    pub json: bool,
    /// An agent already running on this machine (`http://127.0.0.1:8080`) instead of the
    /// embedded one. Loopback addresses only.
    #[arg(long)]
    pub target: Option<String>,
    /// The simulated fleet, whose ledger shows the mutating calls: the one behind
    /// `--target`; without `--target`, a fleet already running (`sre-fleet --inject
    /// oom-kill,db-outage`) for the embedded agent instead of one in this process, so that
    /// the peak RSS is the agent's and the storm's clients' alone. Loopback addresses only.
    #[arg(long)]
    pub fleet_url: Option<String>,
    /// The embedded agent's database (e.g. `postgres://postgres@127.0.0.1:5432/test`);
    /// default: SQLite in a temporary file, deleted afterwards.
    #[arg(long, conflicts_with = "target")]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReasonerKind {
    /// Offline and deterministic: runs the runbook.
    Rules,
    /// An OpenAI-compatible chat-completions endpoint with tools (e.g. gpt-oss-120b).
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum McpTransportKind {
    /// Spawn each server as a child process (this binary's `mcp` subcommand).
    Stdio,
    /// Connect to running servers over streamable HTTP (`--mcp-*-url`).
    Http,
}

/// The agent: MCP servers, reasoner, supervision and safety bounds.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Which reasoner decides the next step.
    #[arg(long, env = "SRE_REASONER", value_enum, default_value_t = ReasonerKind::Rules)]
    pub reasoner: ReasonerKind,
    /// How to reach the MCP servers.
    #[arg(long, env = "SRE_MCP_TRANSPORT", value_enum, default_value_t = McpTransportKind::Stdio)]
    pub mcp_transport: McpTransportKind,
    /// The backends the spawned observability and remediation servers use (fleet by
    /// default; Kubernetes, Prometheus, Slack or a webhook for a real deployment).
    #[command(flatten)]
    pub backends: mcp::backend::select::BackendArgs,
    /// Streamable HTTP endpoint of mapping-mcp (with `--mcp-transport http`).
    #[arg(
        long,
        env = "SRE_MCP_MAPPING_URL",
        default_value = "http://127.0.0.1:8701/mcp"
    )]
    pub mcp_mapping_url: String,
    /// Streamable HTTP endpoint of observability-mcp.
    #[arg(
        long,
        env = "SRE_MCP_OBSERVABILITY_URL",
        default_value = "http://127.0.0.1:8702/mcp"
    )]
    pub mcp_observability_url: String,
    /// Streamable HTTP endpoint of remediation-mcp.
    #[arg(
        long,
        env = "SRE_MCP_REMEDIATION_URL",
        default_value = "http://127.0.0.1:8703/mcp"
    )]
    pub mcp_remediation_url: String,
    /// Longest one MCP tool call may take.
    #[arg(long, env = "SRE_MCP_CALL_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub mcp_call_timeout_ms: u64,
    /// Longest connecting to a server (spawn, initialize, list tools) may take.
    #[arg(long, env = "SRE_MCP_CONNECT_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub mcp_connect_timeout_ms: u64,
    /// First wait before reconnecting to a lost server; doubles up to `--mcp-backoff-max-ms`.
    #[arg(long, env = "SRE_MCP_BACKOFF_INITIAL_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub mcp_backoff_initial_ms: u64,
    #[arg(long, env = "SRE_MCP_BACKOFF_MAX_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub mcp_backoff_max_ms: u64,
    /// Longest one tool call keeps retrying (e.g. while its server restarts).
    #[arg(long, env = "SRE_TOOL_DEADLINE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tool_deadline_ms: u64,
    /// OpenAI-compatible base URL (requests go to `{url}/chat/completions`).
    #[arg(
        long,
        env = "SRE_LLM_BASE_URL",
        default_value = "http://127.0.0.1:8000/v1"
    )]
    pub llm_base_url: String,
    #[arg(long, env = "SRE_LLM_MODEL", default_value = "gpt-oss-120b")]
    pub llm_model: String,
    /// `low`, `medium` or `high`; sent as `reasoning_effort` when given. The API key comes
    /// from the environment only (`SRE_LLM_API_KEY`, else `OPENAI_API_KEY`).
    #[arg(long, env = "SRE_LLM_REASONING_EFFORT")]
    pub llm_reasoning_effort: Option<String>,
    #[arg(long, env = "SRE_LLM_MAX_TOKENS", default_value_t = 4_096, value_parser = clap::value_parser!(u32).range(1..))]
    pub llm_max_tokens: u32,
    /// Sampling temperature sent on every request, 0 to 2, or `server` to send none (models
    /// that accept only their own). At 0 (the default) the model gives its most likely
    /// answer, so a run can be reproduced.
    #[arg(long, env = "SRE_LLM_TEMPERATURE", default_value = "0", value_parser = parse_temperature)]
    pub llm_temperature: OrServer<f64>,
    /// Sent as `seed`, so that sampled runs can be reproduced on servers that honour it;
    /// `server` sends none.
    #[arg(long, env = "SRE_LLM_SEED", default_value = "0", value_parser = parse_or_server::<u64>)]
    pub llm_seed: OrServer<u64>,
    /// `parallel_tool_calls`: `false` (the default: one call a turn, each result seen before
    /// the next call is chosen; later calls of a turn are answered "not made"), `true`, or
    /// `server` to send none.
    #[arg(long, env = "SRE_LLM_PARALLEL_TOOL_CALLS", default_value = "false", value_parser = parse_or_server::<bool>)]
    pub llm_parallel_tool_calls: OrServer<bool>,
    /// Longest one model request may take (high effort can take minutes).
    #[arg(long, env = "SRE_LLM_TIMEOUT_MS", default_value_t = 180_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub llm_timeout_ms: u64,
    /// Retries of one model request on 429, 5xx, timeouts.
    #[arg(long, env = "SRE_LLM_RETRIES_MAX", default_value_t = 4)]
    pub llm_retries_max: u32,
    #[arg(long, env = "SRE_LLM_BACKOFF_INITIAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub llm_backoff_initial_ms: u64,
    #[arg(long, env = "SRE_LLM_BACKOFF_MAX_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub llm_backoff_max_ms: u64,
    /// Most model requests in flight at once, across incidents.
    #[arg(long, env = "SRE_LLM_CONCURRENCY_MAX", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub llm_concurrency_max: u64,
    /// Bytes of one tool result put in the model's prompt.
    #[arg(long, env = "SRE_LLM_TOOL_OUTPUT_BYTES_MAX", default_value_t = 8 * 1024, value_parser = clap::value_parser!(u64).range(256..=1024 * 1024))]
    pub llm_tool_output_bytes_max: u64,
    /// Largest model response read, in bytes.
    #[arg(long, env = "SRE_LLM_RESPONSE_BYTES_MAX", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub llm_response_bytes_max: u64,
    /// Most reasoner turns in one investigation.
    #[arg(long, env = "SRE_INCIDENT_STEPS_MAX", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub incident_steps_max: u32,
    /// Most tokens the model may report using for one investigation; past it the
    /// investigation stops (undetermined, escalated) as at the step budget.
    #[arg(long, env = "SRE_TOKENS_PER_INCIDENT_MAX", default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub tokens_per_incident_max: u64,
    /// Restarts of a crashed incident actor before its incident is marked failed.
    #[arg(long, env = "SRE_INCIDENT_RESTARTS_MAX", default_value_t = 3)]
    pub incident_restarts_max: u32,
    /// Most incident actors alive at once; the rest wait in the queue.
    #[arg(long, env = "SRE_INCIDENTS_LIVE_MAX", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub incidents_live_max: u64,
    /// Most incident steps running at once (reads, tool calls, writes); the other live
    /// incidents wait for a slot, idle. Bounds what is in flight at the MCP servers and the
    /// database, and the memory it takes, whatever the number of live incidents.
    #[arg(long, env = "SRE_INCIDENTS_WORKING_MAX", default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub incidents_working_max: u64,
    /// Most incidents admitted and waiting for a live actor; past live max plus this, new
    /// incidents are refused with 503 and `Retry-After` (nothing is stored).
    #[arg(long, env = "SRE_INCIDENTS_QUEUE_MAX", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub incidents_queue_max: u64,
    /// How often unfinished incidents in the database are adopted.
    #[arg(long, env = "SRE_ADOPT_INTERVAL_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub adopt_interval_ms: u64,
    /// Checks of a restarted pod before it counts as not healthy, and the wait between them.
    #[arg(long, env = "SRE_VERIFY_ATTEMPTS_MAX", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub verify_attempts_max: u32,
    #[arg(long, env = "SRE_VERIFY_INTERVAL_MS", default_value_t = 1_000)]
    pub verify_interval_ms: u64,
    /// Autonomous restarts of one pod within one incident.
    #[arg(
        long,
        env = "SRE_RESTARTS_PER_POD_PER_INCIDENT_MAX",
        default_value_t = 1
    )]
    pub restarts_per_pod_per_incident_max: u32,
    /// Autonomous restarts of one service's pods per window, across incidents.
    #[arg(
        long,
        env = "SRE_RESTARTS_PER_SERVICE_PER_WINDOW_MAX",
        default_value_t = 3
    )]
    pub restarts_per_service_per_window_max: u32,
    #[arg(long, env = "SRE_RESTART_WINDOW_SECS", default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub restart_window_secs: u64,
    /// Farthest a `get-metrics` snapshot's time may be from the agent's clock and still
    /// count as evidence of the world now.
    #[arg(long, env = "SRE_OBSERVATION_SKEW_MAX_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1_000..=86_400_000))]
    pub observation_skew_max_ms: u64,
    /// Ready pods a service must keep while the agent restarts one of its pods on its own
    /// authority (0 lets it restart the last ready one; below it, a restart is proposed).
    #[arg(long, env = "SRE_RESTART_READY_REPLICAS_MIN", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    pub restart_ready_replicas_min: u32,
    /// Autonomous restarts of one service's pods in flight at once (planned, running, or
    /// not yet verified), across incidents.
    #[arg(long, env = "SRE_RESTARTS_IN_FLIGHT_PER_SERVICE_MAX", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub restarts_in_flight_per_service_max: u32,
    /// How long a proposal can be approved after it is made (then 410).
    #[arg(long, env = "SRE_PROPOSAL_TTL_SECS", default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(60..=604_800))]
    pub proposal_ttl_secs: u64,
    /// How long an incident whose fix verified waits for its alerts to resolve before it
    /// escalates.
    #[arg(long, env = "SRE_ALERT_RESOLVE_WAIT_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub alert_resolve_wait_secs: u64,
    /// A folder with `catalog.toml` and `runbooks/` (the layout of `mcp/data`) instead of
    /// the compiled-in catalog: the agent routes alerts with it, and the stdio mapping
    /// server it spawns serves it.
    #[arg(long, env = "SRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// Log line format. The level comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "SRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://FILE` (created when missing) or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://sre-agent.db")]
    pub database_url: String,
    /// Most pooled database connections for reads, split between the API's pool (half) and
    /// the agent's (the rest).
    #[arg(long, env = "SRE_DB_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
    /// How long a query waits for a free pooled connection.
    #[arg(long, env = "SRE_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_acquire_timeout_ms: u64,
    /// How long opening one database connection may take.
    #[arg(long, env = "SRE_DB_CONNECT_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_connect_timeout_ms: u64,
    /// How long SQLite waits on a locked database before failing a statement.
    #[arg(long, env = "SRE_SQLITE_BUSY_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sqlite_busy_timeout_ms: u64,
    /// Longest statement PostgreSQL runs before cancelling it.
    #[arg(long, env = "SRE_DB_STATEMENT_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_statement_timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "SRE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    #[arg(long, env = "SRE_REQUEST_BODY_LIMIT_BYTES", default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub request_body_limit_bytes: u64,
    /// Longest time one request may take before it is answered 503.
    #[arg(long, env = "SRE_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// On shutdown, how long requests in flight may still run.
    #[arg(long, env = "SRE_SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..))]
    pub shutdown_grace_ms: u64,
    /// How long an `Idempotency-Key` of `POST /incidents` is remembered (1 min to 30 days).
    #[arg(long, env = "SRE_IDEMPOTENCY_KEY_KEEP_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub idempotency_key_keep_secs: u64,
    /// Longest time to receive a request's headers, counted from when the connection opens
    /// or falls idle after a response (so idle and slow connections are closed after it).
    #[arg(long, env = "SRE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_read_timeout_ms: u64,
    /// Most HTTP connections open at once; one more gets 503 and is closed.
    #[arg(long, env = "SRE_CONNECTIONS_MAX", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connections_max: u64,
    /// A bearer token `POST /webhooks/alertmanager` requires (Alertmanager's
    /// `http_config.authorization`); none by default.
    #[arg(long, env = "SRE_ALERTMANAGER_TOKEN", hide_env_values = true)]
    pub alertmanager_token: Option<String>,
    /// Who may approve or reject proposals, as `name:token` pairs separated by commas: a
    /// decision must then carry `Authorization: Bearer <token>`, and is recorded as that
    /// name. Without it, the decider names themselves in `X-Decided-By`.
    #[arg(long, env = "SRE_APPROVER_TOKENS", hide_env_values = true)]
    pub approver_tokens: Option<String>,
    /// Let deciders name themselves (`X-Decided-By`) even on a listener that is not
    /// loopback: anyone who reaches the API could then approve a restart. Without it, a
    /// non-loopback `--listen` needs `--approver-tokens`.
    #[arg(long, env = "SRE_ANONYMOUS_DECISIONS")]
    pub anonymous_decisions: bool,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// Bounds of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub request_body_limit_bytes: usize,
    /// Longest time one request may take.
    pub request_timeout_ms: u64,
    /// On shutdown, how long requests in flight may still run.
    pub shutdown_grace_ms: u64,
    /// How long an `Idempotency-Key` of `POST /incidents` is remembered.
    pub idempotency_key_keep_secs: u64,
    /// Longest time to receive a request's headers, from when a connection opens or falls
    /// idle between requests.
    pub header_read_timeout_ms: u64,
    /// Most connections open at once.
    pub connections_max: usize,
    /// The bearer token `POST /webhooks/alertmanager` requires, if any.
    pub alertmanager_token: Option<String>,
    /// `(name, token)` of each approver; empty: deciders name themselves (`X-Decided-By`).
    pub approver_tokens: Vec<(String, String)>,
}

/// Longest approver token or name, in bytes.
const APPROVER_BYTES_MAX: usize = 256;

/// A setting sent to the model's server, or `server`: not sent, the server's own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OrServer<T>(pub Option<T>);

/// `server`, or a `T`.
fn parse_or_server<T: std::str::FromStr>(raw: &str) -> Result<OrServer<T>, String>
where
    T::Err: std::fmt::Display,
{
    match raw.trim() {
        "server" => Ok(OrServer(None)),
        value => value
            .parse()
            .map(|v| OrServer(Some(v)))
            .map_err(|e| format!("{e} (or `server` to send none)")),
    }
}

/// `--llm-temperature`: a number from 0 to 2, or `server`.
fn parse_temperature(raw: &str) -> Result<OrServer<f64>, String> {
    let t = parse_or_server::<f64>(raw)?;
    match t.0 {
        Some(v) if !(0.0..=TEMPERATURE_MAX).contains(&v) => {
            Err(format!("{v} is not between 0 and {TEMPERATURE_MAX}"))
        }
        _ => Ok(t),
    }
}

/// `name:token,name:token` → pairs; names and tokens are visible ASCII without `,` or `:`
/// in names, tokens at least 16 characters long.
fn parse_approver_tokens(raw: Option<&str>) -> Result<Vec<(String, String)>, ConfigError> {
    let bad = |reason: String| ConfigError {
        flag: "--approver-tokens",
        reason,
    };
    let Some(raw) = raw else { return Ok(vec![]) };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (i, item) in raw.split(',').enumerate() {
        let Some((name, token)) = item.trim().split_once(':') else {
            return Err(bad(format!("entry {} is not name:token", i + 1)));
        };
        let visible = |s: &str| s.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if name.is_empty() || name.len() > APPROVER_BYTES_MAX || !visible(name) {
            return Err(bad(format!(
                "entry {}: the name must be 1 to {APPROVER_BYTES_MAX} visible characters",
                i + 1
            )));
        }
        if token.len() < 16 || token.len() > APPROVER_BYTES_MAX || !visible(token) {
            return Err(bad(format!(
                "entry {} ({name}): the token must be 16 to {APPROVER_BYTES_MAX} visible characters",
                i + 1
            )));
        }
        if pairs.iter().any(|(_, t)| t == token) {
            return Err(bad(format!(
                "entry {} ({name}): its token is another's too",
                i + 1
            )));
        }
        pairs.push((name.to_owned(), token.to_owned()));
    }
    Ok(pairs)
}

/// Everything [`crate::app::Application::build`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: HttpConfig,
    pub db: DbConfig,
    /// The agent; `None` serves the API alone (incidents are stored, not handled).
    pub agent: Option<AgentConfig>,
    /// Where the catalog the intake routes alerts with lives; `None`: the compiled-in one.
    pub data_dir: Option<PathBuf>,
    /// The backends the spawned servers will use, built once at start so that a setting
    /// that cannot work (an unreadable kubeconfig or query file, a bad URL) stops the agent
    /// with its name instead of failing in a child; `None` when the servers are remote.
    pub backends: Option<mcp::backend::select::BackendArgs>,
}

/// A setting that cannot work, named by its flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

impl AgentArgs {
    /// The agent's configuration; `program` is what stdio servers are spawned as (this
    /// binary, with its `mcp` subcommand).
    pub fn to_config(
        &self,
        program: &Path,
        log_format: LogFormat,
    ) -> Result<AgentConfig, ConfigError> {
        let reasoner: Arc<dyn Reasoner> = match self.reasoner {
            ReasonerKind::Rules => Arc::new(RulesReasoner),
            ReasonerKind::Openai => {
                let api_key = ["SRE_LLM_API_KEY", "OPENAI_API_KEY"]
                    .iter()
                    .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
                let config = OpenAiConfig {
                    base_url: self.llm_base_url.clone(),
                    model: self.llm_model.clone(),
                    api_key,
                    reasoning_effort: self.llm_reasoning_effort.clone(),
                    max_tokens: self.llm_max_tokens,
                    temperature: self.llm_temperature.0,
                    seed: self.llm_seed.0,
                    parallel_tool_calls: self.llm_parallel_tool_calls.0,
                    request_timeout_ms: self.llm_timeout_ms,
                    retries_max: self.llm_retries_max,
                    backoff_initial_ms: self.llm_backoff_initial_ms,
                    backoff_max_ms: self.llm_backoff_max_ms,
                    steps_max: self.incident_steps_max,
                    tool_output_bytes_max: self.llm_tool_output_bytes_max as usize,
                    response_bytes_max: self.llm_response_bytes_max as usize,
                };
                Arc::new(OpenAiReasoner::new(config).map_err(|e| ConfigError {
                    flag: "--llm-*",
                    reason: e.to_string(),
                })?)
            }
        };
        if self.mcp_backoff_initial_ms > self.mcp_backoff_max_ms {
            return Err(ConfigError {
                flag: "--mcp-backoff-initial-ms",
                reason: "must not exceed --mcp-backoff-max-ms".into(),
            });
        }
        let log = match log_format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        let spec = |server: Server, url: &str| McpServerSpec {
            name: server.as_str().into(),
            transport: match self.mcp_transport {
                McpTransportKind::Stdio => {
                    let mut args = vec![
                        "mcp".to_owned(),
                        server.as_str().to_owned(),
                        "--log-format".into(),
                        log.into(),
                    ];
                    if server != Server::Mapping {
                        args.extend(self.backends.to_flags());
                    }
                    if let Some(dir) = &self.data_dir {
                        args.extend(["--data-dir".to_owned(), dir.display().to_string()]);
                    }
                    ServerTransport::Stdio {
                        program: program.to_path_buf(),
                        args,
                    }
                }
                McpTransportKind::Http => ServerTransport::Http {
                    url: url.to_owned(),
                },
            },
            call_timeout_ms: self.mcp_call_timeout_ms,
            connect_timeout_ms: self.mcp_connect_timeout_ms,
            backoff_initial_ms: self.mcp_backoff_initial_ms,
            backoff_max_ms: self.mcp_backoff_max_ms,
        };
        let mut config = AgentConfig::new(
            [
                spec(Server::Mapping, &self.mcp_mapping_url),
                spec(Server::Observability, &self.mcp_observability_url),
                spec(Server::Remediation, &self.mcp_remediation_url),
            ],
            reasoner,
        );
        config.reasoner_concurrency_max = self.llm_concurrency_max as usize;
        config.incident.steps_max = self.incident_steps_max;
        config.incident.tokens_per_incident_max = self.tokens_per_incident_max;
        // The actor waits for a whole model step: every retry and backoff of it.
        config.incident.reasoner_step_timeout_ms = match self.reasoner {
            ReasonerKind::Rules => 10_000,
            ReasonerKind::Openai => self
                .llm_timeout_ms
                .saturating_add(self.llm_backoff_max_ms)
                .saturating_mul(u64::from(self.llm_retries_max) + 1),
        };
        config.incident.verify_attempts_max = self.verify_attempts_max;
        config.incident.verify_interval_ms = self.verify_interval_ms;
        config.incident.observation_skew_max_ms = self.observation_skew_max_ms;
        config.incident.proposal_ttl_secs = self.proposal_ttl_secs;
        config.incident.alert_resolve_wait_secs = self.alert_resolve_wait_secs;
        config.supervisor.restarts_max = self.incident_restarts_max;
        config.supervisor.live_max = self.incidents_live_max as usize;
        config.working_max = self.incidents_working_max as usize;
        config.supervisor.queue_max = self.incidents_queue_max as usize;
        config.supervisor.adopt_interval_ms = self.adopt_interval_ms;
        config.tools.deadline_ms = self.tool_deadline_ms;
        config.limits = Limits {
            budget: RestartBudget {
                per_pod_per_incident_max: self.restarts_per_pod_per_incident_max,
                per_service_per_window_max: self.restarts_per_service_per_window_max,
            },
            blast: BlastRadius {
                ready_replicas_min: self.restart_ready_replicas_min,
                restarts_in_flight_per_service_max: self.restarts_in_flight_per_service_max,
            },
        };
        config.restart_window_secs = self.restart_window_secs;
        config.connect_wait_ms = self.mcp_connect_timeout_ms.saturating_mul(2);
        Ok(config)
    }
}

impl From<DbArgs> for DbConfig {
    fn from(a: DbArgs) -> Self {
        DbConfig {
            url: a.database_url,
            max_connections: a.db_max_connections,
            acquire_timeout_ms: a.db_acquire_timeout_ms,
            connect_timeout_ms: a.db_connect_timeout_ms,
            sqlite_busy_timeout_ms: a.sqlite_busy_timeout_ms,
            statement_timeout_ms: a.db_statement_timeout_ms,
        }
    }
}

impl ServeArgs {
    /// The service's configuration, the agent's stdio servers spawned as `program`.
    pub fn to_config(&self, program: &Path, log_format: LogFormat) -> Result<Config, ConfigError> {
        let a = self.clone();
        if !a.listen.ip().is_loopback() && a.approver_tokens.is_none() && !a.anonymous_decisions {
            return Err(ConfigError {
                flag: "--approver-tokens",
                reason: format!(
                    "the API listens on {} (not loopback): give the approvers' tokens, so that only they can approve a restart (or --anonymous-decisions to let anyone who reaches it decide under a name of their choosing)",
                    a.listen
                ),
            });
        }
        if !a.listen.ip().is_loopback() && a.alertmanager_token.is_none() {
            tracing::warn!(listen = %a.listen, "POST /webhooks/alertmanager takes alerts from anyone who reaches it: set --alertmanager-token");
        }
        Ok(Config {
            agent: Some(self.agent.to_config(program, log_format)?),
            listen: a.listen,
            http: HttpConfig {
                // Bounded to 64 MiB by the flag's parser, so this fits every usize.
                request_body_limit_bytes: a.request_body_limit_bytes as usize,
                request_timeout_ms: a.request_timeout_ms,
                shutdown_grace_ms: a.shutdown_grace_ms,
                idempotency_key_keep_secs: a.idempotency_key_keep_secs,
                header_read_timeout_ms: a.header_read_timeout_ms,
                // Bounded to 100,000 by the flag's parser.
                connections_max: a.connections_max as usize,
                alertmanager_token: match a.alertmanager_token.as_deref().map(str::trim) {
                    Some("") => {
                        return Err(ConfigError {
                            flag: "--alertmanager-token",
                            reason: "is empty; leave it unset for no token".into(),
                        });
                    }
                    other => other.map(str::to_owned),
                },
                approver_tokens: parse_approver_tokens(a.approver_tokens.as_deref())?,
            },
            data_dir: a.agent.data_dir.clone(),
            backends: (a.agent.mcp_transport == McpTransportKind::Stdio)
                .then(|| a.agent.backends.clone()),
            db: a.db.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_has_working_defaults() {
        let cli = Cli::try_parse_from(["sre-agent", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        let config = args
            .to_config(Path::new("sre-agent"), LogFormat::Human)
            .unwrap();
        let agent = config.agent.as_ref().unwrap();
        assert_eq!(agent.supervisor.live_max, 1_000);
        assert_eq!(agent.supervisor.queue_max, 10_000);
        assert_eq!(agent.incident.tokens_per_incident_max, 200_000);
        assert_eq!(config.http.request_body_limit_bytes, 256 * 1024);
        assert!(config.db.url.starts_with("sqlite://"));
    }

    fn config_of(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = ["sre-agent", "serve"].iter().chain(args).copied();
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        args.to_config(Path::new("sre-agent"), LogFormat::Human)
    }

    #[test]
    fn an_api_reachable_from_elsewhere_needs_approver_tokens_and_tokens_are_checked() {
        let err = config_of(&["--listen", "0.0.0.0:8080"]).unwrap_err();
        assert_eq!(err.flag, "--approver-tokens");
        assert!(config_of(&["--listen", "0.0.0.0:8080", "--anonymous-decisions"]).is_ok());
        let c = config_of(&[
            "--listen",
            "0.0.0.0:8080",
            "--approver-tokens",
            "alice:0123456789abcdef,bob:fedcba9876543210",
        ])
        .unwrap();
        assert_eq!(c.http.approver_tokens.len(), 2);
        assert_eq!(c.http.approver_tokens[1].0, "bob");
        for bad in [
            "alice",
            "alice:short",
            ":0123456789abcdef",
            "a:0123456789abcdef,b:0123456789abcdef",
            "al ice:0123456789abcdef",
        ] {
            let err = config_of(&["--approver-tokens", bad]).unwrap_err();
            assert_eq!(err.flag, "--approver-tokens", "{bad}");
            assert!(
                !err.reason.contains("0123456789abcdef"),
                "a token is never repeated: {err}"
            );
        }
        assert_eq!(
            config_of(&["--alertmanager-token", " "]).unwrap_err().flag,
            "--alertmanager-token"
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        for args in [
            ["sre-agent", "serve", "--listen", "not-an-address"],
            ["sre-agent", "serve", "--request-timeout-ms", "0"],
            ["sre-agent", "serve", "--db-max-connections", "-3"],
            ["sre-agent", "--log-format", "xml", "serve"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
    }
}
