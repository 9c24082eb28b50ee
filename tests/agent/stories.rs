//! The product's two stories, through the API, on both reasoners. The `openai` reasoner runs
//! against a local OpenAI-compatible server that answers in the real wire format, as
//! gpt-oss does: a `reasoning` field, a `functions.`-prefixed tool name, a `<|channel|>`
//! tail, malformed arguments, a 429 before the first answer.

use serde_json::Value;

use crate::fake_openai::{self, Scripted, final_reply, tool_call_reply};
use crate::helpers::*;

/// The agent with the `openai` reasoner pointed at `model`.
async fn start_with_model(model: &fake_openai::FakeOpenAi) -> Harness {
    start(Options {
        flags: openai_flags(&model.base_url()),
        ..Options::default()
    })
    .await
}

pub(crate) fn openai_flags(base_url: &str) -> Vec<String> {
    [
        "--reasoner",
        "openai",
        "--llm-base-url",
        base_url,
        "--llm-model",
        fake_openai::MODEL,
        "--llm-reasoning-effort",
        "low",
        "--llm-backoff-initial-ms",
        "50",
        "--llm-backoff-max-ms",
        "1000",
        // The scripted models make several calls a turn, as gpt-oss may.
        "--llm-parallel-tool-calls",
        "true",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// How many tool results the conversation already holds (one per `tool` message).
fn tool_results(request: &Value) -> usize {
    request["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oom_story_with_the_rules_reasoner_restarts_exactly_the_killed_pod_and_resolves() {
    // Goal: the OOM story of the product spec. Method: post the alert, wait, read the row
    // and the fleet's ledger.
    let h = start(Options::default()).await;
    let pod = h.oom_killed_pod().await;
    let (id, trace) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_oom_story(&h, &incident, &pod).await;
    assert_eq!(incident["rca_analysis"]["reasoner"], "rules");
    assert_eq!(incident["trace_id"], trace.as_str());
    // Every timeline entry carries the trace id; the status went through each state.
    let timeline = incident["metadata"]["timeline"].as_array().unwrap();
    assert!(timeline.iter().all(|e| e["trace_id"] == trace.as_str()));
    let statuses = crate::helpers::timeline(&incident, "status").join(" | ");
    for step in [
        "new → analyzing",
        "analyzing → remediating",
        "remediating → resolved",
    ] {
        assert!(statuses.contains(step), "{statuses}");
    }
    // The notification reached the inbox with the same trace id.
    let pages = h.pages_of(&trace).await;
    assert!(pages.iter().any(|p| p.contains(&pod)), "{pages:#?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_story_with_the_rules_reasoner_notifies_proposes_and_escalates() {
    // Goal: the database-outage story. Method: post the alert, read the row and the ledger.
    let h = start(Options::default()).await;
    let (id, _) = h.post(DB_ALERT, "payments-db").await;
    let incident = h.finished(&id).await;
    assert_db_story(&h, &incident).await;
    let restart = &actions(&incident, "restart-pod")[0];
    assert_eq!(restart["status"], "proposed");
    assert_eq!(restart["args"]["podName"], "payments-db-0");
    assert!(restart["reason"].as_str().unwrap().contains("approval"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_nobody_knows_is_escalated_with_a_notification_and_nothing_is_touched() {
    // Goal: what the rules reasoner cannot map it never acts on. Method: an unknown alert.
    let h = start(Options::default()).await;
    let (id, _) = h.post("DiskOnFireSomewhere", "unknown-svc").await;
    let incident = h.finished(&id).await;
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    assert!(actions(&incident, "restart-pod").is_empty());
    assert_eq!(
        actions(&incident, "send-notification")[0]["status"],
        "succeeded"
    );
    assert!(h.restarts_of("").await.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oom_story_with_the_openai_reasoner_survives_wire_noise_and_resolves() {
    // Goal: the OOM story through the `openai` reasoner, over the real HTTP wire format with
    // the noise gpt-oss produces. Method: a scripted model that answers by how many tool
    // results it has seen, so a retried request gets the same answer.
    let pod = expected_oom_pod();
    let pod_for_model = pod.clone();
    let model = fake_openai::start_with(move |request: &Value, index: usize| {
        if index == 0 {
            return Scripted::Status {
                code: 429,
                retry_after_secs: Some(1),
                body: r#"{"error":{"message":"rate limited"}}"#.into(),
            };
        }
        let restart = format!(r#"{{"podName":"{pod_for_model}"}}"#);
        let notify = format!(
            r#"{{"message":"checkout-api pod {pod_for_model} was OOMKilled; restarting it","severity":"critical"}}"#
        );
        Scripted::Reply(match tool_results(request) {
            0 => tool_call_reply(
                &[("functions.map-alert-to-service", r#"{"alertType":"CheckoutApiOOMKilled"}"#)],
                Some("Map the alert first."),
            ),
            1 => tool_call_reply(
                &[("get-runbook<|channel|>commentary", r#"{"serviceName": "checkout-api""#)],
                Some("Now the runbook."),
            ),
            2 => tool_call_reply(
                &[
                    ("get-runbook", r#"{"serviceName":"checkout-api"}"#),
                    ("get-metrics", r#"{"serviceName":"checkout-api"}"#),
                ],
                Some("Retry with valid JSON, and read the metrics."),
            ),
            4 => tool_call_reply(
                &[("get-logs", r#"{"serviceName":"checkout-api","timeRange":"15m"}"#)],
                None,
            ),
            5 => tool_call_reply(
                &[("restart-pod", restart.as_str()), ("send-notification", notify.as_str())],
                Some("The pod was OOMKilled; the runbook allows a restart."),
            ),
            _ => final_reply(&format!(
                r#"```json
{{"summary":"checkout-api pod {pod_for_model} was OOMKilled (memory at its 512 MiB limit)","root_cause":"JVM heap leak","confidence":0.85,"evidence":["{pod_for_model} last termination OOMKilled","java.lang.OutOfMemoryError in logs"]}}
```"#
            )),
        })
    })
    .await;
    let h = start_with_model(&model).await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_oom_story(&h, &incident, &pod).await;
    assert_eq!(
        incident["rca_analysis"]["reasoner"],
        format!("openai:{}", fake_openai::MODEL)
    );
    assert_eq!(incident["rca_analysis"]["service"], "checkout-api");

    let requests = model.requests();
    assert!(
        requests.len() >= 7,
        "the 429 was retried: {}",
        requests.len()
    );
    // The malformed arguments went back to the model as a tool result, not to a server.
    let last = requests.last().unwrap().to_string();
    assert!(last.contains("not a JSON object"), "{last}");
    // The model's reasoning was sent back on its tool-call turns.
    let messages = requests.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        messages
            .iter()
            .any(|m| m["role"] == "assistant" && m["reasoning"] == "Map the alert first.")
    );
    // The repaired names were the ones called.
    let calls = crate::helpers::timeline(&incident, "tool_call").join("\n");
    assert!(
        calls.contains("map-alert-to-service(alertType=CheckoutApiOOMKilled) → ok"),
        "{calls}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_story_with_the_openai_reasoner_never_restarts_the_database() {
    // Goal: a model that wants the database restarted gets a proposal, not a restart.
    // Method: the scripted model investigates and asks to restart payments-db-0.
    let model = fake_openai::start_with(|request: &Value, _| {
        Scripted::Reply(match tool_results(request) {
            0 => tool_call_reply(&[("map-alert-to-service", r#"{"alertType":"PaymentsDbDown"}"#)], Some("map")),
            1 => tool_call_reply(
                &[
                    ("get-runbook", r#"{"serviceName":"payments-db"}"#),
                    ("get-metrics", r#"{"serviceName":"payments-db"}"#),
                    ("get-logs", r#"{"serviceName":"payments-db","timeRange":"15m"}"#),
                ],
                Some("runbook and diagnostics"),
            ),
            4 => tool_call_reply(
                &[
                    ("restart-pod", r#"{"podName":"payments-db-0"}"#),
                    ("send-notification", r#"{"message":"payments-db is down: database system is shut down","severity":"critical"}"#),
                ],
                Some("restart the database"),
            ),
            _ => final_reply(r#"{"summary":"payments-db is down: PostgreSQL shut down, readiness failing","root_cause":"database shut down","confidence":0.8,"evidence":["payments-db-0 not ready"]}"#),
        })
    })
    .await;
    let h = start_with_model(&model).await;
    let (id, _) = h.post(DB_ALERT, "payments-db").await;
    let incident = h.finished(&id).await;
    assert_db_story(&h, &incident).await;
    let restart = &actions(&incident, "restart-pod")[0];
    assert_eq!(restart["decision"], "proposed");
    assert!(
        restart["reason"].as_str().unwrap().contains("approval"),
        "{restart:#}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hallucinating_model_is_refused_by_the_policy_and_nothing_is_restarted() {
    // Goal: what a model asks for is not what runs. Method: during the OOM incident the
    // model calls a tool that does not exist, then asks to restart the database's pod (not
    // a pod of checkout-api) and a pod that does not exist.
    let model = fake_openai::start_with(|request: &Value, _| {
        Scripted::Reply(match tool_results(request) {
            0 => tool_call_reply(&[("kubectl-delete-namespace", r#"{"namespace":"shop"}"#)], Some("delete it all")),
            1 => tool_call_reply(&[("map-alert-to-service", r#"{"alertType":"CheckoutApiOOMKilled"}"#)], None),
            2 => tool_call_reply(
                &[
                    ("restart-pod", r#"{"podName":"payments-db-0"}"#),
                    ("restart-pod", r#"{"podName":"checkout-api-imaginary-0"}"#),
                ],
                Some("restart things"),
            ),
            _ => final_reply(r#"{"summary":"restart everything","root_cause":"vibes","confidence":1.5,"evidence":[]}"#),
        })
    })
    .await;
    let h = start_with_model(&model).await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    let restarts = actions(&incident, "restart-pod");
    assert_eq!(restarts.len(), 2);
    for r in &restarts {
        assert_eq!(r["decision"], "denied", "{r:#}");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("not a pod of checkout-api"),
            "{r:#}"
        );
    }
    assert!(
        crate::helpers::timeline(&incident, "decision")
            .iter()
            .any(|d| d.contains("kubectl-delete-namespace") && d.contains("denied"))
    );
    assert_eq!(incident["rca_analysis"]["confidence"], 1.0, "clamped");
    assert!(h.restarts_of("").await.is_empty(), "no restart at all");
    assert!(
        actions(&incident, "send-notification")
            .iter()
            .any(|n| n["status"] == "succeeded"),
        "a human is told"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oom_story_runs_with_the_servers_over_streamable_http() {
    // Goal: the agent's other transport: the three servers already running, reached over
    // streamable HTTP instead of spawned. Method: serve them on loopback ports in the test,
    // point the agent at them with `--mcp-transport http`, run the OOM story.
    let (fleet, _fleet_stop) = start_fleet(&["oom-kill"]).await;
    let catalog = mcp::data::load_catalog(None).unwrap();
    let h = start(Options {
        flags: http_servers(&fleet, catalog).await,
        fleet_url: Some(fleet),
        ..Options::default()
    })
    .await;
    let pod = h.oom_killed_pod().await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_oom_story(&h, &incident, &pod).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_stays_down_leaves_the_incident_escalated_and_a_human_told() {
    // Goal: when the model endpoint keeps failing, the agent acts on nothing and pages a
    // human with the reason instead of going quiet. Method: a model server that answers
    // every request with a 500.
    let model = fake_openai::start(vec![]).await;
    let mut flags = openai_flags(&model.base_url());
    flags.extend(["--llm-retries-max".to_owned(), "1".to_owned()]);
    let h = start(Options {
        flags,
        ..Options::default()
    })
    .await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    assert_eq!(incident["rca_analysis"]["root_cause"], "undetermined");
    assert!(actions(&incident, "restart-pod").is_empty());
    let notice = &actions(&incident, "send-notification")[0];
    assert_eq!(notice["status"], "succeeded");
    let message = notice["args"]["message"].as_str().unwrap();
    assert!(
        message.contains("investigation stopped") && message.contains("unavailable"),
        "{message}"
    );
    assert!(h.restarts_of("").await.is_empty());
    assert!(
        model.requests().len() >= 2,
        "the model was asked, and retried"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_does_not_fix_the_pod_is_escalated_and_the_page_says_so() {
    // Goal: resolved only when the restarted pod verifies healthy. Method: a catalog whose
    // orders-worker runbook (unlike the shipped one) grants `auto` to its restart, and the
    // bad-config-crashloop scenario, where a restart does not help; the servers run over
    // streamable HTTP with that catalog.
    let dir = tempfile::tempdir().unwrap();
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/data");
    std::fs::create_dir(dir.path().join("runbooks")).unwrap();
    std::fs::copy(data.join("catalog.toml"), dir.path().join("catalog.toml")).unwrap();
    for entry in std::fs::read_dir(data.join("runbooks")).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if path.ends_with("orders-worker.md") {
            text = text.replacen(
                "tool = \"restart-pod\"\ntarget = \"matched-pod\"\nautonomy = \"approval\"",
                "tool = \"restart-pod\"\ntarget = \"matched-pod\"\nautonomy = \"auto\"\nwhen = \"crash_looping\"",
                1,
            );
            assert!(
                text.contains(
                    "autonomy = \"auto\"\nwhen = \"crash_looping\"\ndescription = \"a restart"
                ),
                "{text}"
            );
        }
        std::fs::write(
            dir.path().join("runbooks").join(path.file_name().unwrap()),
            text,
        )
        .unwrap();
    }
    let catalog = mcp::data::load_catalog(Some(dir.path())).unwrap();
    let (fleet, _fleet_stop) = start_fleet(&["bad-config-crashloop"]).await;
    let mut flags = http_servers(&fleet, catalog).await;
    flags.extend(["--verify-attempts-max".into(), "3".into()]);
    let h = start(Options {
        flags,
        fleet_url: Some(fleet),
        ..Options::default()
    })
    .await;
    let (id, _) = h.post("OrdersWorkerCrashLooping", "orders-worker").await;
    let incident = h.finished(&id).await;
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    let restart = &actions(&incident, "restart-pod")[0];
    assert_eq!(restart["decision"], "auto");
    assert_eq!(restart["status"], "succeeded");
    assert_eq!(restart["verified"], false);
    // One page, sent after the restart was checked, says the fix did not work: no second
    // notice is needed.
    let notices = actions(&incident, "send-notification");
    assert_eq!(notices.len(), 1, "{incident:#}");
    let page = notices[0]["args"]["message"].as_str().unwrap();
    assert!(page.contains("did not fix it"), "{page}");
    assert!(page.contains("NOT verified healthy"), "{page}");
    assert_eq!(
        h.restarts_of("orders-worker").await.len(),
        1,
        "restarted once, not again"
    );
    h.stop().await;
}
