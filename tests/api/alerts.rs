//! The alert stream through the API alone (no agent, so incidents stay as written):
//! Alertmanager's webhook with the captured 0.25 payloads, one failure one incident, late
//! redeliveries, refused payloads, racing deliveries, the webhook's bearer token, reports
//! through `POST /incidents` that coalesce, and a human's approval or rejection of a
//! proposal. Outcomes are read from statuses, problem bodies and the incidents read back.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sre_agent::core::approval;
use sre_agent::incident::{ActionDecision, ActionRecord, ActionStatus, Proposal, Status};
use sre_agent::store::Store;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::helpers::{
    self, Backend, TestApp, TestDb, assert_problem, on_each_backend, spawn_app, spawn_app_with,
};

on_each_backend!(
    the_captured_payloads_open_and_resolve_one_incident_per_failure_and_repeats_change_nothing,
    a_firing_redelivered_after_its_resolution_changes_nothing_even_once_the_incident_closed,
    alert_severities_map_onto_the_incident_severity,
    a_broken_delivery_is_refused_whole_and_a_bad_alert_alone_with_every_bad_field_named,
    thirty_two_concurrent_deliveries_of_one_alert_open_exactly_one_incident,
    thirty_two_concurrent_alerts_of_one_failure_all_land_on_one_incident,
    the_webhook_token_is_checked_before_anything_else,
    reports_of_one_failure_through_post_incidents_join_its_open_incident,
    thirty_two_concurrent_reports_of_one_failure_are_all_counted_on_one_incident,
    reports_that_opt_out_or_name_no_alert_type_are_never_coalesced,
    a_decision_needs_a_decider_the_proposals_digest_and_a_live_proposal,
    an_approval_moves_the_incident_to_remediating_once_and_a_later_rejection_conflicts,
    a_rejection_closes_the_proposal_and_leaves_the_incident_escalated,
    of_two_racing_decisions_on_one_proposal_exactly_one_wins,
    with_approver_tokens_the_token_names_the_decider_whatever_the_headers_say,
);

const OOM_FIRING: &str = "003-KubePodOOMKilled-firing";
const OOM_RESOLVED: &str = "005-KubePodOOMKilled-resolved";
const DB_FIRING: &str = "001-PostgresqlDown-firing";
const DB_RESOLVED: &str = "007-PostgresqlDown-resolved";
const OOM_FAILURE: &str = "checkout-api/oom_killed";
const DB_FAILURE: &str = "payments-db/database_down";
const WEBHOOK_TOKEN: &str = "s3cret-token-value";
const ALICE_TOKEN: &str = "alice-token-0123456789";

/// The body of a request Alertmanager 0.25 sent (`tests/fixtures/alertmanager-0.25`).
fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/alertmanager-0.25/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let whole: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(whole["headers"]["User-Agent"], "Alertmanager/0.25.0");
    whole["body"].clone()
}

/// One alert of a webhook payload, as Alertmanager 0.25 writes it.
fn am_alert(name: &str, labels: Value, status: &str, starts_at: &str, fp: &str) -> Value {
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
fn payload(alerts: Vec<Value>) -> Value {
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

/// The first alert of a fixture, to build other deliveries from.
fn alert_of(name: &str) -> Value {
    fixture(name)["alerts"][0].clone()
}

async fn post_webhook(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/webhooks/alertmanager"))
        .json(body)
        .send()
        .await
        .expect("the webhook answers")
}

/// Posts a delivery that must be accepted; returns the answer.
async fn deliver(app: &TestApp, body: &Value) -> Value {
    let response = post_webhook(app, body).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{answer:#}");
    answer
}

/// The outcome of each alert of a delivery's answer.
fn outcomes(answer: &Value) -> Vec<String> {
    answer["alerts"]
        .as_array()
        .unwrap_or_else(|| panic!("no alerts in {answer:#}"))
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_owned())
        .collect()
}

/// The incident the first alert of a delivery's answer was recorded on.
fn incident_of(answer: &Value) -> String {
    answer["alerts"][0]["incident"]
        .as_str()
        .unwrap_or_else(|| panic!("no incident in {answer:#}"))
        .to_owned()
}

/// Every incident stored, counted through the list.
async fn incident_count(app: &TestApp) -> usize {
    let page = app.get_json("/incidents?limit=200").await;
    assert_eq!(page["next_cursor"], Value::Null, "fewer than 200 incidents");
    page["items"].as_array().unwrap().len()
}

async fn incident(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/incidents/{id}")).await
}

/// The lines of an incident's timeline of one kind.
fn lines<'a>(incident: &'a Value, kind: &str) -> Vec<&'a Value> {
    incident["metadata"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == kind)
        .collect()
}

/// Asserts `response` is a problem with `status` and the type `urn:sre-agent:problem:{slug}`.
async fn problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    let p = assert_problem(response, status).await;
    assert_eq!(p["type"], format!("urn:sre-agent:problem:{slug}"), "{p:#}");
    p
}

