//! The incident's decisions, pure: which status changes are legal, what to do with a
//! conclusion (each proposal through the policy, on facts the agent gathered itself),
//! whether a restart worked, how to reconcile a restart found `started` after a crash, and
//! how an incident ends. The incident actor does the IO and persists each step before the
//! next (see `ARCHITECTURE.md`).

use chrono::{DateTime, Utc};
use mcp::catalog::{AlertMapping, Runbook};
use mcp::fleet::model::{LogPage, ServiceMetrics};

use super::alerts::AlertsView;
use super::diagnosis;
use super::policy::{self, Decision, Facts, Limits, Observed, RestartStep, WindowRestart};
use crate::incident::{ActionDecision, ActionRecord, ActionStatus, RootCauseAnalysis, Status};
use crate::reasoner::Call;

/// Whether an incident may move from `from` to `to`. Any unfinished incident may fail;
/// an escalated one resumes remediation only when a human approves, and closes as resolved
/// only when its alerts resolved and the agent's own check agrees.
pub fn can_move(from: Status, to: Status) -> bool {
    use Status::*;
    matches!(
        (from, to),
        (New, Analyzing)
            | (Analyzing, Remediating | Resolved | Escalated | Failed)
            | (Remediating, Resolved | Escalated | Failed)
            | (Escalated, Remediating | Resolved)
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
    /// Every proposal with its verdict: restarts in the reasoner's order, then the one
    /// notification (sent last, so that it can say what was done): the reasoner's, or the
    /// agent's own when a restart runs on its authority and none was proposed.
    pub actions: Vec<PlannedAction>,
    /// Proposals left out before the policy, and why: a repeat of one already in the plan
    /// (the same pod twice), a second notification.
    pub ignored: Vec<String>,
    /// The status the incident moves to now: `Remediating` when a restart runs on the
    /// agent's authority (to be verified), else it stays `Analyzing` while notifications go
    /// out and ends `Escalated`.
    pub next: Status,
    pub reason: String,
}

/// The `podName` of a `restart-pod` call.
pub fn pod_of(call: &Call) -> Option<String> {
    call.arguments.string("podName")
}

/// Runs each proposed call through the policy, in order. A restart decided `auto` counts
/// against the budgets and the blast radius of the ones after it, so one plan cannot
/// restart a pod twice, nor two pods of a service at once. One notification is kept and put
/// last: the agent writes it from the decisions when it sends it; more are denied.
pub fn plan(calls: &[Call], facts: &Facts, limits: Limits) -> Plan {
    let mut facts = facts.clone();
    let mut actions: Vec<PlannedAction> = Vec::with_capacity(calls.len());
    let mut notification: Option<PlannedAction> = None;
    let mut ignored = Vec::new();
    for call in calls {
        if call.tool == "send-notification" && notification.is_some() {
            ignored.push(
                "a second send-notification: one page per conclusion, written by the agent".into(),
            );
            continue;
        }
        let pod = pod_of(call);
        if call.tool == "restart-pod"
            && actions
                .iter()
                .any(|a| a.call.tool == "restart-pod" && pod_of(&a.call) == pod)
        {
            ignored.push(format!(
                "restart-pod of {} again: proposed once already",
                crate::core::text::quote(pod.as_deref().unwrap_or(""), 120)
            ));
            continue;
        }
        let decision = policy::decide(&call.tool, pod.as_deref(), &facts, limits);
        if call.tool == "restart-pod" && decision.is_auto() {
            let pod = pod.unwrap_or_default();
            match facts
                .restarts_in_incident
                .iter_mut()
                .find(|(p, _)| *p == pod)
            {
                Some((_, n)) => *n += 1,
                None => facts.restarts_in_incident.push((pod.clone(), 1)),
            }
            facts.window.push(WindowRestart {
                pod,
                in_flight: true,
                key: String::new(),
            });
        }
        let planned = PlannedAction {
            call: call.clone(),
            decision,
        };
        if call.tool == "send-notification" {
            notification = Some(planned);
        } else {
            actions.push(planned);
        }
    }
    let auto_restart = actions
        .iter()
        .any(|a| a.call.tool == "restart-pod" && a.decision.is_auto());
    // A restart on the agent's own authority is always reported, whether or not the
    // reasoner proposed a page.
    if auto_restart && notification.is_none() {
        let call = Call {
            id: "agent-page".into(),
            tool: "send-notification".into(),
            arguments: crate::reasoner::string_args(&[
                ("message", "(written by the agent)"),
                ("severity", "info"),
            ]),
            invalid_arguments: None,
        };
        notification = Some(PlannedAction {
            decision: policy::decide(&call.tool, None, &facts, limits),
            call,
        });
    }
    actions.extend(notification);
    let held: Vec<String> = actions
        .iter()
        .filter(|a| !a.decision.is_auto())
        .map(|a| {
            format!(
                "{} {}: {}",
                crate::core::text::clean(&a.call.tool, 80),
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
        ignored,
        next,
        reason,
    }
}

/// Whether an action is a restart the agent makes (planned, running, or done), on its own
/// authority or a human's approval: what the restart window counts.
pub fn is_agent_restart(a: &ActionRecord) -> bool {
    a.tool == "restart-pod" && matches!(a.decision, ActionDecision::Auto | ActionDecision::Approved)
}

/// The `podName` a restart record names ("" when it names none).
pub fn pod_arg(a: &ActionRecord) -> &str {
    a.args.get("podName").and_then(|v| v.as_str()).unwrap_or("")
}

/// Whether an agent restart still occupies its service: planned, running, or ran and not
/// verified yet.
pub fn restart_in_flight(a: &ActionRecord) -> bool {
    is_agent_restart(a)
        && (matches!(a.status, ActionStatus::Planned | ActionStatus::Started)
            || (a.status == ActionStatus::Succeeded && a.verified.is_none()))
}

/// The facts the policy needs, from tool results the agent itself obtained for the
/// incident's own alert and service (never from what a model claims). `done` is the
/// incident's actions so far; `window` the service's autonomous restarts in the current
/// window, every incident, as the database holds them.
pub fn facts(
    mapping: Option<&AlertMapping>,
    runbook: Option<&Runbook>,
    metrics: Option<&ServiceMetrics>,
    logs: Option<&LogPage>,
    done: &[ActionRecord],
    window: Vec<WindowRestart>,
) -> Facts {
    let runbook = runbook.filter(|r| mapping.is_none_or(|m| m.service == r.spec.service));
    let metrics = metrics.filter(|m| mapping.is_none_or(|map| map.service == m.service));
    let restart_steps = runbook.map(|r| {
        r.spec
            .remediation
            .iter()
            .filter(|s| s.tool == "restart-pod")
            .map(|s| RestartStep {
                id: s.id.clone(),
                autonomy: s.autonomy,
                when: s.when,
                window_secs: r.spec.step_window_secs(s),
            })
            .collect()
    });
    let mut restarts_in_incident: Vec<(String, u32)> = Vec::new();
    for a in done.iter().filter(|a| is_agent_restart(a)) {
        let pod = pod_arg(a);
        match restarts_in_incident.iter_mut().find(|(p, _)| p == pod) {
            Some((_, n)) => *n += 1,
            None => restarts_in_incident.push((pod.to_owned(), 1)),
        }
    }
    let support = match (runbook, metrics, logs) {
        (Some(r), Some(m), Some(l)) => diagnosis::pod_support(r, m, l),
        (Some(r), Some(m), None) => diagnosis::pod_support(r, m, &empty_logs(m)),
        _ => vec![],
    };
    Facts {
        service: mapping.map(|m| (m.service.clone(), m.tier)),
        restart_steps,
        observed: metrics.map(|m| Observed {
            at: m.observed_at,
            pods: m.pods.clone(),
        }),
        window_secs: runbook.map_or(900, |r| r.spec.window_secs()),
        support,
        restarts_in_incident,
        window,
        recurrence: None,
    }
}

/// Why a restart a human approved does not run after all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// The world changed since the proposal (another pod instance, no pod): the approval
    /// was for something that no longer exists.
    Lapsed(String),
    /// The policy denies it now; an approval never lifts a denial.
    Denied(String),
}

/// Re-checks an approved restart just before its call: the pod must still be the instance
/// it was when proposed (`get-metrics` now, against the uid in the proposal's baseline), and
/// the policy, asked again on what the agent sees now, must not deny it. An approval lifts
/// "needs approval", never a denial. `None`: run it.
pub fn recheck_approved(
    action: &ActionRecord,
    metrics: Option<&ServiceMetrics>,
    decision_now: &Decision,
) -> Option<Held> {
    let pod = pod_arg(action);
    let Some(m) = metrics else {
        return Some(Held::Lapsed(format!(
            "{pod} cannot be seen now (get-metrics gave nothing usable): not restarted"
        )));
    };
    let Some(p) = m.pods.iter().find(|p| p.name == pod) else {
        return Some(Held::Lapsed(format!(
            "{pod} is no longer one of {}'s pods: not restarted",
            m.service
        )));
    };
    let proposed_uid = action
        .baseline
        .as_ref()
        .and_then(|b| b.get("pod_uid"))
        .and_then(|u| u.as_str())
        .filter(|u| !u.is_empty());
    if let Some(uid) = proposed_uid
        && uid != p.uid
    {
        return Some(Held::Lapsed(format!(
            "{pod} is now instance {}, not the instance {uid} that was proposed and approved: not restarted",
            p.uid
        )));
    }
    match decision_now {
        Decision::Deny { reason, .. } => Some(Held::Denied(format!("at execution: {reason}"))),
        _ => None,
    }
}

/// Why a restart planned `auto` must not run now, checked just before the call: an earlier
/// restart of this incident did not work (more restarts are no fix), or the policy, asked
/// again on what the agent sees now, no longer allows it. `None`: go ahead.
pub fn recheck(actions: &[ActionRecord], i: usize, decision_now: &Decision) -> Option<Decision> {
    let failed_before = actions[..i]
        .iter()
        .filter(|a| is_agent_restart(a))
        .find(|a| a.status == ActionStatus::Failed || a.verified == Some(false));
    if let Some(a) = failed_before {
        return Some(Decision::NeedsApproval {
            code: policy::ReasonCode::EarlierRestartFailed,
            reason: format!(
                "restart #{} of this incident did not work: another restart needs a human",
                a.seq
            ),
        });
    }
    (!decision_now.is_auto()).then(|| match decision_now {
        Decision::Deny { code, reason } => Decision::Deny {
            code: *code,
            reason: format!("at execution: {reason}"),
        },
        other => Decision::NeedsApproval {
            code: other.code(),
            reason: format!("at execution: {}", other.reason()),
        },
    })
}

/// No log lines, for a service whose logs could not be read.
pub fn empty_logs(metrics: &ServiceMetrics) -> LogPage {
    LogPage {
        service: metrics.service.clone(),
        start: metrics.observed_at,
        end: metrics.observed_at,
        lines: vec![],
        matched: 0,
        truncated: false,
    }
}

/// How an incident ends once no planned action is left.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    pub status: Status,
    pub reason: String,
    /// The agent must still tell a human before it stops: it escalates and nobody has been
    /// told of what went wrong last. The page is written from the records when it is sent.
    pub notify: bool,
    /// Not over yet: the fix holds but the incident's alerts still fire; it stays
    /// `remediating` until they resolve, fire again, or the wait runs out.
    pub wait: bool,
    /// What waits for a human no longer applies (the failure resolved on its own): the
    /// proposals lapse.
    pub lapse: bool,
}

/// What the end of an incident reads of its alerts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertsNow {
    pub view: AlertsView,
    /// The instant the wait for the alerts to resolve ran out, once it has.
    pub waited_out: Option<DateTime<Utc>>,
    /// The agent's own check of the service (running, ready, no recent termination),
    /// made when every alert resolved; `None` when not made.
    pub healthy: Option<bool>,
}

