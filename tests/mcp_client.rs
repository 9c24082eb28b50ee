//! `McpClientActor` against the real MCP server binaries (built by `cargo nextest run
//! --workspace`, which builds the `mcp` crate's binaries for its own tests): concurrent calls
//! carrying the trace id, a killed server process, a call that outlives its timeout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mcp::fleet::http::serve;
use ractor::{Actor, ActorRef, call_t};
use serde_json::{Map, Value, json};
use sre_agent::mcp_client::{
    ClientStatus, McpCallError, McpClientActor, McpClientMsg, McpServerSpec, ServerTransport,
    ToolCall,
};

/// A binary of the `mcp` crate, next to this test's own executable.
fn server_binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p mcp --bins` first",
        path.display()
    );
    path
}

async fn start_fleet() -> String {
    let fleet = mcp::data::load_fleet(None, chrono::Utc::now()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, fleet, std::future::pending()));
    url
}

fn spec(name: &str, args: &[&str], call_timeout_ms: u64) -> McpServerSpec {
    McpServerSpec {
        name: name.into(),
        transport: ServerTransport::Stdio {
            program: server_binary(&format!("{name}-mcp")),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        },
        call_timeout_ms,
        connect_timeout_ms: 10_000,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
    }
}

async fn status(actor: &ActorRef<McpClientMsg>) -> ClientStatus {
    call_t!(actor, McpClientMsg::Status, 5_000).unwrap()
}

async fn wait_connected(actor: &ActorRef<McpClientMsg>, connects: u64) -> ClientStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(actor).await;
        if s.connected && s.connects >= connects {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "not connected within 20 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

async fn call(
    actor: &ActorRef<McpClientMsg>,
    tool: &str,
    arguments: Value,
    trace: Option<&str>,
) -> Result<rmcp::model::CallToolResult, McpCallError> {
    let call = ToolCall {
        tool: tool.into(),
        arguments: args(arguments),
        trace_id: trace.map(str::to_owned),
    };
    call_t!(actor, McpClientMsg::Call, 30_000, call).expect("the actor answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_concurrently_and_carry_the_trace_id_to_the_ledger() {
    let fleet = start_fleet().await;
    let (actor, handle) = Actor::spawn(
        None,
        McpClientActor,
        spec("remediation", &["--fleet-url", &fleet], 5_000),
    )
    .await
    .unwrap();
    let s = wait_connected(&actor, 1).await;
    assert_eq!(s.tools.len(), 2);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let actor = actor.clone();
        tasks.spawn(async move {
            let arguments = json!({"message": format!("note {i}"), "severity": "info", "idempotencyKey": format!("inc:{i}")});
            call(&actor, "send-notification", arguments, Some("4bf92f3577b34da6a3ce929d0e0e4736")).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        let result = result.unwrap().expect("every call succeeds");
        assert_ne!(result.is_error, Some(true));
    }
    let ledger: Value = reqwest::get(format!("{fleet}/v1/ledger"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = ledger["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 20);
    assert!(
        entries
            .iter()
            .all(|e| e["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
    );
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_calls_fast_and_is_replaced_without_a_zombie() {
    // Goal: a dying MCP server costs a retry, not a hang or a leaked process. Method: kill
    // the server with SIGKILL; every call meanwhile must answer within 3 s; a call must
    // succeed again within 20 s on a new process, and the old one must be reaped.
    let (actor, handle) = Actor::spawn(None, McpClientActor, spec("mapping", &[], 5_000))
        .await
        .unwrap();
    let first = wait_connected(&actor, 1).await;
    let old_pid = first.pid.expect("a stdio server has a pid");
    let ok = call(
        &actor,
        "map-alert-to-service",
        json!({"alertType": "PaymentsDbDown"}),
        None,
    )
    .await
    .unwrap();
    assert_ne!(ok.is_error, Some(true));

    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &old_pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = Instant::now();
        let result = call(
            &actor,
            "map-alert-to-service",
            json!({"alertType": "PaymentsDbDown"}),
            None,
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a call took {:?}",
            started.elapsed()
        );
        match result {
            Ok(r) if r.is_error != Some(true) => break,
            Ok(r) => panic!("tool error: {r:?}"),
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
        assert!(Instant::now() < deadline, "no reconnect within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = status(&actor).await;
    assert_eq!(now.connects, 2);
    assert_ne!(now.pid, Some(old_pid));
    let stat = std::fs::read_to_string(format!("/proc/{old_pid}/stat")).unwrap_or_default();
    assert!(
        !stat.contains(") Z "),
        "the killed server is a zombie: {stat}"
    );

    // Stopping the actor ends its server process too.
    let new_pid = now.pid.unwrap();
    actor.stop(None);
    handle.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{new_pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{new_pid}/stat")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "server {new_pid} still there after stop: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_outlives_its_timeout_fails_and_the_next_one_still_works() {
    // A "fleet" that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let spec = spec(
        "observability",
        &["--fleet-url", &silent_url, "--fleet-timeout-ms", "60000"],
        300,
    );
    let (actor, handle) = Actor::spawn(None, McpClientActor, spec).await.unwrap();
    wait_connected(&actor, 1).await;
    for _ in 0..2 {
        let started = Instant::now();
        let err = call(
            &actor,
            "get-metrics",
            json!({"serviceName": "checkout-api"}),
            None,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                McpCallError::Timeout {
                    timeout_ms: 300,
                    ..
                }
            ),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    let unknown = call(&actor, "drop-database", json!({}), None)
        .await
        .unwrap_err();
    assert!(matches!(unknown, McpCallError::UnknownTool { .. }) && !unknown.is_retryable());
    assert!(
        status(&actor).await.connected,
        "timeouts do not drop the connection"
    );
    actor.stop(None);
    handle.await.unwrap();
}
