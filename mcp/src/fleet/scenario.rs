//! Scenario files: failures to inject into the simulated fleet, as data. A scenario names the
//! services it touches, the fault on their pods, the log lines the fault writes, how the
//! service's error rate and latency move, and what a restart of an affected pod does.

use serde::{Deserialize, Serialize};

/// Which pods of the service a fault hits: `"first"`, `"all"`, `"none"`, or
/// `{ replica = N }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSelector {
    /// The first pod (in name order).
    First,
    /// Every pod.
    All,
    /// No pod: the fault shows only in service metrics and logs.
    None,
    /// The pod at this 0-based index, in name order.
    Replica(u32),
}

/// Longest period, ramp or back-off a scenario may give, in seconds.
pub const PERIOD_SECS_MAX: u64 = 30 * 86_400;
/// Longest a log template may back-date its lines, in seconds.
pub const BACKDATE_SECS_MAX: u64 = 7 * 86_400;
/// Furthest a certificate expiry may lie from now, either way, in seconds.
pub const CERTIFICATE_SECS_MAX: i64 = 10 * 365 * 86_400;
/// Most client connections a service may report.
pub const CONNECTIONS_MAX: u32 = 1_000_000;
/// Largest replication lag a service may report, in seconds.
pub const REPLICATION_LAG_SECS_MAX: f64 = 30.0 * 86_400.0;

/// What a restart of an affected pod does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRestart {
    /// The fresh pod is healthy: the fault is gone from it.
    Clears,
    /// The fault comes back at once: restarting does not help.
    Persists,
}

/// What happens to an affected pod over time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// Memory climbs from `start_ratio` of the limit to the limit over `ramp_secs`; at the
    /// limit the container is OOMKilled (exit 137), backs off `backoff_secs`, restarts with
    /// baseline memory, and climbs again.
    MemoryLeak {
        start_ratio: f64,
        ramp_secs: u64,
        backoff_secs: u64,
    },
    /// The container exits with `reason`/`exit_code` right after every start, restarting
    /// every `backoff_secs`.
    CrashLoop {
        reason: String,
        exit_code: i32,
        backoff_secs: u64,
    },
    /// The pod runs but fails its readiness probe.
    Unavailable,
    /// The pod's volume fills from `start_ratio` to full over `fill_secs`; from 98 % it is
    /// not ready.
    DiskFill { start_ratio: f64, fill_secs: u64 },
    /// Nothing happens to the pods; only service metrics and logs change.
    Degraded,
}

/// An application log line a fault writes, every `every_secs` per affected pod (or once per
/// period for the service when no pod is selected). `{pod}`, `{service}`, `{memory_mib}`,
/// `{limit_mib}` and `{disk_pct}` are filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogTemplate {
    pub level: String,
    pub message: String,
    pub every_secs: u64,
    /// The line is stamped this many seconds before it is written: a service flushing
    /// buffered or old lines.
    #[serde(default)]
    pub backdate_secs: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// No `deny_unknown_fields`: serde does not support it together with `flatten`.
pub struct FaultSpec {
    pub service: String,
    pub pods: PodSelector,
    #[serde(flatten)]
    pub kind: FaultKind,
    pub on_restart: OnRestart,
    /// Restarts the affected pods have already had when the scenario starts.
    #[serde(default)]
    pub initial_restarts: u32,
    /// The service's error rate while the fault lasts.
    pub error_rate: Option<f64>,
    /// The service's p99 latency while the fault lasts.
    pub latency_p99_ms: Option<u64>,
    /// Fraction of CPU periods throttled on the affected pods (0–1).
    #[serde(default)]
    pub cpu_throttled_ratio: Option<f64>,
    /// The service's open client connections while the fault lasts.
    #[serde(default)]
    pub connections: Option<u32>,
    /// The service's replication lag while the fault lasts, in seconds.
    #[serde(default)]
    pub replication_lag_secs: Option<f64>,
    /// The service's TLS certificate expires this long after injection (negative: it has
    /// already expired).
    #[serde(default)]
    pub certificate_expires_in_secs: Option<i64>,
    #[serde(default)]
    pub logs: Vec<LogTemplate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    #[serde(rename = "fault")]
    pub faults: Vec<FaultSpec>,
}

impl Scenario {
    /// Parses and checks a scenario file's bounds.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        if s.faults.is_empty() {
            return Err(format!("{file}: a scenario needs at least one [[fault]]"));
        }
        for f in &s.faults {
            let ratio_ok = |r: f64| (0.0..1.0).contains(&r);
            let period_ok = |secs: u64| (1..=PERIOD_SECS_MAX).contains(&secs);
            let ok = match &f.kind {
                FaultKind::MemoryLeak {
                    start_ratio,
                    ramp_secs,
                    backoff_secs,
                } => ratio_ok(*start_ratio) && period_ok(*ramp_secs) && period_ok(*backoff_secs),
                FaultKind::CrashLoop { backoff_secs, .. } => period_ok(*backoff_secs),
                FaultKind::DiskFill {
                    start_ratio,
                    fill_secs,
                } => ratio_ok(*start_ratio) && period_ok(*fill_secs),
                FaultKind::Unavailable | FaultKind::Degraded => true,
            };
            let unit = |r: f64| (0.0..=1.0).contains(&r);
            let rate_ok = f.error_rate.is_none_or(unit) && f.cpu_throttled_ratio.is_none_or(unit);
            let gauges_ok = f.connections.is_none_or(|c| c <= CONNECTIONS_MAX)
                && f.replication_lag_secs
                    .is_none_or(|l| (0.0..=REPLICATION_LAG_SECS_MAX).contains(&l))
                && f.certificate_expires_in_secs
                    .is_none_or(|s| s.unsigned_abs() <= CERTIFICATE_SECS_MAX.unsigned_abs());
            let logs_ok = f.logs.iter().all(|l| {
                period_ok(l.every_secs)
                    && !l.message.is_empty()
                    && l.backdate_secs.is_none_or(|b| b <= BACKDATE_SECS_MAX)
            });
            if !ok || !rate_ok || !gauges_ok || !logs_ok {
                return Err(format!(
                    "{file}: fault on {} has out-of-range values",
                    f.service
                ));
            }
        }
        Ok(s)
    }
}
