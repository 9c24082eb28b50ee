//! Runbook diagnosis, the core of the offline `rules` reasoner: match a runbook's signals
//! against what `get-metrics` and `get-logs` returned, write the root-cause analysis with
//! the evidence that matched, and list the runbook's remediation for the best match. Pure.
//!
//! Only fresh evidence matches ([`crate::core::evidence`]): a termination older than the
//! runbook's window, or a log line older than its pod's current container, describes a
//! failure that is over. A service that is healthy now and shows only such stale signs has
//! recovered on its own; what matches nothing at all yields no action, and the incident is
//! escalated with a notification.

use mcp::catalog::{AlertMapping, Matcher, RemediationStep, Runbook, Signal};
use mcp::fleet::model::{LogPage, PodStatus, ServiceMetrics};

use super::evidence::{self, Evidence, Provenance};
use crate::incident::RootCauseAnalysis;

/// Most evidence lines kept per signal.
pub const EVIDENCE_PER_SIGNAL_MAX: usize = 5;

/// A signal that matched, with the fresh evidence it matched.
#[derive(Clone, Debug, PartialEq)]
pub struct Matched {
    pub signal: Signal,
    /// The pod the evidence points at, when it points at one.
    pub pod: Option<String>,
    pub evidence: Vec<Evidence>,
}

/// A remediation step to propose, with its target resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposed {
    pub step: RemediationStep,
    /// For `restart-pod`: the pod the best signal matched.
    pub pod: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnosis {
    /// Every signal that matched on fresh evidence, best first.
    pub matched: Vec<Matched>,
    pub rca: RootCauseAnalysis,
    /// The best signal's remediation, in the runbook's order; empty when nothing matched.
    pub proposals: Vec<Proposed>,
    /// Set when the service is healthy now and the runbook's signals match only stale
    /// evidence: what shows the failure is over.
    pub recovered: Option<String>,
}

/// Everything a signal's matcher finds, fresh or stale, each with its provenance.
pub fn observe(
    signal: &Signal,
    metrics: &ServiceMetrics,
    logs: &LogPage,
    window_secs: i64,
) -> Vec<Evidence> {
    let at = metrics.observed_at;
    let platform = |p: &PodStatus, fresh: bool| Evidence {
        provenance: Provenance::Platform,
        pod: Some(p.name.clone()),
        at: p.last_terminated_at.filter(|_| !fresh).unwrap_or(at),
        fresh,
        text: evidence::describe_pod(p),
        log_source: None,
    };
    let measured = |pod: Option<&PodStatus>, text: String| Evidence {
        provenance: Provenance::Metrics,
        pod: pod.map(|p| p.name.clone()),
        at,
        fresh: true,
        text,
        log_source: None,
    };
    let ratio = |used: u64, limit: u64| {
        if limit > 0 {
            used as f64 / limit as f64
        } else {
            0.0
        }
    };
    match &signal.matcher {
        Matcher::PodTerminationReason { equals } => metrics
            .pods
            .iter()
            .filter(|p| p.last_termination_reason.as_deref() == Some(equals.as_str()))
            .map(|p| {
                platform(
                    p,
                    evidence::recent_termination(p, at, window_secs).is_some(),
                )
            })
            .collect(),
        Matcher::PodPhase { equals } => metrics
            .pods
            .iter()
            .filter(|p| p.phase == *equals)
            .map(|p| platform(p, true))
            .collect(),
        Matcher::PodNotReady => metrics
            .pods
            .iter()
            .filter(|p| p.phase == "Running" && !p.ready)
            .map(|p| platform(p, true))
            .collect(),
        Matcher::MemoryRatioAtLeast { ratio: min } => metrics
            .pods
            .iter()
            .filter(|p| ratio(p.memory_used_bytes, p.memory_limit_bytes) >= *min)
            .map(|p| {
                let text = format!(
                    "pod {} uses {} of {} MiB of memory",
                    p.name,
                    p.memory_used_bytes / (1024 * 1024),
                    p.memory_limit_bytes / (1024 * 1024)
                );
                measured(Some(p), text)
            })
            .collect(),
        Matcher::DiskRatioAtLeast { ratio: min } => metrics
            .pods
            .iter()
            .filter(|p| p.disk_used_ratio >= *min)
            .map(|p| {
                let text = format!(
                    "pod {} volume {:.0}% full",
                    p.name,
                    p.disk_used_ratio * 100.0
                );
                measured(Some(p), text)
            })
            .collect(),
        Matcher::ErrorRateAtLeast { rate } if metrics.error_rate >= *rate => vec![measured(
            None,
            format!(
                "{} error rate {:.1}% (threshold {:.1}%)",
                metrics.service,
                metrics.error_rate * 100.0,
                rate * 100.0
            ),
        )],
        Matcher::LatencyP99AtLeastMs { ms } if metrics.latency_p99_ms >= *ms => vec![measured(
            None,
            format!(
                "{} p99 latency {} ms (threshold {ms} ms)",
                metrics.service, metrics.latency_p99_ms
            ),
        )],
        Matcher::ErrorRateAtLeast { .. } | Matcher::LatencyP99AtLeastMs { .. } => vec![],
        Matcher::LogContains { text } => {
            let needle = text.to_lowercase();
            logs.lines
                .iter()
                .rev()
                .filter(|l| l.message.to_lowercase().contains(&needle))
                .map(|l| {
                    let fresh = evidence::log_line_fresh(l, &metrics.pods, at, window_secs);
                    evidence::from_log(l, fresh)
                })
                .collect()
        }
    }
}