/// When the agent's fix was verified: the latest restart it made that verified healthy.
pub fn fixed_at(actions: &[ActionRecord]) -> Option<DateTime<Utc>> {
    actions
        .iter()
        .filter(|a| is_agent_restart(a) && a.verified == Some(true))
        .filter_map(|a| a.finished_at)
        .max()
}

/// How the reason of a page the agent sends because it escalates begins.
const ESCALATION_PAGE: &str = "the agent tells a human whenever it escalates";

/// The reason of the page the agent sends because it escalates, for `why`.
pub fn escalation_page_reason(why: &str) -> String {
    format!("{ESCALATION_PAGE} ({why})")
}

/// Whether a page the agent sent because it escalated went out at or after `at`. A report
/// the runbook asked for does not count: it may have said the fix worked. (A page that
/// failed never gets here: a failed action escalates in [`finish_actions`], which tries a
/// page once.)
fn escalation_told_since(actions: &[ActionRecord], at: DateTime<Utc>) -> bool {
    actions.iter().any(|a| {
        a.tool == "send-notification"
            && a.decision == ActionDecision::Auto
            && a.reason.starts_with(ESCALATION_PAGE)
            && a.status == ActionStatus::Succeeded
            && a.started_at >= at
    })
}

/// Whether a page went out (or was tried) at or after `at`.
fn told_since(actions: &[ActionRecord], at: DateTime<Utc>) -> bool {
    actions.iter().any(|a| {
        a.tool == "send-notification"
            && matches!(a.status, ActionStatus::Succeeded | ActionStatus::Failed)
            && a.started_at >= at
    })
}

