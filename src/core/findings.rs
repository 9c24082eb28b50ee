//! What a tool call found, in one line a person reads in the timeline: the service a
//! mapping names, a runbook's size, each pod's state, the newest log line, what a restart
//! did. Pure; a result it cannot read gets no line (the timeline keeps the raw excerpt).

use mcp::catalog::{AlertMapping, Runbook};
use mcp::fleet::model::{LogPage, LogSource, Receipt, RestartOutcome, ServiceMetrics};
use serde::de::DeserializeOwned;

use super::text;
use crate::reasoner::JsonText;

/// Longest line, in characters.
pub const FINDING_CHARS_MAX: usize = 400;

/// One line on what `tool` returned, when its result has the tool's shape.
pub fn summarize(tool: &str, result: &JsonText) -> Option<String> {
    fn read<T: DeserializeOwned>(result: &JsonText) -> Option<T> {
        result.parse().ok()
    }
    let line = match tool {
        "map-alert-to-service" => {
            let m: AlertMapping = read(result)?;
            format!(
                "service {} in {} (tier {}, owner {}, runbook {})",
                m.service,
                m.namespace,
                m.tier.as_str(),
                m.owner,
                m.runbook
            )
        }
        "get-runbook" => {
            let r: Runbook = read(result)?;
            format!(
                "{:?}: {} diagnostics, {} signals, remediation {}",
                r.spec.title,
                r.spec.diagnostics.len(),
                r.spec.signals.len(),
                r.spec
                    .remediation
                    .iter()
                    .map(|s| format!("{} ({:?})", s.tool, s.autonomy).to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        "get-metrics" => {
            let m: ServiceMetrics = read(result)?;
            let pods: Vec<String> = m
                .pods
                .iter()
                .map(|p| {
                    format!(
                        "{} {}{} restarts {}{}",
                        p.name,
                        p.phase,
                        if p.ready { "" } else { " unready" },
                        p.restarts,
                        p.last_termination_reason
                            .as_deref()
                            .map(|r| format!(" last {r}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            // What the backend could not measure is said so, not shown as a zero.
            let unmeasured = |field: &str| m.not_measured.iter().any(|f| f == field);
            let errors = if unmeasured("error_rate") {
                "errors not measured".to_owned()
            } else {
                format!("errors {:.1}%", m.error_rate * 100.0)
            };
            let p99 = if unmeasured("latency_p99_ms") {
                "p99 not measured".to_owned()
            } else {
                format!("p99 {} ms", m.latency_p99_ms)
            };
            format!(
                "{}/{} ready, {errors}, {p99}; {}",
                m.ready_replicas,
                m.replicas,
                pods.join("; ")
            )
        }
        "get-logs" => {
            let l: LogPage = read(result)?;
            match l.lines.last() {
                // Log text is untrusted: quoted, cleaned and marked with its source.
                Some(last) => format!(
                    "{} lines ({} in the window{}); newest [{}, {}] {}: {}",
                    l.lines.len(),
                    l.matched,
                    if l.truncated { ", truncated" } else { "" },
                    text::clean(&last.level, 16),
                    match last.source {
                        LogSource::Application => "application text",
                        LogSource::Platform => "platform event",
                    },
                    text::clean(&last.pod, 128),
                    text::quote(&last.message, 200)
                ),
                None => "no log lines in the window".to_owned(),
            }
        }
        "restart-pod" => {
            let r: RestartOutcome = read(result)?;
            format!(
                "{} {} (it was {} with {} restarts{}){}",
                if r.replayed {
                    "already restarted"
                } else {
                    "restarted"
                },
                r.pod,
                r.previous_phase,
                r.previous_restarts,
                r.previous_termination_reason
                    .as_deref()
                    .map(|x| format!(", last {x}"))
                    .unwrap_or_default(),
                if r.replayed {
                    ": the same key was answered, nothing done again"
                } else {
                    ""
                }
            )
        }
        "send-notification" => {
            let r: Receipt = read(result)?;
            format!(
                "delivered as #{} to {}{}",
                r.notification_id,
                r.channel,
                if r.replayed { " (already sent)" } else { "" }
            )
        }
        _ => return None,
    };
    Some(line.chars().take(FINDING_CHARS_MAX).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};
    use serde_json::Value;

    /// The results as the transcript holds them.
    fn summarize(tool: &str, result: &Value) -> Option<String> {
        super::summarize(tool, &JsonText::from(result))
    }

    #[test]
    fn each_tool_result_reads_as_one_line_and_garbage_as_none() {
        let catalog = mcp::data::load_catalog(None).unwrap();
        let mut fleet = mcp::data::load_fleet(None, Utc::now()).unwrap();
        fleet.inject("oom-kill").unwrap();
        let mapping = serde_json::to_value(catalog.map_alert("CheckoutApiOOMKilled")).unwrap();
        assert!(
            summarize("map-alert-to-service", &mapping)
                .unwrap()
                .contains("tier stateless")
        );
        let runbook = serde_json::to_value(catalog.runbook_for("payments-db").unwrap()).unwrap();
        let line = summarize("get-runbook", &runbook).unwrap();
        assert!(line.contains("restart-pod (approval)"), "{line}");
        let metrics = serde_json::to_value(fleet.metrics("checkout-api").unwrap()).unwrap();
        let line = summarize("get-metrics", &metrics).unwrap();
        assert!(line.contains("last OOMKilled"), "{line}");
        let now = fleet.now();
        let logs = fleet
            .logs("checkout-api", now - Duration::minutes(15), now, 10)
            .unwrap();
        let line = summarize("get-logs", &serde_json::to_value(logs).unwrap()).unwrap();
        assert!(line.contains("newest"), "{line}");
        for garbage in [
            Value::Null,
            serde_json::json!({"pods": "many"}),
            Value::from("text"),
        ] {
            assert_eq!(summarize("get-metrics", &garbage), None);
        }
        assert_eq!(summarize("no-such-tool", &metrics), None);
    }
}
