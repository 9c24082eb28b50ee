//! The agent on real backends. Its two stories through the Kubernetes backend
//! (`--metrics-backend`, `--logs-backend` and `--restart-backend kubernetes`, reached through
//! a kubeconfig file) against the fleet's Kubernetes API server: the same endings as on the
//! fleet backend, read from the rows and the fleet's ledger; a disruption budget that holds
//! the restart leaves the pod alone and a human paged. Pages through the generic webhook
//! (`--notify-backend webhook`): signed, retried through a 503, once per key.

use serde_json::{Value, json};

use super::helpers::{self, DB_ALERT, Harness, OOM_ALERT, Options, actions, start_fleet};

/// The fleet's kubeconfig in `dir`.
fn kubeconfig(dir: &tempfile::TempDir, server: &str) -> String {
    let path = dir.path().join("kubeconfig");
    mcp::fleet::kube_api::write_kubeconfig(&path, server).unwrap();
    path.display().to_string()
}

/// An agent whose observability and remediation go through the Kubernetes API of a fleet
/// running `scenarios`; the fleet stops when the sender is dropped.
async fn on_kubernetes(
    scenarios: &[&str],
    dir: &tempfile::TempDir,
) -> (Harness, tokio::sync::oneshot::Sender<()>) {
    let (fleet, stop) = start_fleet(scenarios).await;
    let config = kubeconfig(dir, &fleet);
    let h = helpers::start(Options {
        fleet_url: Some(fleet),
        flags: [
            "--metrics-backend",
            "kubernetes",
            "--logs-backend",
            "kubernetes",
            "--restart-backend",
            "kubernetes",
            "--kubeconfig",
            &config,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        ..Options::default()
    })
    .await;
    (h, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oom_story_through_kubernetes_evicts_exactly_the_killed_instance_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _fleet) = on_kubernetes(&["oom-kill"], &dir).await;
    let pod = h.oom_killed_pod().await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_eq!(incident["status"], "resolved", "{incident:#}");
    let restarts = actions(&incident, "restart-pod");
    assert_eq!(restarts.len(), 1, "{incident:#}");
    assert_eq!(restarts[0]["args"]["podName"], pod.as_str());
    assert_eq!(restarts[0]["decision"], "auto");
    assert_eq!(restarts[0]["verified"], true, "{incident:#}");
    // The eviction named the instance diagnosed.
    let uid = restarts[0]["args"]["podUid"]
        .as_str()
        .expect("the uid is sent");
    assert_eq!(restarts[0]["baseline"]["pod_uid"], uid);
    let ledger = h.restarts_of("checkout-api").await;
    assert_eq!(ledger.len(), 1, "exactly one restart: {ledger:#?}");
    assert_eq!(ledger[0]["target"], pod.as_str());
    // Through the Kubernetes API, which carries no idempotency key (the fleet's own restart
    // endpoint records one).
    assert!(ledger[0]["idempotency_key"].is_null(), "{ledger:#?}");
    assert!(
        actions(&incident, "send-notification")
            .iter()
            .any(|n| n["status"] == "succeeded"),
        "{incident:#}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_story_through_kubernetes_restarts_nothing_and_escalates() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _fleet) = on_kubernetes(&["db-outage"], &dir).await;
    let (id, _) = h.post(DB_ALERT, "payments-db").await;
    let incident = h.finished(&id).await;
    helpers::assert_db_story(&h, &incident).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disruption_budget_holding_the_eviction_leaves_the_pod_and_pages_a_human() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _fleet) = on_kubernetes(&["oom-kill"], &dir).await;
    // Every checkout-api pod must stay: no eviction is allowed.
    let budget = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": { "name": "checkout-api", "namespace": "shop" },
        "spec": { "minAvailable": 3, "selector": { "matchLabels": { "app": "checkout-api" } } }
    });
    let r = reqwest::Client::new()
        .post(format!(
            "{}/apis/policy/v1/namespaces/shop/poddisruptionbudgets",
            h.fleet
        ))
        .json(&budget)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    let restart = &actions(&incident, "restart-pod")[0];
    assert_eq!(restart["status"], "failed", "{incident:#}");
    let result: &Value = &restart["result"];
    assert!(
        result.to_string().contains("disruption budget"),
        "{incident:#}"
    );
    assert!(h.restarts_of("checkout-api").await.is_empty());
    assert!(
        actions(&incident, "send-notification")
            .iter()
            .any(|n| n["status"] == "succeeded"),
        "{incident:#}"
    );
    h.stop().await;
}

/// What the local webhook receiver got: each request's headers of interest and body.
#[derive(Clone, Debug)]
struct Received {
    key: Option<String>,
    timestamp: String,
    signature: String,
    body: String,
}

/// A webhook receiver on a loopback port that answers 503 to the first request it gets and
/// 200 after, recording every request.
async fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Received>>>) {
    use axum::http::{HeaderMap, StatusCode};
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Received>::new()));
    let record = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let record = record.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let mut got = record.lock().unwrap();
                got.push(Received {
                    key: header("idempotency-key"),
                    timestamp: header("x-sre-timestamp").unwrap_or_default(),
                    signature: header("x-sre-signature").unwrap_or_default(),
                    body,
                });
                if got.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Pages to a generic webhook: set in the environment before anything runs (the spawned
/// remediation server inherits it), so this test builds its own runtime after.
#[test]
fn pages_go_to_the_signed_webhook_once_per_key_through_a_503_and_not_to_the_fleet() {
    const SECRET: &str = "test-secret";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (url, got) = runtime.block_on(receiver());
    // SAFETY: nextest runs each test in its own process; the runtime's threads read no
    // environment while it is set.
    unsafe {
        std::env::set_var(mcp::backend::select::NOTIFY_URL_ENV, &url);
        std::env::set_var(mcp::backend::select::NOTIFY_HMAC_SECRET_ENV, SECRET);
    }
    runtime.block_on(async {
        let h = helpers::start(Options {
            scenarios: vec!["db-outage"],
            flags: [
                "--notify-backend",
                "webhook",
                "--notify-backoff-initial-ms",
                "50",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            ..Options::default()
        })
        .await;
        let (id, trace) = h.post(DB_ALERT, "payments-db").await;
        let incident = h.finished(&id).await;
        helpers::assert_db_story(&h, &incident).await;
        let sent: Vec<&Value> = actions(&incident, "send-notification")
            .into_iter()
            .filter(|n| n["status"] == "succeeded")
            .collect();
        let got = got.lock().unwrap().clone();
        // The first attempt met a 503 and was sent again, byte for byte; every page once.
        assert_eq!(got.len(), sent.len() + 1, "{got:#?}");
        assert_eq!(got[0].body, got[1].body);
        assert_eq!(got[0].key, got[1].key);
        let keys: std::collections::BTreeSet<_> = got.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys.len(), sent.len());
        for n in &sent {
            assert!(keys.contains(&n["idempotency_key"].as_str().map(str::to_owned)));
        }
        for r in &got {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(format!("{}.{}", r.timestamp, r.body).as_bytes());
            let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(r.signature, expected);
            let body: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["trace_id"], trace.as_str());
            assert!(body["message"].as_str().unwrap().contains("payments-db"));
        }
        // Nothing went to the fleet's inbox.
        assert!(h.pages_of(&trace).await.is_empty());
        h.stop().await;
    });
}
