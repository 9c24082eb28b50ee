//! Admission control under a flood: the agent holds at most live max + queue max incidents;
//! past that `POST /incidents` and the webhook answer 503 with `Retry-After` and store
//! nothing, and every incident accepted is handled. Asserted on the rows, their statuses and
//! the metrics, never on log text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sre_agent::agent::incident::{HookFuture, IncidentHooks};
use sre_agent::incident::ActionRecord;
use tokio::sync::watch;
use uuid::Uuid;

use crate::alerts::{am_alert, payload};
use crate::helpers::*;

/// Incidents the flood posts at once while the agent is held full.
const FLOOD: usize = 30;
/// Incidents of the second wave, posted at once by clients that honour `Retry-After`.
const WAVE: usize = 20;
/// Longest an incident actor waits at the gate: the test opens it long before.
const GATE_WAIT_MAX_MS: u64 = 60_000;
/// Attempts of one client of the second wave before the test fails.
const ATTEMPTS_MAX: u32 = 60;

/// Holds every mutating call (here: each incident's page) until the test opens it, so that
/// no incident can finish while the test fills the agent.
struct Gate {
    open: watch::Receiver<bool>,
}

impl IncidentHooks for Gate {
    fn before_mutation(&self, _incident: Uuid, _action: &ActionRecord) -> HookFuture {
        let mut open = self.open.clone();
        Box::pin(async move {
            let _ = tokio::time::timeout(
                Duration::from_millis(GATE_WAIT_MAX_MS),
                open.wait_for(|open| *open),
            )
            .await;
        })
    }
}

