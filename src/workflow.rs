//! The incident's decisions, pure: which status changes are legal, what to do with a
//! diagnosis (each proposal through the policy), whether a restart worked, and how to
//! reconcile a restart found `started` after a crash. The incident actor does the IO and
//! persists each step before the next (see `ARCHITECTURE.md`).

use chrono::{DateTime, Utc};
use mcp::fleet::model::ServiceMetrics;

use crate::diagnosis::Proposed;
use crate::incident::Status;
use crate::policy::{self, Decision, Facts, RestartBudget};

/// Whether an incident may move from `from` to `to`. Any unfinished incident may fail;
/// an escalated one resumes remediation only when a human approves.
pub fn can_move(from: Status, to: Status) -> bool {
    use Status::*;
    matches!(
        (from, to),
        (New, Analyzing)
            | (Analyzing, Remediating | Escalated | Failed)
            | (Remediating, Resolved | Escalated | Failed)
            | (Escalated, Remediating)
            | (New, Failed)
    )
}

/// A proposal and the policy's verdict on it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedAction {
    pub proposal: Proposed,
    pub decision: Decision,
}

/// What the diagnosis leads to.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Every proposal with its verdict, in the runbook's order.
    pub actions: Vec<PlannedAction>,
    /// The status the incident moves to once the auto actions are done:
    /// `Remediating` when a restart runs on the agent's authority (to be verified),
    /// `Escalated` when a human is needed (or nothing was recognised).
    pub next: Status,
    pub reason: String,
}

/// Runs each proposal through the policy and decides where the incident goes.
pub fn plan(proposals: &[Proposed], facts: &Facts, budget: RestartBudget) -> Plan {
    let actions: Vec<PlannedAction> = proposals
        .iter()
        .map(|p| PlannedAction {
            decision: policy::decide(&p.step.tool, p.pod.as_deref(), facts, budget),
            proposal: p.clone(),
        })
        .collect();
    let auto_restart = actions.iter().any(|a| {
        a.proposal.step.tool == "restart-pod" && matches!(a.decision, Decision::Auto { .. })
    });
    let held: Vec<String> = actions
        .iter()
        .filter(|a| !matches!(a.decision, Decision::Auto { .. }))
        .map(|a| {
            format!(
                "{} {}: {}",
                a.proposal.step.tool,
                a.decision.label(),
                a.decision.reason()
            )
        })
        .collect();
    let (next, reason) = if actions.is_empty() {
        (
            Status::Escalated,
            "no runbook signal matched: a human must look".to_owned(),
        )
    } else if auto_restart {
        (
            Status::Remediating,
            "a restart is allowed on the agent's own authority".to_owned(),
        )
    } else if held.is_empty() {
        (
            Status::Escalated,
            "only notifications apply: a human decides what comes next".to_owned(),
        )
    } else {
        (Status::Escalated, held.join("; "))
    };
    Plan {
        actions,
        next,
        reason,
    }
}

/// What `get-metrics` says of a pod after the agent restarted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    Healthy,
    NotHealthy(String),
}

/// A restarted pod counts as healthy when it runs, is ready, and has not crashed since.
pub fn verify_restart(pod: &str, metrics: &ServiceMetrics) -> Verification {
    let Some(p) = metrics.pods.iter().find(|p| p.name == pod) else {
        return Verification::NotHealthy(format!("{pod} is no longer listed by get-metrics"));
    };
    if p.phase == "Running" && p.ready && p.restarts == 0 {
        Verification::Healthy
    } else {
        Verification::NotHealthy(format!(
            "{pod} after restart: phase {}, ready {}, restarts {}, last termination {}",
            p.phase,
            p.ready,
            p.restarts,
            p.last_termination_reason.as_deref().unwrap_or("none")
        ))
    }
}

/// What to do with a `restart-pod` found `started` (intent written, result not) after a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconcile {
    /// The pod started after the intent was written: the restart happened. Record it.
    AlreadyDone,
    /// No sign of the restart: call again with the same idempotency key, which the
    /// remediation server answers with the first result if it did happen after all.
    ReissueWithSameKey,
}