/// The fields a validation problem names.
fn error_fields(p: &Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {p:#}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

async fn app_on(backend: Backend) -> (TestDb, TestApp) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    (db, app)
}

async fn the_captured_payloads_open_and_resolve_one_incident_per_failure_and_repeats_change_nothing(
    backend: Backend,
) {
    // Goal: the payloads a real Alertmanager sent open one incident per failure, resolve
    // them, and their repeats (every notification repeats the group) write nothing.
    // Method: post the four captured bodies in the order they were sent, then each again;
    // read the answers' outcomes, count incidents, read both incidents whole.
    let (_db, app) = app_on(backend).await;
    let mut ids = HashMap::new();
    for (name, outcome, failure) in [
        (OOM_FIRING, "opened", OOM_FAILURE),
        (DB_FIRING, "opened", DB_FAILURE),
        (OOM_RESOLVED, "resolved", OOM_FAILURE),
        (DB_RESOLVED, "resolved", DB_FAILURE),
    ] {
        let answer = deliver(&app, &fixture(name)).await;
        assert_eq!(outcomes(&answer), [outcome], "{name}: {answer:#}");
        assert_eq!(answer["received"], 1);
        assert_eq!(answer["alerts"][0]["failure"], failure, "{answer:#}");
        let id = incident_of(&answer);
        if let Some(first) = ids.insert(failure, id.clone()) {
            assert_eq!(first, id, "{name} lands on its failure's incident");
        }
    }
    assert_eq!(incident_count(&app).await, 2);
    let before_repeats = (
        incident(&app, &ids[OOM_FAILURE]).await,
        incident(&app, &ids[DB_FAILURE]).await,
    );

    for name in [OOM_FIRING, DB_FIRING, OOM_RESOLVED, DB_RESOLVED] {
        let answer = deliver(&app, &fixture(name)).await;
        assert_eq!(outcomes(&answer), ["unchanged"], "{name}: {answer:#}");
        assert_eq!(answer["unchanged"], 1);
        assert_eq!(answer["opened"], 0);
    }
    assert_eq!(incident_count(&app).await, 2, "repeats open nothing");
    let oom = incident(&app, &ids[OOM_FAILURE]).await;
    let db = incident(&app, &ids[DB_FAILURE]).await;
    assert_eq!((&oom, &db), (&before_repeats.0, &before_repeats.1));

    assert_eq!(oom["failure_key"], OOM_FAILURE);
    assert_eq!(
        oom["status"], "new",
        "no agent: the incident stays as written"
    );
    assert_eq!(oom["severity"], "critical");
    assert_eq!(
        oom["title"],
        "Pod shop/checkout-api-jw7m9-xx6v2 was OOMKilled"
    );
    assert_eq!(oom["metadata"]["source"], "alertmanager");
    assert_eq!(oom["metadata"]["alert_type"], "KubePodOOMKilled");
    assert_eq!(oom["metadata"]["service"], "checkout-api");
    let records = oom["alerts"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{oom:#}");
    assert_eq!(records[0]["state"], "resolved");
    assert_eq!(records[0]["fingerprint"], "76251d4043ef079b");
    assert_eq!(records[0]["source"], "alertmanager");
    let alert_lines = lines(&oom, "alert");
    let states: Vec<&Value> = alert_lines.iter().map(|l| &l["detail"]["state"]).collect();
    assert_eq!(
        states,
        ["firing", "resolved"],
        "one line per change: {oom:#}"
    );
    assert!(
        alert_lines
            .iter()
            .all(|l| l["detail"]["fingerprint"] == "76251d4043ef079b"
                && l["trace_id"] == oom["trace_id"])
    );

    assert_eq!(db["failure_key"], DB_FAILURE);
    assert_eq!(db["severity"], "critical");
    assert_eq!(db["alerts"]["records"][0]["state"], "resolved");
    assert_eq!(lines(&db, "alert").len(), 2, "{db:#}");
    app.stop().await;
}

async fn a_firing_redelivered_after_its_resolution_changes_nothing_even_once_the_incident_closed(
    backend: Backend,
) {
    // Goal: Alertmanager retries a failed delivery late; a firing that arrives after its own
    // resolution must not re-open the alert, nor open a new incident once its incident is
    // closed; a resolution of an alert nobody opened records nothing; a new firing (a new
    // start) after the close does open a new incident. Method: resolved DB alert first; then
    // OOM firing, resolved, firing again; the incident closed through the store as the agent
    // would; the firing and resolution delivered again, then a new firing.
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;

    let orphan = deliver(&app, &fixture(DB_RESOLVED)).await;
    assert_eq!(outcomes(&orphan), ["no-incident"], "{orphan:#}");
    assert_eq!(orphan["alerts"][0]["incident"], Value::Null);
    assert_eq!(incident_count(&app).await, 0);

    let id = incident_of(&deliver(&app, &fixture(OOM_FIRING)).await);
    deliver(&app, &fixture(OOM_RESOLVED)).await;
    let resolved = incident(&app, &id).await;
    let late = deliver(&app, &fixture(OOM_FIRING)).await;
    assert_eq!(outcomes(&late), ["unchanged"], "{late:#}");
    assert_eq!(incident_of(&late), id);
    assert_eq!(incident(&app, &id).await, resolved, "nothing written");
    assert_eq!(resolved["alerts"]["records"][0]["state"], "resolved");

    // The incident ends, as its actor would end it: its failure is let go.
    let store = Store::connect(&helpers::config(&db).db).await.unwrap();
    let mut closed = store
        .get_incident(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    closed.status = Status::Resolved;
    closed.alerts_seen_rev = closed.alerts_rev;
    let _ = store.save(&closed).await.unwrap();
    let closed = incident(&app, &id).await;
    assert_eq!(closed["status"], "resolved");

    for name in [OOM_FIRING, OOM_RESOLVED] {
        let answer = deliver(&app, &fixture(name)).await;
        assert_eq!(outcomes(&answer), ["unchanged"], "{name}: {answer:#}");
        assert_eq!(
            incident_of(&answer),
            id,
            "answered from the closed incident"
        );
    }
    assert_eq!(
        incident_count(&app).await,
        1,
        "a late redelivery opens nothing"
    );
    assert_eq!(incident(&app, &id).await, closed);

    // The same alert firing anew (a later start) is the failure coming back.
    let mut again = fixture(OOM_FIRING);
    again["alerts"][0]["startsAt"] = json!("2026-11-26T07:00:00Z");
    let answer = deliver(&app, &again).await;
    assert_eq!(outcomes(&answer), ["opened"], "{answer:#}");
    assert_ne!(incident_of(&answer), id);
    assert_eq!(incident_count(&app).await, 2);
    store.close().await;
    app.stop().await;
}

async fn alert_severities_map_onto_the_incident_severity(backend: Backend) {
    // Goal: the `severity` label gives the incident's severity. Method: one alert per
    // severity label (each its own failure: names no catalog routes), the incidents read.
    let (_db, app) = app_on(backend).await;
    for (i, (label, expected)) in [
        (Some("critical"), "critical"),
        (Some("page"), "critical"),
        (Some("error"), "high"),
        (Some("warning"), "medium"),
        (Some("info"), "low"),
        (Some("none"), "low"),
        (Some("whatever"), "medium"),
        (None, "medium"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut labels = json!({ "namespace": "nowhere", "team": "sre" });
        if let Some(label) = label {
            labels["severity"] = json!(label);
        }
        let alert = am_alert(
            &format!("UnroutedAlert{i}"),
            labels,
            "firing",
            "2026-11-26T05:00:00Z",
            &format!("{:016x}", 0xfeed0 + i),
        );
        let answer = deliver(&app, &payload(vec![alert])).await;
        assert_eq!(outcomes(&answer), ["opened"], "{answer:#}");
        let opened = incident(&app, &incident_of(&answer)).await;
        assert_eq!(opened["severity"], expected, "severity label {label:?}");
        assert_eq!(
            opened["failure_key"],
            format!("alertmanager/{:016x}", 0xfeed0 + i),
            "an alert no service claims is its own failure"
        );
    }
    app.stop().await;
}

async fn a_broken_delivery_is_refused_whole_and_a_bad_alert_alone_with_every_bad_field_named(
    backend: Backend,
) {
    // Goal: a payload whose envelope the intake cannot trust, or with no alert it can take,
    // is refused whole as a problem naming the bad fields, and nothing of it is recorded; an
    // alert that cannot be taken is refused alone (listed under `refused`), and the good
    // alerts of its delivery are recorded (Alertmanager does not retry a 4xx). Method: bad
    // payloads built from captured ones; incidents counted and read before and after.
    let (_db, app) = app_on(backend).await;
    let db_alert = alert_of(DB_FIRING);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut alert = db_alert.clone();
        edit(&mut alert);
        payload(vec![alert])
    };
    let mut version_5 = fixture(DB_FIRING);
    version_5["version"] = json!("5");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("version 5", version_5, "version"),
        (
            "a pending alert",
            with(&|a| a["status"] = json!("pending")),
            "alerts[0].status",
        ),
        (
            "no alertname",
            with(&|a| {
                a["labels"].as_object_mut().unwrap().remove("alertname");
            }),
            "alerts[0].labels.alertname",
        ),
        (
            "a fingerprint with spaces",
            with(&|a| a["fingerprint"] = json!("bc5b 6553 6793 4a99")),
            "alerts[0].fingerprint",
        ),
        ("no alerts", payload(vec![]), "alerts"),
    ];
    for (what, body, field) in cases {
        let p = problem(post_webhook(&app, &body).await, 422, "validation-failed").await;
        assert!(
            error_fields(&p).iter().any(|f| f == field),
            "{what}: {field} not named in {p:#}"
        );
    }
    // A field of the wrong shape is refused before any alert is looked at.
    problem(
        post_webhook(&app, &with(&|a| a["startsAt"] = json!("yesterday"))).await,
        422,
        "validation-failed",
    )
    .await;
    let raw = |content_type: &'static str, body: &'static [u8]| {
        app.client
            .post(app.url("/webhooks/alertmanager"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    problem(
        raw("application/json", b"{\"version\": \"4\", \"alerts\": [")
            .await
            .unwrap(),
        400,
        "malformed-json",
    )
    .await;
    let valid = serde_json::to_vec(&fixture(DB_FIRING)).unwrap();
    let response = app
        .client
        .post(app.url("/webhooks/alertmanager"))
        .header("content-type", "text/plain")
        .body(valid)
        .send()
        .await
        .unwrap();
    problem(response, 415, "unsupported-media-type").await;
    assert_eq!(incident_count(&app).await, 0, "nothing refused was stored");

    // A label value with a bidi control is cleaned, not refused.
    let cleaned = deliver(
        &app,
        &with(&|a| a["labels"]["instance"] = json!("db\u{202E}0")),
    )
    .await;
    let db_id = incident_of(&cleaned);
    assert_eq!(
        incident(&app, &db_id).await["alerts"]["records"][0]["labels"]["instance"],
        "db0"
    );

    // A delivery whose first alert is good and second bad records the good one and lists
    // the bad one under `refused`, whether the good one opens, joins or resolves.
    let id = incident_of(&deliver(&app, &fixture(OOM_FIRING)).await);
    let mut pending = alert_of(DB_FIRING);
    pending["status"] = json!("pending");
    let mut spaced = alert_of(DB_FIRING);
    spaced["fingerprint"] = json!("not hex!");
    let mut nameless = alert_of(DB_FIRING);
    nameless["labels"]
        .as_object_mut()
        .unwrap()
        .remove("alertname");
    let joining = am_alert(
        "KubePodOOMKilled",
        json!({ "namespace": "shop", "service": "checkout-api", "pod": "checkout-api-x1", "severity": "critical" }),
        "firing",
        "2026-11-26T05:12:00Z",
        "0123456789abcdef",
    );
    for (good, bad, field, outcome) in [
        (
            alert_of(DB_FIRING),
            pending,
            "alerts[1].status",
            "unchanged",
        ),
        (joining, spaced, "alerts[1].fingerprint", "joined"),
        (
            alert_of(OOM_RESOLVED),
            nameless,
            "alerts[1].labels.alertname",
            "resolved",
        ),
    ] {
        let answer = deliver(&app, &payload(vec![good, bad])).await;
        assert_eq!(answer["alerts"][0]["outcome"], outcome, "{answer:#}");
        let refused = answer["refused"].as_array().unwrap();
        assert_eq!(refused.len(), 1, "{answer:#}");
        assert_eq!(refused[0]["index"], 1);
        assert!(
            refused[0]["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field} in {answer:#}"
        );
    }
    assert_eq!(
        incident(&app, &id).await["alerts"]["records"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "the OOM alert and the one that joined it"
    );
    // A broken envelope names its fields, and only those: the alerts are not looked at.
    let mut worst = fixture(DB_FIRING);
    worst["version"] = json!("5");
    worst["alerts"][0]["status"] = json!("pending");
    let fields =
        error_fields(&problem(post_webhook(&app, &worst).await, 422, "validation-failed").await);
    assert_eq!(fields, ["version"]);
    assert_eq!(
        incident_count(&app).await,
        2,
        "the database and OOM incidents only"
    );
    app.stop().await;
}

/// Delivers every body in `bodies` at once (released together by a barrier); returns each
/// answer's status and body, in the order of `bodies`.
async fn deliver_together(app: &Arc<TestApp>, bodies: Vec<Value>) -> Vec<(u16, Value)> {
    let barrier = Arc::new(Barrier::new(bodies.len()));
    let mut tasks = JoinSet::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let (app, barrier) = (app.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let response = post_webhook(&app, &body).await;
            let status = response.status().as_u16();
            (
                i,
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }
    answers.sort_by_key(|(i, ..)| *i);
    answers.into_iter().map(|(_, s, b)| (s, b)).collect()
}

async fn thirty_two_concurrent_deliveries_of_one_alert_open_exactly_one_incident(backend: Backend) {
    // Goal: Alertmanager's replicas (and its retries) deliver one group at the same moment;
    // one incident opens. Method: 32 deliveries of the captured firing, released together;
    // the outcomes tallied and the incidents counted.
    let (_db, app) = app_on(backend).await;
    let app = Arc::new(app);
    let answers = deliver_together(&app, vec![fixture(OOM_FIRING); 32]).await;
    let mut tally: HashMap<String, usize> = HashMap::new();
    let mut ids = BTreeSet::new();
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer:#}");
        for outcome in outcomes(answer) {
            *tally.entry(outcome).or_default() += 1;
        }
        ids.insert(incident_of(answer));
    }
    assert_eq!(tally.get("opened"), Some(&1), "{tally:?}");
    assert_eq!(tally.get("unchanged"), Some(&31), "{tally:?}");
    assert_eq!(ids.len(), 1, "every answer names the one incident");
    assert_eq!(incident_count(&app).await, 1);
    let id = ids.into_iter().next().unwrap();
    let opened = incident(&app, &id).await;
    assert_eq!(opened["alerts"]["records"].as_array().unwrap().len(), 1);
    assert_eq!(lines(&opened, "alert").len(), 1, "{opened:#}");
    Arc::into_inner(app).unwrap().stop().await;
}

async fn thirty_two_concurrent_alerts_of_one_failure_all_land_on_one_incident(backend: Backend) {
    // Goal: alerts of one failure from 32 pods arriving at once each land on the failure's
    // one incident; no compare-and-swap loser is lost. Method: 32 deliveries, each one alert
    // with its own fingerprint and `pod` label, released together; the incident's records
    // read back.
    let (_db, app) = app_on(backend).await;
    let app = Arc::new(app);
    let fingerprints: Vec<String> = (0..32).map(|i| format!("{:016x}", 0xa000 + i)).collect();
    let bodies = fingerprints
        .iter()
        .enumerate()
        .map(|(i, fp)| {
            payload(vec![am_alert(
                "KubePodOOMKilled",
                json!({ "namespace": "shop", "service": "checkout-api", "pod": format!("checkout-api-x{i}"), "severity": "critical" }),
                "firing",
                "2026-11-26T05:11:35.853Z",
                fp,
            )])
        })
        .collect();
    let answers = deliver_together(&app, bodies).await;
    let mut tally: HashMap<String, usize> = HashMap::new();
    let mut ids = BTreeSet::new();
    let mut acknowledged = BTreeSet::new();
    let mut refused = Vec::new();
    for ((status, answer), fp) in answers.iter().zip(&fingerprints) {
        if *status != 200 {
            refused.push(format!("{fp}: {status} {}", answer["detail"]));
            continue;
        }
        for outcome in outcomes(answer) {
            *tally.entry(outcome).or_default() += 1;
        }
        assert_eq!(answer["alerts"][0]["fingerprint"], fp.as_str());
        assert_eq!(answer["alerts"][0]["failure"], OOM_FAILURE);
        ids.insert(incident_of(answer));
        acknowledged.insert(fp.clone());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(incident_count(&app).await, 1);
    let one = incident(&app, ids.first().unwrap()).await;
    let recorded: BTreeSet<String> = one["alerts"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fingerprint"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        recorded, acknowledged,
        "every alert answered 200 is recorded, and only those: {one:#}"
    );
    // Alertmanager would retry a refused delivery, but a burst of one failure's alerts is
    // ordinary traffic: each must be taken, not refused for losing races to its siblings.
    assert!(
        refused.is_empty(),
        "{} of 32 deliveries refused: {refused:#?}",
        refused.len()
    );
    assert_eq!(tally.get("opened"), Some(&1), "{tally:?}");
    assert_eq!(tally.get("joined"), Some(&31), "{tally:?}");
    assert_eq!(recorded, fingerprints.iter().cloned().collect());
    assert_eq!(lines(&one, "alert").len(), 32);
    Arc::into_inner(app).unwrap().stop().await;
}

async fn the_webhook_token_is_checked_before_anything_else(backend: Backend) {
    // Goal: with `--alertmanager-token`, only a request carrying it is heard, and one
    // without it learns nothing of what the payload should be. Method: the app built with
    // the token; deliveries with no, wrong and right credentials, and garbage without any.
    let db = TestDb::new(backend).await;
    let mut config = helpers::config(&db);
    config.http.alertmanager_token = Some(WEBHOOK_TOKEN.into());
    let app = spawn_app_with(config).await;
    let send = |authorization: Option<String>, content_type: &'static str, body: Vec<u8>| {
        let mut request = app
            .client
            .post(app.url("/webhooks/alertmanager"))
            .header("content-type", content_type)
            .body(body);
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        request.send()
    };
    let valid = serde_json::to_vec(&fixture(OOM_FIRING)).unwrap();
    for (what, authorization, content_type, body) in [
        ("no token", None, "application/json", valid.clone()),
        (
            "a wrong token",
            Some("Bearer not-the-token".to_owned()),
            "application/json",
            valid.clone(),
        ),
        (
            "the token with a tail",
            Some(format!("Bearer {WEBHOOK_TOKEN}x")),
            "application/json",
            valid.clone(),
        ),
        (
            "the token as Basic credentials",
            Some(format!("Basic {WEBHOOK_TOKEN}")),
            "application/json",
            valid.clone(),
        ),
        ("garbage", None, "application/json", b"{not json".to_vec()),
        ("the wrong content type", None, "text/plain", valid.clone()),
        ("an empty body", None, "application/json", vec![]),
    ] {
        let response = send(authorization, content_type, body).await.unwrap();
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some("Bearer".to_owned()),
            "{what}"
        );
        problem(response, 401, "unauthorized").await;
    }
    assert_eq!(
        incident_count(&app).await,
        0,
        "nothing unauthenticated stored"
    );

    let bearer = Some(format!("Bearer {WEBHOOK_TOKEN}"));
    let response = send(bearer.clone(), "application/json", b"{not json".to_vec())
        .await
        .unwrap();
    problem(response, 400, "malformed-json").await;
    let response = send(bearer, "application/json", valid.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(outcomes(&answer), ["opened"]);
    assert_eq!(incident_count(&app).await, 1);
    // The other endpoints do not take the webhook's token, and do not need it.
    assert_eq!(app.get("/incidents").await.status(), 200);
    app.stop().await;
}

async fn post(app: &TestApp, body: &Value) -> (u16, Value) {
    let response = app.post_incident(body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn reports_of_one_failure_through_post_incidents_join_its_open_incident(backend: Backend) {
    // Goal: `POST /incidents` coalesces like the webhook: the specific and the generic name
    // of one failure are one incident (202, then 200 coalesced), and a report joins the
    // incident an Alertmanager alert opened. Method: reports posted one after another; the
    // answers, the count and the incident's alert records read.
    let (_db, app) = app_on(backend).await;
    let (s1, first) = post(
        &app,
        &json!({
            "title": "checkout-api OOM", "severity": "critical",
            "alert_type": "CheckoutApiOOMKilled",
        }),
    )
    .await;
    assert_eq!(s1, 202, "{first:#}");
    assert_eq!(first["coalesced"], false);
    assert_eq!(first["failure"], OOM_FAILURE);
    let (s2, second) = post(
        &app,
        &json!({
            "title": "a pod was OOMKilled", "severity": "critical",
            "alert_type": "KubePodOOMKilled",
            "labels": { "namespace": "shop", "pod": "checkout-api-7d9f-x2k" },
        }),
    )
    .await;
    assert_eq!(s2, 200, "{second:#}");
    assert_eq!(second["coalesced"], true);
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["trace_id"], first["trace_id"]);
    // The same report again counts once more on its record.
    let (s3, third) = post(
        &app,
        &json!({
            "title": "checkout-api OOM again", "severity": "critical",
            "alert_type": "CheckoutApiOOMKilled",
        }),
    )
    .await;
    assert_eq!((s3, &third["id"]), (200, &first["id"]), "{third:#}");
    assert_eq!(incident_count(&app).await, 1);
    let id = first["id"].as_str().unwrap();
    let one = incident(&app, id).await;
    assert_eq!(one["failure_key"], OOM_FAILURE);
    assert_eq!(one["title"], "checkout-api OOM", "the first report's");
    let records = one["alerts"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{one:#}");
    let reports: Vec<(&Value, &Value)> = records
        .iter()
        .map(|r| (&r["alertname"], &r["reports"]))
        .collect();
    assert_eq!(
        reports,
        [
            (&json!("CheckoutApiOOMKilled"), &json!(2)),
            (&json!("KubePodOOMKilled"), &json!(1))
        ]
    );
    assert!(records.iter().all(|r| r["source"] == "api"));
    assert_eq!(lines(&one, "alert").len(), 3, "{one:#}");

    // Alertmanager's alert for the same failure joins the reports' incident.
    let answer = deliver(&app, &fixture(OOM_FIRING)).await;
    assert_eq!(outcomes(&answer), ["joined"], "{answer:#}");
    assert_eq!(incident_of(&answer), id);
    assert_eq!(incident_count(&app).await, 1);

    // And a report joins an incident Alertmanager opened.
    let db_id = incident_of(&deliver(&app, &fixture(DB_FIRING)).await);
    let (status, joined) = post(
        &app,
        &json!({
            "title": "payments-db down", "severity": "high", "alert_type": "PaymentsDbDown",
        }),
    )
    .await;
    assert_eq!(status, 200, "{joined:#}");
    assert_eq!(joined["coalesced"], true);
    assert_eq!(joined["id"], db_id.as_str());
    assert_eq!(joined["failure"], DB_FAILURE);
    assert_eq!(incident_count(&app).await, 2);
    app.stop().await;
}

async fn thirty_two_concurrent_reports_of_one_failure_are_all_counted_on_one_incident(
    backend: Backend,
) {
    // Goal: clients reporting one failure at the same moment through `POST /incidents` get
    // one incident, and every report is counted on it (each one is a write of the alert's
    // record, so they race). Method: 32 identical reports released together; the answers,
    // the count and the record's `reports` read back.
    let (_db, app) = app_on(backend).await;
    let app = Arc::new(app);
    let barrier = Arc::new(Barrier::new(32));
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let (app, barrier) = (app.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            post(
                &app,
                &json!({
                    "title": "checkout-api OOM", "severity": "critical",
                    "alert_type": "CheckoutApiOOMKilled",
                }),
            )
            .await
        });
    }
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut ids = BTreeSet::new();
    let mut refused = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        let (status, body) = answer.unwrap();
        *statuses.entry(status).or_default() += 1;
        match status {
            200 | 202 => {
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            _ => refused.push(format!("{status} {}", body["detail"])),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(incident_count(&app).await, 1);
    let one = incident(&app, ids.first().unwrap()).await;
    let records = one["alerts"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{one:#}");
    let accepted = statuses.get(&200).unwrap_or(&0) + statuses.get(&202).unwrap_or(&0);
    assert_eq!(
        records[0]["reports"], accepted,
        "every report answered 2xx is counted, and only those"
    );
    assert!(
        refused.is_empty(),
        "{} of 32 reports refused: {refused:#?}",
        refused.len()
    );
    assert_eq!(statuses.get(&202), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get(&200), Some(&31), "{statuses:?}");
    assert_eq!(records[0]["reports"], 32);
    Arc::into_inner(app).unwrap().stop().await;
}

async fn reports_that_opt_out_or_name_no_alert_type_are_never_coalesced(backend: Backend) {
    // Goal: `"coalesce": false` forces a new incident, a report with no alert type has
    // nothing to coalesce on, and a request with an `Idempotency-Key` keeps that key's own
    // semantics. Method: posts of each kind beside an open incident of the failure; ids and
    // the count compared.
    let (_db, app) = app_on(backend).await;
    let report = json!({
        "title": "checkout-api OOM", "severity": "critical",
        "alert_type": "CheckoutApiOOMKilled",
    });
    let (status, first) = post(&app, &report).await;
    assert_eq!(status, 202);

    let mut forced = report.clone();
    forced["coalesce"] = json!(false);
    let (status, own) = post(&app, &forced).await;
    assert_eq!(status, 202, "{own:#}");
    assert_ne!(own["id"], first["id"]);
    assert_eq!(
        incident(&app, own["id"].as_str().unwrap()).await["failure_key"],
        Value::Null
    );

    let untyped =
        json!({ "title": "checkout-api OOM", "severity": "critical", "service": "checkout-api" });
    let (s1, a) = post(&app, &untyped).await;
    let (s2, b) = post(&app, &untyped).await;
    assert_eq!((s1, s2), (202, 202), "{a:#} {b:#}");
    assert_ne!(a["id"], b["id"]);
    assert!(a.get("coalesced").is_none(), "{a:#}");

    let keyed = app
        .client
        .post(app.url("/incidents"))
        .header("idempotency-key", "report-7")
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 202);
    let keyed: Value = keyed.json().await.unwrap();
    assert_ne!(keyed["id"], first["id"]);
    assert_eq!(incident_count(&app).await, 5);

    // The failure's open incident is still the first one: a coalesced report joins it.
    let (status, joined) = post(&app, &report).await;
    assert_eq!((status, &joined["id"]), (200, &first["id"]), "{joined:#}");
    assert_eq!(incident_count(&app).await, 5);
    app.stop().await;
}

/// Puts incident `id` in the state of an escalated incident waiting for a human: status
/// `escalated`, and action #1 a proposed `restart-pod` with its proposal's digest and
/// `expires_at`. Returns the digest.
async fn escalate_with_proposal(store: &Store, id: &str, expires_at: DateTime<Utc>) -> String {
    let id: Uuid = id.parse().unwrap();
    let mut incident = store.get_incident(id).await.unwrap().unwrap();
    incident.status = Status::Escalated;
    let mut record = ActionRecord {
        seq: 1,
        server: "remediation".into(),
        tool: "restart-pod".into(),
        args: json!({ "podName": "payments-db-0", "idempotencyKey": format!("{id}:1") }),
        idempotency_key: ActionRecord::idempotency_key(id, 1),
        decision: ActionDecision::Proposed,
        reason: "the runbook's restart needs a human for a stateful service".into(),
        status: ActionStatus::Proposed,
        result: None,
        started_at: sre_agent::incident::now(),
        finished_at: None,
        trace_id: incident.trace_id.clone(),
        baseline: Some(json!({ "pod_uid": "u1" })),
        verified: None,
        proposal: None,
        human: None,
    };
    let digest = approval::digest(id, &record);
    record.proposal = Some(Proposal {
        digest: digest.clone(),
        expires_at,
    });
    incident.actions_taken.push(record);
    let _ = store.save(&incident).await.unwrap();
    digest
}

/// Opens an incident through the API and escalates it with one proposal; returns its id and
/// the proposal's digest.
async fn proposal_on(app: &TestApp, store: &Store, expires_at: DateTime<Utc>) -> (String, String) {
    let id = app
        .open(&json!({
            "title": "payments-db accepts no connections", "severity": "critical",
            "alert_type": "PostgresqlDown", "service": "payments-db", "coalesce": false,
        }))
        .await;
    let digest = escalate_with_proposal(store, &id, expires_at).await;
    (id, digest)
}

fn in_an_hour() -> DateTime<Utc> {
    sre_agent::incident::now() + Duration::hours(1)
}

/// A decision on action `seq` of incident `id` with `headers` and, when given, a JSON body.
async fn decide(
    app: &TestApp,
    id: &str,
    seq: &str,
    verdict: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/incidents/{id}/actions/{seq}/{verdict}")));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("the decision is answered")
}

fn quoted(digest: &str) -> String {
    format!("\"{digest}\"")
}

async fn store_of(db: &TestDb) -> Store {
    Store::connect(&helpers::config(db).db).await.unwrap()
}

async fn a_decision_needs_a_decider_the_proposals_digest_and_a_live_proposal(backend: Backend) {
    // Goal: a decision is refused, with the status that says why, unless it names who
    // decides, the proposal as it is now, a proposal that exists and has not expired, on an
    // incident waiting for a human; nothing refused is recorded. Method: one escalated
    // incident with a proposal, one whose proposal expired and one not escalated; decisions
    // with each precondition broken in turn; the incident read back unchanged.
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let store = store_of(&db).await;
    let (id, digest) = proposal_on(&app, &store, in_an_hour()).await;
    let before = incident(&app, &id).await;
    assert_eq!(before["status"], "escalated");
    assert_eq!(
        before["actions_taken"][0]["proposal"]["digest"],
        digest.as_str()
    );
    let alice = ("x-decided-by", "alice".to_owned());
    let matching = ("if-match", quoted(&digest));

    // Who decides is asked first: without it, 422 even with no If-Match.
    for headers in [vec![matching.clone()], vec![]] {
        let p = problem(
            decide(&app, &id, "1", "approve", &headers, None).await,
            422,
            "validation-failed",
        )
        .await;
        assert_eq!(error_fields(&p), ["X-Decided-By"], "{p:#}");
    }
    for blank in ["   ", "mallory\u{202E}"] {
        let headers = [("x-decided-by", blank.to_owned()), matching.clone()];
        problem(
            decide(&app, &id, "1", "approve", &headers, None).await,
            422,
            "validation-failed",
        )
        .await;
    }
    problem(
        decide(
            &app,
            &id,
            "1",
            "approve",
            std::slice::from_ref(&alice),
            None,
        )
        .await,
        428,
        "precondition-required",
    )
    .await;
    for wrong in [
        quoted("0000"),
        quoted(&digest[1..]),
        format!("W/\"{}\"", &digest[..31]),
    ] {
        let p = problem(
            decide(
                &app,
                &id,
                "1",
                "approve",
                &[alice.clone(), ("if-match", wrong)],
                None,
            )
            .await,
            412,
            "precondition-failed",
        )
        .await;
        assert!(p["detail"].as_str().unwrap().contains(&digest), "{p:#}");
    }
    let ok = [alice.clone(), matching.clone()];
    problem(
        decide(&app, &id, "2", "approve", &ok, None).await,
        404,
        "not-found",
    )
    .await;
    problem(
        decide(&app, &Uuid::now_v7().to_string(), "1", "approve", &ok, None).await,
        404,
        "not-found",
    )
    .await;
    for (bad_id, bad_seq) in [
        ("not-a-uuid", "1"),
        (id.as_str(), "0"),
        (id.as_str(), "-1"),
        (id.as_str(), "one"),
        (id.as_str(), "99999999999"),
    ] {
        problem(
            decide(&app, bad_id, bad_seq, "approve", &ok, None).await,
            400,
            "bad-request",
        )
        .await;
    }
    // The body, when there is one, is a JSON object with nothing but a comment.
    problem(
        decide(
            &app,
            &id,
            "1",
            "approve",
            &ok,
            Some(&json!({ "comment": "ok", "force": true })),
        )
        .await,
        422,
        "validation-failed",
    )
    .await;
    let response = app
        .client
        .post(app.url(&format!("/incidents/{id}/actions/1/approve")))
        .header("x-decided-by", "alice")
        .header("if-match", quoted(&digest))
        .header("content-type", "application/json")
        .body("{\"comment\": ")
        .send()
        .await
        .unwrap();
    problem(response, 400, "malformed-json").await;
    assert_eq!(
        incident(&app, &id).await,
        before,
        "nothing refused was recorded"
    );

    // An expired proposal is gone, whatever else is right.
    let (expired, expired_digest) = proposal_on(
        &app,
        &store,
        sre_agent::incident::now() - Duration::seconds(1),
    )
    .await;
    let headers = [alice.clone(), ("if-match", quoted(&expired_digest))];
    problem(
        decide(&app, &expired, "1", "approve", &headers, None).await,
        410,
        "gone",
    )
    .await;
    problem(
        decide(&app, &expired, "1", "reject", &headers, None).await,
        410,
        "gone",
    )
    .await;
    assert_eq!(
        incident(&app, &expired).await["actions_taken"][0]["status"],
        "proposed"
    );

    // A proposal on an incident that no longer waits for a human conflicts.
    let (moved, moved_digest) = proposal_on(&app, &store, in_an_hour()).await;
    let mut analyzing = store
        .get_incident(moved.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    analyzing.status = Status::Analyzing;
    let _ = store.save(&analyzing).await.unwrap();
    let headers = [alice, ("if-match", quoted(&moved_digest))];
    problem(
        decide(&app, &moved, "1", "approve", &headers, None).await,
        409,
        "conflict",
    )
    .await;
    store.close().await;
    app.stop().await;
}

async fn an_approval_moves_the_incident_to_remediating_once_and_a_later_rejection_conflicts(
    backend: Backend,
) {
    // Goal: an approval of exactly the proposal shown (its digest quoted, or as a weak tag)
    // is recorded once, with who and why, and moves the incident to `remediating`; the same
    // approval again changes nothing; a rejection afterwards conflicts. Method: two
    // escalated incidents; decisions posted; the answers and the incidents read back.
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let store = store_of(&db).await;
    let (id, digest) = proposal_on(&app, &store, in_an_hour()).await;
    let headers = [
        ("x-decided-by", "alice".to_owned()),
        ("if-match", quoted(&digest)),
    ];
    let response = decide(
        &app,
        &id,
        "1",
        "approve",
        &headers,
        Some(&json!({ "comment": "the replica is in sync" })),
    )
    .await;
    assert_eq!(response.status(), 200);
    let trace_id = response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let approved: Value = response.json().await.unwrap();
    assert_eq!(approved["incident"], id.as_str());
    assert_eq!(approved["status"], "remediating");
    assert_eq!(approved["replayed"], false);
    let action = &approved["action"];
    assert_eq!(action["seq"], 1);
    assert_eq!(action["human"]["by"], "alice");
    assert_eq!(action["human"]["verdict"], "approved");
    assert_eq!(action["human"]["comment"], "the replica is in sync");
    assert_eq!(action["decision"], "approved");
    assert_eq!(action["status"], "planned");

    let stored = incident(&app, &id).await;
    assert_eq!(stored["trace_id"], trace_id.as_str());
    assert_eq!(stored["status"], "remediating");
    assert_eq!(
        stored["actions_taken"][0], *action,
        "the answer is the record"
    );
    let human = lines(&stored, "human");
    assert_eq!(human.len(), 1, "{stored:#}");
    assert_eq!(human[0]["detail"]["by"], "alice");
    assert_eq!(human[0]["detail"]["verdict"], "approved");
    assert_eq!(
        lines(&stored, "status").last().unwrap()["detail"]["to"],
        "remediating"
    );

    let again = decide(&app, &id, "1", "approve", &headers, None).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["replayed"], true);
    assert_eq!(again["action"], *action);
    assert_eq!(incident(&app, &id).await, stored, "a replay writes nothing");

    let bob = [
        ("x-decided-by", "bob".to_owned()),
        ("if-match", quoted(&digest)),
    ];
    let p = problem(
        decide(&app, &id, "1", "reject", &bob, None).await,
        409,
        "conflict",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("alice"), "{p:#}");
    assert_eq!(incident(&app, &id).await, stored);

    // The digest as a weak entity tag names the proposal too.
    let (weak, weak_digest) = proposal_on(&app, &store, in_an_hour()).await;
    let headers = [
        ("x-decided-by", "carol".to_owned()),
        ("if-match", format!("W/\"{weak_digest}\"")),
    ];
    let response = decide(&app, &weak, "1", "approve", &headers, None).await;
    assert_eq!(response.status(), 200);
    let approved: Value = response.json().await.unwrap();
    assert_eq!(approved["status"], "remediating");
    assert_eq!(approved["action"]["human"]["by"], "carol");
    store.close().await;
    app.stop().await;
}

async fn a_rejection_closes_the_proposal_and_leaves_the_incident_escalated(backend: Backend) {
    // Goal: a rejection runs nothing: the proposal is closed as rejected by that human and
    // the incident still waits for one; the rejection again is a replay; an approval after
    // it conflicts. Method: one escalated incident; decisions posted; the incident read.
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let store = store_of(&db).await;
    let (id, digest) = proposal_on(&app, &store, in_an_hour()).await;
    let bob = [
        ("x-decided-by", "bob".to_owned()),
        ("if-match", quoted(&digest)),
    ];
    let response = decide(&app, &id, "1", "reject", &bob, None).await;
    assert_eq!(response.status(), 200);
    let rejected: Value = response.json().await.unwrap();
    assert_eq!(rejected["status"], "escalated");
    assert_eq!(rejected["replayed"], false);
    assert_eq!(rejected["action"]["status"], "rejected");
    assert_eq!(rejected["action"]["decision"], "proposed");
    assert_eq!(rejected["action"]["human"]["by"], "bob");
    assert_eq!(rejected["action"]["human"]["verdict"], "rejected");
    assert!(rejected["action"]["finished_at"].is_string());

    let stored = incident(&app, &id).await;
    assert_eq!(stored["status"], "escalated");
    assert_eq!(stored["actions_taken"][0], rejected["action"]);
    let human = lines(&stored, "human");
    assert_eq!(human.len(), 1);
    assert_eq!(human[0]["detail"]["verdict"], "rejected");

    let again = decide(&app, &id, "1", "reject", &bob, None).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["replayed"], true);
    let alice = [
        ("x-decided-by", "alice".to_owned()),
        ("if-match", quoted(&digest)),
    ];
    problem(
        decide(&app, &id, "1", "approve", &alice, None).await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(incident(&app, &id).await, stored);
    store.close().await;
    app.stop().await;
}

async fn of_two_racing_decisions_on_one_proposal_exactly_one_wins(backend: Backend) {
    // Goal: an approval and a rejection of one proposal arriving together are not both
    // recorded: one wins, the other is refused, and the record shows the winner. Method:
    // eight escalated incidents; for each, alice approves and bob rejects, all sixteen
    // released together; the answers and every incident read.
    let db = TestDb::new(backend).await;
    let app = Arc::new(spawn_app(&db).await);
    let store = store_of(&db).await;
    let mut proposals = Vec::new();
    for _ in 0..8 {
        proposals.push(proposal_on(&app, &store, in_an_hour()).await);
    }
    let barrier = Arc::new(Barrier::new(proposals.len() * 2));
    let mut tasks = JoinSet::new();
    for (id, digest) in &proposals {
        for (verdict, by) in [("approve", "alice"), ("reject", "bob")] {
            let (app, barrier) = (app.clone(), barrier.clone());
            let (id, digest) = (id.clone(), digest.clone());
            tasks.spawn(async move {
                let headers = [
                    ("x-decided-by", by.to_owned()),
                    ("if-match", quoted(&digest)),
                ];
                barrier.wait().await;
                let response = decide(&app, &id, "1", verdict, &headers, None).await;
                let status = response.status().as_u16();
                (id, by, status, response.json::<Value>().await.unwrap())
            });
        }
    }
    let mut answers: HashMap<String, Vec<(&str, u16, Value)>> = HashMap::new();
    while let Some(answer) = tasks.join_next().await {
        let (id, by, status, body) = answer.unwrap();
        answers.entry(id).or_default().push((by, status, body));
    }
    for (id, _) in &proposals {
        let mut pair = answers.remove(id).unwrap();
        pair.sort_by_key(|(_, status, _)| *status);
        let statuses: Vec<u16> = pair.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(statuses, [200, 409], "{id}: {pair:#?}");
        let (winner, _, won) = &pair[0];
        assert_eq!(won["action"]["human"]["by"], *winner);
        assert_eq!(pair[1].2["type"], "urn:sre-agent:problem:conflict");
        let stored = incident(&app, id).await;
        assert_eq!(
            stored["actions_taken"][0]["human"]["by"], *winner,
            "{stored:#}"
        );
        assert_eq!(lines(&stored, "human").len(), 1, "{stored:#}");
        let expected = if *winner == "alice" {
            ("remediating", "approved")
        } else {
            ("escalated", "rejected")
        };
        assert_eq!(
            (
                &stored["status"],
                &stored["actions_taken"][0]["human"]["verdict"]
            ),
            (&json!(expected.0), &json!(expected.1))
        );
    }
    store.close().await;
    Arc::into_inner(app).unwrap().stop().await;
}

async fn with_approver_tokens_the_token_names_the_decider_whatever_the_headers_say(
    backend: Backend,
) {
    // Goal: with `--approver-tokens`, only an approver's token decides, and the decision is
    // recorded under the token's name, never a name the request claims. Method: the app
    // built with alice's token; decisions with no, wrong and right tokens, the right one
    // with `X-Decided-By: mallory`; the record read.
    let db = TestDb::new(backend).await;
    let mut config = helpers::config(&db);
    config.http.approver_tokens = vec![("alice".into(), ALICE_TOKEN.into())];
    let app = spawn_app_with(config).await;
    let store = store_of(&db).await;
    let (id, digest) = proposal_on(&app, &store, in_an_hour()).await;
    let before = incident(&app, &id).await;
    let matching = ("if-match", quoted(&digest));
    let mallory = ("x-decided-by", "mallory".to_owned());
    for (what, headers) in [
        ("no token", vec![matching.clone(), mallory.clone()]),
        (
            "a wrong token",
            vec![
                matching.clone(),
                ("authorization", "Bearer alice-token-9876543210".to_owned()),
            ],
        ),
        (
            "the token as Basic credentials",
            vec![
                matching.clone(),
                ("authorization", format!("Basic {ALICE_TOKEN}")),
            ],
        ),
        // Credentials are checked before the precondition.
        ("no token and no If-Match", vec![]),
    ] {
        let response = decide(&app, &id, "1", "approve", &headers, None).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
        problem(response, 401, "unauthorized").await;
    }
    assert_eq!(incident(&app, &id).await, before);

    let headers = [
        matching,
        mallory,
        ("authorization", format!("Bearer {ALICE_TOKEN}")),
    ];
    let response = decide(&app, &id, "1", "approve", &headers, None).await;
    assert_eq!(response.status(), 200);
    let approved: Value = response.json().await.unwrap();
    assert_eq!(approved["action"]["human"]["by"], "alice");
    let stored = incident(&app, &id).await;
    assert_eq!(stored["status"], "remediating");
    assert_eq!(stored["actions_taken"][0]["human"]["by"], "alice");
    assert_eq!(lines(&stored, "human")[0]["detail"]["by"], "alice");
    store.close().await;
    app.stop().await;
}
