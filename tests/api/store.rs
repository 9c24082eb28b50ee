//! The store's writes for the incident actor: a step saved in one statement reads back
//! whole through the API, and `unfinished` is what the supervisor adopts.

use chrono::Utc;
use serde_json::json;
use sre_agent::incident::IdempotencyKey;
use sre_agent::incident::{
    ActionDecision, ActionRecord, ActionStatus, NewIncident, NewIncidentRequest, RootCauseAnalysis,
    Status, TimelineEntry, TimelineKind,
};
use sre_agent::store::{Created, Store};
use sre_agent::trace::TraceId;

use crate::helpers::{self, Backend, TestDb, on_each_backend};

on_each_backend!(
    a_saved_step_reads_back_whole_and_unfinished_lists_only_open_incidents,
    saving_an_unknown_incident_is_an_error_not_an_insert,
    the_restart_window_is_read_back_from_the_rows_of_every_incident,
    alerts_racing_past_the_intakes_lock_all_land_by_compare_and_swap,
    a_write_naming_an_old_revision_is_refused_and_so_is_a_close_that_missed_an_alert,
    concurrent_steps_of_many_incidents_commit_together_and_read_back_in_order,
    a_step_with_hundreds_of_new_entries_is_appended_whole,
    an_idempotency_key_answers_its_request_until_it_is_forgotten,
);

async fn store_on(db: &TestDb) -> Store {
    let store = Store::connect(&helpers::config(db).db).await.unwrap();
    store.migrate().await.unwrap();
    store
}

async fn open(store: &Store, title: &str) -> sre_agent::incident::Incident {
    let request = NewIncidentRequest {
        title: Some(title.into()),
        severity: Some("critical".into()),
        ..Default::default()
    };
    let new = NewIncident::parse(request, "api").unwrap();
    store
        .create_incident(new, &TraceId::generate())
        .await
        .unwrap()
}

async fn a_saved_step_reads_back_whole_and_unfinished_lists_only_open_incidents(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_on(&db).await;
    let mut incident = open(&store, "checkout-api OOMKilled").await;
    let other = open(&store, "payments-db down").await;
    assert_eq!(
        store.unfinished(100).await.unwrap(),
        [incident.id, other.id]
    );

    incident.status = Status::Remediating;
    incident.rca_analysis = Some(RootCauseAnalysis {
        summary: "checkout-api (pod p-1): OOMKilled".into(),
        root_cause: "memory limit reached".into(),
        confidence: 0.95,
        evidence: vec!["pod p-1: last termination OOMKilled".into()],
        service: "checkout-api".into(),
        runbook: "checkout-api".into(),
        reasoner: "rules".into(),
        ..RootCauseAnalysis::undetermined(String::new())
    });
    incident.actions_taken.push(ActionRecord {
        seq: 1,
        server: "remediation".into(),
        tool: "restart-pod".into(),
        args: json!({"podName": "p-1"}),
        idempotency_key: ActionRecord::idempotency_key(incident.id, 1),
        decision: ActionDecision::Auto,
        reason: "runbook grants auto".into(),
        status: ActionStatus::Started,
        result: None,
        started_at: Utc::now(),
        finished_at: None,
        trace_id: incident.trace_id.clone(),
        baseline: None,
        verified: None,
        proposal: None,
        human: None,
    });
    incident.metadata.timeline.push(TimelineEntry {
        at: Utc::now(),
        trace_id: incident.trace_id.clone(),
        kind: TimelineKind::Decision,
        message: "restart p-1: auto".into(),
        detail: json!({"decision": "auto"}),
    });
    let saved = store.save(&incident).await.unwrap();
    assert!(saved.updated_at >= incident.created_at);

    // Read back through a fresh service on the same database, as after a restart.
    let app = helpers::spawn_app(&db).await;
    let body = app.get_json(&format!("/incidents/{}", incident.id)).await;
    assert_eq!(body["status"], "remediating");
    assert_eq!(body["rca_analysis"]["confidence"], 0.95);
    assert_eq!(body["actions_taken"][0]["status"], "started");
    assert_eq!(
        body["actions_taken"][0]["idempotency_key"],
        format!("{}:1", incident.id)
    );
    assert_eq!(body["metadata"]["timeline"].as_array().unwrap().len(), 2);
    let reloaded = store.get_incident(incident.id).await.unwrap().unwrap();
    assert_eq!(reloaded.actions_taken, incident.actions_taken);
    assert_eq!(reloaded.rca_analysis, incident.rca_analysis);

    let mut done = reloaded;
    done.status = Status::Resolved;
    let _ = store.save(&done).await.unwrap();
    assert_eq!(store.unfinished(100).await.unwrap(), [other.id]);
    app.stop().await;
    store.close().await;
}