/// Evaluates one signal on fresh evidence; `None` when nothing fresh matches.
pub fn evaluate(
    signal: &Signal,
    metrics: &ServiceMetrics,
    logs: &LogPage,
    window_secs: i64,
) -> Option<Matched> {
    let mut fresh: Vec<Evidence> = observe(signal, metrics, logs, window_secs)
        .into_iter()
        .filter(|e| e.fresh)
        .collect();
    if fresh.is_empty() {
        return None;
    }
    let pod = fresh.iter().find_map(|e| e.pod.clone());
    fresh.truncate(EVIDENCE_PER_SIGNAL_MAX);
    Some(Matched {
        signal: signal.clone(),
        pod,
        evidence: fresh,
    })
}

/// Fresh evidence about each pod from every signal of the runbook: what may support a
/// proposal to restart that pod (never, alone, an autonomous restart).
pub fn pod_support(runbook: &Runbook, metrics: &ServiceMetrics, logs: &LogPage) -> Vec<Evidence> {
    let window = runbook.spec.window_secs();
    runbook
        .spec
        .signals
        .iter()
        .flat_map(|s| observe(s, metrics, logs, window))
        .filter(|e| e.fresh && e.pod.is_some())
        .collect()
}

/// When the service is healthy now and the runbook's signals find only stale evidence,
/// the sentence that says so; else `None`.
pub fn recovered(runbook: &Runbook, metrics: &ServiceMetrics, logs: &LogPage) -> Option<String> {
    let window = runbook.spec.window_secs();
    if !evidence::healthy_now(metrics, window) {
        return None;
    }
    let all: Vec<Evidence> = runbook
        .spec
        .signals
        .iter()
        .flat_map(|s| observe(s, metrics, logs, window))
        .collect();
    if all.is_empty() || all.iter().any(|e| e.fresh) {
        return None;
    }
    let newest = all.iter().max_by_key(|e| e.at)?;
    Some(format!(
        "every pod of {} runs and is ready with no termination in the last {} min; the newest sign of the failure is stale: {newest}",
        metrics.service,
        window / 60
    ))
}

