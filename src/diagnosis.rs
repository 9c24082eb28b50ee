//! Runbook diagnosis, the core of the offline `rules` reasoner: match a runbook's signals
//! against what `get-metrics` and `get-logs` returned, write the root-cause analysis with
//! the evidence that matched, and list the runbook's remediation for the best match. Pure.
//! What matches nothing yields no action: the incident is escalated with a notification.

use mcp::catalog::{AlertMapping, Matcher, RemediationStep, Runbook, Signal};
use mcp::fleet::model::{LogPage, ServiceMetrics};

use crate::incident::RootCauseAnalysis;

/// Most evidence lines kept per signal.
pub const EVIDENCE_PER_SIGNAL_MAX: usize = 5;
/// Longest log excerpt quoted as evidence, in characters.
pub const EXCERPT_CHARS_MAX: usize = 200;

/// A signal that matched, with what it matched.
#[derive(Clone, Debug, PartialEq)]
pub struct Matched {
    pub signal: Signal,
    /// The pod the evidence points at, when it points at one.
    pub pod: Option<String>,
    pub evidence: Vec<String>,
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
    /// Every signal that matched, best first.
    pub matched: Vec<Matched>,
    pub rca: RootCauseAnalysis,
    /// The best signal's remediation, in the runbook's order; empty when nothing matched.
    pub proposals: Vec<Proposed>,
}

/// Evaluates one signal; `None` when it does not match.
pub fn evaluate(signal: &Signal, metrics: &ServiceMetrics, logs: &LogPage) -> Option<Matched> {
    let mut evidence = Vec::new();
    let mut pod = None;
    let mut pods_where = |pred: &dyn Fn(&mcp::fleet::model::PodStatus) -> bool| {
        for p in metrics.pods.iter().filter(|p| pred(p)) {
            pod.get_or_insert_with(|| p.name.clone());
            evidence.push(format!(
                "pod {}: phase {}, ready {}, restarts {}, last termination {} (exit {}), memory {} of {} MiB, disk {:.0}%",
                p.name,
                p.phase,
                p.ready,
                p.restarts,
                p.last_termination_reason.as_deref().unwrap_or("none"),
                p.last_exit_code.map_or("-".into(), |c| c.to_string()),
                p.memory_used_bytes / (1024 * 1024),
                p.memory_limit_bytes / (1024 * 1024),
                p.disk_used_ratio * 100.0,
            ));
        }
    };
    match &signal.matcher {
        Matcher::PodTerminationReason { equals } => {
            pods_where(&|p| p.last_termination_reason.as_deref() == Some(equals.as_str()))
        }
        Matcher::PodPhase { equals } => pods_where(&|p| p.phase == *equals),
        Matcher::PodNotReady => pods_where(&|p| p.phase == "Running" && !p.ready),
        Matcher::MemoryRatioAtLeast { ratio } => pods_where(&|p| {
            p.memory_limit_bytes > 0
                && p.memory_used_bytes as f64 / p.memory_limit_bytes as f64 >= *ratio
        }),
        Matcher::DiskRatioAtLeast { ratio } => pods_where(&|p| p.disk_used_ratio >= *ratio),
        Matcher::ErrorRateAtLeast { rate } => {
            if metrics.error_rate >= *rate {
                evidence.push(format!(
                    "{} error rate {:.1}% (threshold {:.1}%)",
                    metrics.service,
                    metrics.error_rate * 100.0,
                    rate * 100.0
                ));
            }
        }
        Matcher::LatencyP99AtLeastMs { ms } => {
            if metrics.latency_p99_ms >= *ms {
                evidence.push(format!(
                    "{} p99 latency {} ms (threshold {ms} ms)",
                    metrics.service, metrics.latency_p99_ms
                ));
            }
        }
        Matcher::LogContains { text } => {
            let needle = text.to_lowercase();
            for line in logs
                .lines
                .iter()
                .rev()
                .filter(|l| l.message.to_lowercase().contains(&needle))
            {
                pod.get_or_insert_with(|| line.pod.clone());
                let excerpt: String = line.message.chars().take(EXCERPT_CHARS_MAX).collect();
                evidence.push(format!(
                    "log {} {} [{}]: {excerpt}",
                    line.at.to_rfc3339(),
                    line.pod,
                    line.level
                ));
            }
        }
    }
    if evidence.is_empty() {
        return None;
    }
    let total = evidence.len();
    evidence.truncate(EVIDENCE_PER_SIGNAL_MAX);
    if total > EVIDENCE_PER_SIGNAL_MAX {
        evidence.push(format!("… and {} more", total - EVIDENCE_PER_SIGNAL_MAX));
    }
    Some(Matched {
        signal: signal.clone(),
        pod,
        evidence,
    })
}

/// Diagnoses an incident from the runbook's signals.
pub fn diagnose(
    mapping: &AlertMapping,
    runbook: &Runbook,
    metrics: &ServiceMetrics,
    logs: &LogPage,
) -> Diagnosis {
    let mut matched: Vec<Matched> = runbook
        .spec
        .signals
        .iter()
        .filter_map(|s| evaluate(s, metrics, logs))
        .collect();
    // Best first: highest confidence; the runbook's order breaks ties (stable sort).
    matched.sort_by(|a, b| b.signal.confidence.total_cmp(&a.signal.confidence));
    let Some(best) = matched.first() else {
        return Diagnosis {
            rca: RootCauseAnalysis {
                summary: format!(
                    "no signal of the {} runbook matched the metrics and logs of {}; a human must look",
                    runbook.name, mapping.service
                ),
                root_cause: "unknown".into(),
                confidence: 0.0,
                evidence: vec![],
                service: mapping.service.clone(),
                runbook: runbook.name.clone(),
                reasoner: "rules".into(),
            },
            matched,
            proposals: vec![],
        };
    };
    // Other signals that point at the same pod corroborate the best one.
    let corroborating: Vec<&Matched> = matched[1..]
        .iter()
        .filter(|m| best.pod.is_none() || m.pod.is_none() || m.pod == best.pod)
        .collect();
    let mut evidence = best.evidence.clone();
    for m in &corroborating {
        evidence.extend(m.evidence.iter().cloned());
    }
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
    Diagnosis {
        rca: RootCauseAnalysis {
            summary: format!(
                "{}{on_pod}: {}; signals matched: {}",
                mapping.service,
                best.signal.root_cause,
                matched
                    .iter()
                    .map(|m| m.signal.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            root_cause: best.signal.root_cause.clone(),
            confidence,
            evidence,
            service: mapping.service.clone(),
            runbook: runbook.name.clone(),
            reasoner: "rules".into(),
        },
        matched,
        proposals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};
    use mcp::fleet::sim::Fleet;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

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
                .any(|e| e.contains("OOMKilled") && e.contains("of 512 MiB"))
        );
        assert!(
            d.rca
                .evidence
                .iter()
                .any(|e| e.contains("OutOfMemoryError")),
            "logs corroborate"
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
