//! The binaries as an operator runs them: HTTP transport with its Host allow-list, garbage
//! on either transport, `sre-fleet` flags, and bad configuration refused with a message.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{call, http_client, ok, start_fleet};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} did not become healthy within 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_transport_checks_the_host_header_and_survives_garbage() {
    let fleet = start_fleet().await;
    fleet.inject("oom-kill").await;
    let port = free_port();
    let _server = Running(
        Command::new(env!("CARGO_BIN_EXE_observability-mcp"))
            .args([
                "--transport",
                "http",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args([
                "--allowed-host",
                "agent.internal",
                "--fleet-url",
                &fleet.url,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;

    let http = reqwest::Client::new();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"}}});
    let post = |host: &'static str, body: String| {
        http.post(format!("{base}/mcp"))
            .header("host", host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send()
    };
    // DNS-rebinding protection: an unknown Host is refused, a configured one accepted.
    assert_eq!(
        post("evil.example.com", initialize.to_string())
            .await
            .unwrap()
            .status(),
        403
    );
    assert!(
        post("agent.internal", initialize.to_string())
            .await
            .unwrap()
            .status()
            .is_success()
    );
    // Garbage bodies are client errors, and the server keeps serving.
    for garbage in ["{", "[]", "null", "\u{0}\u{1}", &"x".repeat(300 * 1024)] {
        let status = post("127.0.0.1", garbage.to_owned())
            .await
            .unwrap()
            .status();
        assert!(status.is_client_error(), "{status} for {:.20}", garbage);
    }
    let client = http_client(&format!("{base}/mcp")).await;
    let metrics = ok(&call(
        &client,
        "get-metrics",
        json!({"serviceName": "checkout-api"}),
        None,
    )
    .await);
    assert!(
        metrics["pods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["last_termination_reason"] == "OOMKilled")
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdio_transport_skips_garbage_lines_and_keeps_serving() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mapping-mcp"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let lines = [
        "this is not json".to_owned(),
        "{\"jsonrpc\": \"2.0\", \"id\": ".to_owned(),
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "probe", "version": "1"}}})
        .to_string(),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "map-alert-to-service", "arguments": {"alertType": "PaymentsDbDown"}}})
        .to_string(),
    ];
    for line in lines {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    stdin.flush().await.unwrap();
    let mut answered = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while answered.len() < 2 {
        let line = tokio::time::timeout_at(deadline, stdout.next_line())
            .await
            .expect("answers within 20 s")
            .unwrap()
            .expect("the server is still running");
        let message: serde_json::Value =
            serde_json::from_str(&line).expect("stdout holds only JSON-RPC");
        if message.get("id").is_some() {
            answered.push(message);
        }
    }
    let call = answered
        .iter()
        .find(|m| m["id"] == 2)
        .expect("the tool call is answered");
    assert_eq!(
        call["result"]["structuredContent"]["service"],
        "payments-db"
    );
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "closing stdin ends the server cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sre_fleet_injects_at_start_and_exposes_prometheus_metrics() {
    let port = free_port();
    let _fleet = Running(
        Command::new(env!("CARGO_BIN_EXE_sre-fleet"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--inject",
                "db-outage",
            ])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("# TYPE fleet_pod_ready gauge"));
    assert!(text.contains(
        "fleet_pod_ready{service=\"payments-db\",namespace=\"payments\",pod=\"payments-db-0\"} 0"
    ));
    let scenarios: serde_json::Value = reqwest::get(format!("{base}/v1/scenarios"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scenarios["active"], json!(["db-outage"]));
    // A misspelt field is refused, not dropped: a lost idempotency key could restart twice.
    let restart = reqwest::Client::new()
        .post(format!("{base}/v1/pods/payments-db-0/restart"))
        .json(&json!({"idempotencyKey": "k1"}))
        .send()
        .await
        .unwrap();
    assert!(restart.status().is_client_error(), "{}", restart.status());
    let ledger: serde_json::Value = reqwest::get(format!("{base}/v1/ledger"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger["entries"], json!([]));
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &str); 6] = [
        (
            env!("CARGO_BIN_EXE_sre-fleet"),
            &["--inject", "meteor-strike"],
            "no scenario named meteor-strike",
        ),
        (
            env!("CARGO_BIN_EXE_sre-fleet"),
            &["--listen", "nowhere"],
            "--listen",
        ),
        (
            env!("CARGO_BIN_EXE_mapping-mcp"),
            &["--transport", "carrier-pigeon"],
            "--transport",
        ),
        (
            env!("CARGO_BIN_EXE_mapping-mcp"),
            &["--data-dir", dir.path().to_str().unwrap()],
            "catalog.toml",
        ),
        (
            env!("CARGO_BIN_EXE_remediation-mcp"),
            &["--fleet-url", "fleet.internal:9400"],
            "not an http(s) URL",
        ),
        (
            env!("CARGO_BIN_EXE_observability-mcp"),
            &["--fleet-timeout-ms", "0"],
            "--fleet-timeout-ms",
        ),
    ];
    for (binary, args, mentions) in cases {
        let out = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{binary} {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
