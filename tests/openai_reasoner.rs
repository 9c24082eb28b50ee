//! The `openai` reasoner over real HTTP against a fake OpenAI-compatible server: the wire
//! format both ways, the repairs of a noisy model, retries and their limits, and the bounds.

#[path = "support/fake_openai.rs"]
mod fake_openai;

use std::future::Future;
use std::time::{Duration, Instant};

use fake_openai::{Scripted, final_reply, start, start_with, tool_call_reply};
use serde_json::{Value, json};
use sre_agent::reasoner::openai::{OpenAiConfig, OpenAiReasoner};
use sre_agent::reasoner::{
    Arguments, Call, IncidentBrief, Outcome, Reasoner, ReasonerError, Step, ToolSpec, Transcript,
    Turn,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(15);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("the test ran past its timeout")
}

/// Small backoffs so retries cost milliseconds.
fn config(base_url: String) -> OpenAiConfig {
    OpenAiConfig {
        base_url,
        model: "gpt-oss-120b".into(),
        api_key: Some("sk-test-key".into()),
        reasoning_effort: Some("medium".into()),
        max_tokens: 2_048,
        temperature: Some(0.0),
        seed: Some(7),
        // gpt-oss behind vLLM, as these tests script it, makes several calls a turn.
        parallel_tool_calls: Some(true),
        request_timeout_ms: 2_000,
        retries_max: 3,
        backoff_initial_ms: 10,
        backoff_max_ms: 50,
        steps_max: 8,
        tool_output_bytes_max: 4_096,
        response_bytes_max: 64 * 1024,
    }
}

fn schema(properties: Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
    })
}

fn transcript() -> Transcript {
    let tool = |name: &str, description: &str, properties: Value| ToolSpec {
        name: name.into(),
        description: description.into(),
        input_schema: schema(properties),
    };
    let string = json!({"type": "string"});
    Transcript {
        incident: IncidentBrief {
            id: "0190a1b2-0000-7000-8000-000000000001".into(),
            title: "checkout-api 5xx rate above 5%".into(),
            description: Some("errors since 10:02 UTC".into()),
            severity: "high".into(),
            alert_type: Some("HighErrorRate".into()),
            service: None,
            labels: Default::default(),
        },
        tools: std::sync::Arc::from(vec![
            tool(
                "map-alert-to-service",
                "the service an alert is about",
                json!({"alertType": string}),
            ),
            tool(
                "get-runbook",
                "a service's runbook",
                json!({"serviceName": string}),
            ),
            tool(
                "get-logs",
                "recent logs",
                json!({"serviceName": string, "timeRange": string}),
            ),
            tool(
                "restart-pod",
                "restart one pod",
                json!({"podName": {"$schema": "nested", "type": "string"}}),
            ),
        ]),
        turns: vec![],
    }
}

fn messages(request: &Value) -> &Vec<Value> {
    request["messages"].as_array().expect("messages")
}

/// The tool message answering `call_id` in `request`.
fn tool_message<'a>(request: &'a Value, call_id: &str) -> &'a Value {
    messages(request)
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == call_id)
        .unwrap_or_else(|| panic!("no tool message for {call_id} in {request:#}"))
}

fn expect_calls(step: Step) -> (Vec<Call>, Option<String>) {
    match step {
        Step::Calls {
            calls, reasoning, ..
        } => (calls, reasoning),
        Step::Conclude(c) => panic!("expected calls, got a conclusion: {c:?}"),
    }
}

fn object(value: Value) -> Arguments {
    assert!(value.is_object(), "an object");
    Arguments::of_object(&value)
}

