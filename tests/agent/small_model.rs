//! What small real models do, over the OpenAI wire format, and what the agent makes of it:
//! they repeat calls, never stop, write calls as JSON in their text, and end with the
//! structured `conclude` call. Asserted on statuses, action records and the fleet's ledger.

use serde_json::{Value, json};

use crate::fake_openai::{self, Scripted, tool_call_reply};
use crate::helpers::*;
use crate::stories::openai_flags;

/// The agent with the `openai` reasoner pointed at `model`, with a step budget of `steps`.
async fn start_on(model: &fake_openai::FakeOpenAi, steps: u32) -> Harness {
    let mut flags = openai_flags(&model.base_url());
    flags.extend(["--incident-steps-max".to_owned(), steps.to_string()]);
    start(Options {
        flags,
        ..Options::default()
    })
    .await
}

/// The answers already in the conversation (tool messages), oldest first.
fn tool_texts(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// A `chat.completion` whose assistant message is only `content`: calls written as text.
fn text_reply(content: &str) -> Value {
    json!({
        "id": "chatcmpl-text",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": fake_openai::MODEL,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
    })
}

fn conclude(pod: &str, actions: Value) -> String {
    json!({
        "summary": format!("checkout-api pod {pod} was OOMKilled"),
        "root_cause": "the container reached its memory limit",
        "confidence": 0.8,
        "evidence": [format!("{pod} lastTerminationReason OOMKilled")],
        "actions": actions,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_repeating_itself_is_stopped_early_and_its_restart_proposal_still_runs() {
    // Goal: the habit of the small model tried in issue 13: it maps, reads, proposes the
    // right restart, then repeats one proposal until its budget. The repeats are answered
    // from the transcript, the run is stopped after three such turns, and the proposal goes
    // to the policy, which restarts the OOM-killed pod on its own facts.
    let pod = expected_oom_pod();
    let restart = json!({ "podName": pod }).to_string();
    let model = fake_openai::start_with(move |request: &Value, _| {
        let notify = r#"{"message":"checkout-api pod OOMKilled","severity":"critical"}"#;
        Scripted::Reply(match tool_texts(request).len() {
            0 => tool_call_reply(
                &[(
                    "map-alert-to-service",
                    r#"{"alertType":"CheckoutApiOOMKilled"}"#,
                )],
                None,
            ),
            1 => tool_call_reply(
                &[("get-metrics", r#"{"serviceName":"checkout-api"}"#)],
                None,
            ),
            2 => tool_call_reply(&[("restart-pod", restart.as_str())], None),
            _ => tool_call_reply(&[("send-notification", notify)], None),
        })
    })
    .await;
    let h = start_on(&model, 12).await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;

    let requests = model.requests();
    // map, metrics, restart, notify, then three turns of the same notification.
    assert_eq!(
        requests.len(),
        7,
        "stopped after three repeating turns, not at 12"
    );
    let answers = tool_texts(requests.last().unwrap());
    assert!(
        answers[4].starts_with("agent: you proposed this already"),
        "{answers:#?}"
    );
    assert!(
        !answers[4].contains("<data>"),
        "the agent's voice is not fenced: {}",
        answers[4]
    );
    assert!(
        incident["rca_analysis"]["summary"]
            .as_str()
            .unwrap()
            .contains("only repeated calls"),
        "{incident:#}"
    );
    let restarts = actions(&incident, "restart-pod");
    assert_eq!(restarts.len(), 1, "{incident:#}");
    assert_eq!(restarts[0]["args"]["podName"], pod);
    assert_eq!(restarts[0]["decision"], "auto");
    assert_eq!(restarts[0]["verified"], true);
    let ledger = h.restarts_of("checkout-api").await;
    assert_eq!(ledger.len(), 1, "{ledger:#?}");
    assert_eq!(ledger[0]["target"], pod);
    assert_eq!(incident["status"], "resolved", "{incident:#}");
    // The notification was proposed once, whatever the repeats.
    assert_eq!(
        actions(&incident, "send-notification").len(),
        1,
        "{incident:#}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_read_is_answered_from_the_transcript_and_a_conclude_call_ends_the_story() {
    // Goal: a read asked for twice is not made twice (the model gets the first result with
    // a notice), and the model finishes with the structured `conclude` call proposing the
    // restart: the OOM story ends resolved with one verified restart.
    let pod = expected_oom_pod();
    let concluded = conclude(&pod, json!([{ "tool": "restart-pod", "podName": pod }]));
    let model = fake_openai::start_with(move |request: &Value, _| {
        Scripted::Reply(match tool_texts(request).len() {
            0 => tool_call_reply(
                &[(
                    "map-alert-to-service",
                    r#"{"alertType":"CheckoutApiOOMKilled"}"#,
                )],
                None,
            ),
            1 | 2 => tool_call_reply(
                &[("get-metrics", r#"{"serviceName": "checkout-api"}"#)],
                None,
            ),
            _ => tool_call_reply(&[("conclude", concluded.as_str())], None),
        })
    })
    .await;
    let h = start_on(&model, 12).await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_oom_story(&h, &incident, &pod).await;
    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    let answers = tool_texts(requests.last().unwrap());
    assert!(
        answers[2].starts_with("agent: you made this call already"),
        "{answers:#?}"
    );
    assert!(
        answers[2].contains(&pod),
        "the earlier result is given again: {}",
        answers[2]
    );
    let reads: Vec<String> = timeline(&incident, "tool_call")
        .into_iter()
        .filter(|m| m.starts_with("get-metrics") && !m.contains("the agent's own check"))
        .collect();
    assert_eq!(reads.len(), 2, "{reads:#?}");
    assert!(reads[1].contains("repeated"), "{reads:#?}");
    // What the model saw of its own first turn came back as its server sent it.
    let sent_back = &requests.last().unwrap()["messages"][2];
    assert_eq!(
        sent_back["tool_calls"][0]["function"]["arguments"],
        r#"{"alertType":"CheckoutApiOOMKilled"}"#
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_written_as_json_in_the_text_are_made_and_the_database_is_never_restarted() {
    // Goal: a model that writes its calls as fenced JSON in its text (as Qwen2.5-Coder does
    // without a matching chat template) still investigates, its conclusion written the same
    // way is read, and its proposal to restart the database waits for a human.
    let fenced = |name: &str, arguments: Value| {
        format!(
            "```json\n{}\n```",
            json!({ "name": name, "arguments": arguments })
        )
    };
    let model = fake_openai::start_with(move |request: &Value, _| {
        Scripted::Reply(text_reply(&match tool_texts(request).len() {
            0 => fenced("map-alert-to-service", json!({ "alertType": "PaymentsDbDown" })),
            1 => fenced("get-runbook", json!({ "serviceName": "payments-db" })),
            2 => fenced("get-metrics", json!({ "serviceName": "payments-db" })),
            _ => fenced(
                "conclude",
                json!({
                    "summary": "payments-db is down: its pod is not ready",
                    "root_cause": "the database shut down",
                    "confidence": 0.7,
                    "evidence": ["payments-db-0 not ready"],
                    "actions": [
                        { "tool": "restart-pod", "podName": "payments-db-0" },
                        { "tool": "send-notification", "message": "payments-db is down", "severity": "critical" },
                    ],
                }),
            ),
        }))
    })
    .await;
    let h = start_on(&model, 12).await;
    let (id, _) = h.post(DB_ALERT, "payments-db").await;
    let incident = h.finished(&id).await;
    assert_db_story(&h, &incident).await;
    assert_eq!(model.requests().len(), 4);
    let restart = &actions(&incident, "restart-pod")[0];
    assert_eq!(restart["args"]["podName"], "payments-db-0");
    assert_eq!(restart["decision"], "proposed", "{incident:#}");
    assert!(h.restarts_of("payments-db").await.is_empty());
    h.stop().await;
}

/// The `get-metrics` entries of `incident`'s timeline that the agent read for itself at the
/// conclusion ("the agent's own check"), and the turn whose reads its analysis says it took
/// instead, after a model that mapped the alert, read the metrics and concluded, waiting
/// `conclude_after_ms` before its conclusion.
async fn own_metrics_reads(conclude_after_ms: u64) -> (usize, Value) {
    let pod = expected_oom_pod();
    let model = fake_openai::start_with(move |request: &Value, _| {
        let reply = |calls: &[(&str, &str)]| Scripted::Reply(tool_call_reply(calls, None));
        match tool_texts(request).len() {
            0 => reply(&[(
                "map-alert-to-service",
                r#"{"alertType":"CheckoutApiOOMKilled"}"#,
            )]),
            1 => reply(&[("get-metrics", r#"{"serviceName":"checkout-api"}"#)]),
            _ => Scripted::Delayed {
                delay_ms: conclude_after_ms,
                then: Box::new(reply(&[("conclude", &conclude(&pod, json!([])))])),
            },
        }
    })
    .await;
    let h = start_on(&model, 12).await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    let own = timeline(&incident, "tool_call")
        .into_iter()
        .filter(|m| m.starts_with("get-metrics") && m.contains("the agent's own check"))
        .count();
    let analysis = incident["metadata"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message"].as_str().unwrap().starts_with("analysis"))
        .expect("an analysis entry")
        .clone();
    h.stop().await;
    (own, analysis["detail"]["facts_of_turn"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conclusion_takes_the_metrics_read_a_moment_ago_and_reads_older_ones_again() {
    // Goal: the policy's facts are fresh without reading twice what was just read. Method:
    // the model reads the service's metrics with exactly the agent's arguments, then
    // concludes at once, or after 2.5 s (past the 2 s the agent takes a read as fresh); the
    // timeline shows whether the agent read the metrics again for its plan, and its analysis
    // which turn's reads it took.
    assert_eq!(
        own_metrics_reads(0).await,
        (0, json!(2)),
        "a read of a moment ago (turn 2) is taken"
    );
    assert_eq!(
        own_metrics_reads(2_500).await,
        (1, Value::Null),
        "an older read is made again"
    );
}
