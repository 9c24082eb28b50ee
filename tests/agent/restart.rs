//! The real `sre-agent serve` binary killed (SIGKILL) or stopped (SIGTERM) between two alerts
//! for the same pod: the restart window lives in the database, so the second alert, after
//! the agent came back on the same file, gets a proposal and the pod is restarted once.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::adversarial::{pods_at, wait_for_new_oom_kill};
use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_sre-agent");

struct Agent {
    child: Child,
    api: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_agent(http: &reqwest::Client, database_url: &str, fleet: &str) -> Agent {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            database_url,
            "--fleet-url",
            fleet,
            "--verify-interval-ms",
            "100",
            "--adopt-interval-ms",
            "500",
        ])
        .env_remove("DATABASE_URL")
        .env_remove("SRE_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let agent = Agent {
        child,
        api: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{}/readyz", agent.api)).send().await
            && r.status() == 200
        {
            return agent;
        }
        assert!(Instant::now() < deadline, "the agent did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP client, a database file in a temporary directory, and a fleet with `scenarios`.
struct Bench {
    http: reqwest::Client,
    database_url: String,
    fleet: String,
    _fleet_stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn bench(scenarios: &[&str]) -> Bench {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("agent.db").display());
    let (fleet, stop) = start_fleet(scenarios).await;
    Bench {
        http,
        database_url,
        fleet,
        _fleet_stop: stop,
        _dir: dir,
    }
}

/// Ends the agent with `signal` and waits for the process to exit.
fn end(mut agent: Agent, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the agent did not exit on {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn one_restart_across_an_agent_restart(signal: &str) {
    let b = bench(&["oom-kill-recurring"]).await;
    let (http, database_url, fleet) = (&b.http, &b.database_url, &b.fleet);
    let oom = pods_at(http, fleet, "checkout-api")
        .await
        .into_iter()
        .find(|p| p["last_termination_reason"] == "OOMKilled")
        .expect("the scenario has an OOM-killed pod");
    let pod = oom["name"].as_str().unwrap().to_owned();
    let uid_before = oom["uid"].as_str().unwrap().to_owned();

    let agent = spawn_agent(http, database_url, fleet).await;
    let (first, _) = post(http, &agent.api, OOM_ALERT, "checkout-api").await;
    let first = finished(http, &agent.api, &first).await;
    assert_eq!(first["status"], "resolved", "{first:#}");
    end(agent, signal);

    let agent = spawn_agent(http, database_url, fleet).await;
    wait_for_new_oom_kill(http, fleet, &pod, &uid_before).await;
    let (second, _) = post(http, &agent.api, OOM_ALERT, "checkout-api").await;
    let second = finished(http, &agent.api, &second).await;
    let ledger = get_json(http, &format!("{fleet}/v1/ledger")).await["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "restart-pod")
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(ledger.len(), 1, "one restart after {signal}: {ledger:#?}");
    let restart = &actions(&second, "restart-pod")[0];
    assert_eq!(restart["decision"], "proposed", "{second:#}");
    assert!(
        restart["reason"]
            .as_str()
            .unwrap()
            .contains("current window"),
        "{restart:#}"
    );
    end(agent, "TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_remembers_the_pod_it_restarted() {
    // Goal and method: see the module: SIGKILL between the two alerts.
    one_restart_across_an_agent_restart("KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_agent_remembers_the_pod_it_restarted() {
    // Goal and method: see the module: a clean SIGTERM between the two alerts.
    one_restart_across_an_agent_restart("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_retrying_with_its_idempotency_key_across_a_sigkill_opens_one_incident() {
    // Goal: the service dies after committing an incident but (as far as the client knows)
    // before answering; the client retries with the same Idempotency-Key: one incident.
    // Method: the real binary; POST with a key; SIGKILL; start again on the same file;
    // the same POST again; count the incidents.
    let b = bench(&["db-outage"]).await;
    let (http, database_url, fleet) = (&b.http, &b.database_url, &b.fleet);
    let body = serde_json::json!({
        "title": "payments-db is down",
        "severity": "critical",
        "alert_type": DB_ALERT,
        "coalesce": false,
    });
    let send = |api: String| {
        let (http, body) = (http.clone(), body.clone());
        async move {
            http.post(format!("{api}/incidents"))
                .header("Idempotency-Key", "am-payments-db-1700000000")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let agent = spawn_agent(http, database_url, fleet).await;
    let first = send(agent.api.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    end(agent, "KILL");
    let agent = spawn_agent(http, database_url, fleet).await;
    let retry = send(agent.api.clone()).await;
    assert_eq!(retry.status(), 200);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    let list = get_json(http, &format!("{}/incidents", agent.api)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list:#}");
    end(agent, "TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_storm_finishes_the_steps_in_flight_and_leaves_nothing_started() {
    // Goal: a deploy is not a crash: on SIGTERM the service stops taking incidents (503),
    // lets each incident finish the step it is in, and exits within its grace period with
    // no mutating call left `started`; the next start finishes every incident. Method: the
    // real binary on one database file, three rounds: 8 clients post incidents, SIGTERM
    // lands once 40, 160 and 280 of them were accepted (by count, not by time: on a quiet
    // host the 320 incidents of a round finish within a second), and the rows are read
    // from the file after each exit; then the binary is started once more and every
    // incident must finish.
    use sre_agent::incident::ActionStatus;
    use sre_agent::store::{DbConfig, Store};

    let b = bench(&["oom-kill", "db-outage"]).await;
    let (http, database_url, fleet) = (&b.http, &b.database_url, &b.fleet);
    let db = DbConfig {
        url: database_url.clone(),
        max_connections: 2,
        acquire_timeout_ms: 5_000,
        connect_timeout_ms: 5_000,
        sqlite_busy_timeout_ms: 5_000,
        statement_timeout_ms: 5_000,
    };
    let (mut ids, mut unfinished, mut started) = (Vec::new(), 0, Vec::new());
    for (round, after) in [40usize, 160, 280].into_iter().enumerate() {
        let agent = spawn_agent(http, database_url, fleet).await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..8 {
            let (http, api) = (http.clone(), agent.api.clone());
            let accepted = accepted.clone();
            clients.spawn(async move {
                let mut ids = Vec::new();
                for i in 0..40 {
                    let alert = if (c + i) % 2 == 0 {
                        OOM_ALERT
                    } else {
                        DB_ALERT
                    };
                    let response = http
                        .post(format!("{api}/incidents"))
                        .json(&serde_json::json!({
                            "title": format!("{alert} {round}/{c}/{i}"),
                            "severity": "critical",
                            "alert_type": alert,
                            "coalesce": false,
                        }))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 202 => {
                            let v: Value = r.json().await.unwrap();
                            ids.push(v["id"].as_str().unwrap().to_owned());
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        // Refused while stopping, or no one listening any more.
                        Ok(r) => assert_eq!(r.status(), 503),
                        Err(_) => break,
                    }
                }
                ids
            });
        }
        let waited = Instant::now();
        while accepted.load(Ordering::Relaxed) < after && waited.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let signalled = Instant::now();
        end(agent, "TERM");
        let took = signalled.elapsed();
        assert!(took < Duration::from_secs(10), "exited after {took:?}");
        let mut round_ids = Vec::new();
        while let Some(batch) = clients.join_next().await {
            round_ids.extend(batch.unwrap());
        }
        let store = Store::connect(&db).await.unwrap();
        for id in &round_ids {
            let incident = store
                .get_incident(id.parse().unwrap())
                .await
                .unwrap()
                .unwrap();
            unfinished += usize::from(!incident.status.is_terminal());
            for a in &incident.actions_taken {
                if a.status == ActionStatus::Started {
                    started.push(format!("{id} #{} {}", a.seq, a.tool));
                }
            }
        }
        store.close().await;
        eprintln!(
            "round {round}: {} accepted, SIGTERM after {after} accepted ({:?}), exited after {took:?}",
            round_ids.len(),
            signalled - waited
        );
        ids.extend(round_ids);
    }
    assert!(started.is_empty(), "left started: {started:?}");
    assert!(
        unfinished > 0,
        "the SIGTERMs came after the storms: nothing was in flight"
    );

    let agent = spawn_agent(http, database_url, fleet).await;
    for id in &ids {
        let incident = finished(http, &agent.api, id).await;
        assert_ne!(incident["status"], "failed", "{incident:#}");
    }
    eprintln!(
        "{} incidents, {unfinished} unfinished at a stop, none left started",
        ids.len()
    );
    end(agent, "TERM");
}
