//! The runbook recipe of the offline `rules` reasoner: map the alert, fetch the service's
//! runbook, run its diagnostics (in one turn: they do not depend on each other; at most
//! [`CALLS_PER_TURN_MAX`] a turn), match its signals against what they returned
//! ([`super::diagnosis`]), and conclude with the RCA and the runbook's remediation for the
//! best signal. What it cannot map or match concludes with no action. A pure function of
//! the transcript: the next calls are the first step of the recipe not yet in it.
//!
//! It only proposes: the page a human gets is written by the agent from its decisions, and
//! every restart goes through the policy on the agent's own facts.

use mcp::catalog::{AlertMapping, Runbook};
use mcp::fleet::model::{LogPage, ServiceMetrics};
use serde::de::DeserializeOwned;

use super::diagnosis;
use super::workflow::empty_logs;
use crate::incident::{RootCauseAnalysis, Severity};
use crate::reasoner::rules::NAME;
use crate::reasoner::{
    CALLS_PER_TURN_MAX, Call, Conclusion, Outcome, Step, Transcript, mapping_args, string_args,
};

/// The next step of the recipe, from the transcript alone.
pub fn next_step(t: &Transcript) -> Step {
    let Some(alert) = t.incident.alert_type.as_deref() else {
        return unknown(
            t,
            "",
            "the incident names no alert type, so no runbook applies".into(),
        );
    };
    let map_args = mapping_args(alert, t.incident.service.as_deref(), &t.incident.labels);
    let mapping: AlertMapping = match lookup(t, "map-alert-to-service", map_args) {
        Looked::Missing(call) => return calls(vec![call], t),
        Looked::Failed(why) => {
            return unknown(t, "", format!("alert {alert:?} maps to no service: {why}"));
        }
        Looked::Found(m) => m,
    };
    let service = mapping.service.as_str();
    let runbook: Runbook = match lookup(t, "get-runbook", string_args(&[("serviceName", service)]))
    {
        Looked::Missing(call) => return calls(vec![call], t),
        Looked::Failed(why) => {
            return unknown(t, service, format!("no runbook for {service}: {why}"));
        }
        Looked::Found(r) => r,
    };
    let mut metrics = None;
    let mut logs = None;
    let mut missing = Vec::new();
    for d in &runbook.spec.diagnostics {
        let mut args = vec![("serviceName", service)];
        if let Some(range) = d.time_range.as_deref() {
            args.push(("timeRange", range));
        }
        match d.tool.as_str() {
            "get-metrics" => match lookup::<ServiceMetrics>(t, "get-metrics", string_args(&args)) {
                Looked::Missing(call) => ask(&mut missing, call),
                Looked::Found(m) => metrics = Some(m),
                Looked::Failed(_) => {}
            },
            "get-logs" => match lookup::<LogPage>(t, "get-logs", string_args(&args)) {
                Looked::Missing(call) => ask(&mut missing, call),
                Looked::Found(l) => logs = Some(l),
                Looked::Failed(_) => {}
            },
            _ => {}
        }
    }
    if !missing.is_empty() {
        return calls(missing, t);
    }
    let Some(metrics) = metrics else {
        return unknown(
            t,
            service,
            format!("get-metrics for {service} gave nothing usable"),
        );
    };
    let logs = logs.unwrap_or_else(|| empty_logs(&metrics));
    let d = diagnosis::diagnose(&mapping, &runbook, &metrics, &logs);
    let severity = t
        .incident
        .severity
        .parse::<Severity>()
        .map_or("info", Severity::notification_severity);
    let actions = d
        .proposals
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let arguments = match p.step.tool.as_str() {
                "restart-pod" => string_args(&[("podName", p.pod.as_deref()?)]),
                // The agent writes the page itself when it sends it; this is the draft.
                "send-notification" => string_args(&[
                    ("message", &draft(&mapping, &d.rca)),
                    ("severity", severity),
                ]),
                _ => return None,
            };
            Some(Call {
                id: format!("rules-action-{}", i + 1),
                tool: p.step.tool.clone(),
                arguments,
                invalid_arguments: None,
            })
        })
        .collect();
    Step::Conclude(Conclusion {
        rca: d.rca,
        actions,
    })
}

/// The reasoner's draft of the notification: the agent replaces it with a page written
/// from its decisions, and keeps this in the timeline.
fn draft(mapping: &AlertMapping, rca: &RootCauseAnalysis) -> String {
    format!("[{}] {}", mapping.service, rca.summary)
        .chars()
        .take(mcp::fleet::model::MESSAGE_CHARS_MAX)
        .collect()
}

/// A conclusion with nothing recognised: no action, so the actor escalates.
fn unknown(t: &Transcript, service: &str, why: String) -> Step {
    Step::Conclude(Conclusion {
        rca: RootCauseAnalysis {
            summary: format!("{}: {why}; a human must look", t.incident.title),
            root_cause: "unknown".into(),
            confidence: 0.0,
            evidence: vec![],
            service: service.to_owned(),
            reasoner: NAME.into(),
            ..RootCauseAnalysis::undetermined(String::new())
        },
        actions: vec![],
    })
}

