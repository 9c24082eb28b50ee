//! The HTTP API, end to end against the real application and a real database: SQLite always,
//! PostgreSQL too when `TEST_DATABASE_URL` is set. Assertions are on statuses, bodies and
//! rows read back, never on log text.

mod alerts;
mod connections;
#[path = "../support/db.rs"]
mod db;
mod helpers;
mod store;

use std::collections::HashSet;

use helpers::{Backend, TestApp, TestDb, assert_problem, on_each_backend, spawn_app};
use serde_json::{Value, json};

on_each_backend!(
    an_opened_incident_reads_back_whole_with_its_trace_id,
    a_valid_traceparent_sets_the_trace_id_and_an_invalid_one_is_replaced,
    the_list_is_newest_first_and_its_pages_cover_every_incident_once,
    the_list_filters_by_status_severity_and_trace_id,
    every_bad_request_is_a_clear_problem_and_never_a_5xx,
    garbage_bodies_are_refused_without_a_5xx_and_store_nothing,
    two_hundred_concurrent_posts_are_all_committed,
    an_incident_survives_a_restart_of_the_service,
    health_and_readiness_answer,
    metrics_are_served_to_anyone_as_openmetrics_text_and_count_what_was_opened,
    a_retry_with_the_same_idempotency_key_opens_nothing_new,
    racing_retries_with_one_idempotency_key_open_one_incident,
);

fn oom_alert() -> Value {
    json!({
        "title": "checkout-api pod OOMKilled",
        "description": "checkout-api-7d9f-x2k is crash-looping: OOMKilled",
        "severity": "critical",
        "alert_type": "PodOOMKilled",
        "service": "checkout-api",
        "labels": {"namespace": "shop", "pod": "checkout-api-7d9f-x2k"},
        // Each request opens its own incident: this suite is about storing and reading
        // them; `alerts.rs` is about reports of one failure joining one incident.
        "coalesce": false
    })
}

async fn app_on(backend: Backend) -> (TestDb, TestApp) {
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    (db, app)
}

