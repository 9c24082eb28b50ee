//! `sre-fleet`'s HTTP API for what the simulation gained: application log lines written from
//! outside (`POST /v1/services/{name}/logs`), the new metrics in `/metrics` (kube-state-metrics
//! names included), ending a scenario (`DELETE /v1/scenarios/{name}`), and that polling
//! does not speed the clock up. Against a real `sre-fleet` on a loopback port.

mod support;

use chrono::{DateTime, Duration, Utc};
use mcp::backend::{BackendError, FleetClient};
use mcp::fleet::model::{LogLine, LogPage, LogSource, ServiceMetrics};
use serde_json::{Value, json};
use support::start_fleet;

async fn post_log(http: &reqwest::Client, url: &str, service: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(format!("{url}/v1/services/{service}/logs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> T {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn application_lines_written_from_outside_are_marked_application_and_checked() {
    let fleet = start_fleet().await;
    let http = reqwest::Client::new();
    let url = fleet.url.as_str();

    let (status, line) = post_log(
        &http,
        url,
        "checkout-api",
        json!({ "message": "GET /search?q=Container+checkout-api+was+OOMKilled 200" }),
    )
    .await;
    assert_eq!(status, 201, "{line}");
    let line: LogLine = serde_json::from_value(line).unwrap();
    assert_eq!(
        (line.source, line.level.as_str()),
        (LogSource::Application, "info")
    );

    let metrics: ServiceMetrics =
        get(&http, &format!("{url}/v1/services/checkout-api/metrics")).await;
    let pod = metrics.pods[2].name.clone();
    let earlier: DateTime<Utc> = metrics.observed_at - Duration::seconds(120);
    let (status, back) = post_log(
        &http,
        url,
        "checkout-api",
        json!({ "pod": pod, "level": "error", "message": "back-dated", "at": earlier }),
    )
    .await;
    assert_eq!(status, 201, "{back}");
    let page: LogPage = get(
        &http,
        &format!("{url}/v1/services/checkout-api/logs?last_secs=300"),
    )
    .await;
    let found = page
        .lines
        .iter()
        .find(|l| l.message == "back-dated")
        .unwrap();
    assert_eq!(
        (found.at, found.pod.as_str(), found.source),
        (earlier, pod.as_str(), LogSource::Application)
    );
    assert!(page.lines.windows(2).all(|w| w[0].at <= w[1].at));

    let future = Utc::now() + Duration::hours(1);
    for (service, body, expected) in [
        ("checkout-api", json!({ "message": "x", "at": future }), 400),
        (
            "checkout-api",
            json!({ "message": "x", "source": "platform" }),
            400,
        ),
        (
            "checkout-api",
            json!({ "message": "x", "level": "fatal" }),
            400,
        ),
        ("checkout-api", json!({ "message": "" }), 400),
        ("checkout-api", json!({ "msg": "x" }), 400),
        (
            "checkout-api",
            json!({ "message": "x", "pod": "payments-db-0" }),
            404,
        ),
        ("no-such-service", json!({ "message": "x" }), 404),
    ] {
        let (status, error) = post_log(&http, url, service, body.clone()).await;
        assert_eq!(status, expected, "{body} → {error}");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{error}"
        );
    }
    let r = http
        .post(format!("{url}/v1/services/checkout-api/logs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let client = FleetClient::new(url, 5_000).unwrap();
    let line = client
        .write_app_log("payments-api", None, "warn", "through the client", None)
        .await
        .unwrap();
    assert_eq!(
        (line.source, line.level.as_str()),
        (LogSource::Application, "warn")
    );
    assert!(matches!(
        client
            .write_app_log("payments-api", Some("nope"), "info", "x", None)
            .await,
        Err(BackendError::NotFound(_))
    ));
}

#[tokio::test]
async fn prometheus_shows_throttling_connections_lag_and_certificate_expiry() {
    let fleet = start_fleet().await;
    fleet.inject("cpu-throttling").await;
    fleet.inject("db-replication-lag").await;
    let text = reqwest::get(format!("{}/metrics", fleet.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> Vec<f64> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(
        value("fleet_pod_cpu_throttled_ratio{service=\"catalog-api\""),
        [0.6, 0.6, 0.6]
    );
    assert!(
        value("fleet_pod_cpu_throttled_ratio{service=\"checkout-api\"")
            .iter()
            .all(|v| *v == 0.0)
    );
    assert_eq!(value("fleet_service_connections{"), [480.0]);
    assert_eq!(value("fleet_service_replication_lag_seconds{"), [45.0]);
    let expiry = value("fleet_service_certificate_expiry_timestamp_seconds{");
    assert_eq!(expiry.len(), 2, "checkout-api and payments-api serve TLS");
    let in_60_days = (Utc::now() + Duration::days(60)).timestamp() as f64;
    assert!(
        expiry.iter().all(|e| (e - in_60_days).abs() < 120.0),
        "{expiry:?}"
    );
    assert!(text.contains("# TYPE fleet_service_certificate_expiry_timestamp_seconds gauge"));
}

#[tokio::test]
async fn polling_the_fleet_does_not_speed_its_clock_up() {
    // Goal: the fix of issue 8's clock through the HTTP service. Method: 300 reads as fast
    // as possible take well under 300 s of wall time; before the fix each read stepped the
    // world one simulated second, so the oom-kill pod (killed 10 s after injection) would
    // have been killed many times over.
    let fleet = start_fleet().await;
    fleet.inject("oom-kill").await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/services/checkout-api/metrics", fleet.url);
    let started = std::time::Instant::now();
    let mut last: Option<ServiceMetrics> = None;
    for _ in 0..300 {
        last = Some(get(&http, &url).await);
    }
    let elapsed = started.elapsed();
    let pod = &last.unwrap().pods[0];
    if elapsed < std::time::Duration::from_secs(9) {
        assert_eq!(pod.restarts, 3, "no OOM kill in {elapsed:?} of reads");
    }
}

/// The samples of `name` whose labels include every one of `labels`, as (line, value).
fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| {
            let value = l.rsplit(' ').next().unwrap().parse().unwrap();
            (l.to_owned(), value)
        })
        .collect()
}

/// The one value of `name` with `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(text, name, labels);
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].1
}

#[tokio::test]
async fn prometheus_shows_kube_state_metrics_that_follow_faults_restarts_and_fixes() {
    // Goal: the kube-state-metrics names the alert rules in deploy/prometheus/ use are on
    // /metrics with their real labels, and they move as the rules expect. Method: inject
    // oom-kill and db-outage, let the OOM pod be killed again, then replace it through the
    // API and end the outage through the API, reading /metrics after each step.
    let fleet = start_fleet().await;
    let http = reqwest::Client::new();
    let metrics = || async {
        let r = http.get(format!("{}/metrics", fleet.url)).send().await;
        r.unwrap().text().await.unwrap()
    };
    let healthy = metrics().await;
    assert_eq!(
        samples(
            &healthy,
            "kube_pod_container_status_last_terminated_reason",
            &[]
        )
        .len(),
        0
    );
    assert_eq!(
        value(
            &healthy,
            "pg_up",
            &[("namespace", "payments"), ("service", "payments-db")]
        ),
        1.0
    );
    assert_eq!(samples(&healthy, "pg_up", &[]).len(), 1, "databases only");
    for (family, kind) in [
        ("kube_pod_container_status_restarts_total", "counter"),
        ("kube_pod_container_status_last_terminated_reason", "gauge"),
        ("kube_pod_container_status_waiting_reason", "gauge"),
        ("kube_pod_status_ready", "gauge"),
        ("kube_pod_status_phase", "gauge"),
        ("kube_deployment_spec_replicas", "gauge"),
        ("kube_deployment_status_replicas_available", "gauge"),
        ("pg_up", "gauge"),
    ] {
        let type_line = format!("# TYPE {family} {kind}");
        assert_eq!(healthy.matches(&type_line).count(), 1, "{type_line}");
    }
    assert!(
        healthy
            .contains("fleet_pod_restarts_total{service=\"checkout-api\",namespace=\"shop\",pod=")
    );

    fleet.inject("oom-kill").await;
    fleet.inject("db-outage").await;
    let shop: ServiceMetrics = get(
        &http,
        &format!("{}/v1/services/checkout-api/metrics", fleet.url),
    )
    .await;
    let sick = shop.pods[0].clone();
    let of_sick = [
        ("namespace", "shop"),
        ("pod", sick.name.as_str()),
        ("uid", sick.uid.as_str()),
        ("container", "checkout-api"),
        ("service", "checkout-api"),
    ];
    let text = metrics().await;
    let oom: Vec<(&str, &str)> = [&of_sick[..], &[("reason", "OOMKilled")]].concat();
    assert_eq!(
        value(
            &text,
            "kube_pod_container_status_last_terminated_reason",
            &oom
        ),
        1.0
    );
    assert_eq!(
        value(&text, "kube_pod_container_status_restarts_total", &of_sick),
        3.0
    );
    let db = [
        ("namespace", "payments"),
        ("pod", "payments-db-0"),
        ("service", "payments-db"),
    ];
    let with = |extra: (&'static str, &'static str)| [&db[..], &[extra]].concat();
    assert_eq!(
        value(
            &text,
            "kube_pod_status_ready",
            &with(("condition", "false"))
        ),
        1.0
    );
    assert_eq!(
        value(&text, "kube_pod_status_ready", &with(("condition", "true"))),
        0.0
    );
    assert_eq!(
        value(&text, "kube_pod_status_phase", &with(("phase", "Running"))),
        1.0
    );
    assert_eq!(samples(&text, "kube_pod_status_phase", &db).len(), 5);
    let deployment = [
        ("namespace", "payments"),
        ("deployment", "payments-db"),
        ("service", "payments-db"),
    ];
    assert_eq!(
        value(
            &text,
            "kube_deployment_status_replicas_available",
            &deployment
        ),
        0.0
    );
    assert_eq!(
        value(&text, "kube_deployment_spec_replicas", &deployment),
        1.0
    );
    assert_eq!(value(&text, "pg_up", &[("service", "payments-db")]), 0.0);

    // Killed again about 11 s after injection, backing off 20 s.
    fleet.advance(15).await;
    let text = metrics().await;
    let waiting: Vec<(&str, &str)> = [&of_sick[..], &[("reason", "CrashLoopBackOff")]].concat();
    assert_eq!(
        value(&text, "kube_pod_container_status_waiting_reason", &waiting),
        1.0
    );
    assert_eq!(
        value(&text, "kube_pod_container_status_restarts_total", &of_sick),
        4.0
    );
    let running: Vec<(&str, &str)> = [&of_sick[..2], &[("phase", "Running")]].concat();
    assert_eq!(
        value(&text, "kube_pod_status_phase", &running),
        1.0,
        "a crash loop runs"
    );
    assert_eq!(
        samples(&text, "kube_pod_container_status_waiting_reason", &[]).len(),
        1
    );

    let r = http
        .post(format!("{}/v1/pods/{}/restart", fleet.url, sick.name))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = metrics().await;
    let of_pod = [("pod", sick.name.as_str())];
    assert!(
        samples(
            &text,
            "kube_pod_container_status_last_terminated_reason",
            &of_pod
        )
        .is_empty()
    );
    assert!(samples(&text, "kube_pod_container_status_waiting_reason", &of_pod).is_empty());
    let restarts = samples(&text, "kube_pod_container_status_restarts_total", &of_pod);
    assert_eq!(restarts.len(), 1);
    assert!(
        !restarts[0].0.contains(&sick.uid),
        "a replaced pod has a new uid"
    );
    assert_eq!(restarts[0].1, 0.0);

    let end = |name: &'static str| {
        let http = http.clone();
        let url = format!("{}/v1/scenarios/{name}", fleet.url);
        async move {
            let r = http.delete(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        end("db-outage").await,
        (200, json!({ "ended": "db-outage" }))
    );
    let text = metrics().await;
    assert_eq!(value(&text, "pg_up", &[("service", "payments-db")]), 1.0);
    assert_eq!(
        value(&text, "kube_pod_status_ready", &with(("condition", "true"))),
        1.0
    );
    let scenarios: Value = get(&http, &format!("{}/v1/scenarios", fleet.url)).await;
    assert_eq!(scenarios["active"], json!(["oom-kill"]));
    for name in ["db-outage", "meteor-strike"] {
        let (status, body) = end(name).await;
        assert_eq!(status, 404, "{name}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(
        fleet.ledger().await.len(),
        1,
        "the restart is in the ledger, ending a scenario is not"
    );
}
