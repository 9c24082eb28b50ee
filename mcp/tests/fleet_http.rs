//! `sre-fleet`'s HTTP API for what the simulation gained: application log lines written from
//! outside (`POST /v1/services/{name}/logs`), the new metrics in `/metrics`, and that polling
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