/// Diagnoses an incident from the runbook's signals.
pub fn diagnose(
    mapping: &AlertMapping,
    runbook: &Runbook,
    metrics: &ServiceMetrics,
    logs: &LogPage,
) -> Diagnosis {
    let window = runbook.spec.window_secs();
    let mut matched: Vec<Matched> = runbook
        .spec
        .signals
        .iter()
        .filter_map(|s| evaluate(s, metrics, logs, window))
        .collect();
    // Best first: highest confidence; the runbook's order breaks ties (stable sort).
    matched.sort_by(|a, b| b.signal.confidence.total_cmp(&a.signal.confidence));
    let rca = |summary: String, root_cause: String, confidence: f64, evidence: Vec<String>| {
        RootCauseAnalysis {
            summary,
            root_cause,
            confidence,
            evidence,
            service: mapping.service.clone(),
            runbook: runbook.name.clone(),
            reasoner: "rules".into(),
            ..RootCauseAnalysis::undetermined(String::new())
        }
    };
    let Some(best) = matched.first() else {
        if let Some(why) = recovered(runbook, metrics, logs) {
            return Diagnosis {
                rca: rca(
                    format!("{} has recovered on its own: {why}", mapping.service),
                    "recovered".into(),
                    0.5,
                    vec![why.clone()],
                ),
                matched,
                proposals: vec![],
                recovered: Some(why),
            };
        }
        return Diagnosis {
            rca: rca(
                format!(
                    "no signal of the {} runbook matched fresh metrics and logs of {}; a human must look",
                    runbook.name, mapping.service
                ),
                "unknown".into(),
                0.0,
                vec![],
            ),
            matched,
            proposals: vec![],
            recovered: None,
        };
    };
    // Other signals that point at the same pod corroborate the best one.
    let corroborating: Vec<&Matched> = matched[1..]
        .iter()
        .filter(|m| best.pod.is_none() || m.pod.is_none() || m.pod == best.pod)
        .collect();
    let evidence: Vec<String> = best
        .evidence
        .iter()
        .chain(corroborating.iter().flat_map(|m| m.evidence.iter()))
        .map(ToString::to_string)
        .collect();
    let confidence = (best.signal.confidence + 0.05 * corroborating.len() as f64).min(0.99);
    let proposals = best
        .signal
        .remediation
        .iter()
        .filter_map(|id| runbook.spec.remediation.iter().find(|s| &s.id == id))
        .map(|step| Proposed {
            pod: (step.tool == "restart-pod")
                .then(|| best.pod.clone())
                .flatten(),
            step: step.clone(),
        })
        .collect();
    let on_pod = best
        .pod
        .as_deref()
        .map(|p| format!(" (pod {p})"))
        .unwrap_or_default();
    let signals = matched
        .iter()
        .map(|m| m.signal.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Diagnosis {
        rca: rca(
            format!(
                "{}{on_pod}: {}; signals matched: {signals}",
                mapping.service, best.signal.root_cause
            ),
            best.signal.root_cause.clone(),
            confidence,
            evidence,
        ),
        matched,
        proposals,
        recovered: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::evidence::tests::t0;
    use chrono::Duration;
    use mcp::fleet::sim::Fleet;

    /// Diagnoses `alert` in a simulated fleet where `scenario` runs, as the rules reasoner
    /// would after its diagnostics.
    fn diagnose_in(scenario: Option<&str>, alert: &str) -> Diagnosis {
        let catalog = mcp::data::load_catalog(None).unwrap();
        let mut fleet: Fleet = mcp::data::load_fleet(None, t0()).unwrap();
        if let Some(s) = scenario {
            fleet.inject(s).unwrap();
        }
        fleet.advance(t0() + Duration::seconds(5));
        let mapping = catalog.map_alert(alert).unwrap();
        let runbook = catalog.runbook_for(&mapping.service).unwrap();
        let metrics = fleet.metrics(&mapping.service).unwrap();
        let end = fleet.now();
        let logs = fleet
            .logs(&mapping.service, end - Duration::minutes(15), end, 500)
            .unwrap();
        diagnose(&mapping, runbook, &metrics, &logs)
    }

    #[test]
    fn the_oom_story_names_the_killed_pod_with_memory_evidence_and_proposes_restarting_it() {
        let d = diagnose_in(Some("oom-kill"), "CheckoutApiOOMKilled");
        assert_eq!(d.matched[0].signal.id, "oom-killed");
        let pod = d.matched[0].pod.clone().unwrap();
        assert!(d.rca.summary.contains(&pod), "{}", d.rca.summary);
        assert!(d.rca.root_cause.contains("OOMKilled"));
        assert!(
            d.rca
                .evidence
                .iter()
                .any(|e| e.starts_with("[platform]") && e.contains("OOMKilled"))
        );
        assert!(
            d.rca
                .evidence
                .iter()
                .any(|e| e.starts_with("[log, application text") && e.contains("OutOfMemoryError")),
            "logs corroborate, marked as untrusted text"
        );
        assert!(d.rca.confidence > 0.9);
        let tools: Vec<_> = d
            .proposals
            .iter()
            .map(|p| (p.step.tool.as_str(), p.pod.as_deref()))
            .collect();
        assert_eq!(
            tools,
            [
                ("restart-pod", Some(pod.as_str())),
                ("send-notification", None)
            ]
        );
    }

    #[test]
    fn the_database_story_names_the_database_and_proposes_a_restart_only_for_approval() {
        let d = diagnose_in(Some("db-outage"), "PaymentsDbDown");
        assert_eq!(d.rca.service, "payments-db");
        assert!(d.rca.root_cause.contains("payments-db"));
        assert_eq!(d.matched[0].pod.as_deref(), Some("payments-db-0"));
        let restart = d
            .proposals
            .iter()
            .find(|p| p.step.tool == "restart-pod")
            .unwrap();
        assert_eq!(restart.step.autonomy, mcp::catalog::Autonomy::Approval);
    }

    #[test]
    fn every_scenario_is_recognised_by_its_services_runbook() {
        for (scenario, alert, signal) in [
            (
                "bad-config-crashloop",
                "OrdersWorkerCrashLooping",
                "bad-config",
            ),
            ("disk-full", "SearchIndexerDiskFull", "disk-full"),
            (
                "slow-dependency",
                "CatalogApiHighLatency",
                "slow-dependency",
            ),
            (
                "db-outage",
                "PaymentsApiHighErrorRate",
                "database-unreachable",
            ),
        ] {
            let d = diagnose_in(Some(scenario), alert);
            assert_eq!(
                d.matched.first().map(|m| m.signal.id.as_str()),
                Some(signal),
                "{scenario}"
            );
        }
    }

    #[test]
    fn a_healthy_service_matches_nothing_and_proposes_no_action() {
        let d = diagnose_in(None, "CheckoutApiOOMKilled");
        assert!(d.matched.is_empty());
        assert!(d.proposals.is_empty());
        assert_eq!(d.rca.root_cause, "unknown");
        assert_eq!(d.rca.confidence, 0.0);
    }
}
