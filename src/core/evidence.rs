//! Evidence with provenance, and whether it is fresh. Pure.
//!
//! Every observation the agent acts on says where it came from:
//!
//! - **platform**: what the orchestrator reports about a pod through `get-metrics` (phase,
//!   readiness, restart count, last termination reason and time, container start). Nobody
//!   outside the cluster's control plane writes it.
//! - **metrics**: measured numbers (memory against the limit, disk, error rate, latency).
//! - **log**: text in a log line. Application lines are written by the service and carry
//!   whatever its users sent it (request paths, query strings, form fields): untrusted.
//!   Platform events that arrive as log lines are still text.
//!
//! A model's claims are none of these: they are never evidence.
//!
//! Freshness: an observation older than the evidence window describes a failure that is
//! over, and a log line older than its pod's current container describes a previous
//! container. [`condition_holds`] is the only way to autonomy, and it reads platform facts
//! alone.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use mcp::catalog::Condition;
use mcp::fleet::model::{LogLine, LogSource, PodStatus, ServiceMetrics};
use serde::{Deserialize, Serialize};

/// Longest log text kept in a piece of evidence, in characters.
pub const LOG_TEXT_CHARS_MAX: usize = 200;

/// Where an observation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    Platform,
    Metrics,
    Log,
}

impl Provenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Platform => "platform",
            Provenance::Metrics => "metrics",
            Provenance::Log => "log",
        }
    }
}

/// One observation, with where it came from and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub provenance: Provenance,
    /// The pod it is about, when it is about one.
    pub pod: Option<String>,
    /// When it was true: the termination time, the log line's time, or when the metrics
    /// were read.
    pub at: DateTime<Utc>,
    /// False when it describes a failure that is over (older than the window) or a
    /// previous container of its pod.
    pub fresh: bool,
    /// For platform and metrics evidence a sentence the agent wrote; for a log line its
    /// text, bounded and cleaned ([`crate::core::text::clean`]), still untrusted.
    pub text: String,
    /// For a log line: written by the application or reported by the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<LogSource>,
}

impl fmt::Display for Evidence {
    /// `[platform] …`, `[metrics] …`, or `[log, application text, untrusted; 12:00:01Z pod p] «…»`,
    /// with `stale` when it is not fresh.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stale = if self.fresh { "" } else { ", stale" };
        match self.provenance {
            Provenance::Log => {
                let source = match self.log_source {
                    Some(LogSource::Platform) => "platform event",
                    _ => "application text, untrusted",
                };
                write!(
                    f,
                    "[log, {source}{stale}; {} {}] {}",
                    self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    self.pod.as_deref().unwrap_or("-"),
                    crate::core::text::quote(&self.text, LOG_TEXT_CHARS_MAX)
                )
            }
            p => write!(f, "[{}{stale}] {}", p.as_str(), self.text),
        }
    }
}

/// The start of the evidence window ending at `observed_at`.
pub fn window_start(observed_at: DateTime<Utc>, window_secs: i64) -> DateTime<Utc> {
    observed_at - Duration::seconds(window_secs.max(0))
}

/// Whether an observation describes the world now: its time is within `skew_max_secs` of
/// the agent's own clock. A snapshot from a lagging cache, or one dated in the future, is
/// no evidence of anything current.
pub fn observed_now(
    observed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    skew_max_secs: i64,
) -> Result<(), String> {
    let skew = (observed_at - now).num_seconds();
    if skew.abs() <= skew_max_secs {
        Ok(())
    } else {
        Err(format!(
            "the observation is dated {}, {skew} s from the agent's clock (at most {skew_max_secs} s)",
            observed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ))
    }
}

