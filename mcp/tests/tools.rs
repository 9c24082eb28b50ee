//! Every tool of the three servers, through rmcp's client, over stdio (the real binaries)
//! and over streamable HTTP, against a real `sre-fleet`. Assertions are on results, tool
//! errors and the fleet's ledger.

mod support;

use serde_json::json;
use support::{Server, Transport, call, connect, ok, refused, start_fleet};

async fn lists_and_calls_every_tool(transport: Transport) {
    let fleet = start_fleet().await;
    fleet.inject("oom-kill").await;

    for server in Server::ALL {
        let client = connect(server, transport, &fleet.url).await;
        let info = client.peer_info().expect("server info after initialize");
        let name = info
            .server_info
            .as_ref()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        assert!(name.ends_with("-mcp"), "{:?}", info.server_info);
        let mut tools = client.list_all_tools().await.unwrap();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names, server.tools(), "{server:?} over {transport:?}");
        for tool in &tools {
            assert!(
                tool.description.as_ref().is_some_and(|d| d.len() > 40),
                "{}",
                tool.name
            );
            let props = tool.input_schema["properties"]
                .as_object()
                .expect("properties");
            for (arg, schema) in props {
                assert!(
                    schema.get("description").is_some(),
                    "{}.{arg} has no description",
                    tool.name
                );
            }
        }
        client.cancel().await.unwrap();
    }

    let mapping = connect(Server::Mapping, transport, &fleet.url).await;
    let mapped = ok(&call(
        &mapping,
        "map-alert-to-service",
        json!({"alertType": "checkoutapioomkilled"}),
        None,
    )
    .await);
    assert_eq!(mapped["service"], "checkout-api");
    assert_eq!(mapped["tier"], "stateless");
    assert_eq!(mapped["runbook"], "checkout-api");
    let db = ok(&call(
        &mapping,
        "map-alert-to-service",
        json!({"alertType": "PaymentsDbUnreachable"}),
        None,
    )
    .await);
    assert_eq!(
        (db["service"].as_str(), db["tier"].as_str()),
        (Some("payments-db"), Some("database"))
    );
    let runbook = ok(&call(
        &mapping,
        "get-runbook",
        json!({"serviceName": "checkout-api"}),
        None,
    )
    .await);
    assert!(runbook["text"].as_str().unwrap().contains("OOMKilled"));
    let steps = runbook["spec"]["remediation"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["tool"] == "restart-pod" && s["autonomy"] == "auto")
    );
    let db_runbook = ok(&call(
        &mapping,
        "get-runbook",
        json!({"serviceName": "payments-db"}),
        None,
    )
    .await);
    assert!(
        db_runbook["spec"]["remediation"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["tool"] != "restart-pod" || s["autonomy"] == "approval")
    );
    mapping.cancel().await.unwrap();

    let observability = connect(Server::Observability, transport, &fleet.url).await;
    let metrics = ok(&call(
        &observability,
        "get-metrics",
        json!({"serviceName": "checkout-api"}),
        None,
    )
    .await);
    let pods = metrics["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 3);
    let oom: Vec<_> = pods
        .iter()
        .filter(|p| p["last_termination_reason"] == "OOMKilled")
        .collect();
    assert_eq!(oom.len(), 1, "{pods:?}");
    let oom_pod = oom[0]["name"].as_str().unwrap().to_owned();
    assert!(oom[0]["restarts"].as_u64().unwrap() >= 3);
    assert!(
        oom[0]["memory_used_bytes"].as_u64().unwrap()
            > oom[0]["memory_limit_bytes"].as_u64().unwrap() * 8 / 10
    );
    let logs = ok(&call(
        &observability,
        "get-logs",
        json!({"serviceName": "checkout-api", "timeRange": "15m"}),
        None,
    )
    .await);
    let lines = logs["lines"].as_array().unwrap();
    assert!(lines.iter().any(
        |l| l["message"].as_str().unwrap().contains("OutOfMemoryError")
            && l["pod"] == oom_pod.as_str()
    ));
    let few = ok(&call(
        &observability,
        "get-logs",
        json!({"serviceName": "checkout-api", "timeRange": "15m", "maxLines": 1}),
        None,
    )
    .await);
    assert_eq!(few["lines"].as_array().unwrap().len(), 1);
    assert_eq!(few["truncated"], true);

    let remediation = connect(Server::Remediation, transport, &fleet.url).await;
    let restarted = ok(&call(
        &remediation,
        "restart-pod",
        json!({"podName": oom_pod, "idempotencyKey": "t:1"}),
        None,
    )
    .await);
    assert_eq!(restarted["previous_termination_reason"], "OOMKilled");
    assert_eq!(restarted["replayed"], false);
    let after = ok(&call(
        &observability,
        "get-metrics",
        json!({"serviceName": "checkout-api"}),
        None,
    )
    .await);
    let pod = after["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == oom_pod.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (
            pod["phase"].as_str(),
            pod["ready"].as_bool(),
            pod["restarts"].as_u64()
        ),
        (Some("Running"), Some(true), Some(0))
    );
    let receipt = ok(&call(
        &remediation,
        "send-notification",
        json!({"message": "restarted the OOM-killed pod", "severity": "warning"}),
        None,
    )
    .await);
    assert_eq!(receipt["channel"], "inbox");

    let ledger = fleet.ledger().await;
    let actions: Vec<_> = ledger
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("restart-pod", oom_pod.as_str()),
            ("send-notification", "warning")
        ]
    );
    observability.cancel().await.unwrap();
    remediation.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_works_over_stdio() {
    lists_and_calls_every_tool(Transport::Stdio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_works_over_streamable_http() {
    lists_and_calls_every_tool(Transport::Http).await;
}

async fn bad_arguments_are_tool_errors(transport: Transport) {
    let fleet = start_fleet().await;
    let mapping = connect(Server::Mapping, transport, &fleet.url).await;
    let observability = connect(Server::Observability, transport, &fleet.url).await;
    let remediation = connect(Server::Remediation, transport, &fleet.url).await;
    let long = "x".repeat(5000);
    let cases = [
        (
            &mapping,
            "map-alert-to-service",
            json!({"alertType": "NoSuchAlert"}),
            "known alert types",
        ),
        (
            &mapping,
            "map-alert-to-service",
            json!({"alertType": ""}),
            "alertType",
        ),
        (
            &mapping,
            "map-alert-to-service",
            json!({"alertType": long}),
            "alertType",
        ),
        (&mapping, "map-alert-to-service", json!({}), "alertType"),
        (
            &mapping,
            "map-alert-to-service",
            json!({"alertType": 7}),
            "invalid type",
        ),
        (
            &mapping,
            "get-runbook",
            json!({"serviceName": "no-such-service"}),
            "known services",
        ),
        (
            &mapping,
            "get-runbook",
            json!({"serviceName": "../../etc/passwd"}),
            "serviceName",
        ),
        (
            &mapping,
            "get-runbook",
            json!({"serviceName": "checkout-api", "extra": 1}),
            "unknown field",
        ),
        (
            &observability,
            "get-metrics",
            json!({"serviceName": "no-such-service"}),
            "known services",
        ),
        (
            &observability,
            "get-logs",
            json!({"serviceName": "checkout-api", "timeRange": "yesterday"}),
            "timeRange",
        ),
        (
            &observability,
            "get-logs",
            json!({"serviceName": "checkout-api", "timeRange": "30d"}),
            "timeRange",
        ),
        (
            &observability,
            "get-logs",
            json!({"serviceName": "checkout-api", "timeRange": "1h", "maxLines": 0}),
            "maxLines",
        ),
        (
            &observability,
            "get-logs",
            json!({"serviceName": "checkout-api"}),
            "timeRange",
        ),
        (
            &remediation,
            "restart-pod",
            json!({"podName": "no-such-pod-0"}),
            "no pod named",
        ),
        (
            &remediation,
            "restart-pod",
            json!({"podName": "Bad Pod!"}),
            "podName",
        ),
        (
            &remediation,
            "restart-pod",
            json!({"podName": "checkout-api-0", "idempotencyKey": ""}),
            "idempotencyKey",
        ),
        (
            &remediation,
            "send-notification",
            json!({"message": "  ", "severity": "info"}),
            "empty",
        ),
        (
            &remediation,
            "send-notification",
            json!({"message": "hi", "severity": "apocalyptic"}),
            "severity",
        ),
        (
            &remediation,
            "send-notification",
            json!({"message": long, "severity": "info"}),
            "4096",
        ),
    ];
    for (client, tool, args, mentions) in cases {
        let result = call(client, tool, args.clone(), None).await;
        let message = refused(&result);
        assert!(
            message.contains(mentions),
            "{tool} {args}: {message:?} lacks {mentions:?}"
        );
    }
    // An unknown tool is a protocol error, and the session survives it.
    assert!(
        mapping
            .call_tool(support::request("drop-database", json!({})))
            .await
            .is_err()
    );
    ok(&call(
        &mapping,
        "map-alert-to-service",
        json!({"alertType": "PaymentsDbDown"}),
        None,
    )
    .await);
    assert!(
        fleet.ledger().await.is_empty(),
        "no bad call reached the world"
    );
    for c in [mapping, observability, remediation] {
        c.cancel().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_clear_tool_errors_over_stdio() {
    bad_arguments_are_tool_errors(Transport::Stdio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_clear_tool_errors_over_streamable_http() {
    bad_arguments_are_tool_errors(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_acts_once_and_carries_the_trace_id() {
    // Goal: a retried mutating call never acts twice. Method: the same restart and the same
    // notification twice each with one key, then the key reused for another pod; count
    // ledger entries and check the trace id in `_meta` reached them.
    let fleet = start_fleet().await;
    let remediation = connect(Server::Remediation, Transport::Stdio, &fleet.url).await;
    let observability = connect(Server::Observability, Transport::Stdio, &fleet.url).await;
    let metrics = ok(&call(
        &observability,
        "get-metrics",
        json!({"serviceName": "checkout-api"}),
        None,
    )
    .await);
    let pods: Vec<String> = metrics["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";

    let args = json!({"podName": pods[0], "idempotencyKey": "incident-1:3"});
    let first = ok(&call(&remediation, "restart-pod", args.clone(), Some(trace)).await);
    let second = ok(&call(&remediation, "restart-pod", args, Some(trace)).await);
    assert_eq!(
        (first["replayed"].as_bool(), second["replayed"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(first["ledger_seq"], second["ledger_seq"]);
    let reused = call(
        &remediation,
        "restart-pod",
        json!({"podName": pods[1], "idempotencyKey": "incident-1:3"}),
        Some(trace),
    )
    .await;
    assert!(refused(&reused).contains("already used"));

    let note =
        json!({"message": "restarted", "severity": "info", "idempotencyKey": "incident-1:4"});
    ok(&call(&remediation, "send-notification", note.clone(), Some(trace)).await);
    let again = ok(&call(&remediation, "send-notification", note, Some(trace)).await);
    assert_eq!(again["replayed"], true);

    let ledger = fleet.ledger().await;
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert_eq!(
        ledger
            .iter()
            .filter(|e| e.idempotency_key.as_deref() == Some("incident-1:3"))
            .count(),
        1
    );
    assert!(ledger.iter().all(|e| e.trace_id.as_deref() == Some(trace)));
    remediation.cancel().await.unwrap();
    observability.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_fleet_is_a_tool_error_and_the_server_keeps_serving() {
    // Goal: an unreachable backend never crashes a server. Method: point observability at a
    // port nobody listens on; the call fails as a tool error saying so, and the next works
    // once it points at a live fleet through a second session.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let client = connect(Server::Observability, Transport::Stdio, &url).await;
    let result = call(
        &client,
        "get-metrics",
        json!({"serviceName": "checkout-api"}),
        None,
    )
    .await;
    assert!(refused(&result).contains("unavailable"));
    let again = call(
        &client,
        "get-metrics",
        json!({"serviceName": "checkout-api"}),
        None,
    )
    .await;
    assert!(
        refused(&again).contains("unavailable"),
        "still answering after a failure"
    );
    client.cancel().await.unwrap();
}