enum Looked<T> {
    /// Not called yet: make this call.
    Missing(Call),
    /// Called, and it failed (or answered something unreadable).
    Failed(String),
    Found(T),
}

/// The outcome of the call `tool(pairs)` in the transcript, or the call to make.
fn lookup<T: DeserializeOwned>(
    t: &Transcript,
    tool: &str,
    wanted: crate::reasoner::Arguments,
) -> Looked<T> {
    let Some((_, outcome)) = t
        .calls()
        .filter(|(c, _)| c.tool == tool && c.arguments == wanted)
        .last()
    else {
        return Looked::Missing(Call {
            id: String::new(),
            tool: tool.to_owned(),
            arguments: wanted,
            invalid_arguments: None,
        });
    };
    read(tool, outcome)
}

/// Adds `call` to a turn's calls unless the turn asks for it already or is full (the rest
/// are asked for in the next turn).
fn ask(calls: &mut Vec<Call>, call: Call) {
    if !calls.iter().any(|c| c.same_as(&call)) && calls.len() < CALLS_PER_TURN_MAX {
        calls.push(call);
    }
}

/// A turn of `calls`, numbered after the calls of the transcript (`rules-{n}`).
fn calls(mut calls: Vec<Call>, t: &Transcript) -> Step {
    let made = t.calls().count();
    for (i, call) in calls.iter_mut().enumerate() {
        call.id = format!("rules-{}", made + i + 1);
    }
    Step::Calls {
        calls,
        reasoning: None,
        content: None,
        verbatim: None,
    }
}

