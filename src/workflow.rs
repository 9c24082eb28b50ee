//! The incident's decisions, pure: which status changes are legal, what to do with a
//! diagnosis (each proposal through the policy), whether a restart worked, and how to
//! reconcile a restart found `started` after a crash. The incident actor does the IO and
//! persists each step before the next (see `ARCHITECTURE.md`).

use chrono::{DateTime, Utc};
use mcp::catalog::{AlertMapping, Autonomy, Runbook};
use mcp::fleet::model::ServiceMetrics;

use crate::incident::{ActionDecision, ActionRecord, ActionStatus, Status};
use crate::policy::{self, Decision, Facts, RestartBudget};
use crate::reasoner::Call;

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

/// A proposed call and the policy's verdict on it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedAction {
    pub call: Call,
    pub decision: Decision,
}

/// What the conclusion leads to.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Every proposal with its verdict, in the reasoner's order.
    pub actions: Vec<PlannedAction>,
    /// The status the incident moves to now: `Remediating` when a restart runs on the
    /// agent's authority (to be verified), else it stays `Analyzing` while notifications go
    /// out and ends `Escalated`.
    pub next: Status,
    pub reason: String,
}

/// The `podName` of a `restart-pod` call.
pub fn pod_of(call: &Call) -> Option<&str> {
    call.arguments.get("podName").and_then(|v| v.as_str())
}

/// Runs each proposed call through the policy, in order. A restart decided `auto` counts
/// against the budget of the ones after it, so one plan cannot restart a pod twice.
pub fn plan(calls: &[Call], facts: &Facts, budget: RestartBudget) -> Plan {
    let mut facts = facts.clone();
    let mut actions = Vec::with_capacity(calls.len());
    for call in calls {
        let pod = pod_of(call);
        let decision = policy::decide(&call.tool, pod, &facts, budget);
        if call.tool == "restart-pod" && matches!(decision, Decision::Auto { .. }) {
            let pod = pod.unwrap_or_default().to_owned();
            match facts
                .restarts_in_incident
                .iter_mut()
                .find(|(p, _)| *p == pod)
            {
                Some((_, n)) => *n += 1,
                None => facts.restarts_in_incident.push((pod, 1)),
            }
            facts.restarts_of_service_in_window += 1;
        }
        actions.push(PlannedAction {
            call: call.clone(),
            decision,
        });
    }
    let auto_restart = actions
        .iter()
        .any(|a| a.call.tool == "restart-pod" && matches!(a.decision, Decision::Auto { .. }));
    let held: Vec<String> = actions
        .iter()
        .filter(|a| !matches!(a.decision, Decision::Auto { .. }))
        .map(|a| {
            format!(
                "{} {}: {}",
                a.call.tool,
                a.decision.label(),
                a.decision.reason()
            )
        })
        .collect();
    let (next, reason) = if actions.is_empty() {
        (
            Status::Analyzing,
            "nothing to do was recognised: a human must look".to_owned(),
        )
    } else if auto_restart {
        (
            Status::Remediating,
            "a restart is allowed on the agent's own authority".to_owned(),
        )
    } else if held.is_empty() {
        (
            Status::Analyzing,
            "only notifications apply: a human decides what comes next".to_owned(),
        )
    } else {
        (Status::Analyzing, held.join("; "))
    };
    Plan {
        actions,
        next,
        reason,
    }
}