/// Posts an incident nobody mapped (it escalates with a page); returns the status, the
/// `Retry-After` header and the body.
async fn post_one(http: &reqwest::Client, api: &str, n: usize) -> (u16, Option<String>, Value) {
    let response = http
        .post(format!("{api}/incidents"))
        .json(&json!({
            "title": format!("flood #{n}"),
            "severity": "high",
            "alert_type": "SomethingNobodyMapped",
            "service": "mystery",
            "coalesce": false,
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    if status == 503 {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    (status, retry_after, response.json().await.unwrap())
}

/// The `Retry-After` of a 503, in whole seconds from 1 to 5.
fn retry_after_secs(header: Option<&str>) -> u64 {
    let secs: u64 = header
        .expect("a 503 says when to retry")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=5).contains(&secs), "{secs}");
    secs
}

async fn rows(h: &Harness) -> Vec<Value> {
    let listed = h.get_json(&format!("{}/incidents?limit=200", h.api)).await;
    listed["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_bounds_is_refused_with_retry_after_and_every_accepted_incident_is_handled()
 {
    flood(None).await;
}

/// The flood on the database at `database_url` (SQLite in a temporary file when `None`).
pub async fn flood(database_url: Option<String>) {
    // Goal: past live max + queue max, new incidents are refused (503, Retry-After, nothing
    // stored) and never dropped once accepted; the queue hands an incident to a live actor as
    // soon as one ends, not at the next scan. Method: live max 2, queue max 3, the scan every
    // 10 minutes, a gate holding every incident at its page. 30 concurrent POSTs while the
    // gate is shut: exactly 5 are accepted, and the webhook is refused too. The gate opens:
    // all 5 finish. Then 20 concurrent clients that retry after Retry-After: all get in and
    // finish. Rows, statuses and the metrics must agree throughout.
    let (open_gate, gate) = watch::channel(false);
    let h = start(Options {
        database_url,
        hooks: Some(Arc::new(Gate { open: gate })),
        flags: [
            "--incidents-live-max",
            "2",
            "--incidents-queue-max",
            "3",
            "--adopt-interval-ms",
            "600000",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        ..Options::default()
    })
    .await;
    assert_eq!(h.scrape().await.value("sre_admission_capacity", &[]), 5.0);

    let mut posts = tokio::task::JoinSet::new();
    for n in 0..FLOOD {
        let (http, api) = (h.http.clone(), h.api.clone());
        posts.spawn(async move { post_one(&http, &api, n).await });
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    while let Some(answer) = posts.join_next().await {
        let (status, retry_after, body) = answer.unwrap();
        match status {
            202 => accepted.push(body["id"].as_str().unwrap().to_owned()),
            503 => {
                retry_after_secs(retry_after.as_deref());
                assert_eq!(body["type"], "urn:sre-agent:problem:at-capacity", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 5, "live max + queue max, no more");
    assert_eq!(refused, FLOOD - 5);
    // Two live (held at their pages), three waiting; what was refused is not stored.
    let full = h
        .scrape_until("two live and three queued", |m| {
            m.value("sre_incidents_live", &[]) == 2.0 && m.value("sre_incidents_queued", &[]) == 3.0
        })
        .await;
    assert_eq!(
        full.value("sre_admission_refused_total", &[("endpoint", "incidents")]),
        (FLOOD - 5) as f64
    );
    assert_eq!(
        full.value("sre_incidents_opened_total", &[("source", "api")]),
        5.0
    );
    assert_eq!(rows(&h).await.len(), 5);

    // The webhook is refused before anything is recorded; Alertmanager retries.
    let delivery = payload(vec![am_alert(
        "DiskFillingSomewhere",
        json!({ "severity": "warning", "namespace": "nowhere" }),
        "firing",
        "2026-11-26T05:00:00Z",
        "00000000000f100d",
    )]);
    let response = h
        .http
        .post(format!("{}/webhooks/alertmanager", h.api))
        .json(&delivery)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    retry_after_secs(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:sre-agent:problem:at-capacity");
    assert_eq!(rows(&h).await.len(), 5, "nothing of the delivery is stored");
    let m = h.scrape().await;
    assert_eq!(
        m.value(
            "sre_admission_refused_total",
            &[("endpoint", "alertmanager")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("sre_alerts_received_total", &[("source", "alertmanager")]),
        0.0
    );

    // Open the gate: the two live ones finish, and each end starts a waiting one at once
    // (the scan runs every ten minutes: it cannot be what starts them).
    let begun = Instant::now();
    open_gate.send(true).unwrap();
    for id in &accepted {
        let incident = h.finished(id).await;
        assert_eq!(incident["status"], "escalated", "{incident:#}");
    }
    eprintln!(
        "the queue of 3 behind 2 live drained in {} ms",
        begun.elapsed().as_millis()
    );

    // A second wave while incidents come and go: every client gets in sooner or later.
    let mut posts = tokio::task::JoinSet::new();
    for n in 0..WAVE {
        let (http, api) = (h.http.clone(), h.api.clone());
        posts.spawn(async move {
            let mut refusals = 0;
            for _ in 0..ATTEMPTS_MAX {
                let (status, retry_after, body) = post_one(&http, &api, FLOOD + n).await;
                match status {
                    202 => return (body["id"].as_str().unwrap().to_owned(), refusals),
                    503 => {
                        refusals += 1;
                        let secs = retry_after_secs(retry_after.as_deref());
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                    }
                    other => panic!("unexpected {other}: {body}"),
                }
            }
            panic!("not admitted after {ATTEMPTS_MAX} attempts");
        });
    }
    let mut wave_refused = 0;
    while let Some(answer) = posts.join_next().await {
        let (id, refusals) = answer.unwrap();
        accepted.push(id);
        wave_refused += refusals;
    }
    for id in &accepted {
        let incident = h.finished(id).await;
        assert_eq!(incident["status"], "escalated", "{incident:#}");
        assert!(
            actions(&incident, "send-notification")
                .iter()
                .any(|a| a["status"] == "succeeded"),
            "{incident:#}"
        );
    }
    let all = rows(&h).await;
    assert_eq!(all.len(), accepted.len(), "one row per 202, none per 503");
    let m = h
        .scrape_until("no incident live or queued", |m| {
            m.value("sre_incidents_live", &[]) == 0.0 && m.value("sre_incidents_queued", &[]) == 0.0
        })
        .await;
    let n = accepted.len() as f64;
    assert_eq!(
        m.value("sre_incidents_opened_total", &[("source", "api")]),
        n
    );
    assert_eq!(
        m.value("sre_admission_refused_total", &[("endpoint", "incidents")]),
        (FLOOD - 5 + wave_refused) as f64
    );
    assert_eq!(m.value("sre_investigations_total", &[]), n);
    assert_eq!(m.value("sre_investigations_in_flight", &[]), 0.0);
    assert_eq!(
        m.value("sre_incident_status_total", &[("status", "analyzing")]),
        n
    );
    assert_eq!(
        m.value("sre_incident_status_total", &[("status", "escalated")]),
        n
    );
    assert_eq!(
        m.value("sre_incident_status_total", &[("status", "failed")]),
        0.0
    );
    assert_eq!(m.value("sre_pages_total", &[("outcome", "succeeded")]), n);
    assert_eq!(
        m.value("sre_db_write_duration_seconds_count", &[("op", "create")]),
        n
    );

    // With room again, the webhook takes the delivery it was refused.
    let (status, answer) = crate::alerts::deliver(&h, &delivery).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["opened"], 1, "{answer:#}");
    let id = answer["alerts"][0]["incident"].as_str().unwrap().to_owned();
    h.finished(&id).await;
    let m = h.scrape().await;
    assert_eq!(
        m.value(
            "sre_alerts_received_total",
            &[("source", "alertmanager"), ("outcome", "opened")]
        ),
        1.0
    );
    assert_eq!(
        m.value("sre_incidents_opened_total", &[("source", "alertmanager")]),
        1.0
    );
    assert_eq!(rows(&h).await.len(), accepted.len() + 1);
    h.stop().await;
}