#[tokio::test]
async fn a_noisy_conversation_is_repaired_retried_and_concluded() {
    // Goal: the whole path a real gpt-oss conversation takes, through real HTTP: repaired
    // tool names, refused arguments, reasoning sent back, fenced tool results, retries on
    // 429 (honouring Retry-After) and 503, and a final RCA whose actions are the deferred
    // calls. Method: a scripted fake in the real wire format; the test plays the incident
    // actor, appending turns with made-up outcomes, and inspects every request sent.
    let malformed = r#"{"serviceName": "checkout-api""#;
    let fake = start(vec![
        Scripted::Status {
            code: 429,
            retry_after_secs: Some(1),
            body: r#"{"error": {"message": "rate limited"}}"#.into(),
        },
        Scripted::Reply(tool_call_reply(
            &[(
                "functions.map-alert-to-service",
                r#"{"alertType": "HighErrorRate"}"#,
            )],
            Some("The alert must be mapped to a service first."),
        )),
        Scripted::Status {
            code: 503,
            retry_after_secs: None,
            body: "upstream unavailable".into(),
        },
        Scripted::Reply(tool_call_reply(
            &[("get-runbook<|channel|>commentary", malformed)],
            Some("Now the runbook."),
        )),
        Scripted::Reply({
            let mut reply = tool_call_reply(
                &[
                    (
                        "functions.functions.get-logs",
                        r#"{"serviceName": "checkout-api", "timeRange": "15m"}"#,
                    ),
                    ("restart-pod", "{}"),
                ],
                None,
            );
            // Some servers send the arguments as an object, not a string.
            reply["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] =
                json!({"podName": "checkout-api-7d9f-x2"});
            reply
        }),
        Scripted::Reply(final_mapping_rca()),
    ])
    .await;
    let mut c = config(fake.base_url());
    // Room for the one-second Retry-After; other waits stay at 10 ms.
    c.backoff_max_ms = 1_500;
    let reasoner = OpenAiReasoner::new(c).unwrap();
    assert_eq!(reasoner.name(), "openai:gpt-oss-120b");
    let mut t = transcript();

    // Step 1: 429 with Retry-After: 1, then the mapping call with a `functions.` prefix.
    let started = Instant::now();
    let step = bounded(reasoner.next_step(&t)).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After was not honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests().len(), 2, "the 429 was not retried");
    let (calls, reasoning) = expect_calls(step);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tool, "map-alert-to-service");
    assert_eq!(
        calls[0].arguments,
        object(json!({"alertType": "HighErrorRate"}))
    );
    assert_eq!(calls[0].invalid_arguments, None);
    let reasoning_1 = reasoning.expect("the reasoning is kept");
    assert_eq!(reasoning_1, "The alert must be mapped to a service first.");
    let first = &fake.requests()[1];
    assert_eq!(first["model"], "gpt-oss-120b");
    assert_eq!(first["tool_choice"], "auto");
    assert_eq!(first["reasoning_effort"], "medium");
    assert_eq!(first["max_tokens"], 2_048);
    assert_eq!(first["stream"], false);
    // Sampling pinned on the wire, and the configured parallel calls.
    assert_eq!(first["temperature"], 0.0);
    assert_eq!(first["seed"], 7);
    assert_eq!(first["parallel_tool_calls"], true);
    // The servers' four tools, then the agent's own `conclude`.
    assert_eq!(first["tools"].as_array().unwrap().len(), 5);
    assert_eq!(first["tools"][4]["function"]["name"], "conclude");
    assert_eq!(first["tools"][0]["type"], "function");
    assert_eq!(
        first["tools"][0]["function"]["name"],
        "map-alert-to-service"
    );
    assert!(
        !first["tools"].to_string().contains("$schema"),
        "$schema was sent: {}",
        first["tools"]
    );
    let user = messages(first)[1]["content"].as_str().unwrap();
    assert!(
        user.contains("<data>") && user.contains("HighErrorRate"),
        "{user}"
    );
    assert_eq!(
        fake.authorizations()[1].as_deref(),
        Some("Bearer sk-test-key")
    );
    let mapping_id = calls[0].id.clone();
    t.turns.push(Turn {
        verbatim: None,
        reasoning: Some(reasoning_1.clone()),
        content: None,
        calls: vec![(
            calls[0].clone(),
            Outcome::Ok {
                structured: json!({
                    "alertType": "HighErrorRate",
                    "service": "checkout-api",
                    "runbook": "runbooks/checkout-api.md",
                })
                .into(),
            },
        )],
    });

    // Step 2: 503, then get-runbook with a `<|channel|>` tail and unterminated arguments.
    let step = bounded(reasoner.next_step(&t)).await.unwrap();
    assert_eq!(fake.requests().len(), 4, "the 503 was not retried");
    let (calls, reasoning) = expect_calls(step);
    assert_eq!(calls[0].tool, "get-runbook");
    assert!(calls[0].arguments.is_empty());
    let invalid = calls[0]
        .invalid_arguments
        .clone()
        .expect("refused arguments");
    assert!(
        invalid.starts_with("arguments are not a JSON object: "),
        "{invalid}"
    );
    // The request carried turn 1: the assistant message with its reasoning, the result.
    let second = &fake.requests()[3];
    let assistant = &messages(second)[2];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["reasoning"], reasoning_1.as_str());
    assert_eq!(assistant["tool_calls"][0]["id"], mapping_id.as_str());
    assert_eq!(
        assistant["tool_calls"][0]["function"]["name"],
        "map-alert-to-service"
    );
    let sent_arguments: Value = serde_json::from_str(
        assistant["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .expect("arguments as a JSON string"),
    )
    .unwrap();
    assert_eq!(sent_arguments, json!({"alertType": "HighErrorRate"}));
    let result = tool_message(second, &mapping_id)["content"]
        .as_str()
        .unwrap();
    assert!(
        result.starts_with("<data>") && result.ends_with("</data>"),
        "{result}"
    );
    assert!(result.contains(r#""service":"checkout-api""#), "{result}");
    let runbook_call = calls[0].clone();
    t.turns.push(Turn {
        verbatim: None,
        reasoning,
        content: None,
        calls: vec![(
            runbook_call.clone(),
            Outcome::NotRun {
                message: invalid.clone(),
            },
        )],
    });

    // Step 3: a doubly prefixed get-logs and a restart-pod with object arguments.
    let step = bounded(reasoner.next_step(&t)).await.unwrap();
    let (calls, reasoning) = expect_calls(step);
    assert_eq!(reasoning, None);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].tool, "get-logs");
    assert_eq!(
        calls[0].arguments,
        object(json!({"serviceName": "checkout-api", "timeRange": "15m"}))
    );
    assert_eq!(calls[1].tool, "restart-pod");
    assert_eq!(
        calls[1].arguments,
        object(json!({"podName": "checkout-api-7d9f-x2"}))
    );
    assert_ne!(calls[0].id, calls[1].id);
    // The refused call went back to the model in the agent's voice, saying why.
    let third = &fake.requests()[4];
    let refused = tool_message(third, &runbook_call.id)["content"]
        .as_str()
        .unwrap();
    assert!(refused.starts_with("agent: not run: "), "{refused}");
    assert!(
        refused.contains("arguments are not a JSON object"),
        "{refused}"
    );
    assert!(!refused.contains("<data>"), "{refused}");
    let restart = calls[1].clone();
    t.turns.push(Turn {
        verbatim: None,
        reasoning: None,
        content: None,
        calls: vec![
            (
                calls[0].clone(),
                Outcome::Ok {
                    structured: json!({"lines": ["checkout-api-7d9f-x2 OOMKilled"]}).into(),
                },
            ),
            (
                restart.clone(),
                Outcome::Deferred {
                    message: "held until the investigation ends; the safety policy decides".into(),
                },
            ),
        ],
    });

    // Step 4: the final answer, fenced in ```json.
    let step = bounded(reasoner.next_step(&t)).await.unwrap();
    let Step::Conclude(conclusion) = step else {
        panic!("expected a conclusion, got {step:?}");
    };
    let fourth = &fake.requests()[5];
    let deferred = tool_message(fourth, &restart.id)["content"]
        .as_str()
        .unwrap();
    assert!(deferred.starts_with("agent: held until"), "{deferred}");
    let rca = &conclusion.rca;
    assert_eq!(rca.summary, "checkout-api pods are OOMKilled");
    assert_eq!(rca.root_cause, "memory limit too low for the new cache");
    assert_eq!(rca.confidence, 0.8);
    assert_eq!(rca.evidence, vec!["checkout-api-7d9f-x2 OOMKilled"]);
    assert_eq!(rca.service, "checkout-api");
    assert_eq!(rca.runbook, "runbooks/checkout-api.md");
    assert_eq!(rca.reasoner, "openai:gpt-oss-120b");
    assert_eq!(conclusion.actions, vec![restart]);
    assert_eq!(fake.requests().len(), 6);
}

