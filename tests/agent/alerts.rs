//! The alert stream end to end: Alertmanager's webhook payloads (the shape of the captured
//! ones in `tests/fixtures/alertmanager-0.25`) posted to the real API, one failure one
//! incident, resolved alerts, and a human's approval or rejection, over the simulated fleet.
//! Outcomes are read from the API and the fleet's ledger and inbox.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::helpers::{self, FINISH_WAIT_MS, Harness, Options, actions, expected_oom_pod};

/// One alert of a webhook payload, as Alertmanager 0.25 writes it.
pub fn am_alert(name: &str, labels: Value, status: &str, starts_at: &str, fp: &str) -> Value {
    let mut labels = labels;
    labels["alertname"] = json!(name);
    json!({
        "status": status,
        "labels": labels,
        "annotations": { "summary": format!("{name} fires") },
        "startsAt": starts_at,
        "endsAt": if status == "resolved" { "2026-11-26T06:00:00Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus.invalid/graph",
        "fingerprint": fp,
    })
}

/// A webhook v4 payload holding `alerts`.
pub fn payload(alerts: Vec<Value>) -> Value {
    let firing = alerts.iter().any(|a| a["status"] == "firing");
    json!({
        "receiver": "sre-agent",
        "status": if firing { "firing" } else { "resolved" },
        "alerts": alerts,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
    })
}

/// Posts a payload to the webhook; returns the status and the body.
pub async fn deliver(h: &Harness, body: &Value) -> (u16, Value) {
    let r = h
        .http
        .post(format!("{}/webhooks/alertmanager", h.api))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The incident a delivery of one alert opened or joined.
fn incident_of(answer: &Value) -> String {
    answer["alerts"][0]["incident"]
        .as_str()
        .unwrap_or_else(|| panic!("no incident in {answer:#}"))
        .to_owned()
}

/// Waits until `check` holds for the incident; returns it.
async fn until(h: &Harness, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_millis(FINISH_WAIT_MS);
    loop {
        let incident = h.incident(id).await;
        if check(&incident) {
            return incident;
        }
        assert!(
            Instant::now() < deadline,
            "incident {id}: {what} not within {FINISH_WAIT_MS} ms: {incident:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn oom_labels(pod: &str) -> Value {
    json!({ "namespace": "shop", "service": "checkout-api", "pod": pod, "job": "sre-fleet", "severity": "critical" })
}

fn db_labels() -> Value {
    json!({ "namespace": "payments", "service": "payments-db", "severity": "critical" })
}

/// A decision on proposal `seq` of incident `id`, naming `digest` and `by`.
async fn decide(
    h: &Harness,
    id: &str,
    seq: u64,
    verdict: &str,
    digest: Option<&str>,
    by: Option<&str>,
) -> (u16, Value) {
    let mut request = h
        .http
        .post(format!("{}/incidents/{id}/actions/{seq}/{verdict}", h.api));
    if let Some(d) = digest {
        request = request.header("if-match", format!("\"{d}\""));
    }
    if let Some(by) = by {
        request = request.header("x-decided-by", by);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn proposal(incident: &Value) -> (u64, String) {
    let p = actions(incident, "restart-pod")
        .into_iter()
        .find(|a| a["status"] == "proposed")
        .unwrap_or_else(|| panic!("a proposed restart: {incident:#}"));
    (
        p["seq"].as_u64().unwrap(),
        p["proposal"]["digest"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_generic_oom_alert_restarts_the_pod_once_and_resolves_only_when_the_alert_does() {
    // Goal: a generic KubePodOOMKilled for a checkout-api pod runs the checkout-api runbook
    // (routing by labels); repeats of the group change nothing; the verified fix waits for
    // the alert to resolve; the resolved alert closes the incident. Method: deliver the firing
    // group, then the same group three more times, then the resolved one; read the incident,
    // the ledger and the inbox.
    let h = helpers::start(Options {
        scenarios: vec!["oom-kill"],
        ..Options::default()
    })
    .await;
    let pod = expected_oom_pod();
    let firing = payload(vec![am_alert(
        "KubePodOOMKilled",
        oom_labels(&pod),
        "firing",
        "2026-11-26T05:11:35.853Z",
        "76251d4043ef079b",
    )]);
    let (status, answer) = deliver(&h, &firing).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["alerts"][0]["outcome"], "opened");
    assert_eq!(answer["alerts"][0]["failure"], "checkout-api/oom_killed");
    let id = incident_of(&answer);

    // The fix runs and verifies; the alert still fires, so the incident waits.
    let waiting = until(&h, &id, "a verified restart, waiting", |i| {
        i["status"] == "remediating"
            && actions(i, "restart-pod")
                .first()
                .is_some_and(|r| r["verified"] == true)
            && i["wake_at"].is_string()
    })
    .await;
    assert_eq!(waiting["rca_analysis"]["service"], "checkout-api");
    for _ in 0..3 {
        let (status, again) = deliver(&h, &firing).await;
        assert_eq!(status, 200);
        assert_eq!(again["alerts"][0]["outcome"], "unchanged", "{again:#}");
        assert_eq!(incident_of(&again), id);
    }

    let mut resolved = firing.clone();
    resolved["alerts"][0]["status"] = json!("resolved");
    resolved["alerts"][0]["endsAt"] = json!("2026-11-26T05:13:37.853Z");
    let (status, answer) = deliver(&h, &resolved).await;
    assert_eq!(status, 200);
    assert_eq!(answer["alerts"][0]["outcome"], "resolved");
    let incident = helpers::finished(&h.http, &h.api, &id).await;
    helpers::assert_oom_story(&h, &incident, &pod).await;
    assert_eq!(incident["alerts"]["records"][0]["state"], "resolved");
    let alert_lines = helpers::timeline(&incident, "alert");
    assert_eq!(
        alert_lines.len(),
        2,
        "firing and resolved: {alert_lines:#?}"
    );
    let pages = h.pages_of(incident["trace_id"].as_str().unwrap()).await;
    assert_eq!(pages.len(), 1, "one page: {pages:#?}");

    // A late redelivery of the firing group opens nothing.
    let (_, late) = deliver(&h, &firing).await;
    assert_eq!(late["alerts"][0]["outcome"], "unchanged", "{late:#}");
    assert_eq!(h.restarts_of("checkout-api").await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_fix_that_did_not_hold_escalates_and_closes_once_its_alert_resolves_and_the_check_agrees()
{
    // Goal: an alert firing again after the agent's verified fix escalates the incident
    // with a page (no second restart); once that alert resolves and the agent sees the
    // service healthy, the incident closes and lets the failure go, so the next alert of it
    // opens a new incident. Method: deliver the OOM alert, let the fix verify, deliver it
    // again with a later startsAt, then resolved, then a new alert of the same failure.
    let h = helpers::start(Options {
        scenarios: vec!["oom-kill"],
        ..Options::default()
    })
    .await;
    let pod = expected_oom_pod();
    let alert = |status: &str, starts: &str| {
        payload(vec![am_alert(
            "KubePodOOMKilled",
            oom_labels(&pod),
            status,
            starts,
            "76251d4043ef079b",
        )])
    };
    let (_, answer) = deliver(&h, &alert("firing", "2026-11-26T05:11:35Z")).await;
    let id = incident_of(&answer);
    until(&h, &id, "a verified restart, waiting", |i| {
        i["status"] == "remediating" && i["wake_at"].is_string()
    })
    .await;
    let (_, again) = deliver(&h, &alert("firing", "2026-11-26T05:20:00Z")).await;
    assert_eq!(again["alerts"][0]["outcome"], "refired", "{again:#}");
    let escalated = until(&h, &id, "escalated", |i| i["status"] == "escalated").await;
    let trace = escalated["trace_id"].as_str().unwrap().to_owned();
    let pages = until(&h, &id, "a second page", |i| {
        actions(i, "send-notification")
            .iter()
            .filter(|n| n["status"] == "succeeded")
            .count()
            == 2
    })
    .await;
    assert!(
        helpers::timeline(&pages, "status")
            .iter()
            .any(|l| l.contains("did not hold")),
        "{pages:#}"
    );
    assert_eq!(h.pages_of(&trace).await.len(), 2);
    assert_eq!(
        h.restarts_of("checkout-api").await.len(),
        1,
        "no second restart"
    );

    deliver(&h, &alert("resolved", "2026-11-26T05:20:00Z")).await;
    until(&h, &id, "resolved", |i| i["status"] == "resolved").await;
    let (_, next) = deliver(
        &h,
        &payload(vec![am_alert(
            "KubePodOOMKilled",
            oom_labels(&pod),
            "firing",
            "2026-11-26T05:40:00Z",
            "aaaa1111bbbb2222",
        )]),
    )
    .await;
    assert_eq!(next["alerts"][0]["outcome"], "opened", "{next:#}");
    assert_ne!(incident_of(&next), id);
    h.stop().await;
}

#[tokio::test]
async fn a_failure_that_comes_back_after_a_closed_fix_opens_a_new_incident_that_only_proposes() {
    // Goal: after an incident fixed a pod with a verified restart and closed (its alert
    // resolved), the same failure firing again opens a new incident whose restart is
    // proposed to a human, never run alone: a fix that did not hold is not repeated.
    // Method: the oom-kill-recurring scenario (the replaced pod leaks again); the first
    // alert fixed and resolved; the fleet's clock advanced until the pod is OOMKilled again;
    // a new firing of the alert delivered.
    let h = helpers::start(Options {
        scenarios: vec!["oom-kill-recurring"],
        ..Options::default()
    })
    .await;
    let pod = h.oom_killed_pod().await;
    let alert = |status: &str, starts: &str| {
        payload(vec![am_alert(
            "KubePodOOMKilled",
            oom_labels(&pod),
            status,
            starts,
            "5e5e5e5e5e5e5e5e",
        )])
    };
    let (_, answer) = deliver(&h, &alert("firing", "2026-11-26T05:11:35Z")).await;
    let first = incident_of(&answer);
    until(&h, &first, "a verified restart, waiting", |i| {
        i["status"] == "remediating" && i["wake_at"].is_string()
    })
    .await;
    deliver(&h, &alert("resolved", "2026-11-26T05:11:35Z")).await;
    until(&h, &first, "resolved", |i| i["status"] == "resolved").await;

    // The replaced pod leaks again and is OOMKilled about 17 s after its start.
    let r = h
        .http
        .post(format!("{}/v1/clock/advance", h.fleet))
        .json(&json!({ "seconds": 30 }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        h.oom_killed_pod().await,
        pod,
        "the same pod, OOMKilled again"
    );
    let (_, answer) = deliver(&h, &alert("firing", "2026-11-26T05:30:00Z")).await;
    assert_eq!(answer["alerts"][0]["outcome"], "opened", "{answer:#}");
    let second = incident_of(&answer);
    assert_ne!(second, first);
    let escalated = helpers::finished(&h.http, &h.api, &second).await;
    assert_eq!(escalated["status"], "escalated", "{escalated:#}");
    let restart = actions(&escalated, "restart-pod")[0].clone();
    assert_eq!(restart["status"], "proposed", "{escalated:#}");
    assert!(
        restart["reason"]
            .as_str()
            .unwrap()
            .contains("came back after the agent's fix"),
        "{restart:#}"
    );
    assert_eq!(
        h.restarts_of("checkout-api").await.len(),
        1,
        "one restart, the first"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_approved_database_restart_runs_once_on_the_humans_authority() {
    // Goal: the database alert ends escalated with a proposal; a human approves exactly that
    // proposal (If-Match), the restart runs once through the idempotency path and is recorded
    // as approved by that human; a second approval changes nothing, a rejection conflicts.
    // Method: deliver PostgresqlDown; decide with a missing and a stale digest, then the right
    // one; read the incident and the ledger.
    let h = helpers::start(Options {
        scenarios: vec!["db-outage"],
        ..Options::default()
    })
    .await;
    let firing = payload(vec![am_alert(
        "PostgresqlDown",
        db_labels(),
        "firing",
        "2026-11-26T05:10:16.853Z",
        "bc5b655367934a99",
    )]);
    let (_, answer) = deliver(&h, &firing).await;
    let id = incident_of(&answer);
    let escalated = helpers::finished(&h.http, &h.api, &id).await;
    assert_eq!(escalated["status"], "escalated", "{escalated:#}");
    let (seq, digest) = proposal(&escalated);
    assert!(h.restarts_of("payments-db").await.is_empty());

    assert_eq!(
        decide(&h, &id, seq, "approve", None, Some("alice")).await.0,
        428
    );
    assert_eq!(
        decide(&h, &id, seq, "approve", Some("0000"), Some("alice"))
            .await
            .0,
        412
    );
    assert_eq!(
        decide(&h, &id, seq, "approve", Some(&digest), None).await.0,
        422
    );
    let (status, approved) = decide(&h, &id, seq, "approve", Some(&digest), Some("alice")).await;
    assert_eq!(status, 200, "{approved:#}");
    assert_eq!(approved["status"], "remediating");
    assert_eq!(approved["action"]["human"]["by"], "alice");

    // The restart runs on the approval; the fault persists, so it does not verify and the
    // incident is escalated again, with a page saying so.
    let done = until(&h, &id, "the approved restart ran", |i| {
        i["status"] == "escalated"
            && actions(i, "restart-pod")
                .iter()
                .any(|r| r["decision"] == "approved" && r["verified"].is_boolean())
    })
    .await;
    let restart = actions(&done, "restart-pod")
        .into_iter()
        .find(|r| r["seq"] == seq)
        .unwrap()
        .clone();
    assert_eq!(restart["status"], "succeeded", "{done:#}");
    let ledger = h.restarts_of("payments-db").await;
    assert_eq!(ledger.len(), 1, "one restart: {ledger:#?}");
    assert_eq!(ledger[0]["idempotency_key"], restart["idempotency_key"]);
    assert_eq!(ledger[0]["trace_id"], done["trace_id"]);
    assert!(
        helpers::timeline(&done, "human")
            .iter()
            .any(|l| l.contains("approved by alice")),
        "{done:#}"
    );
    let pages = h.pages_of(done["trace_id"].as_str().unwrap()).await;
    assert_eq!(
        pages.len(),
        2,
        "the proposal, then the failed restart: {pages:#?}"
    );

    let (again, body) = decide(&h, &id, seq, "approve", Some(&digest), Some("alice")).await;
    assert_eq!((again, body["replayed"].clone()), (200, json!(true)));
    assert_eq!(
        decide(&h, &id, seq, "reject", Some(&digest), Some("bob"))
            .await
            .0,
        409
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.restarts_of("payments-db").await.len(), 1, "still one");

    // The database comes back by hand; the alert resolves; the agent's own check agrees.
    let r = h
        .http
        .delete(format!("{}/v1/scenarios/db-outage", h.fleet))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut resolved = firing.clone();
    resolved["alerts"][0]["status"] = json!("resolved");
    deliver(&h, &resolved).await;
    let closed = until(&h, &id, "resolved", |i| i["status"] == "resolved").await;
    assert!(
        helpers::timeline(&closed, "status")
            .last()
            .is_some_and(|l| l.contains("resolved on its own")),
        "{closed:#}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_rejected_proposal_runs_nothing_and_an_alert_resolving_on_its_own_lapses_a_proposal() {
    // Goal: rejecting restarts nothing and keeps the incident escalated; a proposal still
    // waiting when its alert resolves (and the agent sees the service healthy) lapses and
    // the incident closes; approving it afterwards conflicts. Method: two database
    // incidents one after the other (the first rejected, the second left waiting), the
    // fault ended through the fleet, the alerts resolved; ledger and records read.
    let h = helpers::start(Options {
        scenarios: vec!["db-outage"],
        ..Options::default()
    })
    .await;
    let firing = |starts: &str| {
        payload(vec![am_alert(
            "PostgresqlDown",
            db_labels(),
            "firing",
            starts,
            "bc5b655367934a99",
        )])
    };
    let first = firing("2026-11-26T05:10:16.853Z");
    let (_, answer) = deliver(&h, &first).await;
    let id = incident_of(&answer);
    let escalated = helpers::finished(&h.http, &h.api, &id).await;
    let (seq, digest) = proposal(&escalated);
    let (status, rejected) = decide(&h, &id, seq, "reject", Some(&digest), Some("bob")).await;
    assert_eq!(status, 200, "{rejected:#}");
    assert_eq!(rejected["status"], "escalated");
    assert_eq!(rejected["action"]["status"], "rejected");
    assert_eq!(
        decide(&h, &id, seq, "approve", Some(&digest), Some("alice"))
            .await
            .0,
        409
    );

    // The same failure, while its incident is open, joins it: no second investigation.
    let (_, joined) = deliver(
        &h,
        &payload(vec![am_alert(
            "PaymentsDbDown",
            db_labels(),
            "firing",
            "2026-11-26T05:10:20.000Z",
            "aaaaaaaaaaaaaaaa",
        )]),
    )
    .await;
    assert_eq!(joined["alerts"][0]["outcome"], "joined", "{joined:#}");
    assert_eq!(incident_of(&joined), id);

    // The fault ends by hand and both alerts resolve: the agent's check agrees.
    h.http
        .delete(format!("{}/v1/scenarios/db-outage", h.fleet))
        .send()
        .await
        .unwrap();
    let mut resolved = first.clone();
    resolved["alerts"][0]["status"] = json!("resolved");
    deliver(&h, &resolved).await;
    let still = h.incident(&id).await;
    assert_eq!(
        still["status"], "escalated",
        "one alert still fires: {still:#}"
    );
    deliver(
        &h,
        &payload(vec![am_alert(
            "PaymentsDbDown",
            db_labels(),
            "resolved",
            "2026-11-26T05:10:20.000Z",
            "aaaaaaaaaaaaaaaa",
        )]),
    )
    .await;
    let closed = until(&h, &id, "resolved", |i| i["status"] == "resolved").await;
    assert_eq!(
        actions(&closed, "restart-pod")[0]["status"],
        "rejected",
        "a human's rejection stays as it was: {closed:#}"
    );

    // The failure comes back (a new firing): a new incident, whose proposal is left waiting
    // until the alert resolves on its own.
    let r = h
        .http
        .post(format!("{}/v1/scenarios/db-outage", h.fleet))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let second = firing("2026-11-26T05:20:00.000Z");
    let (_, answer) = deliver(&h, &second).await;
    assert_eq!(answer["alerts"][0]["outcome"], "opened", "{answer:#}");
    let id2 = incident_of(&answer);
    assert_ne!(id2, id);
    let waiting = helpers::finished(&h.http, &h.api, &id2).await;
    let (seq2, digest2) = proposal(&waiting);
    h.http
        .delete(format!("{}/v1/scenarios/db-outage", h.fleet))
        .send()
        .await
        .unwrap();
    let mut resolved = second.clone();
    resolved["alerts"][0]["status"] = json!("resolved");
    deliver(&h, &resolved).await;
    let lapsed = until(&h, &id2, "resolved", |i| i["status"] == "resolved").await;
    assert_eq!(
        actions(&lapsed, "restart-pod")[0]["status"],
        "lapsed",
        "{lapsed:#}"
    );
    assert_eq!(
        decide(&h, &id2, seq2, "approve", Some(&digest2), Some("alice"))
            .await
            .0,
        409
    );
    assert!(
        h.restarts_of("payments-db").await.is_empty(),
        "nothing restarted"
    );
    h.stop().await;
}

#[tokio::test]
async fn reports_of_one_failure_through_the_api_join_one_incident_unless_told_otherwise() {
    // Goal: POST /incidents coalesces like the webhook: the specific and the generic name of
    // one failure join one incident (200, coalesced); `"coalesce": false` forces a new one.
    // Method: three posts; count incidents and investigations.
    let h = helpers::start(Options {
        scenarios: vec!["oom-kill"],
        ..Options::default()
    })
    .await;
    let pod = expected_oom_pod();
    let post = |body: Value| {
        let h = &h;
        async move {
            let r = h
                .http
                .post(format!("{}/incidents", h.api))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, first) = post(json!({
        "title": "checkout-api OOM", "severity": "critical",
        "alert_type": "CheckoutApiOOMKilled",
    }))
    .await;
    assert_eq!(s1, 202, "{first:#}");
    let (s2, second) = post(json!({
        "title": "a pod was OOMKilled", "severity": "critical",
        "alert_type": "KubePodOOMKilled", "labels": { "namespace": "shop", "pod": pod },
    }))
    .await;
    assert_eq!(s2, 200, "{second:#}");
    assert_eq!(second["coalesced"], true);
    assert_eq!(second["id"], first["id"]);
    let (s3, third) = post(json!({
        "title": "checkout-api OOM", "severity": "critical",
        "alert_type": "CheckoutApiOOMKilled", "coalesce": false,
    }))
    .await;
    assert_eq!(s3, 202);
    assert_ne!(third["id"], first["id"]);
    let one = helpers::finished(&h.http, &h.api, first["id"].as_str().unwrap()).await;
    assert_eq!(
        one["alerts"]["records"].as_array().unwrap().len(),
        2,
        "{one:#}"
    );
    helpers::finished(&h.http, &h.api, third["id"].as_str().unwrap()).await;
    assert_eq!(h.restarts_of("checkout-api").await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_thousand_deliveries_for_ten_failures_open_ten_incidents_and_page_each_once() {
    // Goal: Alertmanager's repeats, redeliveries and interleaved resolves of ten failures
    // give ten incidents, at most ten investigations and at most one page each, and lose
    // nothing. Method: ten failures (generic alerts routed by labels to six services and two
    // failure classes), each with two alerts: one keeps firing, the other fires and resolves;
    // 1,000 deliveries of single alerts and whole groups in a shuffled order, 16 at a time;
    // then every incident is read.
    let h = helpers::start(Options {
        scenarios: vec![],
        ..Options::default()
    })
    .await;
    let services = [
        ("checkout-api", "shop"),
        ("payments-api", "payments"),
        ("orders-worker", "shop"),
        ("search-indexer", "search"),
        ("catalog-api", "shop"),
    ];
    let mut failures = Vec::new();
    for (i, (service, ns)) in services.iter().enumerate() {
        for (j, name) in ["KubePodOOMKilled", "KubePodCrashLooping"]
            .iter()
            .enumerate()
        {
            let labels = json!({ "namespace": ns, "service": service, "pod": format!("{service}-x{j}"), "severity": "warning" });
            let fp = |k: usize| format!("{:016x}", (i * 10 + j) * 10 + k);
            let starts = "2026-11-26T05:00:00Z";
            failures.push((
                format!(
                    "{service}/{}",
                    if j == 0 {
                        "oom_killed"
                    } else {
                        "crash_looping"
                    }
                ),
                am_alert(name, labels.clone(), "firing", starts, &fp(1)),
                am_alert(name, labels.clone(), "firing", starts, &fp(2)),
                am_alert(name, labels, "resolved", starts, &fp(2)),
            ));
        }
    }
    assert_eq!(failures.len(), 10);
    // A deterministic shuffle (a linear congruential generator).
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let mut deliveries = Vec::new();
    for n in 0..1_000 {
        let (_, keep, flap, flap_resolved) = &failures[next() % failures.len()];
        let body = match n % 4 {
            0 => payload(vec![keep.clone(), flap.clone()]),
            1 => payload(vec![flap_resolved.clone(), keep.clone()]),
            2 => payload(vec![keep.clone()]),
            _ => payload(vec![if next() % 2 == 0 {
                flap.clone()
            } else {
                flap_resolved.clone()
            }]),
        };
        deliveries.push(body);
    }
    // Every failure begins firing first, as Alertmanager would start.
    for (_, keep, _, _) in &failures {
        deliveries.insert(0, payload(vec![keep.clone()]));
    }
    let begun = Instant::now();
    let mut answers = Vec::new();
    for chunk in deliveries.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for body in chunk {
            let (http, api, body) = (h.http.clone(), h.api.clone(), body.clone());
            set.spawn(async move {
                let r = http
                    .post(format!("{api}/webhooks/alertmanager"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()
            });
        }
        while let Some(a) = set.join_next().await {
            answers.push(a.unwrap());
        }
    }
    let delivered_ms = begun.elapsed().as_millis();
    let mut incidents: Vec<String> = answers
        .iter()
        .flat_map(|a| a["alerts"].as_array().unwrap().clone())
        .filter_map(|r| r["incident"].as_str().map(str::to_owned))
        .collect();
    incidents.sort();
    incidents.dedup();
    let opened = answers
        .iter()
        .map(|a| a["opened"].as_u64().unwrap())
        .sum::<u64>();
    eprintln!(
        "storm: {} deliveries in {delivered_ms} ms; {} incidents opened",
        answers.len(),
        opened
    );
    assert_eq!(opened, 10, "one incident per failure");
    assert_eq!(incidents.len(), 10, "{incidents:#?}");
    for id in &incidents {
        let incident = helpers::finished(&h.http, &h.api, id).await;
        let records = incident["alerts"]["records"].as_array().unwrap();
        assert_eq!(records.len(), 2, "both alerts of the failure: {incident:#}");
        let turns = helpers::timeline(&incident, "status")
            .iter()
            .filter(|l| l.contains("investigation begins"))
            .count();
        assert_eq!(turns, 1, "one investigation: {incident:#}");
        let pages = h.pages_of(incident["trace_id"].as_str().unwrap()).await;
        assert!(pages.len() <= 1, "at most one page: {pages:#?}");
        assert!(
            failures
                .iter()
                .any(|(key, ..)| incident["failure_key"] == key.as_str()),
            "{}",
            incident["failure_key"]
        );
    }
    assert!(
        h.ledger()
            .await
            .iter()
            .all(|e| e["action"] != "restart-pod")
    );
    h.stop().await;
}
