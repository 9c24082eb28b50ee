//! What the fleet says on the wire: shared by the `sre-fleet` service and the backend client
//! the MCP servers use, so both ends agree by construction.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest notification message, in characters.
pub const MESSAGE_CHARS_MAX: usize = 4096;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 200;
/// Notification severities.
pub const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// Longest application log message, in characters.
pub const LOG_MESSAGE_CHARS_MAX: usize = 4096;
/// Levels an application log line may have.
pub const LOG_LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];

/// One pod as `get-metrics` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PodStatus {
    pub name: String,
    /// This pod instance's id. A pod deleted and recreated by its controller (what
    /// `restart-pod` does) has a new uid under the same name; a container restarted in place
    /// by the kubelet keeps it.
    pub uid: String,
    /// When this pod instance was created.
    pub created_at: DateTime<Utc>,
    /// `Running`, `CrashLoopBackOff`, …
    pub phase: String,
    pub ready: bool,
    /// Container restarts since the pod was created.
    pub restarts: u32,
    /// Why the previous container ended, e.g. `OOMKilled`, `Error`; none for a fresh pod.
    pub last_termination_reason: Option<String>,
    pub last_exit_code: Option<i32>,
    /// When the previous container ended (Kubernetes `lastState.terminated.finishedAt`).
    pub last_terminated_at: Option<DateTime<Utc>>,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    pub cpu_millicores: u32,
    /// Fraction of CPU periods in which the pod was throttled (0–1).
    pub cpu_throttled_ratio: f64,
    /// Fraction of the pod's volume in use (0–1).
    pub disk_used_ratio: f64,
    /// When the current container started: moves when the kubelet restarts the container
    /// (after an OOM kill or a crash back-off) and when the pod is replaced.
    pub started_at: DateTime<Utc>,
}

/// A service and its pods, as `get-metrics` shows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceMetrics {
    pub service: String,
    pub namespace: String,
    pub tier: String,
    pub replicas: u32,
    pub ready_replicas: u32,
    /// Fraction of requests failing (0–1).
    pub error_rate: f64,
    pub latency_p99_ms: u64,
    /// Open client connections (databases); none when not applicable.
    pub connections: Option<u32>,
    /// How far the replicas lag behind the primary, in seconds (replicated databases).
    pub replication_lag_secs: Option<f64>,
    /// When the serving TLS certificate expires; none when the service serves no TLS.
    pub certificate_expires_at: Option<DateTime<Utc>>,
    pub pods: Vec<PodStatus>,
    pub observed_at: DateTime<Utc>,
    /// Fields this backend could not measure (their values above are 0 or none, not
    /// readings), by name: `error_rate`, or `pods.restarts` for a field of every pod. A
    /// Kubernetes backend knows no error rate; a Prometheus one may miss a series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_measured: Vec<String>,
}

/// Who wrote a log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// Text the service wrote. Untrusted: users can put text into it (a logged request).
    #[default]
    Application,
    /// An event the orchestrator reports (kubelet, Kubernetes events): OOM kills,
    /// back-offs, failed probes. Only the fleet itself writes these.
    Platform,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub pod: String,
    pub level: String,
    pub message: String,
    #[serde(default)]
    pub source: LogSource,
}

/// An application log line to write (`POST /v1/services/{name}/logs`): models text from
/// outside, such as a logged request, reaching a service's log. Always `application`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppLogRequest {
    /// A pod of the service; the first ready one when absent.
    pub pod: Option<String>,
    /// `debug`, `info` (the default), `warn` or `error`.
    pub level: Option<String>,
    pub message: String,
    /// When the line says it was written; now when absent, never in the future.
    pub at: Option<DateTime<Utc>>,
}

/// Log lines of a service in a window, newest last; `truncated` when older lines were cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogPage {
    pub service: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub lines: Vec<LogLine>,
    /// Lines in the window, before truncation.
    pub matched: usize,
    pub truncated: bool,
}

/// Unknown fields are refused: a misspelt `idempotencyKey` must not silently drop the key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    /// Restart only this pod instance (its uid); another instance of the name is a conflict.
    #[serde(default)]
    pub expected_uid: Option<String>,
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
}

/// What a restart did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RestartOutcome {
    pub pod: String,
    pub service: String,
    /// The pod's phase and restart count just before the restart.
    pub previous_phase: String,
    pub previous_restarts: u32,
    pub previous_termination_reason: Option<String>,
    pub restarted_at: DateTime<Utc>,
    /// Sequence number of the ledger entry this restart made.
    pub ledger_seq: u64,
    /// True when this answer repeats the first call made with the same idempotency key:
    /// nothing was restarted this time.
    pub replayed: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    pub message: String,
    pub severity: String,
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
}

/// Delivery receipt of a notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    pub notification_id: u64,
    pub channel: String,
    pub delivered_at: DateTime<Utc>,
    pub ledger_seq: u64,
    /// True when this answer repeats the first call made with the same idempotency key.
    pub replayed: bool,
}

/// One mutating call, in the append-only ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `restart-pod` or `send-notification`.
    pub action: String,
    /// The pod restarted, or the notification's severity.
    pub target: String,
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: u64,
    pub at: DateTime<Utc>,
    pub severity: String,
    pub message: String,
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub entries: Vec<LedgerEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inbox {
    pub notifications: Vec<Notification>,
}

/// Checks a notification's message and severity; the error is a sentence for the caller.
pub fn validate_notification(message: &str, severity: &str) -> Result<(), String> {
    if message.trim().is_empty() {
        return Err("message is empty: say what happened and what was done".into());
    }
    if message.chars().count() > MESSAGE_CHARS_MAX {
        return Err(format!(
            "message is longer than {MESSAGE_CHARS_MAX} characters"
        ));
    }
    if !SEVERITIES.contains(&severity) {
        return Err(format!(
            "severity {:?} is not one of {}",
            severity.chars().take(32).collect::<String>(),
            SEVERITIES.join(", ")
        ));
    }
    Ok(())
}

/// Checks an idempotency key: 1 to [`IDEMPOTENCY_KEY_BYTES_MAX`] printable characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX || key.chars().any(char::is_control)
    {
        return Err(format!(
            "idempotencyKey must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes without control characters"
        ));
    }
    Ok(())
}
