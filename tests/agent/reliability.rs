//! Faults at the dangerous moments: the incident actor killed between the `started` record
//! of a restart and its result (before and after the call reached the fleet), the whole
//! agent stopped there and started again, an MCP server process killed mid-remediation,
//! and an incident whose actor dies every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::call_t;
use serde_json::Value;
use sre_agent::agent::incident::{HookFuture, IncidentHooks};
use sre_agent::incident::ActionRecord;
use sre_agent::mcp_client::McpClientMsg;
use sre_agent::reasoner::Server;
use uuid::Uuid;

use crate::helpers::*;

#[derive(Clone, Copy, PartialEq)]
pub enum Moment {
    /// After `started` is committed, before the call is made.
    BeforeCall,
    /// After the call answered, before its result is committed.
    AfterCall,
}

/// Parks the first restart at `moment` (for a minute: the test kills the actor meanwhile)
/// and says when it got there.
struct ParkFirstRestart {
    moment: Moment,
    reached: Arc<AtomicBool>,
    taken: AtomicBool,
}

impl ParkFirstRestart {
    fn new(moment: Moment) -> (Arc<Self>, Arc<AtomicBool>) {
        let reached = Arc::new(AtomicBool::new(false));
        let hook = Arc::new(ParkFirstRestart {
            moment,
            reached: reached.clone(),
            taken: AtomicBool::new(false),
        });
        (hook, reached)
    }