/// A pod's state in one sentence, as the platform reports it.
pub fn describe_pod(p: &PodStatus) -> String {
    let termination = match (&p.last_termination_reason, p.last_terminated_at) {
        (Some(reason), Some(at)) => format!(
            "last termination {reason} (exit {}) at {}",
            p.last_exit_code.map_or("-".into(), |c| c.to_string()),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        (Some(reason), None) => format!("last termination {reason} at an unknown time"),
        _ => "no termination".to_owned(),
    };
    format!(
        "pod {}: phase {}, ready {}, restarts {}, {termination}, container started {}",
        p.name,
        p.phase,
        p.ready,
        p.restarts,
        p.started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// The pod's last termination, when the platform reports one inside the window. A
/// termination in the future, before the pod existed, or after the start of a container
/// that runs now, is inconsistent and not believed (while a pod backs off, no container
/// runs, and its last start is the container that ended).
pub fn recent_termination(
    p: &PodStatus,
    observed_at: DateTime<Utc>,
    window_secs: i64,
) -> Option<(&str, DateTime<Utc>)> {
    let reason = p.last_termination_reason.as_deref()?;
    let at = p.last_terminated_at?;
    let consistent =
        at <= observed_at && at >= p.created_at && (p.phase != "Running" || at <= p.started_at);
    (consistent && at >= window_start(observed_at, window_secs)).then_some((reason, at))
}

/// Whether `condition` holds for the pod on platform facts observed at `observed_at`:
/// `Ok` with the sentence that shows it, or `Err` with why not.
pub fn condition_holds(
    condition: Condition,
    pod: &PodStatus,
    observed_at: DateTime<Utc>,
    window_secs: i64,
) -> Result<String, String> {
    let name = &pod.name;
    let minutes = window_secs / 60;
    match condition {
        Condition::OomKilled => match recent_termination(pod, observed_at, window_secs) {
            Some(("OOMKilled", at)) => Ok(format!(
                "the platform reports {name} OOMKilled at {} (within {minutes} min), its container restarted at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                pod.started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            Some((reason, _)) => Err(format!(
                "{name}'s last termination was {reason}, not OOMKilled"
            )),
            None => Err(match &pod.last_termination_reason {
                Some(reason) => format!(
                    "{name}'s last termination ({reason}) is not within {minutes} min before the observation, or its time is unknown"
                ),
                None => format!("the platform reports no termination of {name}"),
            }),
        },
        Condition::CrashLooping => {
            if pod.phase != "CrashLoopBackOff" {
                return Err(format!("{name} is {}, not CrashLoopBackOff", pod.phase));
            }
            match recent_termination(pod, observed_at, window_secs) {
                Some((reason, at)) => Ok(format!(
                    "the platform reports {name} in CrashLoopBackOff, last exit {reason} at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )),
                None => Err(format!("{name} has no termination within {minutes} min")),
            }
        }
    }
}

/// Platform evidence that the pod is failing now or failed within the window.
pub fn pod_failing(
    p: &PodStatus,
    observed_at: DateTime<Utc>,
    window_secs: i64,
) -> Option<Evidence> {
    let failing_now = p.phase != "Running" || !p.ready;
    let terminated = recent_termination(p, observed_at, window_secs);
    (failing_now || terminated.is_some()).then(|| Evidence {
        provenance: Provenance::Platform,
        pod: Some(p.name.clone()),
        at: terminated.map_or(observed_at, |(_, at)| at),
        fresh: true,
        text: describe_pod(p),
        log_source: None,
    })
}

/// Whether a log line is fresh for its pod: inside the window and written by the pod's
/// current container. A line from a pod the metrics do not list is not attributable.
pub fn log_line_fresh(
    line: &LogLine,
    pods: &[PodStatus],
    observed_at: DateTime<Utc>,
    window_secs: i64,
) -> bool {
    let Some(pod) = pods.iter().find(|p| p.name == line.pod) else {
        return false;
    };
    line.at >= window_start(observed_at, window_secs)
        && line.at >= pod.started_at
        && line.at <= observed_at + Duration::seconds(5)
}

/// A log line as evidence.
pub fn from_log(line: &LogLine, fresh: bool) -> Evidence {
    Evidence {
        provenance: Provenance::Log,
        pod: Some(line.pod.clone()),
        at: line.at,
        fresh,
        text: crate::core::text::clean(&line.message, LOG_TEXT_CHARS_MAX),
        log_source: Some(line.source),
    }
}

/// Whether the service is healthy now: every pod runs and is ready, and none ended a
/// container inside the window. A service that is healthy now but shows stale signs of the
/// alert's failure has recovered on its own.
pub fn healthy_now(metrics: &ServiceMetrics, window_secs: i64) -> bool {
    !metrics.pods.is_empty()
        && metrics.pods.iter().all(|p| {
            p.phase == "Running"
                && p.ready
                && recent_termination(p, metrics.observed_at, window_secs).is_none()
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A healthy pod whose container started an hour before `t0`.
    pub fn healthy(name: &str) -> PodStatus {
        PodStatus {
            name: name.into(),
            uid: format!("uid-{name}"),
            phase: "Running".into(),
            ready: true,
            restarts: 0,
            last_termination_reason: None,
            last_exit_code: None,
            last_terminated_at: None,
            memory_used_bytes: 100,
            memory_limit_bytes: 1000,
            cpu_millicores: 100,
            cpu_throttled_ratio: 0.0,
            disk_used_ratio: 0.1,
            created_at: t0() - Duration::hours(20),
            started_at: t0() - Duration::hours(1),
        }
    }

    /// A pod the kubelet restarted after an OOM kill `ago_secs` before `t0`.
    pub fn oom_killed(name: &str, ago_secs: i64) -> PodStatus {
        PodStatus {
            restarts: 3,
            last_termination_reason: Some("OOMKilled".into()),
            last_exit_code: Some(137),
            last_terminated_at: Some(t0() - Duration::seconds(ago_secs)),
            started_at: t0() - Duration::seconds(ago_secs) + Duration::seconds(10),
            ..healthy(name)
        }
    }

    #[test]
    fn oom_killed_holds_only_on_a_recent_platform_termination() {
        let fresh = oom_killed("p", 60);
        assert!(condition_holds(Condition::OomKilled, &fresh, t0(), 900).is_ok());
        let stale = oom_killed("p", 3_600);
        let why = condition_holds(Condition::OomKilled, &stale, t0(), 900).unwrap_err();
        assert!(why.contains("not within"), "{why}");
        let never = healthy("p");
        assert!(condition_holds(Condition::OomKilled, &never, t0(), 900).is_err());
        let other = PodStatus {
            last_termination_reason: Some("Error".into()),
            ..oom_killed("p", 60)
        };
        assert!(condition_holds(Condition::OomKilled, &other, t0(), 900).is_err());
        // A termination the platform dates after the start of the container running now,
        // or in the future, is not believed; while the pod backs off it is.
        let inconsistent = PodStatus {
            started_at: t0() - Duration::seconds(120),
            ..oom_killed("p", 60)
        };
        assert!(condition_holds(Condition::OomKilled, &inconsistent, t0(), 900).is_err());
        let backing_off = PodStatus {
            phase: "CrashLoopBackOff".into(),
            ready: false,
            ..inconsistent
        };
        assert!(condition_holds(Condition::OomKilled, &backing_off, t0(), 900).is_ok());
        let future = oom_killed("p", -30);
        assert!(condition_holds(Condition::OomKilled, &future, t0(), 900).is_err());
        let before_the_pod = PodStatus {
            created_at: t0() - Duration::seconds(30),
            ..oom_killed("p", 60)
        };
        assert!(condition_holds(Condition::OomKilled, &before_the_pod, t0(), 900).is_err());
        let unknown_time = PodStatus {
            last_terminated_at: None,
            ..oom_killed("p", 60)
        };
        assert!(condition_holds(Condition::OomKilled, &unknown_time, t0(), 900).is_err());
    }

    #[test]
    fn a_snapshot_far_from_the_agents_clock_is_not_the_world_now() {
        assert!(observed_now(t0(), t0() + Duration::seconds(30), 300).is_ok());
        assert!(observed_now(t0() - Duration::hours(1), t0(), 300).is_err());
        let ahead = observed_now(t0() + Duration::days(365 * 70), t0(), 300).unwrap_err();
        assert!(ahead.contains("from the agent's clock"), "{ahead}");
    }

    #[test]
    fn log_lines_older_than_their_pods_container_are_stale() {
        let pod = oom_killed("p", 60); // container started 50 s before t0
        let line = |ago: i64, pod: &str| LogLine {
            at: t0() - Duration::seconds(ago),
            pod: pod.into(),
            level: "error".into(),
            message: "java.lang.OutOfMemoryError".into(),
            source: LogSource::Application,
        };
        let pods = [pod];
        assert!(log_line_fresh(&line(10, "p"), &pods, t0(), 900));
        assert!(
            !log_line_fresh(&line(55, "p"), &pods, t0(), 900),
            "a previous container"
        );
        assert!(!log_line_fresh(&line(10, "elsewhere"), &pods, t0(), 900));
        let shown = from_log(&line(10, "p"), true).to_string();
        assert!(
            shown.starts_with("[log, application text, untrusted;"),
            "{shown}"
        );
    }

    #[test]
    fn a_service_is_healthy_now_only_without_a_recent_termination() {
        let metrics = |pods: Vec<PodStatus>| ServiceMetrics {
            service: "s".into(),
            namespace: "n".into(),
            tier: "stateless".into(),
            replicas: pods.len() as u32,
            ready_replicas: pods.iter().filter(|p| p.ready).count() as u32,
            error_rate: 0.0,
            latency_p99_ms: 1,
            pods,
            observed_at: t0(),
            connections: None,
            replication_lag_secs: None,
            certificate_expires_at: None,
            not_measured: vec![],
        };
        assert!(healthy_now(
            &metrics(vec![healthy("a"), oom_killed("b", 3_600)]),
            900
        ));
        assert!(!healthy_now(
            &metrics(vec![healthy("a"), oom_killed("b", 60)]),
            900
        ));
        assert!(!healthy_now(&metrics(vec![]), 900));
    }
}
