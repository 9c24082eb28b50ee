//! The agent's own metrics, in the OpenMetrics text format that Prometheus scrapes
//! (`GET /metrics`), with the `prometheus-client` crate. One [`Metrics`] per application, made
//! in `Application::build` and shared as an `Arc` by the API, the intake and the agent's
//! actors: no global registry, so every test's agent counts for itself.
//!
//! Label values come from small fixed sets (`&'static str` of enums, the six tools, the
//! policy's reason codes) or from the configuration (the reasoner's name), never from input:
//! the number of series stays bounded whatever a client or a model sends. Counting takes no
//! allocation on the hot path: a label set is a few `&'static str`, looked up under a read
//! lock.
//!
//! The process's memory (`VmRSS`, `VmHWM` of `/proc/self/status`) is read when scraped; where
//! there is no such file the two series are absent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::core::alerts::AlertSource;
use crate::core::policy::{Decision, ReasonCode};
use crate::incident::Status;

/// The content type of a scrape: OpenMetrics 1.0 text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds of a tool call and a database write, in seconds: 0.1 ms to 10 s.
const FAST_BUCKETS_SECS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Bucket bounds of a model turn, in seconds: 10 ms to 120 s.
const MODEL_BUCKETS_SECS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// The intake's outcomes of one alert (see [`crate::intake::Received::outcome`]).
pub const ALERT_OUTCOMES: [&str; 8] = [
    "opened",
    "joined",
    "resolved",
    "refired",
    "reported",
    "unchanged",
    "dropped",
    "no-incident",
];

/// The label of a tool: one of the six, else `other` (a name a model made up).
pub fn tool_label(tool: &str) -> &'static str {
    crate::reasoner::TOOL_SERVERS
        .iter()
        .find(|(name, _)| *name == tool)
        .map_or("other", |(name, _)| name)
}

/// Where an incident was opened from.
pub fn source_label(source: AlertSource) -> &'static str {
    match source {
        AlertSource::Api => "api",
        AlertSource::Alertmanager => "alertmanager",
    }
}

/// What a tool call came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    Error,
    NotRun,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::NotRun => "not_run",
        }
    }
}

/// The endpoints that refuse new work when the agent is at capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Incidents,
    Alertmanager,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Incidents => "incidents",
            Endpoint::Alertmanager => "alertmanager",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    source: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    server: &'static str,
    tool: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    reasoner: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    reasoner: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    tool: &'static str,
    decision: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn fast_histogram() -> Histogram {
    Histogram::new(FAST_BUCKETS_SECS)
}

fn model_histogram() -> Histogram {
    Histogram::new(MODEL_BUCKETS_SECS)
}