    fn park(&self, moment: Moment, action: &ActionRecord) -> HookFuture {
        if moment != self.moment
            || action.tool != "restart-pod"
            || self.taken.swap(true, Ordering::SeqCst)
        {
            return Box::pin(async {});
        }
        let reached = self.reached.clone();
        Box::pin(async move {
            reached.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
    }
}

impl IncidentHooks for ParkFirstRestart {
    fn before_mutation(&self, _: Uuid, action: &ActionRecord) -> HookFuture {
        self.park(Moment::BeforeCall, action)
    }
    fn after_mutation(&self, _: Uuid, action: &ActionRecord) -> HookFuture {
        self.park(Moment::AfterCall, action)
    }
}

async fn wait_for(flag: &AtomicBool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !flag.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "never reached: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn killed_mid_restart(moment: Moment, database_url: Option<String>) {
    let (hook, reached) = ParkFirstRestart::new(moment);
    let h = start(Options {
        hooks: Some(hook),
        database_url,
        ..Options::default()
    })
    .await;
    let pod = h.oom_killed_pod().await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    wait_for(&reached, "the parked restart").await;

    // The intent is committed before the call: the row says `started`, with its key.
    let row = h.incident(&id).await;
    let restart = actions(&row, "restart-pod")[0].clone();
    assert_eq!(restart["status"], "started", "{row:#}");
    assert_eq!(restart["idempotency_key"], format!("{id}:1"));
    let fleet_restarts = h.restarts_of("checkout-api").await.len();
    assert_eq!(fleet_restarts, usize::from(moment == Moment::AfterCall));

    let actor = ractor::registry::where_is(format!("incident/{id}"))
        .expect("the incident actor is registered");
    actor.kill();

    let incident = h.finished(&id).await;
    assert_oom_story(&h, &incident, &pod).await;
    let decisions = timeline(&incident, "decision").join("\n");
    assert!(
        decisions.contains("reconciling with the world"),
        "{decisions}"
    );
    let expected = match moment {
        Moment::BeforeCall => "reissued with the same key",
        Moment::AfterCall => "the restart happened",
    };
    assert!(decisions.contains(expected), "{decisions}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_resumes_after_its_actor_is_killed_before_the_restart_call() {
    // Goal: killed after `started` is committed and before the call, the incident still
    // ends resolved with exactly one restart. Method: park the call, kill the actor, let
    // the supervisor restart it; the new actor finds no sign of the restart and reissues it
    // with the same idempotency key.
    killed_mid_restart(Moment::BeforeCall, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_resumes_after_its_actor_is_killed_before_the_restart_result_is_saved() {
    // Goal: killed after the fleet restarted the pod but before the result was committed,
    // the restart is not repeated. Method: park after the call, kill the actor; the new
    // actor reads get-metrics, sees the pod started after the intent, and records it.
    killed_mid_restart(Moment::AfterCall, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_an_unfinished_incident_and_restarts_the_pod_once() {
    // Goal: the whole service stops mid-remediation and starts again on the same database;
    // the incident is adopted and finished without a second restart. Method: park the
    // restart after the call, stop the application (actors, clients, server processes),
    // start a new one on the same SQLite file and fleet.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("shared.db").display());
    let (hook, reached) = ParkFirstRestart::new(Moment::AfterCall);
    let mut first = start(Options {
        hooks: Some(hook),
        database_url: Some(db.clone()),
        ..Options::default()
    })
    .await;
    let pod = first.oom_killed_pod().await;
    let (id, _) = first.post(OOM_ALERT, "checkout-api").await;
    wait_for(&reached, "the parked restart").await;
    let fleet = first.fleet.clone();
    let stopped_row = first.incident(&id).await;
    assert_eq!(stopped_row["status"], "remediating");
    first.stop_agent_keep_fleet().await;

    let second = start(Options {
        database_url: Some(db),
        fleet_url: Some(fleet),
        ..Options::default()
    })
    .await;
    let incident = second.finished(&id).await;
    assert_oom_story(&second, &incident, &pod).await;
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_mcp_server_is_respawned_and_the_incident_finishes() {
    // Goal: the remediation server dies mid-incident, right before the restart call; the
    // client fails the call fast, reconnects with backoff to a new process, and the retried
    // call (same idempotency key) restarts the pod once. Method: SIGKILL the server's
    // process from the hook at that moment; read the row, the ledger and the client.
    struct KillServerOnce {
        /// Known only once the agent runs, so filled after start.
        pid: Arc<std::sync::OnceLock<u32>>,
        done: AtomicBool,
    }
    impl IncidentHooks for KillServerOnce {
        fn before_mutation(&self, _: Uuid, action: &ActionRecord) -> HookFuture {
            if action.tool == "restart-pod" && !self.done.swap(true, Ordering::SeqCst) {
                let pid = self.pid.get().expect("pid recorded before the incident");
                let status = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .expect("kill runs");
                assert!(status.success());
            }
            Box::pin(async {})
        }
    }
    let pid_cell = Arc::new(std::sync::OnceLock::<u32>::new());
    let h = start(Options {
        hooks: Some(Arc::new(KillServerOnce {
            pid: pid_cell.clone(),
            done: AtomicBool::new(false),
        })),
        ..Options::default()
    })
    .await;
    let client = h.client(Server::Remediation);
    let before = call_t!(client, McpClientMsg::Status, 5_000).unwrap();
    let old_pid = before.pid.expect("a stdio server has a pid");
    pid_cell.set(old_pid).unwrap();
    let pod = h.oom_killed_pod().await;

    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_oom_story(&h, &incident, &pod).await;

    let after = call_t!(client, McpClientMsg::Status, 5_000).unwrap();
    assert!(after.connected && after.connects >= 2, "{after:?}");
    assert_ne!(after.pid, Some(old_pid));
    // The killed process was reaped: no zombie left behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{old_pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if stat.is_empty() || !zombie {
            break;
        }
        assert!(Instant::now() < deadline, "pid {old_pid} is a zombie");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_whose_actor_always_dies_is_failed_and_others_carry_on() {
    // Goal: a poison incident is restarted a bounded number of times, then marked failed
    // with the reason; another incident at the same time is not affected. Method: a hook
    // that panics on every restart of checkout-api (the OOM incident), and a database
    // incident alongside.
    struct Poison;
    impl IncidentHooks for Poison {
        fn before_mutation(&self, _: Uuid, action: &ActionRecord) -> HookFuture {
            if action.tool == "restart-pod" {
                panic!("poison: this incident's actor dies at every restart");
            }
            Box::pin(async {})
        }
    }
    let h = start(Options {
        hooks: Some(Arc::new(Poison)),
        flags: vec!["--incident-restarts-max".into(), "2".into()],
        ..Options::default()
    })
    .await;
    let (poisoned, _) = h.post(OOM_ALERT, "checkout-api").await;
    let (healthy, _) = h.post(DB_ALERT, "payments-db").await;
    let failed = h.finished(&poisoned).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let reason = timeline(&failed, "status").join("\n");
    assert!(
        reason.contains("died 3 times") && reason.contains("poison"),
        "{reason}"
    );
    assert!(
        h.restarts_of("checkout-api").await.is_empty(),
        "the poison came before the call"
    );
    // Giving up tells a human, and the page is recorded on the incident.
    let deadline = Instant::now() + Duration::from_secs(20);
    let told = loop {
        let incident = h.incident(&poisoned).await;
        let notices: Vec<Value> = actions(&incident, "send-notification")
            .into_iter()
            .cloned()
            .collect();
        if notices.iter().any(|n| n["status"] == "succeeded") {
            break incident;
        }
        assert!(Instant::now() < deadline, "no page: {incident:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pages = h.pages_of(told["trace_id"].as_str().unwrap()).await;
    assert!(
        pages.iter().any(|p| p.contains("The agent gave up")),
        "{pages:#?}"
    );
    let other = h.finished(&healthy).await;
    assert_db_story(&h, &other).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_fleet_unreachable_an_incident_ends_escalated_without_looping() {
    // Goal: when the world cannot be read or changed, the agent neither guesses nor spins:
    // the incident ends escalated, the failed notice recorded, nothing restarted. Method:
    // point the servers at a loopback port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let h = start(Options {
        fleet_url: Some(closed),
        ..Options::default()
    })
    .await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    assert_eq!(incident["rca_analysis"]["confidence"], 0.0);
    assert!(actions(&incident, "restart-pod").is_empty());
    let notices = actions(&incident, "send-notification");
    assert_eq!(notices.len(), 1, "one notice, tried once: {incident:#}");
    assert_eq!(notices[0]["status"], "failed");
    h.stop().await;
}