/// The facts the policy needs, from tool results the agent itself obtained for the
/// incident's own alert and service (never from what a model claims). `done` is the
/// incident's actions so far; `window` the pods of the service the agent restarted in the
/// current window, across incidents (one entry per restart).
pub fn facts(
    mapping: Option<&AlertMapping>,
    runbook: Option<&Runbook>,
    metrics: Option<&ServiceMetrics>,
    done: &[ActionRecord],
    window: &[String],
) -> Facts {
    let restart_autonomy = runbook.and_then(|r| {
        r.spec
            .remediation
            .iter()
            .filter(|s| s.tool == "restart-pod")
            .map(|s| s.autonomy)
            .max_by_key(|a| match a {
                Autonomy::Auto => 0,
                Autonomy::Approval => 1,
                Autonomy::Never => 2,
            })
    });
    let mut restarts_in_incident: Vec<(String, u32)> = Vec::new();
    for a in done.iter().filter(|a| {
        a.tool == "restart-pod"
            && a.decision == ActionDecision::Auto
            && matches!(
                a.status,
                ActionStatus::Planned | ActionStatus::Started | ActionStatus::Succeeded
            )
    }) {
        let pod = a.args.get("podName").and_then(|v| v.as_str()).unwrap_or("");
        match restarts_in_incident.iter_mut().find(|(p, _)| p == pod) {
            Some((_, n)) => *n += 1,
            None => restarts_in_incident.push((pod.to_owned(), 1)),
        }
    }
    Facts {
        service: mapping.map(|m| (m.service.clone(), m.tier)),
        restart_autonomy,
        service_pods: metrics
            .filter(|m| mapping.is_none_or(|map| map.service == m.service))
            .map(|m| m.pods.iter().map(|p| p.name.clone()).collect()),
        restarts_in_incident,
        restarts_of_service_in_window: window.len() as u32,
        pods_restarted_in_window: window.to_vec(),
    }
}

/// How an incident ends once no planned action is left.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    pub status: Status,
    pub reason: String,
    /// A notification the agent must still send before it stops, because it escalates and
    /// no human has been told of what went wrong last.
    pub notice: Option<String>,
}

