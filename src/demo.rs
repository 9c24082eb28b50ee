//! `sre-agent demo`: both stories end to end on the embedded defaults. It starts the
//! simulated fleet with an OOM crash on checkout-api and an outage of payments-db, the
//! agent (three MCP servers over stdio, the chosen reasoner, a temporary SQLite file) and
//! its API; posts one incident for each story over HTTP; waits for both to finish; prints
//! each timeline and the fleet's ledger; and exits non-zero if a story did not end as the
//! product promises (OOM: resolved, exactly one restart of the killed pod; database:
//! escalated, no restart).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use crate::config::{DemoArgs, LogFormat};
use crate::embedded::{Posted, Simulated, ledger, post_incident, wait_terminal};

/// The two stories: scenario injected into the fleet, the incident posted, and the end.
const STORIES: [(&str, &str, &str, &str, &str); 2] = [
    (
        "oom-kill",
        "checkout-api pod OOMKilled",
        "CheckoutApiOOMKilled",
        "checkout-api",
        "resolved",
    ),
    (
        "db-outage",
        "payments-db is down",
        "PaymentsDbDown",
        "payments-db",
        "escalated",
    ),
];

pub async fn run(args: DemoArgs, program: &Path, log_format: LogFormat) -> anyhow::Result<()> {
    let scenarios: Vec<&str> = STORIES.iter().map(|(scenario, ..)| *scenario).collect();
    let sim = Simulated::start(
        &scenarios,
        &args.serve,
        program,
        log_format,
        "sre-agent-demo",
    )
    .await?;
    let outcome = stories(&sim.agent.api, &sim.fleet.url, args.wait_ms).await;
    if args.keep_database {
        println!("\nthe demo's database: {}", sim.db.display());
    }
    sim.stop(args.keep_database).await;
    outcome
}

async fn stories(api: &str, fleet_url: &str, wait_ms: u64) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut posted = Vec::new();
    for (scenario, title, alert, service, expected) in STORIES {
        let incident = json!({
            "title": title,
            "severity": "critical",
            "alert_type": alert,
            "service": service,
            "labels": { "scenario": scenario },
        });
        let Posted { id, trace_id } = post_incident(&http, api, &incident).await?;
        println!("posted {alert:<22} → incident {id}  trace {trace_id}");
        posted.push((id, service, expected));
    }

    let mut finished = Vec::new();
    let mut unfinished = Vec::new();
    for (id, service, expected) in &posted {
        match wait_terminal(&http, api, id, wait_ms).await? {
            Ok(incident) => {
                println!("\n{}", render(&incident));
                finished.push((incident, *service, *expected));
            }
            Err(incident) => {
                println!("\n{}", render(&incident));
                unfinished.push(format!(
                    "incident {id} is still {} after {wait_ms} ms",
                    incident["status"]
                ));
            }
        }
    }

    let entries = ledger(&http, fleet_url).await?;
    println!("\nfleet ledger ({} entries):", entries.len());
    for e in &entries {
        println!(
            "  #{} {} {:<17} {:<28} key {}  trace {}",
            e.seq,
            e.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            e.action,
            e.target,
            e.idempotency_key.as_deref().unwrap_or("-"),
            e.trace_id.as_deref().unwrap_or("-"),
        );
    }

    // The ledger is printed whatever happened, so what was done can always be checked.
    let mut wrong = unfinished;
    for (incident, service, expected) in &finished {
        let status = incident["status"].as_str().unwrap_or("?");
        let restarts = entries
            .iter()
            .filter(|e| e.action == "restart-pod" && e.target.starts_with(service))
            .count();
        let want_restarts = usize::from(*expected == "resolved");
        if status != *expected || restarts != want_restarts {
            wrong.push(format!(
                "{service}: {status} with {restarts} restart(s); expected {expected} with {want_restarts}"
            ));
        } else {
            println!("✓ {service}: {status}, {restarts} restart(s) in the ledger");
        }
    }
    if !wrong.is_empty() {
        bail!("the stories did not end as expected: {}", wrong.join("; "));
    }
    Ok(())
}

/// An incident as a person reads it: the header, the analysis, the timeline with the time
/// each step took, and the actions.
pub fn render(incident: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "━━ {} — {} ({})\n   id {}  trace {}  status {}",
        incident["title"].as_str().unwrap_or(""),
        incident["metadata"]["alert_type"].as_str().unwrap_or("-"),
        incident["severity"].as_str().unwrap_or(""),
        incident["id"].as_str().unwrap_or(""),
        incident["trace_id"].as_str().unwrap_or(""),
        incident["status"].as_str().unwrap_or("").to_uppercase(),
    );
    let start = incident["created_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let mut previous = start;
    let _ = writeln!(
        out,
        "   timeline (ms since opened, +ms since the step before):"
    );
    for e in incident["metadata"]["timeline"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let at = e["at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let since = |a: Option<chrono::DateTime<chrono::FixedOffset>>| match (at, a) {
            (Some(at), Some(a)) => (at - a).num_milliseconds(),
            _ => 0,
        };
        let _ = writeln!(
            out,
            "   {:>6} {:>+6}  {:<9} {}",
            since(start),
            since(previous),
            e["kind"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("").replace('\n', " ⏎ ")
        );
        previous = at.or(previous);
    }
    if let Some(rca) = incident["rca_analysis"].as_object() {
        let _ = writeln!(
            out,
            "   root cause ({:.0}%, {}): {}",
            rca.get("confidence").and_then(Value::as_f64).unwrap_or(0.0) * 100.0,
            rca.get("reasoner").and_then(Value::as_str).unwrap_or(""),
            rca.get("root_cause").and_then(Value::as_str).unwrap_or("")
        );
        for e in rca
            .get("evidence")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(out, "     evidence: {}", e.as_str().unwrap_or(""));
        }
    }
    for a in incident["actions_taken"].as_array().into_iter().flatten() {
        let target = a["args"]["podName"]
            .as_str()
            .or(a["args"]["severity"].as_str())
            .unwrap_or("");
        let _ = writeln!(
            out,
            "   action #{} {} {}: {} / {}{} — {}",
            a["seq"],
            a["tool"].as_str().unwrap_or(""),
            target,
            a["decision"].as_str().unwrap_or(""),
            a["status"].as_str().unwrap_or(""),
            match a["verified"].as_bool() {
                Some(true) => ", verified healthy",
                Some(false) => ", NOT healthy",
                None => "",
            },
            a["reason"].as_str().unwrap_or("")
        );
        if a["tool"] == "send-notification" && a["status"] == "succeeded" {
            let _ = writeln!(out, "     the page it sent:");
            for line in a["args"]["message"].as_str().unwrap_or("").lines() {
                let _ = writeln!(out, "     │ {line}");
            }
        }
    }
    out
}
