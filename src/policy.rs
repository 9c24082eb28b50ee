//! The safety policy: what the agent may do on its own, decided outside the model. Pure: a
//! proposal and the facts gathered so far in, a decision with its reason out. The incident
//! actor records every decision in the timeline.
//!
//! `restart-pod` runs autonomously only when all hold: the alert mapped to a service; that
//! service's runbook grants `auto` to its restart step; the pod is one of the service's pods
//! as `get-metrics` showed them; the tier is not `database` or `stateful`; and the restart
//! budget (per pod per incident, per service per window) is not spent. Otherwise it is a
//! proposal for a human, or, when it cannot be right at all, denied.

use mcp::catalog::{Autonomy, TOOLS, Tier};

/// Restart budget: bounds on autonomous restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartBudget {
    /// Autonomous restarts of one pod within one incident.
    pub per_pod_per_incident_max: u32,
    /// Autonomous restarts of one service's pods within the window, across incidents.
    pub per_service_per_window_max: u32,
}

impl Default for RestartBudget {
    fn default() -> Self {
        RestartBudget {
            per_pod_per_incident_max: 1,
            per_service_per_window_max: 3,
        }
    }
}

/// What the agent knows when a proposal arrives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The service the alert mapped to, with its tier.
    pub service: Option<(String, Tier)>,
    /// Autonomy the service's runbook grants its `restart-pod` step (the strictest, if it
    /// has several); `None` when the runbook has none or was not read.
    pub restart_autonomy: Option<Autonomy>,
    /// The service's pods as the latest `get-metrics` listed them; `None` before it ran.
    pub service_pods: Option<Vec<String>>,
    /// Autonomous restarts already done in this incident, per pod.
    pub restarts_in_incident: Vec<(String, u32)>,
    /// Autonomous restarts of the service's pods in the current window, all incidents.
    pub restarts_of_service_in_window: u32,
    /// The service's pods the agent restarted in the current window, by any incident. A
    /// pod is restarted autonomously at most once per window: a second time means the
    /// first did not fix it, or a storm of alerts describes one failure.
    pub pods_restarted_in_window: Vec<String>,
}

/// How the agent may proceed with a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Do it now, on the agent's own authority.
    Auto { reason: String },
    /// Record it as proposed, notify, and wait for a human.
    NeedsApproval { reason: String },
    /// Never do it; record why.
    Deny { reason: String },
}

impl Decision {
    pub fn reason(&self) -> &str {
        match self {
            Decision::Auto { reason }
            | Decision::NeedsApproval { reason }
            | Decision::Deny { reason } => reason,
        }
    }

    /// The `decision` word of an `actions_taken` record.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Auto { .. } => "auto",
            Decision::NeedsApproval { .. } => "proposed",
            Decision::Deny { .. } => "denied",
        }
    }
}

