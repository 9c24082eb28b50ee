//! A fake OpenAI-compatible chat-completions server for tests: axum on a free loopback
//! port, answering `POST /v1/chat/completions` from a script (a list replayed in order, or
//! a closure that looks at each request) and recording every request it received.
//!
//! Include it with `#[path = "support/fake_openai.rs"] mod fake_openai;`. When a list runs
//! out the fake answers 500 with a message saying so, so a test fails instead of hanging.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Largest request body the fake reads; a real server would refuse more too.
const REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The model name the helpers put in their replies.
pub const MODEL: &str = "gpt-oss-120b";

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// Any status with a raw body (JSON or not) and an optional `Retry-After` in seconds.
    /// `code: 200` with a non-JSON body is how to script a broken answer.
    Status {
        code: u16,
        retry_after_secs: Option<u64>,
        body: String,
    },
    /// 200 with this whole `chat.completion` JSON (see [`tool_call_reply`], [`final_reply`]).
    Reply(Value),
    /// Waits, then answers `then`: for timeouts.
    Delayed { delay_ms: u64, then: Box<Scripted> },
}

type Decide = dyn Fn(&Value, usize) -> Scripted + Send + Sync;

struct Shared {
    requests: Mutex<Vec<Value>>,
    authorizations: Mutex<Vec<Option<String>>>,
    decide: Box<Decide>,
}

/// A running fake. Dropping it stops the server.
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeOpenAi {
    /// `http://127.0.0.1:{port}/v1`, what an `OpenAiConfig::base_url` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request body received so far, in order (a body that was not JSON is recorded
    /// as a JSON string).
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The `Authorization` header of every request, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.shared.authorizations.lock().unwrap().clone()
    }
}

/// Starts a fake that answers the `i`-th request with `script[i]`, then 500s.
pub async fn start(script: Vec<Scripted>) -> FakeOpenAi {
    let script = Mutex::new(VecDeque::from(script));
    start_with(move |_request, index| {
        script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Scripted::Status {
                code: 500,
                retry_after_secs: None,
                body: json!({"error": {
                    "message": format!("fake_openai: the script has no reply for request #{index}"),
                    "type": "script_exhausted",
                }})
                .to_string(),
            })
    })
    .await
}

/// Starts a fake whose answer to each request (with its 0-based index) is `decide`'s: for
/// replies that quote what earlier tool results said.
pub async fn start_with(
    decide: impl Fn(&Value, usize) -> Scripted + Send + Sync + 'static,
) -> FakeOpenAi {
    let shared = Arc::new(Shared {
        requests: Mutex::new(Vec::new()),
        authorizations: Mutex::new(Vec::new()),
        decide: Box::new(decide),
    });
    let router = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .layer(DefaultBodyLimit::max(REQUEST_BYTES_MAX))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("the fake serves");
    });
    FakeOpenAi {
        addr,
        shared,
        server,
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let index = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(request.clone());
        shared.authorizations.lock().unwrap().push(authorization);
        requests.len() - 1
    };
    let mut scripted = (shared.decide)(&request, index);
    loop {
        match scripted {
            Scripted::Delayed { delay_ms, then } => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                scripted = *then;
            }
            Scripted::Reply(reply) => return axum::Json(reply).into_response(),
            Scripted::Status {
                code,
                retry_after_secs,
                body,
            } => {
                let status = StatusCode::from_u16(code).expect("a valid status code");
                let content_type = if serde_json::from_str::<Value>(&body).is_ok() {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                let mut response = (status, body).into_response();
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                if let Some(secs) = retry_after_secs {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                return response;
            }
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn completion(message: Value, finish_reason: &str) -> Value {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    json!({
        "id": format!("chatcmpl-fake-{n}"),
        "object": "chat.completion",
        "created": 1_700_000_000 + n,
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": {"prompt_tokens": 512, "completion_tokens": 64, "total_tokens": 576},
    })
}

/// A `chat.completion` asking for tool calls: `(name, raw arguments string)` each, exactly
/// as given (so a test can send noise), with the model's reasoning when given.
pub fn tool_call_reply(calls: &[(&str, &str)], reasoning: Option<&str>) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(name, arguments)| {
            json!({
                "id": format!("call_fake{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            })
        })
        .collect();
    completion(
        json!({
            "role": "assistant",
            "content": null,
            "reasoning": reasoning,
            "tool_calls": tool_calls,
        }),
        "tool_calls",
    )
}

/// A `chat.completion` that ends the conversation with `content` and no tool call.
pub fn final_reply(content: &str) -> Value {
    completion(
        json!({
            "role": "assistant",
            "content": content,
            "reasoning": null,
            "tool_calls": [],
        }),
        "stop",
    )
}
