//! `Tools`: the incident actors' handle on the three `McpClientActor`s. It routes a call to
//! its server, retries what may pass (server reconnecting, timeout, transport) with capped
//! backoff until a deadline, and turns the MCP result into a reasoner [`Outcome`]. Each
//! call is measured once, retries included (`sre_tool_call_duration_seconds`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ractor::{ActorRef, call_t};
use rmcp::model::CallToolResult;
use serde_json::{Map, Value};

use crate::mcp_client::{McpCallError, McpClientMsg, ToolCall, next_backoff_ms};
use crate::metrics::{CallOutcome, Metrics};
use crate::reasoner::{JsonText, Outcome, Server, TextPool, ToolSpec};

/// Bounds on one logical tool call, retries included.
#[derive(Clone, Copy, Debug)]
pub struct ToolBounds {
    /// Longest a call may keep retrying (e.g. while its server restarts).
    pub deadline_ms: u64,
    /// First wait between attempts; doubles up to `retry_backoff_max_ms`.
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
}

#[derive(Clone)]
pub struct Tools {
    clients: HashMap<Server, ActorRef<McpClientMsg>>,
    bounds: ToolBounds,
    /// The servers' tool list, kept once all three have answered: every incident asks for
    /// it, and it does not change while the servers run.
    specs: Arc<OnceLock<Arc<[ToolSpec]>>>,
    /// The mapping server's answers, held once: they are the catalog, the same mapping and
    /// runbook for every incident of a service.
    catalog_answers: Arc<TextPool>,
    metrics: Arc<Metrics>,
}

/// What a call came to after its retries.
#[derive(Clone, Debug, PartialEq)]
pub struct Called {
    pub outcome: Outcome,
    pub attempts: u32,
    pub duration_ms: u64,
}

impl Tools {
    pub fn new(
        clients: HashMap<Server, ActorRef<McpClientMsg>>,
        bounds: ToolBounds,
        metrics: Arc<Metrics>,
    ) -> Self {
        Tools {
            clients,
            bounds,
            specs: Arc::new(OnceLock::new()),
            catalog_answers: Arc::new(TextPool::default()),
            metrics,
        }
    }

    /// Every tool the connected servers list, in server order. Asked of the clients until
    /// all three have listed their tools, then served from memory.
    pub async fn specs(&self) -> Arc<[ToolSpec]> {
        if let Some(specs) = self.specs.get() {
            return specs.clone();
        }
        let mut specs = Vec::new();
        let mut listed_by = 0;
        for server in Server::ALL {
            if let Some(client) = self.clients.get(&server)
                && let Ok(mut listed) = call_t!(client, McpClientMsg::Tools, 5_000)
                && !listed.is_empty()
            {
                listed_by += 1;
                specs.append(&mut listed);
            }
        }
        let specs: Arc<[ToolSpec]> = specs.into();
        if listed_by == Server::ALL.len() {
            let _ = self.specs.set(specs.clone());
        }
        specs
    }

    /// Calls `tool`, retrying retryable failures until the deadline. A mutating call must
    /// carry its idempotency key in `arguments`, so that a retry restarts nothing twice.
    pub async fn call(&self, tool: &str, arguments: Map<String, Value>, trace_id: &str) -> Called {
        let begun = Instant::now();
        let deadline = begun + Duration::from_millis(self.bounds.deadline_ms);
        let mut backoff_ms = self.bounds.retry_backoff_initial_ms;
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let Some(server) = Server::of(tool) else {
                break Outcome::NotRun {
                    message: format!("{tool:?} is not a tool of this agent"),
                };
            };
            let Some(client) = self.clients.get(&server) else {
                break Outcome::Error {
                    message: format!("no client for the {} server", server.as_str()),
                };
            };
            let call = ToolCall {
                tool: tool.to_owned(),
                arguments: arguments.clone(),
                trace_id: Some(trace_id.to_owned()),
            };
            // The client's own call timeout bounds the call; this one bounds the mailbox.
            let left_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64;
            let answer = call_t!(client, McpClientMsg::Call, left_ms.max(1_000) + 1_000, call);
            let error = match answer {
                Ok(Ok(result)) => {
                    break match outcome_of(result) {
                        Outcome::Ok { structured } if server == Server::Mapping => Outcome::Ok {
                            structured: self.catalog_answers.share(structured),
                        },
                        outcome => outcome,
                    };
                }
                Ok(Err(e)) if !e.is_retryable() => {
                    break Outcome::Error {
                        message: e.to_string(),
                    };
                }
                Ok(Err(e)) => e,
                Err(e) => McpCallError::NotConnected {
                    server: server.as_str().into(),
                    reason: format!("client actor did not answer: {e}"),
                },
            };
            if Instant::now() + Duration::from_millis(backoff_ms) >= deadline {
                break Outcome::Error {
                    message: format!(
                        "{error} (gave up after {attempts} attempts in {} ms)",
                        begun.elapsed().as_millis()
                    ),
                };
            }
            tracing::warn!(tool, attempt = attempts, error = %error, retry_ms = backoff_ms, "tool call failed; retrying");
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = next_backoff_ms(backoff_ms, self.bounds.retry_backoff_max_ms);
        };
        let measured = match &outcome {
            Outcome::Ok { .. } => CallOutcome::Ok,
            Outcome::Error { .. } => CallOutcome::Error,
            Outcome::NotRun { .. } | Outcome::Deferred { .. } | Outcome::Repeated { .. } => {
                CallOutcome::NotRun
            }
        };
        self.metrics.tool_call(tool, measured, begun.elapsed());
        Called {
            outcome,
            attempts,
            duration_ms: begun.elapsed().as_millis() as u64,
        }
    }
}

/// An MCP result as an outcome: `isError` is an error with its text; otherwise the
/// structured content, or the text (parsed as JSON when it is JSON).
pub fn outcome_of(result: CallToolResult) -> Outcome {
    let text = || -> String {
        result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if result.is_error == Some(true) {
        return Outcome::Error { message: text() };
    }
    let structured = match &result.structured_content {
        Some(value) => JsonText::from(value),
        None => {
            let text = text();
            JsonText::from(serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
    };
    Outcome::Ok { structured }
}