/// Decides the end from the actions and the incident's alerts. The actions decide first
/// ([`finish_actions`]); the alerts then have the last word:
///
/// - a fix that verified while an alert fired again after it is a failed fix: escalated,
///   with a page (never a second autonomous restart: the budgets see to that);
/// - a fix that verified while alerts still fire waits for them to resolve, until the wait
///   runs out (then escalated, with a page);
/// - an escalated incident whose alerts all resolved closes as resolved when the agent's
///   own check agrees; what waited for a human lapses.
///
/// Incidents without alerts from Alertmanager (reports through the API) end on their
/// actions alone, as before.
pub fn finish(
    rca: Option<&RootCauseAnalysis>,
    actions: &[ActionRecord],
    alerts: &AlertsNow,
) -> Finish {
    let base = finish_actions(rca, actions);
    let v = &alerts.view;
    let escalate = |reason: String, told: bool| Finish {
        status: Status::Escalated,
        reason,
        notify: !told,
        wait: false,
        lapse: false,
    };
    match base.status {
        Status::Resolved => {
            // One page for a fix that did not hold: alerts that fire again while it goes
            // out (Alertmanager delivers a group's alerts over several notifications) are
            // in the incident, not in another page.
            if let Some(first) = v.fired_again_at {
                return escalate(
                    format!(
                        "the fix did not hold: {} fired again after it",
                        v.fired_again.join(", ")
                    ),
                    escalation_told_since(actions, first),
                );
            }
            if v.firing.is_empty() {
                return base;
            }
            match alerts.waited_out {
                Some(deadline) => escalate(
                    format!(
                        "{}, but {} still fire(s) after the wait for them to resolve",
                        base.reason,
                        v.firing.join(", ")
                    ),
                    told_since(actions, deadline),
                ),
                None => Finish {
                    status: Status::Remediating,
                    reason: format!(
                        "{}; waiting for {} to resolve",
                        base.reason,
                        v.firing.join(", ")
                    ),
                    notify: false,
                    wait: true,
                    lapse: false,
                },
            }
        }
        Status::Escalated if v.all_resolved() && alerts.healthy == Some(true) => Finish {
            status: Status::Resolved,
            reason: "resolved on its own: every alert of the incident resolved and the agent's own check finds the service healthy; what waited for a human lapses".into(),
            notify: false,
            wait: false,
            lapse: true,
        },
        _ => base,
    }
}