/// Decides a proposed tool call. `pod` is the `podName` argument of a `restart-pod`.
pub fn decide(tool: &str, pod: Option<&str>, facts: &Facts, budget: RestartBudget) -> Decision {
    let deny = |reason: String| Decision::Deny { reason };
    let approval = |reason: String| Decision::NeedsApproval { reason };
    if !TOOLS.contains(&tool) {
        return deny(format!(
            "{tool:?} is not one of the six tools this agent may use"
        ));
    }
    if tool != "restart-pod" {
        let kind = if tool == "send-notification" {
            "notifying humans"
        } else {
            "read-only"
        };
        return Decision::Auto {
            reason: format!("{tool} is {kind}: always allowed"),
        };
    }
    let Some(pod) = pod.filter(|p| !p.is_empty()) else {
        return deny("restart-pod without a podName".into());
    };
    let Some((service, tier)) = &facts.service else {
        return approval(format!(
            "restart of {pod}: the alert is not mapped to a known service"
        ));
    };
    match facts.restart_autonomy {
        Some(Autonomy::Never) => {
            return deny(format!("the {service} runbook forbids restarting its pods"));
        }
        Some(Autonomy::Approval) => {
            return approval(format!(
                "the {service} runbook requires approval to restart a pod"
            ));
        }
        None => {
            return approval(format!(
                "the {service} runbook grants no autonomous restart"
            ));
        }
        Some(Autonomy::Auto) => {}
    }
    let Some(pods) = &facts.service_pods else {
        return approval(format!(
            "{pod} is not verified to belong to {service}: get-metrics has not run"
        ));
    };
    if !pods.iter().any(|p| p == pod) {
        return deny(format!(
            "{pod} is not a pod of {service} (its pods: {})",
            pods.join(", ")
        ));
    }
    if matches!(tier, Tier::Database | Tier::Stateful) {
        return approval(format!(
            "{service} is a {} service: its pods are never restarted without a human",
            tier.as_str()
        ));
    }
    let done = facts
        .restarts_in_incident
        .iter()
        .find(|(p, _)| p == pod)
        .map_or(0, |(_, n)| *n);
    if done >= budget.per_pod_per_incident_max {
        return approval(format!(
            "{pod} was already restarted {done} time(s) in this incident (budget {})",
            budget.per_pod_per_incident_max
        ));
    }
    if facts.pods_restarted_in_window.iter().any(|p| p == pod) {
        return approval(format!(
            "{pod} was already restarted by the agent in the current window (another incident): \
             a second restart needs a human"
        ));
    }
    if facts.restarts_of_service_in_window >= budget.per_service_per_window_max {
        return approval(format!(
            "{service} had {} autonomous restarts in the current window (budget {})",
            facts.restarts_of_service_in_window, budget.per_service_per_window_max
        ));
    }
    Decision::Auto {
        reason: format!(
            "the {service} runbook grants auto; {pod} is one of its pods; tier {}; restart {} of {} for this pod",
            tier.as_str(),
            done + 1,
            budget.per_pod_per_incident_max
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "checkout-api-jw7m9-xx6v2";

    fn oom_facts() -> Facts {
        Facts {
            service: Some(("checkout-api".into(), Tier::Stateless)),
            restart_autonomy: Some(Autonomy::Auto),
            service_pods: Some(vec![POD.into(), "checkout-api-z6kxg-zhbhs".into()]),
            restarts_in_incident: vec![],
            restarts_of_service_in_window: 0,
            pods_restarted_in_window: vec![],
        }
    }

    fn label(tool: &str, pod: Option<&str>, facts: &Facts) -> &'static str {
        decide(tool, pod, facts, RestartBudget::default()).label()
    }

    #[test]
    fn an_oom_killed_pod_of_a_stateless_service_is_restarted_autonomously() {
        let d = decide(
            "restart-pod",
            Some(POD),
            &oom_facts(),
            RestartBudget::default(),
        );
        assert_eq!(d.label(), "auto", "{d:?}");
        assert!(d.reason().contains("grants auto"));
    }

    #[test]
    fn every_missing_condition_turns_a_restart_into_a_proposal_or_a_denial() {
        let cases: Vec<(&str, Facts, &str, &str)> = vec![
            (
                "no mapped service",
                Facts {
                    service: None,
                    ..oom_facts()
                },
                "proposed",
                "not mapped",
            ),
            (
                "database tier",
                Facts {
                    service: Some(("payments-db".into(), Tier::Database)),
                    service_pods: Some(vec![POD.into()]),
                    ..oom_facts()
                },
                "proposed",
                "database",
            ),
            (
                "stateful tier",
                Facts {
                    service: Some(("search-indexer".into(), Tier::Stateful)),
                    service_pods: Some(vec![POD.into()]),
                    ..oom_facts()
                },
                "proposed",
                "stateful",
            ),
            (
                "runbook asks approval",
                Facts {
                    restart_autonomy: Some(Autonomy::Approval),
                    ..oom_facts()
                },
                "proposed",
                "approval",
            ),
            (
                "runbook grants nothing",
                Facts {
                    restart_autonomy: None,
                    ..oom_facts()
                },
                "proposed",
                "no autonomous",
            ),
            (
                "runbook forbids",
                Facts {
                    restart_autonomy: Some(Autonomy::Never),
                    ..oom_facts()
                },
                "denied",
                "forbids",
            ),
            (
                "membership unverified",
                Facts {
                    service_pods: None,
                    ..oom_facts()
                },
                "proposed",
                "get-metrics",
            ),
            (
                "pod of another service",
                Facts {
                    service_pods: Some(vec!["other-0".into()]),
                    ..oom_facts()
                },
                "denied",
                "not a pod of",
            ),
            (
                "pod budget spent",
                Facts {
                    restarts_in_incident: vec![(POD.into(), 1)],
                    ..oom_facts()
                },
                "proposed",
                "already restarted",
            ),
            (
                "pod restarted by another incident in the window",
                Facts {
                    pods_restarted_in_window: vec![POD.into()],
                    ..oom_facts()
                },
                "proposed",
                "already restarted by the agent",
            ),
            (
                "service budget spent",
                Facts {
                    restarts_of_service_in_window: 3,
                    ..oom_facts()
                },
                "proposed",
                "window",
            ),
        ];
        for (name, facts, expected, mentions) in cases {
            let d = decide("restart-pod", Some(POD), &facts, RestartBudget::default());
            assert_eq!(d.label(), expected, "{name}: {d:?}");
            assert!(
                d.reason().contains(mentions),
                "{name}: {:?} lacks {mentions:?}",
                d.reason()
            );
        }
    }

    #[test]
    fn a_database_pod_is_never_restarted_autonomously_even_if_its_runbook_said_auto() {
        let facts = Facts {
            service: Some(("payments-db".into(), Tier::Database)),
            restart_autonomy: Some(Autonomy::Auto),
            service_pods: Some(vec!["payments-db-0".into()]),
            ..Facts::default()
        };
        assert_eq!(
            label("restart-pod", Some("payments-db-0"), &facts),
            "proposed"
        );
    }

    #[test]
    fn unknown_tools_and_malformed_restarts_are_denied() {
        for tool in ["drop-database", "functions.restart-pod", "", "kubectl"] {
            assert_eq!(label(tool, None, &oom_facts()), "denied", "{tool:?}");
        }
        assert_eq!(label("restart-pod", None, &oom_facts()), "denied");
        assert_eq!(label("restart-pod", Some(""), &oom_facts()), "denied");
    }

    #[test]
    fn reading_and_notifying_are_always_allowed() {
        for tool in [
            "map-alert-to-service",
            "get-runbook",
            "get-logs",
            "get-metrics",
            "send-notification",
        ] {
            assert_eq!(label(tool, None, &Facts::default()), "auto", "{tool}");
        }
    }

    #[test]
    fn a_second_pod_may_still_be_restarted_within_the_service_budget() {
        let facts = Facts {
            restarts_in_incident: vec![(POD.into(), 1)],
            restarts_of_service_in_window: 1,
            ..oom_facts()
        };
        assert_eq!(
            label("restart-pod", Some("checkout-api-z6kxg-zhbhs"), &facts),
            "auto"
        );
    }
}