pub fn reconcile_restart(
    pod: &str,
    intent_at: DateTime<Utc>,
    metrics: &ServiceMetrics,
) -> Reconcile {
    match metrics.pods.iter().find(|p| p.name == pod) {
        Some(p) if p.started_at >= intent_at => Reconcile::AlreadyDone,
        _ => Reconcile::ReissueWithSameKey,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use mcp::catalog::{Autonomy, RemediationStep, Tier};
    use mcp::fleet::model::PodStatus;

    fn step(tool: &str, autonomy: Autonomy) -> RemediationStep {
        RemediationStep {
            id: tool.into(),
            tool: tool.into(),
            autonomy,
            target: (tool == "restart-pod").then(|| "matched-pod".into()),
            description: String::new(),
        }
    }

    fn proposals(restart: Autonomy) -> Vec<Proposed> {
        vec![
            Proposed {
                step: step("restart-pod", restart),
                pod: Some("p-1".into()),
            },
            Proposed {
                step: step("send-notification", Autonomy::Auto),
                pod: None,
            },
        ]
    }

    fn facts(tier: Tier, restart: Autonomy) -> Facts {
        Facts {
            service: Some(("svc".into(), tier)),
            restart_autonomy: Some(restart),
            service_pods: Some(vec!["p-1".into(), "p-2".into()]),
            ..Facts::default()
        }
    }

    fn metrics(pod: PodStatus) -> ServiceMetrics {
        ServiceMetrics {
            service: "svc".into(),
            namespace: "ns".into(),
            tier: "stateless".into(),
            replicas: 1,
            ready_replicas: 1,
            error_rate: 0.0,
            latency_p99_ms: 10,
            pods: vec![pod],
            observed_at: Utc::now(),
        }
    }

    fn pod(phase: &str, ready: bool, restarts: u32, started_at: DateTime<Utc>) -> PodStatus {
        PodStatus {
            name: "p-1".into(),
            phase: phase.into(),
            ready,
            restarts,
            last_termination_reason: None,
            last_exit_code: None,
            memory_used_bytes: 1,
            memory_limit_bytes: 2,
            cpu_millicores: 1,
            disk_used_ratio: 0.1,
            started_at,
        }
    }

    #[test]
    fn the_lifecycle_allows_only_the_designed_moves() {
        use Status::*;
        let allowed: Vec<(Status, Status)> = Status::ALL
            .iter()
            .flat_map(|&a| Status::ALL.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| can_move(a, b))
            .collect();
        assert_eq!(
            allowed,
            [
                (New, Analyzing),
                (New, Failed),
                (Analyzing, Remediating),
                (Analyzing, Escalated),
                (Analyzing, Failed),
                (Remediating, Resolved),
                (Remediating, Escalated),
                (Remediating, Failed),
                (Escalated, Remediating),
            ]
        );
    }

    #[test]
    fn an_allowed_restart_leads_to_remediating_and_a_database_to_escalation() {
        let oom = plan(
            &proposals(Autonomy::Auto),
            &facts(Tier::Stateless, Autonomy::Auto),
            RestartBudget::default(),
        );
        assert_eq!(oom.next, Status::Remediating);
        assert!(oom.actions.iter().all(|a| a.decision.label() == "auto"));

        let db = plan(
            &proposals(Autonomy::Approval),
            &facts(Tier::Database, Autonomy::Approval),
            RestartBudget::default(),
        );
        assert_eq!(db.next, Status::Escalated);
        assert_eq!(db.actions[0].decision.label(), "proposed");
        assert_eq!(
            db.actions[1].decision.label(),
            "auto",
            "the notification still goes out"
        );
        assert!(db.reason.contains("restart-pod proposed"), "{}", db.reason);
    }

    #[test]
    fn nothing_recognised_or_only_notifications_escalate() {
        assert_eq!(
            plan(&[], &Facts::default(), RestartBudget::default()).next,
            Status::Escalated
        );
        let notify_only = vec![proposals(Autonomy::Auto).remove(1)];
        let p = plan(
            &notify_only,
            &facts(Tier::Stateless, Autonomy::Auto),
            RestartBudget::default(),
        );
        assert_eq!(p.next, Status::Escalated);
    }

    #[test]
    fn a_restart_is_verified_by_the_pod_running_ready_and_not_crashing() {
        let now = Utc::now();
        assert_eq!(
            verify_restart("p-1", &metrics(pod("Running", true, 0, now))),
            Verification::Healthy
        );
        for bad in [
            pod("CrashLoopBackOff", false, 1, now),
            pod("Running", false, 0, now),
            pod("Running", true, 2, now),
        ] {
            assert!(matches!(
                verify_restart("p-1", &metrics(bad)),
                Verification::NotHealthy(_)
            ));
        }
        assert!(matches!(
            verify_restart("p-9", &metrics(pod("Running", true, 0, now))),
            Verification::NotHealthy(_)
        ));
    }

    #[test]
    fn a_started_restart_is_reconciled_from_the_pods_start_time() {
        let intent = Utc::now();
        let restarted = metrics(pod("Running", true, 0, intent + Duration::seconds(2)));
        assert_eq!(
            reconcile_restart("p-1", intent, &restarted),
            Reconcile::AlreadyDone
        );
        let untouched = metrics(pod(
            "CrashLoopBackOff",
            false,
            4,
            intent - Duration::hours(3),
        ));
        assert_eq!(
            reconcile_restart("p-1", intent, &untouched),
            Reconcile::ReissueWithSameKey
        );
    }
}
