//! The agent's two stories through the Kubernetes backend (`--metrics-backend`,
//! `--logs-backend` and `--restart-backend kubernetes`, reached through a kubeconfig file)
//! against the fleet's Kubernetes API server: the same endings as on the fleet backend,
//! read from the rows and the fleet's ledger. A disruption budget that holds the restart
//! leaves the pod alone and a human paged.

use serde_json::{Value, json};

use super::helpers::{self, DB_ALERT, Harness, OOM_ALERT, Options, actions, start_fleet};

/// A kubeconfig naming the fleet as the cluster, as `kubectl config` would write it.
fn kubeconfig(dir: &tempfile::TempDir, server: &str) -> String {
    let path = dir.path().join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fleet\n  cluster:\n    server: {server}\n\
         contexts:\n- name: fleet\n  context:\n    cluster: fleet\n    user: agent\n\
         current-context: fleet\nusers:\n- name: agent\n  user:\n    token: not-checked\n"
    );
    std::fs::write(&path, text).unwrap();
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