fn final_mapping_rca() -> Value {
    final_reply(
        "```json\n{\"summary\": \"checkout-api pods are OOMKilled\", \
         \"root_cause\": \"memory limit too low for the new cache\", \
         \"confidence\": 0.8, \"evidence\": [\"checkout-api-7d9f-x2 OOMKilled\"]}\n```",
    )
}

#[tokio::test]
async fn a_spent_step_budget_concludes_without_asking_the_model() {
    // Goal: a model that never stops calling tools cannot hold an incident open, and the
    // deferred calls still reach the policy. Method: steps_max 2 and a transcript of two
    // turns; the fake has a reply ready that must not be asked for.
    let fake = start(vec![Scripted::Reply(final_reply("{}"))]).await;
    let mut c = config(fake.base_url());
    c.steps_max = 2;
    let reasoner = OpenAiReasoner::new(c).unwrap();
    let restart = Call {
        id: "call_1".into(),
        tool: "restart-pod".into(),
        arguments: object(json!({"podName": "checkout-api-7d9f-x2"})),
        invalid_arguments: None,
    };
    let mut t = transcript();
    t.turns = vec![
        Turn {
            verbatim: None,
            reasoning: None,
            content: None,
            calls: vec![(
                Call {
                    id: "call_0".into(),
                    tool: "map-alert-to-service".into(),
                    arguments: object(json!({"alertType": "HighErrorRate"})),
                    invalid_arguments: None,
                },
                Outcome::Ok {
                    structured: json!({"service": "checkout-api", "runbook": "rb.md"}).into(),
                },
            )],
        },
        Turn {
            verbatim: None,
            reasoning: None,
            content: None,
            calls: vec![(
                restart.clone(),
                Outcome::Deferred {
                    message: "held".into(),
                },
            )],
        },
    ];
    let step = bounded(reasoner.next_step(&t)).await.unwrap();
    let Step::Conclude(conclusion) = step else {
        panic!("expected a conclusion, got {step:?}");
    };
    assert!(fake.requests().is_empty(), "the model was asked");
    assert!(
        conclusion
            .rca
            .summary
            .contains("did not conclude within 2 steps"),
        "{}",
        conclusion.rca.summary
    );
    assert_eq!(conclusion.rca.root_cause, "undetermined");
    assert_eq!(conclusion.rca.confidence, 0.0);
    assert!(conclusion.rca.evidence.is_empty());
    assert_eq!(conclusion.rca.service, "checkout-api");
    assert_eq!(conclusion.actions, vec![restart]);
}