/// Decides the end: resolved only when every autonomous restart ran and verified healthy
/// and nothing waits for a human; otherwise escalated, with a notice unless a notification
/// already went out (or was tried) after the last restart that went wrong.
pub fn finish(rca_summary: &str, actions: &[ActionRecord]) -> Finish {
    let restarts: Vec<&ActionRecord> = actions.iter().filter(|a| a.tool == "restart-pod").collect();
    let ran_ok = restarts
        .iter()
        .filter(|a| a.status == ActionStatus::Succeeded && a.verified == Some(true))
        .count();
    let held: Vec<String> = actions
        .iter()
        .filter(|a| matches!(a.status, ActionStatus::Proposed | ActionStatus::Denied))
        .map(|a| format!("{} {} ({})", a.tool, a.status.as_str(), a.reason))
        .collect();
    let failures: Vec<String> = actions
        .iter()
        .filter(|a| a.status == ActionStatus::Failed || a.verified == Some(false))
        .map(|a| format!("{} #{} {}", a.tool, a.seq, a.reason))
        .collect();
    if ran_ok > 0 && held.is_empty() && failures.is_empty() {
        return Finish {
            status: Status::Resolved,
            reason: format!("{ran_ok} restart(s) ran and the pods verified healthy"),
            notice: None,
        };
    }
    let reason = if !failures.is_empty() {
        format!("did not work: {}", failures.join("; "))
    } else if !held.is_empty() {
        format!("waiting for a human: {}", held.join("; "))
    } else {
        "no action applies: a human must look".to_owned()
    };
    let last_bad = restarts
        .iter()
        .filter(|a| {
            a.decision == ActionDecision::Auto
                && (a.status == ActionStatus::Failed || a.verified == Some(false))
        })
        .map(|a| a.seq)
        .max()
        .unwrap_or(0);
    // A notice that was sent, or tried and failed, counts: the agent tries once and does
    // not loop on a notification channel that is down.
    let told = actions.iter().any(|a| {
        a.tool == "send-notification"
            && matches!(a.status, ActionStatus::Succeeded | ActionStatus::Failed)
            && a.seq > last_bad
    });
    Finish {
        status: Status::Escalated,
        notice: (!told).then(|| {
            format!("Escalated to a human: {reason}.\nAnalysis: {rca_summary}")
                .chars()
                .take(mcp::fleet::model::MESSAGE_CHARS_MAX)
                .collect()
        }),
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
    /// The pod started later than the agent saw it start before the call: the restart
    /// happened. Record it.
    AlreadyDone,
    /// No sign of the restart: call again with the same idempotency key, which the
    /// remediation server answers with the first result if it did happen after all.
    ReissueWithSameKey,
}

/// `started_before` is the pod's start time as `get-metrics` showed it before the call:
/// both instants come from the cluster's clock, so the agent's own clock (and any skew
/// between the two) plays no part.
pub fn reconcile_restart(
    pod: &str,
    started_before: DateTime<Utc>,
    metrics: &ServiceMetrics,
) -> Reconcile {
    match metrics.pods.iter().find(|p| p.name == pod) {
        Some(p) if p.started_at > started_before => Reconcile::AlreadyDone,
        _ => Reconcile::ReissueWithSameKey,
    }
}

#[cfg(test)]
mod tests {
    use super::facts as facts_of;
    use super::*;
    use chrono::Duration;
    use mcp::catalog::Tier;
    use mcp::fleet::model::PodStatus;

    fn call(tool: &str, pod: Option<&str>) -> Call {
        Call {
            id: tool.into(),
            tool: tool.into(),
            arguments: pod
                .map(|p| serde_json::json!({ "podName": p }))
                .unwrap_or_else(|| serde_json::json!({ "message": "m", "severity": "info" }))
                .as_object()
                .unwrap()
                .clone(),
            invalid_arguments: None,
        }
    }

    fn proposals() -> Vec<Call> {
        vec![
            call("restart-pod", Some("p-1")),
            call("send-notification", None),
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
            &proposals(),
            &facts(Tier::Stateless, Autonomy::Auto),
            RestartBudget::default(),
        );
        assert_eq!(oom.next, Status::Remediating);
        assert!(oom.actions.iter().all(|a| a.decision.label() == "auto"));

        let db = plan(
            &proposals(),
            &facts(Tier::Database, Autonomy::Approval),
            RestartBudget::default(),
        );
        assert_eq!(
            db.next,
            Status::Analyzing,
            "it ends escalated once notified"
        );
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
            Status::Analyzing
        );
        let notify_only = vec![proposals().remove(1)];
        let p = plan(
            &notify_only,
            &facts(Tier::Stateless, Autonomy::Auto),
            RestartBudget::default(),
        );
        assert_eq!(p.next, Status::Analyzing);
        assert!(p.reason.contains("only notifications"));
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
    fn a_started_restart_is_reconciled_from_the_pods_start_time_before_and_after() {
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

    fn record(
        seq: u32,
        tool: &str,
        decision: ActionDecision,
        status: ActionStatus,
    ) -> ActionRecord {
        ActionRecord {
            seq,
            server: "remediation".into(),
            tool: tool.into(),
            args: serde_json::json!({ "podName": "p-1" }),
            idempotency_key: format!("i:{seq}"),
            decision,
            reason: "why".into(),
            status,
            result: None,
            started_at: Utc::now(),
            finished_at: None,
            trace_id: "t".into(),
            baseline: None,
            verified: None,
        }
    }

    fn verified(mut r: ActionRecord, healthy: bool) -> ActionRecord {
        r.verified = Some(healthy);
        r
    }

    #[test]
    fn one_plan_cannot_restart_the_same_pod_twice() {
        let twice = vec![
            call("restart-pod", Some("p-1")),
            call("restart-pod", Some("p-1")),
        ];
        let p = plan(
            &twice,
            &facts(Tier::Stateless, Autonomy::Auto),
            RestartBudget::default(),
        );
        assert_eq!(p.actions[0].decision.label(), "auto");
        assert_eq!(p.actions[1].decision.label(), "proposed");
        assert!(p.actions[1].decision.reason().contains("already restarted"));
    }

    #[test]
    fn facts_count_this_incidents_restarts_and_ignore_metrics_of_another_service() {
        let done = vec![
            record(
                1,
                "restart-pod",
                ActionDecision::Auto,
                ActionStatus::Succeeded,
            ),
            record(
                2,
                "restart-pod",
                ActionDecision::Proposed,
                ActionStatus::Proposed,
            ),
        ];
        let catalog = mcp::data::load_catalog(None).unwrap();
        let mapping = catalog.map_alert("CheckoutApiOOMKilled").unwrap();
        let runbook = catalog.runbook_for("checkout-api").unwrap();
        let mut m = metrics(pod("Running", true, 0, Utc::now()));
        m.service = "checkout-api".into();
        let window = ["p-0".to_owned(), "p-9".to_owned()];
        let f = facts_of(Some(&mapping), Some(runbook), Some(&m), &done, &window);
        assert_eq!(f.restart_autonomy, Some(Autonomy::Auto));
        assert_eq!(f.restarts_in_incident, vec![("p-1".to_owned(), 1)]);
        assert_eq!(f.service_pods, Some(vec!["p-1".to_owned()]));
        assert_eq!(f.restarts_of_service_in_window, 2);
        assert_eq!(f.pods_restarted_in_window, window);
        m.service = "payments-db".into();
        let other = facts_of(Some(&mapping), Some(runbook), Some(&m), &[], &[]);
        assert_eq!(
            other.service_pods, None,
            "pods of another service prove nothing"
        );
        let db = catalog.runbook_for("payments-db").unwrap();
        assert_eq!(
            facts_of(None, Some(db), None, &[], &[]).restart_autonomy,
            Some(Autonomy::Approval)
        );
    }

    #[test]
    fn an_incident_resolves_only_when_every_restart_verified_and_nothing_waits() {
        let restart = || {
            record(
                1,
                "restart-pod",
                ActionDecision::Auto,
                ActionStatus::Succeeded,
            )
        };
        let notify = |seq| {
            record(
                seq,
                "send-notification",
                ActionDecision::Auto,
                ActionStatus::Succeeded,
            )
        };
        let ok = finish("s", &[verified(restart(), true), notify(2)]);
        assert_eq!(ok.status, Status::Resolved);
        assert_eq!(ok.notice, None);

        let unhealthy = finish("s", &[verified(restart(), false), notify(2)]);
        assert_eq!(unhealthy.status, Status::Escalated);
        assert!(unhealthy.reason.contains("did not work"));

        let notified_before_the_failure = finish(
            "s",
            &[
                notify(1),
                verified(
                    record(
                        2,
                        "restart-pod",
                        ActionDecision::Auto,
                        ActionStatus::Succeeded,
                    ),
                    false,
                ),
            ],
        );
        assert!(
            notified_before_the_failure.notice.is_some(),
            "a human hears that the fix failed"
        );

        let proposed = finish(
            "s",
            &[
                notify(1),
                record(
                    2,
                    "restart-pod",
                    ActionDecision::Proposed,
                    ActionStatus::Proposed,
                ),
            ],
        );
        assert_eq!(proposed.status, Status::Escalated);
        assert!(proposed.reason.contains("waiting for a human"));
        assert_eq!(proposed.notice, None, "the notification already said so");

        let nothing = finish("s", &[]);
        assert_eq!(nothing.status, Status::Escalated);
        assert!(nothing.notice.unwrap().contains("Escalated"));

        let notice_failed = finish(
            "s",
            &[record(
                1,
                "send-notification",
                ActionDecision::Auto,
                ActionStatus::Failed,
            )],
        );
        assert_eq!(notice_failed.status, Status::Escalated);
        assert_eq!(
            notice_failed.notice, None,
            "a failed notice is not retried forever"
        );
    }
}