async fn saving_an_unknown_incident_is_an_error_not_an_insert(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_on(&db).await;
    let mut ghost = open(&store, "real").await;
    ghost.id = uuid::Uuid::now_v7();
    assert!(
        matches!(store.save(&ghost).await, Err(sre_agent::store::StoreError::NotFound(id)) if id == ghost.id)
    );
    assert!(store.get_incident(ghost.id).await.unwrap().is_none());
    store.close().await;
}

fn restart(
    incident: &sre_agent::incident::Incident,
    seq: u32,
    pod: &str,
    decision: ActionDecision,
    status: ActionStatus,
    at: chrono::DateTime<Utc>,
) -> ActionRecord {
    ActionRecord {
        seq,
        server: "remediation".into(),
        tool: "restart-pod".into(),
        args: json!({ "podName": pod }),
        idempotency_key: ActionRecord::idempotency_key(incident.id, seq),
        decision,
        reason: "why".into(),
        status,
        result: None,
        started_at: at,
        finished_at: None,
        trace_id: incident.trace_id.clone(),
        baseline: None,
        verified: None,
        proposal: None,
        human: None,
    }
}

/// Goal: the window of autonomous restarts survives the process (it is read from the rows),
/// counts every incident's restarts of one service, and nothing else. Method: save three
/// incidents' steps, open a new store on the same database, read the window.
async fn the_restart_window_is_read_back_from_the_rows_of_every_incident(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_on(&db).await;
    let now = Utc::now();
    let rca = |service: &str| RootCauseAnalysis {
        service: service.into(),
        ..RootCauseAnalysis::undetermined("s".into())
    };
    let mut first = open(&store, "one").await;
    first.rca_analysis = Some(rca("checkout-api"));
    first.actions_taken = vec![
        restart(
            &first,
            1,
            "checkout-api-a",
            ActionDecision::Auto,
            ActionStatus::Succeeded,
            now - chrono::Duration::minutes(5),
        ),
        restart(
            &first,
            2,
            "checkout-api-b",
            ActionDecision::Proposed,
            ActionStatus::Proposed,
            now,
        ),
    ];
    first.actions_taken[0].verified = Some(true);
    let _ = store.save(&first).await.unwrap();
    let mut second = open(&store, "two").await;
    second.rca_analysis = Some(rca("checkout-api"));
    second.actions_taken = vec![restart(
        &second,
        1,
        "checkout-api-c",
        ActionDecision::Auto,
        ActionStatus::Planned,
        now,
    )];
    let _ = store.save(&second).await.unwrap();
    let mut old = open(&store, "old").await;
    old.rca_analysis = Some(rca("checkout-api"));
    old.actions_taken = vec![restart(
        &old,
        1,
        "checkout-api-d",
        ActionDecision::Auto,
        ActionStatus::Succeeded,
        now - chrono::Duration::hours(3),
    )];
    let _ = store.save(&old).await.unwrap();
    let mut elsewhere = open(&store, "db").await;
    elsewhere.rca_analysis = Some(rca("payments-db"));
    elsewhere.actions_taken = vec![restart(
        &elsewhere,
        1,
        "payments-db-0",
        ActionDecision::Auto,
        ActionStatus::Succeeded,
        now,
    )];
    let _ = store.save(&elsewhere).await.unwrap();
    store.close().await;

    let reopened = store_on(&db).await;
    let window = reopened
        .restarts_in_window("checkout-api", now - chrono::Duration::hours(1))
        .await
        .unwrap();
    let seen: Vec<(&str, bool)> = window
        .iter()
        .map(|w| (w.pod.as_str(), w.in_flight))
        .collect();
    assert_eq!(seen, [("checkout-api-a", false), ("checkout-api-c", true)]);
    assert!(
        reopened
            .restarts_in_window("orders-worker", now - chrono::Duration::hours(1))
            .await
            .unwrap()
            .is_empty()
    );
    reopened.close().await;
}

/// An alert of failure `checkout-api/oom_killed` with its own fingerprint.
fn alert(i: usize) -> sre_agent::core::alerts::AlertEvent {
    use sre_agent::core::alerts::{AlertEvent, AlertSource, AlertState};
    AlertEvent {
        source: AlertSource::Alertmanager,
        fingerprint: format!("{i:016x}"),
        alertname: "KubePodOOMKilled".into(),
        labels: [("pod".to_owned(), format!("checkout-api-x{i}"))].into(),
        state: AlertState::Firing,
        starts_at: Some(Utc::now()),
        ends_at: None,
    }
}

fn opening() -> (NewIncident, TraceId) {
    let request = NewIncidentRequest {
        title: Some("a pod was OOMKilled".into()),
        severity: Some("critical".into()),
        alert_type: Some("KubePodOOMKilled".into()),
        ..Default::default()
    };
    (
        NewIncident::parse(request, "alertmanager").unwrap(),
        TraceId::generate(),
    )
}

