//! A storm: many incidents at once, of every kind, against one agent.

use std::collections::HashSet;
use std::time::Instant;

use sre_agent::agent::supervisor::SupervisorMsg;

use crate::helpers::*;

/// Incidents posted at once.
const STORM_INCIDENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_incidents_at_once_all_finish_and_no_pod_is_restarted_beyond_its_budget() {
    storm(None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_storm_through_one_working_slot_finishes_alike() {
    // Goal: the working slots bound what runs, and nothing that holds one waits for
    // something only a waiting step could do (a service's restart lock, a restart's
    // verification, a human's decision): with one slot for 200 incidents the storm ends
    // exactly as with the default 1,024 (a slot kept by a step that waits forever would
    // hang it), and the metrics show steps waiting for the slot.
    storm(None, Some(1)).await;
}

/// The storm on the database at `database_url` (SQLite in a temporary file when `None`).
/// With `working_max`, the agent has that many working slots and the storm checks that
/// steps were seen waiting for them (so it must be far below the storm's 200 incidents).
pub async fn storm(database_url: Option<String>, working_max: Option<u32>) {
    // Goal: under a storm every incident reaches a terminal state, none fails, nothing is
    // lost, and the one OOM-killed pod is restarted exactly once although a third of the
    // storm's incidents see it (a pod is restarted autonomously once per window). Method: post 200
    // incidents concurrently (OOM, database, unknown alerts), wait for all, read the rows
    // and the fleet's ledger. The elapsed time is printed, not asserted.
    let h = start(Options {
        database_url,
        flags: working_max
            .map(|n| vec!["--incidents-working-max".to_owned(), n.to_string()])
            .unwrap_or_default(),
        ..Options::default()
    })
    .await;
    let kinds = [
        (OOM_ALERT, "checkout-api"),
        (DB_ALERT, "payments-db"),
        ("SomethingNobodyMapped", "mystery"),
    ];
    let begun = Instant::now();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..STORM_INCIDENTS {
        let (alert, service) = kinds[i % kinds.len()];
        let http = h.http.clone();
        let api = h.api.clone();
        posts.spawn(async move {
            let (id, _) = post(&http, &api, alert, service).await;
            (id, alert)
        });
    }
    let mut ids = Vec::new();
    while let Some(posted) = posts.join_next().await {
        ids.push(posted.unwrap());
    }
    let posted_ms = begun.elapsed().as_millis();
    assert_eq!(ids.len(), STORM_INCIDENTS);
    if working_max.is_some() {
        h.scrape_until("incident steps waiting for a working slot", |s| {
            s.value("sre_incident_steps_waiting", &[]) > 0.0
        })
        .await;
    }

    let mut resolved = 0;
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for (id, alert) in &ids {
        let incident = h.finished(id).await;
        let status = incident["status"].as_str().unwrap().to_owned();
        assert_ne!(status, "failed", "{incident:#}");
        if *alert == DB_ALERT {
            assert_eq!(status, "escalated");
        }
        if status == "resolved" {
            resolved += 1;
            assert_eq!(*alert, OOM_ALERT);
        }
        *statuses.entry(format!("{alert}: {status}")).or_default() += 1;
    }
    let finished_ms = begun.elapsed().as_millis();
    // Every actor stopped once its incident finished: none is left behind.
    let supervisor = h.supervisor.clone().expect("the agent runs");
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let live = ractor::call_t!(supervisor, SupervisorMsg::Live, 5_000).unwrap();
        if live == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{live} incident actors still alive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let ledger = h.ledger().await;
    let restarts = h.restarts_of("checkout-api").await;
    assert!(!restarts.is_empty(), "the OOM-killed pod was restarted");
    assert!(
        restarts.len() <= 3,
        "the per-service window budget holds: {restarts:#?}"
    );
    assert_eq!(
        resolved,
        restarts.len(),
        "each resolved incident made exactly one restart"
    );
    assert!(h.restarts_of("payments-db").await.is_empty());
    let keys: Vec<&str> = ledger
        .iter()
        .filter_map(|e| e["idempotency_key"].as_str())
        .collect();
    let unique: HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(
        keys.len(),
        unique.len(),
        "no action reached the fleet twice"
    );
    // Every incident is in the list, none lost.
    let listed = h.get_json(&format!("{}/incidents?limit=200", h.api)).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), STORM_INCIDENTS);
    eprintln!(
        "storm: {STORM_INCIDENTS} incidents posted in {posted_ms} ms, all finished after {finished_ms} ms; \
         {} ledger entries, {} restarts; {statuses:?}",
        ledger.len(),
        restarts.len()
    );
    h.stop().await;
}