/// Every series the agent exposes, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    incidents_opened: Family<SourceLabels, Counter>,
    incident_status: Family<StatusLabels, Counter>,
    alerts_received: Family<AlertLabels, Counter>,
    admission_refused: Family<EndpointLabels, Counter>,
    /// Incident actors alive.
    pub incidents_live: Gauge,
    /// Incidents admitted and waiting for a live slot.
    pub incidents_queued: Gauge,
    /// Incidents the agent admits at once: live max + queue max.
    pub admission_capacity: Gauge,
    investigations: Counter,
    investigations_in_flight: Gauge,
    incident_steps_waiting: Gauge,
    tool_call_duration: HistogramFamily<ToolLabels>,
    model_turn_duration: HistogramFamily<ModelLabels>,
    model_turns: Family<ModelLabels, Counter>,
    model_turns_in_flight: Gauge,
    model_tokens: Family<TokenLabels, Counter>,
    policy_decisions: Family<PolicyLabels, Counter>,
    restarts: Family<OutcomeLabels, Counter>,
    restarts_verified: Family<OutcomeLabels, Counter>,
    pages: Family<OutcomeLabels, Counter>,
    db_write_duration: HistogramFamily<OpLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family registered, the small fixed label sets at zero (so that a scrape shows
    /// them before anything happened).
    pub fn new() -> Self {
        let mut m = Metrics {
            incidents_opened: Family::default(),
            incident_status: Family::default(),
            alerts_received: Family::default(),
            admission_refused: Family::default(),
            incidents_live: Gauge::default(),
            incidents_queued: Gauge::default(),
            admission_capacity: Gauge::default(),
            investigations: Counter::default(),
            investigations_in_flight: Gauge::default(),
            incident_steps_waiting: Gauge::default(),
            tool_call_duration: Family::new_with_constructor(fast_histogram),
            model_turn_duration: Family::new_with_constructor(model_histogram),
            model_turns: Family::default(),
            model_turns_in_flight: Gauge::default(),
            model_tokens: Family::default(),
            policy_decisions: Family::default(),
            restarts: Family::default(),
            restarts_verified: Family::default(),
            pages: Family::default(),
            db_write_duration: Family::new_with_constructor(fast_histogram),
            registry: Registry::default(),
        };
        let registry = &mut m.registry;
        // Counters are registered without `_total`: the encoder adds it to every sample.
        registry.register(
            "sre_incidents_opened",
            "New incidents committed, by where they came from",
            m.incidents_opened.clone(),
        );
        registry.register(
            "sre_incident_status",
            "Times an incident entered a status",
            m.incident_status.clone(),
        );
        registry.register(
            "sre_alerts_received",
            "Alerts and reports the intake took, by what it did with them",
            m.alerts_received.clone(),
        );
        registry.register(
            "sre_admission_refused",
            "Requests refused with 503 because the agent was at capacity",
            m.admission_refused.clone(),
        );
        registry.register(
            "sre_incidents_live",
            "Incident actors alive",
            m.incidents_live.clone(),
        );
        registry.register(
            "sre_incidents_queued",
            "Incidents admitted and waiting for a live slot",
            m.incidents_queued.clone(),
        );
        registry.register(
            "sre_admission_capacity",
            "Incidents admitted at once: live max plus queue max",
            m.admission_capacity.clone(),
        );
        registry.register(
            "sre_investigations",
            "Investigations begun (new to analyzing)",
            m.investigations.clone(),
        );
        registry.register(
            "sre_investigations_in_flight",
            "Investigations begun in this process whose conclusion is not written yet",
            m.investigations_in_flight.clone(),
        );
        registry.register(
            "sre_incident_steps_waiting",
            "Incident steps waiting for a working slot (--incidents-working-max)",
            m.incident_steps_waiting.clone(),
        );
        registry.register_with_unit(
            "sre_tool_call_duration",
            "One tool call, retries included",
            Unit::Seconds,
            m.tool_call_duration.clone(),
        );
        registry.register_with_unit(
            "sre_model_turn_duration",
            "One reasoner turn, its retries included, from when it got a slot",
            Unit::Seconds,
            m.model_turn_duration.clone(),
        );
        registry.register(
            "sre_model_turns",
            "Reasoner turns, by how they ended",
            m.model_turns.clone(),
        );
        registry.register(
            "sre_model_turns_in_flight",
            "Reasoner turns running now",
            m.model_turns_in_flight.clone(),
        );
        registry.register(
            "sre_model_tokens",
            "Tokens the model reported using, prompt and completion",
            m.model_tokens.clone(),
        );
        registry.register(
            "sre_policy_decisions",
            "The safety policy's decisions recorded on actions, by tool, decision and reason code",
            m.policy_decisions.clone(),
        );
        registry.register(
            "sre_restarts",
            "restart-pod calls made, by result",
            m.restarts.clone(),
        );
        registry.register(
            "sre_restarts_verified",
            "Restarts checked afterwards, by verdict",
            m.restarts_verified.clone(),
        );
        registry.register(
            "sre_pages",
            "send-notification calls made, by result",
            m.pages.clone(),
        );
        registry.register_with_unit(
            "sre_db_write_duration",
            "One database write, retries included",
            Unit::Seconds,
            m.db_write_duration.clone(),
        );
        registry.register_collector(Box::new(ProcessMemory));
        // Created at zero (the read guards are let go at once).
        for source in [AlertSource::Api, AlertSource::Alertmanager] {
            let source = source_label(source);
            drop(m.incidents_opened.get_or_create(&SourceLabels { source }));
            for outcome in ALERT_OUTCOMES {
                drop(
                    m.alerts_received
                        .get_or_create(&AlertLabels { source, outcome }),
                );
            }
        }
        for status in [
            Status::Analyzing,
            Status::Remediating,
            Status::Resolved,
            Status::Escalated,
            Status::Failed,
        ] {
            drop(m.incident_status.get_or_create(&StatusLabels {
                status: status.as_str(),
            }));
        }
        for endpoint in [Endpoint::Incidents, Endpoint::Alertmanager] {
            drop(m.admission_refused.get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            }));
        }
        for outcome in ["succeeded", "failed"] {
            drop(m.restarts.get_or_create(&OutcomeLabels { outcome }));
            drop(m.pages.get_or_create(&OutcomeLabels { outcome }));
        }
        for outcome in ["healthy", "unhealthy"] {
            drop(
                m.restarts_verified
                    .get_or_create(&OutcomeLabels { outcome }),
            );
        }
        m
    }

    /// The whole exposition, `# EOF` included.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Writing to a String fails only if a metric's own encoding does.
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        text
    }

    pub fn incident_opened(&self, source: AlertSource) {
        self.incidents_opened
            .get_or_create(&SourceLabels {
                source: source_label(source),
            })
            .inc();
    }

    /// An incident entered `status` (and the move was written).
    pub fn incident_entered(&self, status: Status) {
        self.incident_status
            .get_or_create(&StatusLabels {
                status: status.as_str(),
            })
            .inc();
    }

    /// The status moves `(from, to)` of one step of an incident actor, once written: each
    /// entered status counts, and new → analyzing begins an investigation.
    pub fn incident_moves(&self, moves: Vec<(Status, Status)>) {
        for (from, to) in moves {
            self.incident_entered(to);
            if from == Status::New && to == Status::Analyzing {
                self.investigations.inc();
            }
        }
    }

    /// What the intake did with one alert; `outcome` is one of [`ALERT_OUTCOMES`].
    pub fn alert_received(&self, source: AlertSource, outcome: &'static str) {
        self.alerts_received
            .get_or_create(&AlertLabels {
                source: source_label(source),
                outcome,
            })
            .inc();
    }

    pub fn admission_refused(&self, endpoint: Endpoint) {
        self.admission_refused
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .inc();
    }

    /// Counts one investigation in flight until the guard is dropped (its conclusion
    /// written, or its actor gone).
    pub fn investigation_in_flight(&self) -> InFlight {
        InFlight::new(&self.investigations_in_flight)
    }

    /// Counts one incident step waiting for a working slot until the guard is dropped.
    pub fn step_waiting(&self) -> InFlight {
        InFlight::new(&self.incident_steps_waiting)
    }

    /// Counts one model turn in flight until the guard is dropped.
    pub fn model_turn_in_flight(&self) -> InFlight {
        InFlight::new(&self.model_turns_in_flight)
    }

    pub fn tool_call(&self, tool: &str, outcome: CallOutcome, took: Duration) {
        let tool = tool_label(tool);
        let server = crate::reasoner::Server::of(tool).map_or("none", |s| s.as_str());
        self.tool_call_duration
            .get_or_create(&ToolLabels {
                server,
                tool,
                outcome: outcome.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// One reasoner turn of `reasoner` that ended as `outcome`, `took` long once it had a
    /// permit (`None`: it never got one).
    pub fn model_turn(&self, reasoner: &Arc<str>, outcome: &'static str, took: Option<Duration>) {
        let labels = ModelLabels {
            reasoner: reasoner.clone(),
            outcome,
        };
        self.model_turns.get_or_create(&labels).inc();
        if let Some(took) = took {
            self.model_turn_duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
    }

    /// Tokens a model reported for one turn.
    pub fn model_tokens(&self, reasoner: &Arc<str>, prompt: u64, completion: u64) {
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            if n > 0 {
                self.model_tokens
                    .get_or_create(&TokenLabels {
                        reasoner: reasoner.clone(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
    }

    /// A policy decision recorded on an action of `tool`.
    pub fn policy_decision(&self, tool: &str, decision: &Decision) {
        self.policy_decision_code(tool, decision.label(), decision.code());
    }

    fn policy_decision_code(&self, tool: &str, decision: &'static str, code: ReasonCode) {
        self.policy_decisions
            .get_or_create(&PolicyLabels {
                tool: tool_label(tool),
                decision,
                reason: code.as_str(),
            })
            .inc();
    }

    /// A restart-pod call made, and whether it succeeded.
    pub fn restart(&self, succeeded: bool) {
        self.restarts
            .get_or_create(&OutcomeLabels {
                outcome: if succeeded { "succeeded" } else { "failed" },
            })
            .inc();
    }

    /// A restart checked afterwards.
    pub fn restart_verified(&self, healthy: bool) {
        self.restarts_verified
            .get_or_create(&OutcomeLabels {
                outcome: if healthy { "healthy" } else { "unhealthy" },
            })
            .inc();
    }

    /// A send-notification call made, and whether it succeeded.
    pub fn page(&self, succeeded: bool) {
        self.pages
            .get_or_create(&OutcomeLabels {
                outcome: if succeeded { "succeeded" } else { "failed" },
            })
            .inc();
    }

    /// A database write `op` (`save`, `create`) that took `took`, retries included.
    pub fn db_write(&self, op: &'static str, took: Duration) {
        self.db_write_duration
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
    }

    /// Runs the database write `write` and records how long it took, as `op`.
    pub async fn db_write_timed<T>(&self, op: &'static str, write: impl Future<Output = T>) -> T {
        let begun = std::time::Instant::now();
        let out = write.await;
        self.db_write(op, begun.elapsed());
        out
    }
}

/// One unit of a gauge while it lives: up when made, down when dropped (also when its
/// task or actor dies).
#[derive(Debug)]
pub struct InFlight(Gauge);

impl InFlight {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The process's resident memory now and at its peak, read from `/proc/self/status` when
/// scraped.
#[derive(Debug)]
struct ProcessMemory;

impl Collector for ProcessMemory {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return Ok(());
        };
        let (rss, peak) = memory_of(&status);
        for (name, help, value) in [
            (
                "process_resident_memory",
                "Resident memory of the process (VmRSS).",
                rss,
            ),
            (
                "sre_process_resident_memory_peak",
                "Highest resident memory of the process so far (VmHWM).",
                peak,
            ),
        ] {
            let Some(bytes) = value else { continue };
            let gauge = ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX));
            let metric =
                encoder.encode_descriptor(name, help, Some(&Unit::Bytes), MetricType::Gauge)?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// `VmRSS` and `VmHWM` of a `/proc/{pid}/status` text, in bytes (the file says kB, meaning
/// KiB); `None` for a line missing or unreadable.
fn memory_of(status: &str) -> (Option<u64>, Option<u64>) {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|rest| {
                let mut parts = rest.split_whitespace();
                let n: u64 = parts.next()?.parse().ok()?;
                match parts.next() {
                    Some("kB") => n.checked_mul(1024),
                    None => Some(n),
                    Some(_) => None,
                }
            })
    };
    (field("VmRSS"), field("VmHWM"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `series` (name and labels as encoded) in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn the_families_are_named_as_the_storm_command_reads_them() {
        let m = Metrics::new();
        m.incident_opened(AlertSource::Api);
        m.alert_received(AlertSource::Alertmanager, "joined");
        m.admission_refused(Endpoint::Incidents);
        m.incidents_live.set(2);
        m.tool_call("get-metrics", CallOutcome::Ok, Duration::from_millis(3));
        m.tool_call("rm -rf", CallOutcome::NotRun, Duration::ZERO);
        let name: Arc<str> = Arc::from("rules");
        m.model_turn(&name, "ok", Some(Duration::from_millis(20)));
        m.model_tokens(&name, 10, 0);
        m.db_write("save", Duration::from_micros(500));
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for (series, value) in [
            (r#"sre_incidents_opened_total{source="api"}"#, 1.0),
            (r#"sre_incidents_opened_total{source="alertmanager"}"#, 0.0),
            (
                r#"sre_alerts_received_total{source="alertmanager",outcome="joined"}"#,
                1.0,
            ),
            (r#"sre_admission_refused_total{endpoint="incidents"}"#, 1.0),
            (
                r#"sre_admission_refused_total{endpoint="alertmanager"}"#,
                0.0,
            ),
            ("sre_incidents_live", 2.0),
            (r#"sre_incident_status_total{status="failed"}"#, 0.0),
            (
                r#"sre_tool_call_duration_seconds_count{server="observability",tool="get-metrics",outcome="ok"}"#,
                1.0,
            ),
            (
                r#"sre_tool_call_duration_seconds_count{server="none",tool="other",outcome="not_run"}"#,
                1.0,
            ),
            (
                r#"sre_model_turns_total{reasoner="rules",outcome="ok"}"#,
                1.0,
            ),
            (
                r#"sre_model_tokens_total{reasoner="rules",kind="prompt"}"#,
                10.0,
            ),
            (r#"sre_db_write_duration_seconds_count{op="save"}"#, 1.0),
            (r#"sre_restarts_total{outcome="succeeded"}"#, 0.0),
            (r#"sre_pages_total{outcome="failed"}"#, 0.0),
            (r#"sre_restarts_verified_total{outcome="healthy"}"#, 0.0),
            ("sre_investigations_total", 0.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
        assert!(
            text.contains(r#"sre_tool_call_duration_seconds_bucket{le="0.005",server="observability",tool="get-metrics",outcome="ok"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn in_flight_guards_count_while_they_live() {
        let m = Metrics::new();
        let a = m.investigation_in_flight();
        let b = m.model_turn_in_flight();
        assert_eq!(m.investigations_in_flight.get(), 1);
        assert_eq!(m.model_turns_in_flight.get(), 1);
        drop(a);
        drop(b);
        assert_eq!(m.investigations_in_flight.get(), 0);
        assert_eq!(m.model_turns_in_flight.get(), 0);
    }

    #[test]
    fn policy_decisions_are_counted_by_short_codes() {
        let m = Metrics::new();
        m.policy_decision(
            "restart-pod",
            &Decision::NeedsApproval {
                code: ReasonCode::DatabaseTier,
                reason: "payments-db is a database service: a long sentence".into(),
            },
        );
        m.policy_decision(
            "drop-database; curl evil",
            &Decision::Deny {
                code: ReasonCode::UnknownTool,
                reason: "no".into(),
            },
        );
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                r#"sre_policy_decisions_total{tool="restart-pod",decision="proposed",reason="database_tier"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"sre_policy_decisions_total{tool="other",decision="denied",reason="unknown_tool"}"#
            ),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn memory_is_read_from_proc_status_and_never_panics() {
        let status = "Name:\tsre-agent\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(
            memory_of(status),
            (Some(10_240 * 1024), Some(20_480 * 1024))
        );
        assert_eq!(memory_of(""), (None, None));
        assert_eq!(
            memory_of("VmRSS: lots kB\nVmHWM: 99999999999999999999 kB\nVmRSS: 1 MB"),
            (None, None)
        );
        assert_eq!(
            memory_of("VmRSS:\t18446744073709551615 kB"),
            (None, None),
            "an overflow is no value"
        );
        if cfg!(target_os = "linux") {
            let text = Metrics::new().encode();
            let rss = sample(&text, "process_resident_memory_bytes").unwrap();
            let peak = sample(&text, "sre_process_resident_memory_peak_bytes").unwrap();
            assert!(rss > 0.0 && peak >= rss, "{rss} {peak}");
        }
    }
}