#[tokio::test]
async fn exhausted_retries_are_unavailable_and_retryable() {
    // Goal: transient failures are retried exactly retries_max times, then reported as
    // Unavailable (which the caller may retry later). Method: retries_max 2 and three 5xx
    // answers (one a vLLM Harmony parser error), then a good reply that must not be asked for.
    let status = |code: u16, body: &str| Scripted::Status {
        code,
        retry_after_secs: None,
        body: body.into(),
    };
    let fake = start(vec![
        status(503, "overloaded"),
        status(
            500,
            r#"{"error": {"message": "unexpected tokens remaining in message header"}}"#,
        ),
        status(502, "bad gateway"),
        Scripted::Reply(final_mapping_rca()),
    ])
    .await;
    let mut c = config(fake.base_url());
    c.retries_max = 2;
    let reasoner = OpenAiReasoner::new(c).unwrap();
    let error = bounded(reasoner.next_step(&transcript()))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ReasonerError::Unavailable(m) if m.contains("502")),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn a_401_is_a_configuration_error_and_is_not_retried() {
    // Goal: a wrong key is reported as misconfiguration at once, without retries, and the
    // key is not in the error. Method: the fake answers 401 once, then has a good reply.
    let fake = start(vec![
        Scripted::Status {
            code: 401,
            retry_after_secs: None,
            body: r#"{"error": {"message": "invalid api key"}}"#.into(),
        },
        Scripted::Reply(final_mapping_rca()),
    ])
    .await;
    let reasoner = OpenAiReasoner::new(config(fake.base_url())).unwrap();
    let error = bounded(reasoner.next_step(&transcript()))
        .await
        .unwrap_err();
    assert!(matches!(error, ReasonerError::Config(_)), "{error:?}");
    assert!(!error.is_retryable());
    assert!(!error.to_string().contains("sk-test-key"), "{error}");
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(
        fake.authorizations(),
        vec![Some("Bearer sk-test-key".into())]
    );
}