async fn alerts_racing_past_the_intakes_lock_all_land_by_compare_and_swap(backend: Backend) {
    // Goal: several replicas (no shared in-process lock) recording alerts of one failure at
    // once open one incident and lose no alert. Method: 24 concurrent `take_alert` calls
    // straight on the store, each with its own fingerprint; read the incident back.
    let db = TestDb::new(backend).await;
    let store = store_on(&db).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..24 {
        let store = store.clone();
        set.spawn(async move {
            store
                .take_alert("checkout-api/oom_killed", &alert(i), opening)
                .await
                .unwrap()
        });
    }
    let mut opened = 0;
    let mut ids = std::collections::BTreeSet::new();
    while let Some(taken) = set.join_next().await {
        match taken.unwrap() {
            sre_agent::store::Taken::Opened(i) => {
                opened += 1;
                ids.insert(i.id);
            }
            sre_agent::store::Taken::Joined { id, .. } => {
                ids.insert(id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((opened, ids.len()), (1, 1));
    let id = *ids.iter().next().unwrap();
    let incident = store.get_incident(id).await.unwrap().unwrap();
    assert_eq!(incident.alerts.records.len(), 24, "no lost update");
    assert_eq!(incident.alerts_rev, 23);
    store.close().await;
}

async fn a_write_naming_an_old_revision_is_refused_and_so_is_a_close_that_missed_an_alert(
    backend: Backend,
) {
    // Goal: the agent's columns are never overwritten by a writer that read an older row,
    // and an incident cannot close over an alert it did not see. Method: two copies of one
    // incident saved one after the other; an alert joining between a read and a closing
    // write.
    use sre_agent::store::{StoreError, Taken};
    let db = TestDb::new(backend).await;
    let store = store_on(&db).await;
    let Taken::Opened(first) = store
        .take_alert("checkout-api/oom_killed", &alert(1), opening)
        .await
        .unwrap()
    else {
        panic!("opened")
    };
    let (mut a, mut b) = (*first.clone(), *first);
    a.status = Status::Analyzing;
    let _ = store.save(&a).await.unwrap();
    b.status = Status::Escalated;
    assert!(matches!(store.save(&b).await, Err(StoreError::Conflict(_))));
    assert_eq!(
        store.get_incident(a.id).await.unwrap().unwrap().status,
        Status::Analyzing
    );

    // An alert joins after the closing write read the row.
    let mut closing = store.get_incident(a.id).await.unwrap().unwrap();
    closing.alerts_seen_rev = closing.alerts_rev;
    store
        .take_alert("checkout-api/oom_killed", &alert(2), opening)
        .await
        .unwrap();
    closing.status = Status::Resolved;
    assert!(matches!(
        store.save(&closing).await,
        Err(StoreError::Conflict(_))
    ));
    let now = store.get_incident(a.id).await.unwrap().unwrap();
    assert_eq!(now.status, Status::Analyzing);
    assert_eq!(now.alerts.records.len(), 2);
    // Having seen it, the close goes through and lets the failure key go: the next alert
    // opens a new incident.
    let mut closing = now;
    closing.alerts_seen_rev = closing.alerts_rev;
    closing.status = Status::Resolved;
    let _ = store.save(&closing).await.unwrap();
    let next = store
        .take_alert("checkout-api/oom_killed", &alert(3), opening)
        .await
        .unwrap();
    assert!(
        matches!(next, Taken::Opened(ref i) if i.id != closing.id),
        "{next:?}"
    );
    store.close().await;
}

/// The group-commit writer under load: many incidents' steps written at once land in as few
/// commits as the writer makes of them, each incident's appended timeline reads back whole and
/// in order, and a stale write inside a batch is refused alone (its neighbours commit).
async fn concurrent_steps_of_many_incidents_commit_together_and_read_back_in_order(
    backend: Backend,
) {
    const INCIDENTS: usize = 40;
    const STEPS: usize = 6;
    let db = TestDb::new(backend).await;
    let store = store_on(&db).await;
    let mut incidents = Vec::new();
    for i in 0..INCIDENTS {
        incidents.push(open(&store, &format!("storm {i}")).await);
    }
    // A write naming a revision the row no longer has, racing with all of them.
    let stale = open(&store, "stale").await;
    let _ = store.save(&stale).await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for mut incident in incidents.clone() {
        let store = store.clone();
        writers.spawn(async move {
            for step in 0..STEPS {
                // One or two entries per step, the second with text that needs escaping.
                for k in 0..=(step % 2) {
                    incident.metadata.timeline.push(TimelineEntry {
                        at: Utc::now(),
                        trace_id: incident.trace_id.clone(),
                        kind: TimelineKind::Note,
                        message: format!("step {step}.{k} «quoted» \"and\" \\ done"),
                        detail: json!({ "step": step, "k": k }),
                    });
                }
                incident.status = if step == 0 {
                    Status::Analyzing
                } else {
                    incident.status
                };
                store.save(&incident).await.unwrap().apply(&mut incident);
            }
            incident
        });
    }
    let refused = store.save(&stale).await;
    let written = writers.join_all().await;
    assert!(
        matches!(refused, Err(sre_agent::store::StoreError::Conflict(_))),
        "{refused:?}"
    );
    for mine in written {
        let stored = store.get_incident(mine.id).await.unwrap().unwrap();
        assert_eq!(stored.revision, STEPS as i64);
        assert_eq!(stored.status, Status::Analyzing);
        assert_eq!(stored.metadata.timeline, mine.metadata.timeline);
        let notes: Vec<&str> = stored.metadata.timeline[1..]
            .iter()
            .map(|e| e.message.as_str())
            .collect();
        let expected: Vec<String> = (0..STEPS)
            .flat_map(|step| {
                (0..=(step % 2)).map(move |k| format!("step {step}.{k} «quoted» \"and\" \\ done"))
            })
            .collect();
        assert_eq!(notes, expected);
    }
    store.close().await;
}

/// A step that adds more timeline entries than one append in the database takes (a model's
/// turn of hundreds of refused calls: SQLite allows 1,000 arguments to a function) is
/// appended in several, and reads back whole and in order; so does a copy that forgets what
/// is written after each write, as an incident actor does.
async fn a_step_with_hundreds_of_new_entries_is_appended_whole(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store_on(&db).await;
    for forgetting in [false, true] {
        let mut incident = open(&store, "a long turn").await;
        let mut all = incident.metadata.timeline.clone();
        if forgetting {
            incident.forget_stored_timeline();
            assert!(incident.metadata.timeline.is_empty());
        }
        for round in [3, 700, 5] {
            for i in 0..round {
                let entry = TimelineEntry {
                    at: Utc::now(),
                    trace_id: incident.trace_id.clone(),
                    kind: TimelineKind::Note,
                    message: format!("round {round}, call {i} not run"),
                    detail: json!({ "i": i }),
                };
                all.push(entry.clone());
                incident.metadata.timeline.push(entry);
            }
            store.save(&incident).await.unwrap().apply(&mut incident);
            if forgetting {
                incident.forget_stored_timeline();
                assert!(incident.metadata.timeline.is_empty());
            }
            assert_eq!(incident.timeline_len(), all.len());
        }
        let stored = store.get_incident(incident.id).await.unwrap().unwrap();
        assert_eq!(stored.metadata.timeline.len(), 1 + 3 + 700 + 5);
        assert_eq!(stored.metadata.timeline, all, "forgetting: {forgetting}");
        assert_eq!(stored.revision, 3);
    }
    store.close().await;
}

async fn an_idempotency_key_answers_its_request_until_it_is_forgotten(backend: Backend) {
    // Goal: a key opens one incident; the same request again is answered with it, another
    // request under the key is refused; once the key is older than what is kept, it opens a
    // new incident and the old row lets it go. Method: the store's create_incident_once with
    // `kept_since` before and after the first row.
    let db = TestDb::new(backend).await;
    let store = store_on(&db).await;
    let key = IdempotencyKey::parse(b"retry-7").unwrap();
    let new = || {
        let request = NewIncidentRequest {
            title: Some("checkout-api OOMKilled".into()),
            severity: Some("critical".into()),
            ..Default::default()
        };
        NewIncident::parse(request, "api").unwrap()
    };
    let kept = Utc::now() - chrono::Duration::hours(1);
    let once = |digest: &'static str, kept_since| {
        let (store, key, new) = (store.clone(), key.clone(), new());
        async move {
            store
                .create_incident_once(new, &TraceId::generate(), &key, digest, kept_since)
                .await
                .unwrap()
        }
    };
    let Created::New(first) = once("d1", kept).await else {
        panic!("a new key opens an incident")
    };
    assert!(matches!(once("d1", kept).await, Created::Replayed(i) if i.id == first.id));
    assert!(matches!(once("d2", kept).await, Created::KeyReused(id) if id == first.id));
    // The key is now older than what is kept: a new incident, which holds the key.
    let later = Utc::now() + chrono::Duration::hours(1);
    let Created::New(second) = once("d2", later).await else {
        panic!("a forgotten key opens a new incident")
    };
    assert_ne!(second.id, first.id);
    assert!(matches!(once("d2", kept).await, Created::Replayed(i) if i.id == second.id));
    assert_eq!(store.unfinished(10).await.unwrap(), [first.id, second.id]);
}