/// Decides the end: resolved when every autonomous restart ran and verified healthy and
/// nothing waits for a human, or when the agent's own check found the service recovered
/// and nothing failed; otherwise escalated, with a page unless one already went out (or
/// was tried) after the last restart that went wrong.
pub fn finish_actions(rca: Option<&RootCauseAnalysis>, actions: &[ActionRecord]) -> Finish {
    let restarts: Vec<&ActionRecord> = actions.iter().filter(|a| a.tool == "restart-pod").collect();
    let ran_ok = restarts
        .iter()
        .filter(|a| a.status == ActionStatus::Succeeded && a.verified == Some(true))
        .count();
    let waiting: Vec<String> = actions
        .iter()
        .filter(|a| a.status == ActionStatus::Proposed)
        .map(|a| format!("{} proposed ({})", a.tool, a.reason))
        .collect();
    let denied: Vec<String> = actions
        .iter()
        .filter(|a| a.status == ActionStatus::Denied)
        .map(|a| {
            format!(
                "{} denied ({})",
                crate::core::text::clean(&a.tool, 80),
                a.reason
            )
        })
        .collect();
    let failures: Vec<String> = actions
        .iter()
        .filter(|a| a.status == ActionStatus::Failed || a.verified == Some(false))
        .map(|a| format!("{} #{} {}", a.tool, a.seq, a.reason))
        .collect();
    let recovered = rca.and_then(|r| r.recovered.as_deref());
    if let Some(why) = recovered
        && waiting.is_empty()
        && failures.is_empty()
        && ran_ok == 0
    {
        return Finish {
            status: Status::Resolved,
            reason: format!("recovered on its own, nothing done: {why}"),
            notify: false,
            wait: false,
            lapse: false,
        };
    }
    if ran_ok > 0 && waiting.is_empty() && denied.is_empty() && failures.is_empty() {
        return Finish {
            status: Status::Resolved,
            reason: format!("{ran_ok} restart(s) ran and the pods verified healthy"),
            notify: false,
            wait: false,
            lapse: false,
        };
    }
    let reason = if !failures.is_empty() {
        format!("did not work: {}", failures.join("; "))
    } else if !waiting.is_empty() || !denied.is_empty() {
        format!(
            "waiting for a human: {}",
            waiting
                .into_iter()
                .chain(denied)
                .collect::<Vec<_>>()
                .join("; ")
        )
    } else {
        "no action applies: a human must look".to_owned()
    };
    // A restart the agent made (alone or approved) that failed, or an approved one that
    // lapsed at execution: the human is told again, by a page sent after it. A page that
    // was sent, or tried and failed, counts: the agent tries once and does not loop on a
    // notification channel that is down.
    let last_bad = restarts
        .iter()
        .filter(|a| {
            is_agent_restart(a)
                && (a.status == ActionStatus::Failed
                    || a.status == ActionStatus::Lapsed
                    || a.verified == Some(false))
        })
        .map(|a| a.finished_at.unwrap_or(a.started_at))
        .max();
    let told = match last_bad {
        Some(at) => told_since(actions, at),
        None => actions.iter().any(|a| {
            a.tool == "send-notification"
                && matches!(a.status, ActionStatus::Succeeded | ActionStatus::Failed)
        }),
    };
    Finish {
        status: Status::Escalated,
        notify: !told,
        reason,
        wait: false,
        lapse: false,
    }
}

/// What `get-metrics` says of a pod after the agent restarted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    Healthy,
    NotHealthy(String),
}