/// What an outcome of `tool` holds (a repeated call: what the call it repeats held).
fn read<T: DeserializeOwned>(tool: &str, outcome: &Outcome) -> Looked<T> {
    match outcome {
        Outcome::Ok { structured } => structured.parse().map(Looked::Found).unwrap_or_else(|e| {
            Looked::Failed(format!("{tool} answered an unreadable result: {e}"))
        }),
        Outcome::Repeated { .. } => read(tool, outcome.settled()),
        Outcome::Error { message }
        | Outcome::NotRun { message }
        | Outcome::Deferred { message } => Looked::Failed(message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::evidence::tests::t0;
    use crate::reasoner::{IncidentBrief, Turn};
    use chrono::Duration;
    use mcp::fleet::sim::Fleet;
    use serde_json::Value;

    fn transcript(alert: Option<&str>) -> Transcript {
        Transcript {
            incident: IncidentBrief {
                id: "i-1".into(),
                title: "something is wrong".into(),
                description: None,
                severity: "critical".into(),
                alert_type: alert.map(str::to_owned),
                service: None,
                labels: Default::default(),
            },
            tools: std::sync::Arc::from(vec![]),
            turns: vec![],
        }
    }

    /// Answers each call from the catalog and a simulated fleet, as the servers would.
    fn answer(call: &Call, fleet: &Fleet) -> Outcome {
        let catalog = mcp::data::load_catalog(None).unwrap();
        let arg = |k: &str| call.arguments.string(k).unwrap();
        let ok = |v: serde_json::Result<Value>| Outcome::Ok {
            structured: v.unwrap().into(),
        };
        match call.tool.as_str() {
            "map-alert-to-service" => match catalog.map_alert(&arg("alertType")) {
                Some(m) => ok(serde_json::to_value(m)),
                None => Outcome::Error {
                    message: "no service is mapped".into(),
                },
            },
            "get-runbook" => ok(serde_json::to_value(
                catalog.runbook_for(&arg("serviceName")).unwrap(),
            )),
            "get-metrics" => ok(serde_json::to_value(
                fleet.metrics(&arg("serviceName")).unwrap(),
            )),
            "get-logs" => {
                let end = fleet.now();
                ok(serde_json::to_value(
                    fleet
                        .logs(&arg("serviceName"), end - Duration::minutes(15), end, 100)
                        .unwrap(),
                ))
            }
            other => panic!("the rules reasoner made no {other} call"),
        }
    }

    /// Runs the reasoner to its conclusion, `answer` playing the servers; returns the tools
    /// it called, turn by turn, and the conclusion.
    fn run_with(
        alert: Option<&str>,
        answer: impl Fn(&Call) -> Outcome,
    ) -> (Vec<Vec<String>>, Conclusion) {
        let mut t = transcript(alert);
        for _ in 0..10 {
            match next_step(&t) {
                Step::Calls { calls, .. } => {
                    let calls = calls
                        .into_iter()
                        .map(|c| {
                            let o = answer(&c);
                            (c, o)
                        })
                        .collect();
                    t.turns.push(Turn {
                        reasoning: None,
                        content: None,
                        calls,
                        verbatim: None,
                    });
                }
                Step::Conclude(c) => {
                    let turns = t
                        .turns
                        .iter()
                        .map(|turn| turn.calls.iter().map(|(c, _)| c.tool.clone()).collect());
                    return (turns.collect(), c);
                }
            }
        }
        panic!("the rules reasoner did not conclude within 10 steps");
    }

    fn fleet_with(scenario: Option<&str>) -> Fleet {
        let mut fleet = mcp::data::load_fleet(None, t0()).unwrap();
        if let Some(s) = scenario {
            fleet.inject(s).unwrap();
        }
        fleet.advance(t0() + Duration::seconds(5));
        fleet
    }

    fn run(scenario: Option<&str>, alert: Option<&str>) -> (Vec<Vec<String>>, Conclusion) {
        let fleet = fleet_with(scenario);
        run_with(alert, |c| answer(c, &fleet))
    }

    #[test]
    fn the_oom_runbook_is_run_in_order_and_concludes_with_a_restart_of_the_killed_pod() {
        let (turns, c) = run(Some("oom-kill"), Some("CheckoutApiOOMKilled"));
        // The runbook's diagnostics do not depend on each other: one turn.
        assert_eq!(
            turns,
            [
                vec!["map-alert-to-service"],
                vec!["get-runbook"],
                vec!["get-metrics", "get-logs"]
            ]
        );
        assert_eq!(c.rca.service, "checkout-api");
        assert_eq!(c.actions[0].tool, "restart-pod");
        let pod = c.actions[0].arguments.string("podName").unwrap();
        assert!(c.rca.summary.contains(&pod), "{}", c.rca.summary);
        assert_eq!(c.actions[1].tool, "send-notification");
        let message = c.actions[1].arguments.string("message").unwrap();
        assert!(message.contains(&pod), "{message}");
        assert_eq!(
            c.actions[1].arguments.string("severity").unwrap(),
            "critical"
        );
    }

    #[test]
    fn the_database_outage_concludes_with_a_notification_first_and_a_proposed_restart() {
        let (_, c) = run(Some("db-outage"), Some("PaymentsDbDown"));
        assert_eq!(c.rca.service, "payments-db");
        let tools: Vec<&str> = c.actions.iter().map(|a| a.tool.as_str()).collect();
        assert_eq!(tools, ["send-notification", "restart-pod"]);
        assert_eq!(
            c.actions[1].arguments.string("podName").unwrap(),
            "payments-db-0"
        );
    }

    #[test]
    fn an_alert_it_cannot_map_or_match_concludes_with_no_action() {
        for (scenario, alert) in [
            (None, Some("NoSuchAlert")),
            (None, None),
            (None, Some("CheckoutApiOOMKilled")),
        ] {
            let (_, c) = run(scenario, alert);
            assert!(c.actions.is_empty(), "{alert:?}: {c:?}");
            assert_eq!(c.rca.confidence, 0.0);
        }
    }

    #[test]
    fn a_long_runbook_is_read_in_full_turns_each_diagnostic_once() {
        // A runbook whose diagnostics repeat one another and are more than a turn takes:
        // each distinct call is made once, at most `CALLS_PER_TURN_MAX` a turn, and the
        // rest in the next turn (none is lost to the agent's bound on a turn).
        let fleet = fleet_with(Some("oom-kill"));
        let (turns, c) = run_with(Some("CheckoutApiOOMKilled"), |call| {
            if call.tool != "get-runbook" {
                return answer(call, &fleet);
            }
            let catalog = mcp::data::load_catalog(None).unwrap();
            let mut runbook = catalog.runbook_for("checkout-api").unwrap().clone();
            let d = &mut runbook.spec.diagnostics;
            let metrics = d.iter().find(|d| d.tool == "get-metrics").unwrap().clone();
            let logs = d.iter().find(|d| d.tool == "get-logs").unwrap().clone();
            d.push(metrics);
            for minutes in 1..=10 {
                d.push(mcp::catalog::Diagnostic {
                    time_range: Some(format!("{minutes}m")),
                    ..logs.clone()
                });
            }
            Outcome::Ok {
                structured: serde_json::to_value(runbook).unwrap().into(),
            }
        });
        let sizes: Vec<usize> = turns.iter().map(Vec::len).collect();
        // map, runbook, then 12 distinct diagnostics (15m and 1m..=10m logs, the metrics).
        assert_eq!(sizes, [1, 1, CALLS_PER_TURN_MAX, 12 - CALLS_PER_TURN_MAX]);
        let tools = turns.concat();
        assert_eq!(tools.iter().filter(|t| *t == "get-metrics").count(), 1);
        assert_eq!(c.actions[0].tool, "restart-pod", "{c:?}");
    }

    #[test]
    fn a_failed_diagnostic_is_not_called_again() {
        let fleet = fleet_with(None);
        let (turns, c) = run_with(Some("CheckoutApiOOMKilled"), |call| {
            if call.tool == "get-metrics" {
                Outcome::Error {
                    message: "backend down".into(),
                }
            } else {
                answer(call, &fleet)
            }
        });
        let tools = turns.concat();
        assert_eq!(tools.iter().filter(|t| *t == "get-metrics").count(), 1);
        assert!(c.actions.is_empty());
        assert!(c.rca.summary.contains("get-metrics"), "{}", c.rca.summary);
    }
}