#[tokio::test]
async fn a_timed_out_request_is_retried() {
    // Goal: a request that outlives request_timeout_ms is abandoned and asked again.
    // Method: request_timeout_ms 300; the fake holds its first answer for 1 s (the
    // reasoner gives up at 300 ms), then answers the second at once.
    let fake = start(vec![
        Scripted::Delayed {
            delay_ms: 1_000,
            then: Box::new(Scripted::Reply(final_mapping_rca())),
        },
        Scripted::Reply(tool_call_reply(
            &[("map-alert-to-service", r#"{"alertType": "HighErrorRate"}"#)],
            None,
        )),
    ])
    .await;
    let mut c = config(fake.base_url());
    c.request_timeout_ms = 300;
    let reasoner = OpenAiReasoner::new(c).unwrap();
    let started = Instant::now();
    let step = bounded(reasoner.next_step(&transcript())).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(900));
    let (calls, _) = expect_calls(step);
    assert_eq!(calls[0].tool, "map-alert-to-service");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn an_unusable_answer_is_asked_again_once_then_refused() {
    // Goal: a broken answer (not JSON) or an empty one is retried once, and a second one
    // is Unusable rather than retried forever. Method: two scripts: broken then good, and
    // empty then broken, each against its own fake.
    let fake = start(vec![
        Scripted::Status {
            code: 200,
            retry_after_secs: None,
            body: "<html>not json</html>".into(),
        },
        Scripted::Reply(final_mapping_rca()),
    ])
    .await;
    let reasoner = OpenAiReasoner::new(config(fake.base_url())).unwrap();
    let step = bounded(reasoner.next_step(&transcript())).await.unwrap();
    assert!(matches!(step, Step::Conclude(_)), "{step:?}");
    assert_eq!(fake.requests().len(), 2);

    let fake = start(vec![
        Scripted::Reply(final_reply("")),
        Scripted::Status {
            code: 200,
            retry_after_secs: None,
            body: "{\"choices\": [".into(),
        },
        Scripted::Reply(final_mapping_rca()),
    ])
    .await;
    let reasoner = OpenAiReasoner::new(config(fake.base_url())).unwrap();
    let error = bounded(reasoner.next_step(&transcript()))
        .await
        .unwrap_err();
    assert!(matches!(error, ReasonerError::Unusable(_)), "{error:?}");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_body_over_response_bytes_max_is_an_error_not_a_panic() {
    // Goal: an oversized answer is refused without reading it all, whether its length is
    // declared or not. Method: response_bytes_max 2 KiB; the fake declares a 20 KB body
    // (Content-Length), and a raw loopback server streams one in chunks with no length.
    let big = "x".repeat(20_000);
    let fake = start(vec![Scripted::Reply(final_reply(&big))]).await;
    let mut c = config(fake.base_url());
    c.response_bytes_max = 2_048;
    let reasoner = OpenAiReasoner::new(c.clone()).unwrap();
    let error = bounded(reasoner.next_step(&transcript()))
        .await
        .unwrap_err();
    let too_large = |e: &ReasonerError| matches!(e, ReasonerError::Unusable(m) if m.contains("response_bytes_max"));
    assert!(too_large(&error), "{error:?}");
    assert_eq!(fake.requests().len(), 1, "an oversized answer was retried");

    c.base_url = start_chunked_server(20_000).await;
    let reasoner = OpenAiReasoner::new(c).unwrap();
    let error = bounded(reasoner.next_step(&transcript()))
        .await
        .unwrap_err();
    assert!(too_large(&error), "{error:?}");
}

/// A loopback server that answers every request with a 200 of `body_bytes` bytes sent
/// with `Transfer-Encoding: chunked` (no Content-Length). Returns its base url.
async fn start_chunked_server(body_bytes: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head and body so the client is not reset mid-send.
                let mut request = Vec::new();
                let mut buf = [0u8; 8_192];
                let head_end = loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while request.len() < head_end + length {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = [b'x'; 1_024];
                let mut sent = 0;
                while sent < body_bytes {
                    let n = chunk.len().min(body_bytes - sent);
                    let frame = [
                        format!("{n:x}\r\n").as_bytes(),
                        &chunk[..n],
                        b"\r\n".as_slice(),
                    ]
                    .concat();
                    if socket.write_all(&frame).await.is_err() {
                        return;
                    }
                    sent += n;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn a_scripting_closure_can_answer_from_what_earlier_tools_returned() {
    // Goal: the fake's closure mode, which story tests use to quote pod names from tool
    // results, works through the reasoner. Method: the closure finds the pod name in the
    // last tool message of the request and proposes restarting it.
    let fake = start_with(|request, index| {
        if index == 0 {
            return Scripted::Reply(tool_call_reply(
                &[("get-logs", r#"{"serviceName": "checkout-api"}"#)],
                None,
            ));
        }
        let last = request["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("");
        let pod = last
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .find(|w| w.starts_with("checkout-api-"))
            .unwrap_or("none");
        Scripted::Reply(tool_call_reply(
            &[("restart-pod", &json!({"podName": pod}).to_string())],
            None,
        ))
    })
    .await;
    let reasoner = OpenAiReasoner::new(config(fake.base_url())).unwrap();
    let mut t = transcript();
    let (calls, _) = expect_calls(bounded(reasoner.next_step(&t)).await.unwrap());
    t.turns.push(Turn {
        verbatim: None,
        reasoning: None,
        content: None,
        calls: vec![(
            calls[0].clone(),
            Outcome::Ok {
                structured: json!({"lines": ["pod checkout-api-5f7c-abc OOMKilled"]}).into(),
            },
        )],
    });
    let (calls, _) = expect_calls(bounded(reasoner.next_step(&t)).await.unwrap());
    assert_eq!(calls[0].tool, "restart-pod");
    assert_eq!(
        calls[0].arguments,
        object(json!({"podName": "checkout-api-5f7c-abc"}))
    );
}