/// A restarted pod counts as healthy when it is a new instance (when the uid before the
/// restart is known), runs, is ready, and has not crashed since. A controller that names
/// the replacement anew (a Deployment's ReplicaSet) is followed: when the name is gone and
/// no pod is the old instance any more, a pod whose uid is not among `uids_before` (the
/// service's pods when the restart was planned) stands for it. No clock is compared.
pub fn verify_restart(
    pod: &str,
    uid_before: Option<&str>,
    uids_before: &[String],
    metrics: &ServiceMetrics,
) -> Verification {
    // A verdict needs the readings it rests on.
    for field in ["pods", "pods.phase", "pods.ready", "pods.restarts"] {
        if metrics.not_measured.iter().any(|f| f == field) {
            return Verification::NotHealthy(format!(
                "{field} is not measured by the metrics backend: the restart cannot be verified"
            ));
        }
    }
    let uid_before = uid_before.filter(|u| !u.is_empty());
    let p = match metrics.pods.iter().find(|p| p.name == pod) {
        Some(p) => p,
        None => {
            // Every pod new since the restart must be healthy: during a rollout or a
            // scale-up another new pod could otherwise stand in for a crashing replacement.
            let new: Vec<&mcp::fleet::model::PodStatus> = metrics
                .pods
                .iter()
                .filter(|p| !uids_before.contains(&p.uid))
                .collect();
            let replacement = uid_before
                .filter(|uid| metrics.pods.iter().all(|p| p.uid != *uid))
                .filter(|_| !uids_before.is_empty())
                .and_then(|_| {
                    new.iter()
                        .find(|p| !(p.phase == "Running" && p.ready && p.restarts == 0))
                        .or(new.first())
                        .copied()
                });
            match replacement {
                Some(p) => p,
                None => {
                    return Verification::NotHealthy(format!(
                        "{pod} is no longer listed by get-metrics, and no new pod of the \
                         service is"
                    ));
                }
            }
        }
    };
    if uid_before.is_some_and(|uid| uid == p.uid) {
        return Verification::NotHealthy(format!(
            "{pod} is still the instance {} it was before the restart",
            p.uid
        ));
    }
    if p.phase == "Running" && p.ready && p.restarts == 0 {
        Verification::Healthy
    } else {
        Verification::NotHealthy(format!(
            "{} after restart: phase {}, ready {}, restarts {}, last termination {}",
            p.name,
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
    /// The pod is a new instance since the agent looked before the call: the restart
    /// happened. Record it.
    AlreadyDone,
    /// No sign of the restart: call again with the same idempotency key, which the
    /// remediation server answers with the first result if it did happen after all.
    ReissueWithSameKey,
}

/// `uid_before` and `started_before` are the pod's instance id and container start as
/// `get-metrics` showed them before the call. A new uid proves a new pod: the kubelet's own
/// container restarts keep the uid (and move the container start), so they are never
/// mistaken for the agent's restart. Without a uid (an old record) the container start is
/// compared; both instants come from the cluster's clock, never the agent's.
pub fn reconcile_restart(
    pod: &str,
    uid_before: Option<&str>,
    uids_before: &[String],
    started_before: DateTime<Utc>,
    metrics: &ServiceMetrics,
) -> Reconcile {
    let uid_before = uid_before.filter(|u| !u.is_empty());
    let Some(p) = metrics.pods.iter().find(|p| p.name == pod) else {
        // Gone by name: replaced under a new name (a Deployment) when the old instance is
        // not listed and a pod unknown before the restart is; else (a scrape gap, a partial
        // list) nothing proves it.
        return match uid_before {
            Some(uid)
                if metrics.pods.iter().all(|p| p.uid != uid)
                    && metrics
                        .pods
                        .iter()
                        .any(|p| !uids_before.is_empty() && !uids_before.contains(&p.uid)) =>
            {
                Reconcile::AlreadyDone
            }
            _ => Reconcile::ReissueWithSameKey,
        };
    };
    match uid_before {
        Some(uid) if p.uid != uid => Reconcile::AlreadyDone,
        Some(_) => Reconcile::ReissueWithSameKey,
        None if p.started_at > started_before => Reconcile::AlreadyDone,
        None => Reconcile::ReissueWithSameKey,
    }
}

#[cfg(test)]
mod tests {
    use super::facts as facts_of;
    use super::*;
    use crate::core::evidence::tests::{healthy, oom_killed, t0};
    use chrono::Duration;
    use mcp::catalog::{Autonomy, Condition, Tier};
    use mcp::fleet::model::PodStatus;

    fn call(tool: &str, pod: Option<&str>) -> Call {
        Call {
            id: tool.into(),
            tool: tool.into(),
            arguments: crate::reasoner::Arguments::of_object(
                &pod.map(|p| serde_json::json!({ "podName": p }))
                    .unwrap_or_else(|| serde_json::json!({ "message": "m", "severity": "info" })),
            ),
            invalid_arguments: None,
        }
    }

    fn proposals() -> Vec<Call> {
        vec![
            call("send-notification", None),
            call("restart-pod", Some("p-1")),
        ]
    }

    fn facts(tier: Tier, autonomy: Autonomy) -> Facts {
        Facts {
            service: Some(("svc".into(), tier)),
            restart_steps: Some(vec![RestartStep {
                id: "restart".into(),
                autonomy,
                when: (autonomy == Autonomy::Auto).then_some(Condition::OomKilled),
                window_secs: 900,
            }]),
            observed: Some(Observed {
                at: t0(),
                pods: vec![oom_killed("p-1", 60), healthy("p-2"), healthy("p-3")],
            }),
            window_secs: 900,
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
            observed_at: t0(),
            connections: None,
            replication_lag_secs: None,
            certificate_expires_at: None,
            not_measured: vec![],
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
                (Analyzing, Resolved),
                (Analyzing, Escalated),
                (Analyzing, Failed),
                (Remediating, Resolved),
                (Remediating, Escalated),
                (Remediating, Failed),
                (Escalated, Remediating),
                (Escalated, Resolved),
            ]
        );
    }

    #[test]
    fn an_allowed_restart_leads_to_remediating_and_the_page_goes_last() {
        let oom = plan(
            &proposals(),
            &facts(Tier::Stateless, Autonomy::Auto),
            Limits::default(),
        );
        assert_eq!(oom.next, Status::Remediating);
        let tools: Vec<&str> = oom.actions.iter().map(|a| a.call.tool.as_str()).collect();
        assert_eq!(tools, ["restart-pod", "send-notification"]);
        assert!(oom.actions.iter().all(|a| a.decision.is_auto()));

        let db = plan(
            &proposals(),
            &facts(Tier::Database, Autonomy::Approval),
            Limits::default(),
        );
        assert_eq!(
            db.next,
            Status::Analyzing,
            "it ends escalated once notified"
        );
        assert_eq!(db.actions[0].decision.label(), "proposed");
        assert!(
            db.actions[1].decision.is_auto(),
            "the notification still goes out"
        );
        assert!(db.reason.contains("restart-pod proposed"), "{}", db.reason);
    }

    #[test]
    fn nothing_recognised_or_only_notifications_escalate() {
        assert_eq!(
            plan(&[], &Facts::default(), Limits::default()).next,
            Status::Analyzing
        );
        let notify_only = vec![call("send-notification", None)];
        let p = plan(
            &notify_only,
            &facts(Tier::Stateless, Autonomy::Auto),
            Limits::default(),
        );
        assert_eq!(p.next, Status::Analyzing);
        assert!(p.reason.contains("only notifications"));
    }

    #[test]
    fn one_plan_restarts_one_pod_once_and_sends_one_page() {
        let calls = vec![
            call("restart-pod", Some("p-1")),
            call("restart-pod", Some("p-1")),
            call("send-notification", None),
            call("send-notification", None),
        ];
        let p = plan(
            &calls,
            &facts(Tier::Stateless, Autonomy::Auto),
            Limits::default(),
        );
        let labels: Vec<(&str, &str)> = p
            .actions
            .iter()
            .map(|a| (a.call.tool.as_str(), a.decision.label()))
            .collect();
        assert_eq!(
            labels,
            [("restart-pod", "auto"), ("send-notification", "auto")]
        );
        assert_eq!(p.ignored.len(), 2, "{:?}", p.ignored);
        assert_eq!(
            p.next,
            Status::Remediating,
            "a repeat does not leave anything waiting"
        );
    }

    #[test]
    fn a_restart_on_the_agents_authority_is_reported_even_when_no_page_was_proposed() {
        let labels = |calls: &[Call], autonomy| {
            plan(calls, &facts(Tier::Stateless, autonomy), Limits::default())
                .actions
                .iter()
                .map(|a| (a.call.tool.clone(), a.decision.label()))
                .collect::<Vec<_>>()
        };
        let restart = [call("restart-pod", Some("p-1"))];
        assert_eq!(
            labels(&restart, Autonomy::Auto),
            [
                ("restart-pod".to_owned(), "auto"),
                ("send-notification".to_owned(), "auto")
            ]
        );
        // A restart that waits for a human adds no page of its own here: the escalation
        // at the end pages.
        assert_eq!(
            labels(&restart, Autonomy::Approval),
            [("restart-pod".to_owned(), "proposed")]
        );
    }

    #[test]
    fn a_restart_is_held_at_execution_when_an_earlier_one_failed_or_the_policy_changed_its_mind() {
        let auto = Decision::Auto {
            code: policy::ReasonCode::RunbookGrantsAuto,
            reason: "ok".into(),
        };
        let first = record(
            1,
            "restart-pod",
            ActionDecision::Auto,
            ActionStatus::Succeeded,
        );
        let second = record(
            2,
            "restart-pod",
            ActionDecision::Auto,
            ActionStatus::Planned,
        );
        assert_eq!(
            recheck(&[verified(first.clone(), true), second.clone()], 1, &auto),
            None
        );
        let held = recheck(&[verified(first, false), second.clone()], 1, &auto).unwrap();
        assert_eq!(held.label(), "proposed");
        assert!(held.reason().contains("#1 of this incident did not work"));
        assert_eq!(held.code(), policy::ReasonCode::EarlierRestartFailed);
        let gone = Decision::Deny {
            code: policy::ReasonCode::NoFreshEvidence,
            reason: "no fresh evidence".into(),
        };
        let held = recheck(&[second], 0, &gone).unwrap();
        assert_eq!(held.label(), "denied");
        assert!(held.reason().starts_with("at execution: "));
        assert_eq!(held.code(), policy::ReasonCode::NoFreshEvidence);
    }

    #[test]
    fn a_plan_never_restarts_two_pods_of_a_service_at_once() {
        let mut f = facts(Tier::Stateless, Autonomy::Auto);
        f.observed.as_mut().unwrap().pods[1] = oom_killed("p-2", 30);
        let calls = vec![
            call("restart-pod", Some("p-1")),
            call("restart-pod", Some("p-2")),
        ];
        let p = plan(&calls, &f, Limits::default());
        assert!(p.actions[0].decision.is_auto());
        assert_eq!(p.actions[1].decision.label(), "proposed");
        assert!(p.actions[1].decision.reason().contains("in flight"));
    }

    #[test]
    fn a_restart_is_verified_by_a_new_instance_running_ready_and_not_crashing() {
        let fresh = PodStatus {
            uid: "new".into(),
            ..healthy("p-1")
        };
        assert_eq!(
            verify_restart("p-1", Some("old"), &[], &metrics(fresh.clone())),
            Verification::Healthy
        );
        assert!(matches!(
            verify_restart("p-1", Some("new"), &[], &metrics(fresh.clone())),
            Verification::NotHealthy(_)
        ));
        for bad in [
            PodStatus {
                phase: "CrashLoopBackOff".into(),
                ready: false,
                restarts: 1,
                ..fresh.clone()
            },
            PodStatus {
                ready: false,
                ..fresh.clone()
            },
            PodStatus {
                restarts: 2,
                ..fresh.clone()
            },
        ] {
            assert!(matches!(
                verify_restart("p-1", Some("old"), &[], &metrics(bad)),
                Verification::NotHealthy(_)
            ));
        }
        assert!(matches!(
            verify_restart("p-9", None, &[], &metrics(fresh)),
            Verification::NotHealthy(_)
        ));
    }

    #[test]
    fn a_replacement_under_a_new_name_verifies_a_restart_only_once_the_old_instance_is_gone() {
        // A Deployment's ReplicaSet replaces `web-abc12` with `web-xyz89`.
        let before = vec!["old".to_owned(), "other".to_owned()];
        let replacement = PodStatus {
            uid: "new".into(),
            ..healthy("web-xyz89")
        };
        assert_eq!(
            verify_restart(
                "web-abc12",
                Some("old"),
                &before,
                &metrics(replacement.clone())
            ),
            Verification::Healthy
        );
        // The old instance still terminating under its name: not yet.
        let terminating = PodStatus {
            uid: "old".into(),
            phase: "Terminating".into(),
            ready: false,
            ..healthy("web-abc12")
        };
        let mut both = metrics(terminating);
        both.pods.push(replacement.clone());
        assert!(matches!(
            verify_restart("web-abc12", Some("old"), &before, &both),
            Verification::NotHealthy(_)
        ));
        // A pod that was there before is no replacement; nothing stands in without the
        // uids of before.
        let sibling = PodStatus {
            uid: "other".into(),
            ..healthy("web-def34")
        };
        assert!(matches!(
            verify_restart("web-abc12", Some("old"), &before, &metrics(sibling)),
            Verification::NotHealthy(_)
        ));
        assert!(matches!(
            verify_restart("web-abc12", None, &before, &metrics(replacement.clone())),
            Verification::NotHealthy(_)
        ));
        assert!(matches!(
            verify_restart("web-abc12", Some("old"), &[], &metrics(replacement.clone())),
            Verification::NotHealthy(_)
        ));
        // A replacement that crashes is not healthy.
        let crashing = PodStatus {
            restarts: 1,
            ready: false,
            ..replacement.clone()
        };
        assert!(matches!(
            verify_restart("web-abc12", Some("old"), &before, &metrics(crashing)),
            Verification::NotHealthy(_)
        ));
        // After a crash mid-call, a name gone with its instance is a restart done.
        assert_eq!(
            reconcile_restart(
                "web-abc12",
                Some("old"),
                &before,
                t0(),
                &metrics(replacement.clone())
            ),
            Reconcile::AlreadyDone
        );
        // A name missing from a partial list or a scrape gap, with no new pod: unproven.
        let sibling_only = PodStatus {
            uid: "other".into(),
            ..healthy("web-def34")
        };
        assert_eq!(
            reconcile_restart(
                "web-abc12",
                Some("old"),
                &before,
                t0(),
                &metrics(sibling_only)
            ),
            Reconcile::ReissueWithSameKey
        );
        // Two new pods (a scale-up during the restart): both must be healthy.
        let mut two = metrics(replacement.clone());
        two.pods.push(PodStatus {
            uid: "newer".into(),
            phase: "CrashLoopBackOff".into(),
            ready: false,
            restarts: 3,
            ..healthy("web-ghi56")
        });
        assert!(matches!(
            verify_restart("web-abc12", Some("old"), &before, &two),
            Verification::NotHealthy(_)
        ));
        // Readings the backend did not take verify nothing.
        let mut unmeasured = metrics(replacement);
        unmeasured.not_measured = vec!["pods.restarts".into()];
        assert!(matches!(
            verify_restart("web-abc12", Some("old"), &before, &unmeasured),
            Verification::NotHealthy(_)
        ));
    }

    #[test]
    fn a_started_restart_is_reconciled_from_the_pods_identity_not_its_container() {
        let before = oom_killed("p-1", 60);
        let intent = t0();
        // The kubelet restarted the container after an OOM kill: same uid, later start.
        let kubelet = PodStatus {
            started_at: intent + Duration::seconds(5),
            ..before.clone()
        };
        assert_eq!(
            reconcile_restart(
                "p-1",
                Some(&before.uid),
                &[],
                before.started_at,
                &metrics(kubelet)
            ),
            Reconcile::ReissueWithSameKey
        );
        let replaced = PodStatus {
            uid: "replaced".into(),
            started_at: intent + Duration::seconds(2),
            ..healthy("p-1")
        };
        assert_eq!(
            reconcile_restart(
                "p-1",
                Some(&before.uid),
                &[],
                before.started_at,
                &metrics(replaced.clone())
            ),
            Reconcile::AlreadyDone
        );
        // An old record without a uid falls back to the container start.
        assert_eq!(
            reconcile_restart("p-1", None, &[], intent, &metrics(replaced)),
            Reconcile::AlreadyDone
        );
        assert_eq!(
            reconcile_restart("p-1", None, &[], intent, &metrics(before)),
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
            // In the order of their numbers, as an incident makes them.
            started_at: t0() + Duration::seconds(i64::from(seq)),
            finished_at: None,
            trace_id: "t".into(),
            baseline: None,
            verified: None,
            proposal: None,
            human: None,
        }
    }

    fn verified(mut r: ActionRecord, healthy: bool) -> ActionRecord {
        r.verified = Some(healthy);
        r
    }

    #[test]
    fn facts_count_this_incidents_restarts_and_ignore_another_services_reads() {
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
        let mut m = metrics(oom_killed("p-1", 60));
        m.service = "checkout-api".into();
        let window = vec![WindowRestart {
            pod: "p-0".into(),
            in_flight: false,
            key: "other:1".into(),
        }];
        let f = facts_of(
            Some(&mapping),
            Some(runbook),
            Some(&m),
            None,
            &done,
            window.clone(),
        );
        let steps = f.restart_steps.clone().unwrap();
        assert_eq!(steps[0].when, Some(Condition::OomKilled));
        assert_eq!(f.restarts_in_incident, vec![("p-1".to_owned(), 1)]);
        assert_eq!(f.observed.as_ref().unwrap().pods.len(), 1);
        assert_eq!(f.window, window);
        assert!(
            f.support.iter().any(|e| e.pod.as_deref() == Some("p-1")),
            "the OOM kill supports restarting p-1"
        );
        m.service = "payments-db".into();
        let db = catalog.runbook_for("payments-db").unwrap();
        let other = facts_of(Some(&mapping), Some(db), Some(&m), None, &[], vec![]);
        assert_eq!(
            other.observed, None,
            "pods of another service prove nothing"
        );
        assert_eq!(
            other.restart_steps, None,
            "nor does another service's runbook"
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
        let ok = finish_actions(None, &[verified(restart(), true), notify(2)]);
        assert_eq!(ok.status, Status::Resolved);
        assert!(!ok.notify);

        let unhealthy = finish_actions(None, &[verified(restart(), false), notify(2)]);
        assert_eq!(unhealthy.status, Status::Escalated);
        assert!(unhealthy.reason.contains("did not work"));
        assert!(!unhealthy.notify, "the page after the restart said so");

        let notified_before_the_failure = finish_actions(
            None,
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
            notified_before_the_failure.notify,
            "a human hears that the fix failed"
        );

        let proposed = finish_actions(
            None,
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
        assert!(!proposed.notify, "the notification already said so");

        let nothing = finish_actions(None, &[]);
        assert_eq!(nothing.status, Status::Escalated);
        assert!(nothing.notify);

        let notice_failed = finish_actions(
            None,
            &[record(
                1,
                "send-notification",
                ActionDecision::Auto,
                ActionStatus::Failed,
            )],
        );
        assert_eq!(notice_failed.status, Status::Escalated);
        assert!(
            !notice_failed.notify,
            "a failed notice is not retried forever"
        );
    }

    #[test]
    fn a_recovered_service_resolves_without_acting_unless_something_waits_or_failed() {
        let rca = RootCauseAnalysis {
            recovered: Some("every pod is ready".into()),
            ..RootCauseAnalysis::undetermined("s".into())
        };
        let denied = record(
            1,
            "restart-pod",
            ActionDecision::Denied,
            ActionStatus::Denied,
        );
        let end = finish_actions(Some(&rca), &[denied]);
        assert_eq!(end.status, Status::Resolved);
        assert!(
            end.reason.contains("recovered on its own"),
            "{}",
            end.reason
        );
        assert!(!end.notify);
        let waiting = record(
            1,
            "restart-pod",
            ActionDecision::Proposed,
            ActionStatus::Proposed,
        );
        assert_eq!(
            finish_actions(Some(&rca), &[waiting]).status,
            Status::Escalated
        );
    }

    #[test]
    fn alerts_have_the_last_word_on_how_an_incident_ends() {
        let fixed = verified(
            record(
                1,
                "restart-pod",
                ActionDecision::Auto,
                ActionStatus::Succeeded,
            ),
            true,
        );
        let page = record(
            2,
            "send-notification",
            ActionDecision::Auto,
            ActionStatus::Succeeded,
        );
        let done = [fixed.clone(), page.clone()];
        let view = |firing: &[&str], again: Option<DateTime<Utc>>| AlertsView {
            tracked: 2,
            firing: firing.iter().map(|s| s.to_string()).collect(),
            fired_again: again.iter().map(|_| "A".to_string()).collect(),
            fired_again_at: again,
        };
        // No alert from Alertmanager: the actions decide, as before.
        assert_eq!(
            finish(None, &done, &AlertsNow::default()).status,
            Status::Resolved
        );
        // The fix verified, an alert still fires: wait, in remediating, without a page.
        let wait = finish(
            None,
            &done,
            &AlertsNow {
                view: view(&["A"], None),
                ..Default::default()
            },
        );
        assert!(wait.wait && !wait.notify, "{wait:?}");
        assert_eq!(wait.status, Status::Remediating);
        // ... until the wait runs out: escalated, and a human is paged after it.
        let late = t0() + Duration::hours(1);
        let out = finish(
            None,
            &done,
            &AlertsNow {
                view: view(&["A"], None),
                waited_out: Some(late),
                healthy: None,
            },
        );
        assert_eq!(out.status, Status::Escalated);
        assert!(out.notify && !out.wait, "{out:?}");
        // The alert fired again after the fix: a failed fix, escalated with a page.
        let again = finish(
            None,
            &done,
            &AlertsNow {
                view: view(&["A"], Some(late)),
                ..Default::default()
            },
        );
        assert_eq!(again.status, Status::Escalated);
        assert!(
            again.notify && again.reason.contains("did not hold"),
            "{again:?}"
        );
        // Its page went out; another alert of the failure fired again meanwhile (the
        // first at `late`): still one page. The runbook's report sent after the first
        // re-fire is not that page.
        let mut told = record(
            3,
            "send-notification",
            ActionDecision::Auto,
            ActionStatus::Succeeded,
        );
        told.reason = escalation_page_reason(&again.reason);
        told.started_at = late + Duration::seconds(1);
        let mut report = page.clone();
        report.started_at = late + Duration::seconds(1);
        let refired = AlertsNow {
            view: AlertsView {
                fired_again: vec!["A".into(), "B".into()],
                ..view(&["A", "B"], Some(late))
            },
            ..Default::default()
        };
        let once = finish(None, &[fixed.clone(), page.clone(), told.clone()], &refired);
        assert!(once.status == Status::Escalated && !once.notify, "{once:?}");
        // A page that failed escalates as a failed action, without another try.
        let mut failed = told;
        failed.status = ActionStatus::Failed;
        let tried = finish(None, &[fixed.clone(), page.clone(), failed], &refired);
        assert!(
            tried.status == Status::Escalated && !tried.notify,
            "{tried:?}"
        );
        let report_only = finish(None, &[fixed.clone(), report], &refired);
        assert!(report_only.notify, "{report_only:?}");
        // Every alert resolved: resolved.
        assert_eq!(
            finish(
                None,
                &done,
                &AlertsNow {
                    view: view(&[], None),
                    healthy: Some(true),
                    ..Default::default()
                }
            )
            .status,
            Status::Resolved
        );

        // Waiting for a human: the alerts resolving lapse the proposal only when the
        // agent's own check agrees.
        let proposal = [
            record(
                1,
                "restart-pod",
                ActionDecision::Proposed,
                ActionStatus::Proposed,
            ),
            page,
        ];
        let agreed = finish(
            None,
            &proposal,
            &AlertsNow {
                view: view(&[], None),
                healthy: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(agreed.status, Status::Resolved);
        assert!(agreed.lapse);
        let disagreed = finish(
            None,
            &proposal,
            &AlertsNow {
                view: view(&[], None),
                healthy: Some(false),
                ..Default::default()
            },
        );
        assert_eq!(disagreed.status, Status::Escalated);
        assert!(!disagreed.lapse);
        let firing = finish(
            None,
            &proposal,
            &AlertsNow {
                view: view(&["A"], None),
                healthy: None,
                ..Default::default()
            },
        );
        assert_eq!(firing.status, Status::Escalated);
        assert_eq!(fixed_at(&done), fixed.finished_at);
    }

    #[test]
    fn an_approved_restart_runs_only_on_the_instance_that_was_proposed_and_never_past_a_denial() {
        let mut approved = record(
            1,
            "restart-pod",
            ActionDecision::Approved,
            ActionStatus::Planned,
        );
        approved.baseline = Some(serde_json::json!({ "pod_uid": "uid-p-1" }));
        let mut pod = oom_killed("p-1", 30);
        pod.uid = "uid-p-1".into();
        let same = metrics(pod.clone());
        let needs = Decision::NeedsApproval {
            code: policy::ReasonCode::DatabaseTier,
            reason: "database".into(),
        };
        assert_eq!(
            recheck_approved(&approved, Some(&same), &needs),
            None,
            "approval lifts it"
        );
        let deny = Decision::Deny {
            code: policy::ReasonCode::OutsideService,
            reason: "not a pod of svc".into(),
        };
        assert!(matches!(
            recheck_approved(&approved, Some(&same), &deny),
            Some(Held::Denied(_))
        ));
        pod.uid = "uid-p-1-new".into();
        assert!(matches!(
            recheck_approved(&approved, Some(&metrics(pod)), &needs),
            Some(Held::Lapsed(_))
        ));
        assert!(matches!(
            recheck_approved(&approved, None, &needs),
            Some(Held::Lapsed(_))
        ));
    }
}