async fn an_opened_incident_reads_back_whole_with_its_trace_id(backend: Backend) {
    let (_db, app) = app_on(backend).await;

    let response = app.post_incident(&oom_alert()).await;
    assert_eq!(response.status(), 202);
    let header_trace = response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(accepted["status"], "new");
    assert_eq!(accepted["trace_id"], header_trace.as_str());
    assert_eq!(location, format!("/incidents/{id}"));
    assert_eq!(header_trace.len(), 32);

    let response = app.get(&location).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-trace-id"], header_trace.as_str());
    let incident: Value = response.json().await.unwrap();
    assert_eq!(incident["id"], id);
    assert_eq!(incident["status"], "new");
    assert_eq!(incident["title"], "checkout-api pod OOMKilled");
    assert_eq!(incident["severity"], "critical");
    assert_eq!(
        incident["description"],
        "checkout-api-7d9f-x2k is crash-looping: OOMKilled"
    );
    assert_eq!(incident["trace_id"], header_trace.as_str());
    assert_eq!(incident["rca_analysis"], Value::Null);
    assert_eq!(incident["actions_taken"], json!([]));
    assert_eq!(incident["created_at"], incident["updated_at"]);
    let metadata = &incident["metadata"];
    assert_eq!(metadata["trace_id"], header_trace.as_str());
    assert_eq!(metadata["alert_type"], "PodOOMKilled");
    assert_eq!(metadata["service"], "checkout-api");
    assert_eq!(metadata["source"], "api");
    assert_eq!(metadata["labels"]["pod"], "checkout-api-7d9f-x2k");
    let timeline = metadata["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0]["kind"], "status");
    assert_eq!(timeline[0]["trace_id"], header_trace.as_str());
    assert_eq!(timeline[0]["detail"]["status"], "new");
    app.stop().await;
}

async fn a_valid_traceparent_sets_the_trace_id_and_an_invalid_one_is_replaced(backend: Backend) {
    let (_db, app) = app_on(backend).await;
    let send = |traceparent: &'static str| {
        app.client
            .post(app.url("/incidents"))
            .header("traceparent", traceparent)
            .json(&oom_alert())
            .send()
    };

    let response = send("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let stored = app
        .get_json(&format!("/incidents/{}", body["id"].as_str().unwrap()))
        .await;
    assert_eq!(stored["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    let response = send("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let trace = body["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "00000000000000000000000000000000");
    app.stop().await;
}

async fn the_list_is_newest_first_and_its_pages_cover_every_incident_once(backend: Backend) {
    let (_db, app) = app_on(backend).await;
    let mut opened = Vec::new();
    for i in 0..7 {
        let mut alert = oom_alert();
        alert["title"] = json!(format!("incident {i}"));
        opened.push(app.open(&alert).await);
    }

    let mut seen = Vec::new();
    let mut path = "/incidents?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get_json(&path).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        for item in items {
            assert!(
                item.get("metadata").is_none(),
                "summaries carry no timeline"
            );
            assert!(item.get("description").is_none());
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/incidents?limit=3&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    opened.reverse();
    assert_eq!(seen, opened, "newest first, each exactly once");

    let all = app.get_json("/incidents?limit=200").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 7);
    assert_eq!(all["next_cursor"], Value::Null);
    app.stop().await;
}

async fn the_list_filters_by_status_severity_and_trace_id(backend: Backend) {
    let (_db, app) = app_on(backend).await;
    for severity in ["low", "critical", "critical", "high"] {
        let mut alert = oom_alert();
        alert["severity"] = json!(severity);
        app.open(&alert).await;
    }
    let count = |page: &Value| page["items"].as_array().unwrap().len();

    let critical = app.get_json("/incidents?severity=critical").await;
    assert_eq!(count(&critical), 2);
    assert!(
        critical["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["severity"] == "critical")
    );
    assert_eq!(count(&app.get_json("/incidents?status=new").await), 4);
    assert_eq!(count(&app.get_json("/incidents?status=resolved").await), 0);
    assert_eq!(
        count(&app.get_json("/incidents?status=new&severity=low").await),
        1
    );

    let trace = critical["items"][0]["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_trace = app.get_json(&format!("/incidents?trace_id={trace}")).await;
    assert_eq!(count(&by_trace), 1);
    assert_eq!(by_trace["items"][0]["id"], critical["items"][0]["id"]);
    app.stop().await;
}

async fn every_bad_request_is_a_clear_problem_and_never_a_5xx(backend: Backend) {
    let (_db, app) = app_on(backend).await;
    let post_raw = |content_type: &'static str, body: Vec<u8>| {
        app.client
            .post(app.url("/incidents"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    // Malformed JSON.
    let p = assert_problem(
        post_raw("application/json", b"{\"title\": ".to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("malformed JSON"),
        "{p}"
    );
    // Wrong content type, and none.
    let body = serde_json::to_vec(&oom_alert()).unwrap();
    let p = assert_problem(post_raw("text/plain", body.clone()).await.unwrap(), 415).await;
    assert!(
        p["detail"].as_str().unwrap().contains("application/json"),
        "{p}"
    );
    let response = app
        .client
        .post(app.url("/incidents"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 415).await;
    // Unknown severity, missing title: every field named.
    let p = assert_problem(
        app.post_incident(&json!({"title": "", "severity": "urgent"}))
            .await,
        422,
    )
    .await;
    let fields: Vec<_> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["title", "severity"]);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("low, medium, high, critical")
    );
    // A field of the wrong type, and an unknown field.
    let p = assert_problem(
        app.post_incident(&json!({"title": 7, "severity": "low"}))
            .await,
        422,
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("invalid type"),
        "{p}"
    );
    let p = assert_problem(
        app.post_incident(&json!({"title": "t", "severity": "low", "severty": "x"}))
            .await,
        422,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("severty"), "{p}");
    // Oversize description (within the body limit) and oversize labels.
    let mut alert = oom_alert();
    alert["description"] = json!("d".repeat(64 * 1024 + 1));
    assert_problem(app.post_incident(&alert).await, 422).await;
    let mut alert = oom_alert();
    alert["labels"] = json!(
        (0..65)
            .map(|i| (i.to_string(), json!("v")))
            .collect::<serde_json::Map<_, _>>()
    );
    assert_problem(app.post_incident(&alert).await, 422).await;
    // NUL characters, which PostgreSQL cannot store, in every free-text field.
    for alert in [
        json!({"title": "a\0b", "severity": "low"}),
        json!({"title": "t", "severity": "low", "description": "x\0y"}),
        json!({"title": "t", "severity": "low", "labels": {"k\0": "v"}}),
        json!({"title": "t", "severity": "low", "labels": {"k": "v\0"}}),
    ] {
        assert_problem(app.post_incident(&alert).await, 422).await;
    }
    // A body over the limit.
    let mut alert = oom_alert();
    alert["description"] = json!("d".repeat(helpers::BODY_LIMIT_BYTES + 1));
    assert_problem(app.post_incident(&alert).await, 413).await;
    // Ids, routes, methods.
    let p = assert_problem(app.get("/incidents/not-a-uuid").await, 400).await;
    assert!(p["detail"].as_str().unwrap().contains("UUID"), "{p}");
    let unknown = uuid::Uuid::now_v7();
    let p = assert_problem(app.get(&format!("/incidents/{unknown}")).await, 404).await;
    assert!(p["detail"].as_str().unwrap().contains(&unknown.to_string()));
    assert_problem(app.get("/nowhere").await, 404).await;
    let response = app
        .client
        .delete(app.url("/incidents"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 405).await;
    // List parameters.
    for query in [
        "limit=0",
        "limit=201",
        "limit=ten",
        "status=sleeping",
        "severity=urgent",
        "trace_id=xyz",
        "cursor=garbage",
        "statuss=new",
    ] {
        let response = app.get(&format!("/incidents?{query}")).await;
        assert_problem(response, 400).await;
    }
    // None of it stored anything.
    let page = app.get_json("/incidents").await;
    assert_eq!(page["items"], json!([]));
    app.stop().await;
}

async fn garbage_bodies_are_refused_without_a_5xx_and_store_nothing(backend: Backend) {
    let (_db, app) = app_on(backend).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"a string\"".to_vec(),
        b"{\"title\": \"t\", \"severity\": \"low\"".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        b"{\"title\": \"\xff\xfe\", \"severity\": \"low\"}".to_vec(),
        deep.into_bytes(),
        b"{\"title\": \"t\", \"severity\": \"low\", \"labels\": [1,2]}".to_vec(),
        b"{\"title\": \"t\", \"severity\": 1e999}".to_vec(),
        b"{\"title\": \"t\", \"title\": \"u\", \"severity\": \"low\"}".to_vec(),
        b"{\"title\": \"\\u0000\\ud800\", \"severity\": \"low\"}".to_vec(),
    ];
    for body in bodies {
        let response = app
            .client
            .post(app.url("/incidents"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{status} for {:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    let page = app.get_json("/incidents").await;
    assert_eq!(page["items"], json!([]));
    app.stop().await;
}

async fn two_hundred_concurrent_posts_are_all_committed(backend: Backend) {
    // Goal: no incident is lost or half-written when many arrive at once.
    // Method: 200 POSTs in flight together; every one must be accepted, and the list read
    // back afterwards must hold exactly the 200 accepted ids.
    let (_db, app) = app_on(backend).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let app = app.clone();
        tasks.spawn(async move {
            let mut alert = oom_alert();
            alert["title"] = json!(format!("storm {i}"));
            app.open(&alert).await
        });
    }
    let mut accepted = HashSet::new();
    while let Some(id) = tasks.join_next().await {
        assert!(accepted.insert(id.expect("every POST is accepted")));
    }
    assert_eq!(accepted.len(), 200);

    let mut stored = HashSet::new();
    let mut path = "/incidents?limit=200".to_owned();
    loop {
        let page = app.get_json(&path).await;
        for item in page["items"].as_array().unwrap() {
            assert!(stored.insert(item["id"].as_str().unwrap().to_owned()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/incidents?limit=200&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(stored, accepted);
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

async fn an_incident_survives_a_restart_of_the_service(backend: Backend) {
    // Goal: a 202 means the row is durable. Method: open an incident, stop the service,
    // start a new one on the same database, and read the incident back whole.
    let db = TestDb::new(backend).await;
    let app = spawn_app(&db).await;
    let id = app.open(&oom_alert()).await;
    let before = app.get_json(&format!("/incidents/{id}")).await;
    app.stop().await;

    let app = spawn_app(&db).await;
    let after = app.get_json(&format!("/incidents/{id}")).await;
    assert_eq!(after, before);
    app.stop().await;
}

async fn health_and_readiness_answer(backend: Backend) {
    let (_db, app) = app_on(backend).await;
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    let ready = app.get_json("/readyz").await;
    assert_eq!(ready["status"], "ready");
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(ready["database"], expected);
    app.stop().await;
}

async fn metrics_are_served_to_anyone_as_openmetrics_text_and_count_what_was_opened(
    backend: Backend,
) {
    // Goal: `GET /metrics` needs no credentials, speaks OpenMetrics and counts incidents
    // committed (not requests refused). Method: the API alone (no agent: nothing is ever
    // refused for capacity), two incidents opened and one refused as invalid, then a scrape.
    let (_db, app) = app_on(backend).await;
    app.open(&oom_alert()).await;
    app.open(&oom_alert()).await;
    let mut bad = oom_alert();
    bad["severity"] = json!("urgent");
    assert_eq!(app.post_incident(&bad).await.status(), 422);
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in [
        "# TYPE sre_incidents_opened counter",
        "sre_incidents_opened_total{source=\"api\"} 2",
        "sre_incidents_opened_total{source=\"alertmanager\"} 0",
        "sre_admission_refused_total{endpoint=\"incidents\"} 0",
        "sre_db_write_duration_seconds_count{op=\"create\"} 2",
        "# TYPE sre_db_write_duration_seconds histogram",
        "# UNIT sre_db_write_duration_seconds seconds",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    app.stop().await;
}

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/incidents"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("POST /incidents answers")
}

async fn incident_count(app: &TestApp) -> usize {
    app.get_json("/incidents?limit=200").await["items"]
        .as_array()
        .unwrap()
        .len()
}

/// Goal: a client that retries (its answer was lost, the service died after the commit)
/// opens one incident; the key with another request, or a malformed key, is refused.
/// Method: the same key twice with the same body (fields reordered), then with another
/// body, then malformed keys; rows counted through the list.
async fn a_retry_with_the_same_idempotency_key_opens_nothing_new(backend: Backend) {
    let (_db, app) = app_on(backend).await;
    let first = post_with_key(&app, "alertmanager-group-7f3a", &oom_alert()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let mut reordered = serde_json::Map::new();
    for (k, v) in oom_alert().as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    let retry = post_with_key(&app, "alertmanager-group-7f3a", &Value::Object(reordered)).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(
        retry.headers()["location"].to_str().unwrap(),
        format!("/incidents/{}", first["id"].as_str().unwrap())
    );
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(retry["trace_id"], first["trace_id"]);
    assert_eq!(incident_count(&app).await, 1);

    let mut other = oom_alert();
    other["severity"] = json!("low");
    let conflict = post_with_key(&app, "alertmanager-group-7f3a", &other).await;
    let problem = assert_problem(conflict, 409).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("different request"),
        "{problem}"
    );
    for bad in ["has space", &"k".repeat(256)] {
        let refused = post_with_key(&app, bad, &oom_alert()).await;
        let problem = assert_problem(refused, 422).await;
        assert_eq!(
            problem["errors"][0]["field"], "Idempotency-Key",
            "{problem}"
        );
    }
    assert_eq!(incident_count(&app).await, 1, "nothing refused was stored");
    // Without a key, every POST opens an incident: the way to force a new one.
    assert_eq!(app.post_incident(&oom_alert()).await.status(), 202);
    assert_eq!(incident_count(&app).await, 2);
    app.stop().await;
}

/// Goal: retries that race each other with one key still open one incident. Method: 20
/// concurrent POSTs with the same key and body.
async fn racing_retries_with_one_idempotency_key_open_one_incident(backend: Backend) {
    let (_db, app) = app_on(backend).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let app = app.clone();
        tasks.spawn(async move {
            let answer = post_with_key(&app, "race-1", &oom_alert()).await;
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap();
            (status, body)
        });
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    while let Some(answer) = tasks.join_next().await {
        let (status, body) = answer.unwrap();
        match status {
            202 => created += 1,
            200 => {}
            other => panic!("unexpected {other}: {body}"),
        }
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(incident_count(&app).await, 1);
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}
