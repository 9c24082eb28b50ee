//! `McpClientActor`: one long-lived actor per MCP server. It spawns the server as a child
//! process (stdio) or connects over streamable HTTP, lists its tools, and serves calls
//! concurrently: each call runs in a task of its own with a timeout, carrying the trace id
//! in `_meta`, so a slow tool never blocks the mailbox. When the server dies, calls fail
//! fast (`NotConnected`) and the actor reconnects with capped exponential backoff. The
//! connection lives in a task that owns the rmcp service; the actor holds a drop guard, so
//! even a killed actor ends the session, and dropping the transport kills and reaps the
//! child (no zombies).

use std::path::PathBuf;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, RequestMetaObject, Tool};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, RoleClient, ServiceExt};
use serde_json::{Map, Value};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How to reach a server.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerTransport {
    /// Spawn `program args…` and speak over its stdin and stdout.
    Stdio { program: PathBuf, args: Vec<String> },
    /// Streamable HTTP at `url` (e.g. `http://127.0.0.1:8701/mcp`).
    Http { url: String },
}

/// One MCP server and the bounds on talking to it.
#[derive(Clone, Debug, PartialEq)]
pub struct McpServerSpec {
    /// `mapping`, `observability`, `remediation`: how logs and errors name it.
    pub name: String,
    pub transport: ServerTransport,
    /// Longest one tool call may take.
    pub call_timeout_ms: u64,
    /// Longest connecting (spawn, initialize, list tools) may take.
    pub connect_timeout_ms: u64,
    /// First wait before reconnecting; doubles after each failure…
    pub backoff_initial_ms: u64,
    /// …up to this.
    pub backoff_max_ms: u64,
}

/// Why a call failed. Retryable errors may succeed on a later attempt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum McpCallError {
    #[error("{server} is not connected ({reason})")]
    NotConnected { server: String, reason: String },
    #[error("{server} did not answer {tool} within {timeout_ms} ms")]
    Timeout {
        server: String,
        tool: String,
        timeout_ms: u64,
    },
    #[error("{server} failed during {tool}: {reason}")]
    Transport {
        server: String,
        tool: String,
        reason: String,
    },
    #[error("{server} has no tool {tool:?}")]
    UnknownTool { server: String, tool: String },
}

impl McpCallError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::UnknownTool { .. })
    }
}

/// A tool call to make.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub tool: String,
    pub arguments: Map<String, Value>,
    /// Sent as `_meta.trace_id`.
    pub trace_id: Option<String>,
}

/// What the actor knows of its server, for health checks and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientStatus {
    pub connected: bool,
    /// The child process, for a stdio server.
    pub pid: Option<u32>,
    pub tools: Vec<String>,
    /// Successful connections so far (1 after start, +1 per reconnect).
    pub connects: u64,
    pub last_error: Option<String>,
}

pub enum McpClientMsg {
    Call(ToolCall, RpcReplyPort<Result<CallToolResult, McpCallError>>),
    Status(RpcReplyPort<ClientStatus>),
    /// The tools the server listed, with their schemas (empty while disconnected).
    Tools(RpcReplyPort<Vec<crate::reasoner::ToolSpec>>),
    /// Internal: start connecting.
    Reconnect,
    /// Internal: connection attempt `generation` succeeded.
    Connected {
        generation: u64,
        peer: Peer<RoleClient>,
        tools: Vec<Tool>,
        pid: Option<u32>,
    },
    /// Internal: connection `generation` failed or ended.
    Lost {
        generation: u64,
        reason: String,
    },
}

struct Connection {
    peer: Peer<RoleClient>,
    tools: Vec<Tool>,
    pid: Option<u32>,
}

pub struct McpClientState {
    spec: McpServerSpec,
    /// Which connection attempt is current; messages about older ones are ignored.
    generation: u64,
    connection: Option<Connection>,
    /// Ends the current attempt's task (and so the session and child) when dropped.
    session: Option<DropGuard>,
    backoff_ms: u64,
    connects: u64,
    last_error: Option<String>,
}

/// The next reconnect delay: doubled, capped.
pub fn next_backoff_ms(current_ms: u64, max_ms: u64) -> u64 {
    current_ms.saturating_mul(2).min(max_ms)
}

pub struct McpClientActor;

impl Actor for McpClientActor {
    type Msg = McpClientMsg;
    type State = McpClientState;
    type Arguments = McpServerSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        spec: McpServerSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(McpClientMsg::Reconnect)?;
        Ok(McpClientState {
            backoff_ms: spec.backoff_initial_ms,
            spec,
            generation: 0,
            connection: None,
            session: None,
            connects: 0,
            last_error: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            McpClientMsg::Call(call, reply) => state.call(call, reply),
            McpClientMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            McpClientMsg::Tools(reply) => {
                let _ = reply.send(state.tool_specs());
            }
            McpClientMsg::Reconnect => {
                if state.connection.is_none() {
                    state.generation += 1;
                    let token = CancellationToken::new();
                    state.session = Some(token.clone().drop_guard());
                    tokio::spawn(run_session(
                        state.spec.clone(),
                        state.generation,
                        token,
                        myself,
                    ));
                }
            }
            McpClientMsg::Connected {
                generation,
                peer,
                tools,
                pid,
            } if generation == state.generation => {
                tracing::info!(server = %state.spec.name, pid, tools = tools.len(), "mcp server connected");
                state.connection = Some(Connection { peer, tools, pid });
                state.connects += 1;
                state.backoff_ms = state.spec.backoff_initial_ms;
            }
            McpClientMsg::Lost { generation, reason } if generation == state.generation => {
                tracing::warn!(server = %state.spec.name, error = %reason, retry_ms = state.backoff_ms, "mcp server lost");
                state.connection = None;
                state.session = None;
                state.last_error = Some(reason);
                myself.send_after(Duration::from_millis(state.backoff_ms), || {
                    McpClientMsg::Reconnect
                });
                state.backoff_ms = next_backoff_ms(state.backoff_ms, state.spec.backoff_max_ms);
            }
            McpClientMsg::Connected { .. } | McpClientMsg::Lost { .. } => {}
        }
        Ok(())
    }
}

impl McpClientState {
    fn status(&self) -> ClientStatus {
        ClientStatus {
            connected: self.connection.is_some(),
            pid: self.connection.as_ref().and_then(|c| c.pid),
            tools: self
                .connection
                .iter()
                .flat_map(|c| c.tools.iter().map(|t| t.name.to_string()))
                .collect(),
            connects: self.connects,
            last_error: self.last_error.clone(),
        }
    }

    fn tool_specs(&self) -> Vec<crate::reasoner::ToolSpec> {
        self.connection
            .iter()
            .flat_map(|c| c.tools.iter())
            .map(|t| crate::reasoner::ToolSpec {
                name: t.name.to_string(),
                description: t.description.as_deref().unwrap_or_default().to_owned(),
                input_schema: Value::Object((*t.input_schema).clone()),
            })
            .collect()
    }

    /// Answers at once when the call cannot be made; otherwise makes it in a task.
    fn call(&self, call: ToolCall, reply: RpcReplyPort<Result<CallToolResult, McpCallError>>) {
        let server = self.spec.name.clone();
        let Some(connection) = &self.connection else {
            let reason = self
                .last_error
                .clone()
                .unwrap_or_else(|| "connecting".into());
            let _ = reply.send(Err(McpCallError::NotConnected { server, reason }));
            return;
        };
        if !connection
            .tools
            .iter()
            .any(|t| t.name == call.tool.as_str())
        {
            let _ = reply.send(Err(McpCallError::UnknownTool {
                server,
                tool: call.tool,
            }));
            return;
        }
        let peer = connection.peer.clone();
        let timeout_ms = self.spec.call_timeout_ms;
        tokio::spawn(async move {
            let tool = call.tool.clone();
            let mut params = CallToolRequestParams::new(call.tool).with_arguments(call.arguments);
            if let Some(trace) = call.trace_id {
                let mut meta = Map::new();
                meta.insert(
                    mcp::servers::common::TRACE_META_KEY.into(),
                    Value::String(trace),
                );
                params.meta = Some(RequestMetaObject::from(meta));
            }
            // Dropping the call on timeout sends the server a cancellation.
            let result = match tokio::time::timeout(
                Duration::from_millis(timeout_ms),
                peer.call_tool(params),
            )
            .await
            {
                Err(_) => Err(McpCallError::Timeout {
                    server,
                    tool,
                    timeout_ms,
                }),
                Ok(Err(e)) => Err(McpCallError::Transport {
                    server,
                    tool,
                    reason: e.to_string(),
                }),
                Ok(Ok(result)) => Ok(result),
            };
            let _ = reply.send(result);
        });
    }
}

/// Connects, reports, then holds the session until it ends or `stop` is cancelled.
async fn run_session(
    spec: McpServerSpec,
    generation: u64,
    stop: CancellationToken,
    actor: ActorRef<McpClientMsg>,
) {
    let connect_timeout = Duration::from_millis(spec.connect_timeout_ms);
    let attempt = async {
        let (service, pid) = tokio::time::timeout(connect_timeout, connect(&spec.transport))
            .await
            .map_err(|_| format!("connecting took longer than {} ms", spec.connect_timeout_ms))??;
        let tools = tokio::time::timeout(connect_timeout, service.peer().list_all_tools())
            .await
            .map_err(|_| "listing tools timed out".to_owned())?
            .map_err(|e| format!("listing tools failed: {e}"))?;
        Ok::<_, String>((service, pid, tools))
    };
    let (service, pid, tools) = tokio::select! {
        () = stop.cancelled() => return,
        result = attempt => match result {
            Ok(connected) => connected,
            Err(reason) => {
                let _ = actor.send_message(McpClientMsg::Lost { generation, reason });
                return;
            }
        },
    };
    let peer = service.peer().clone();
    let _ = actor.send_message(McpClientMsg::Connected {
        generation,
        peer,
        tools,
        pid,
    });
    let cancel = service.cancellation_token();
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            cancel.cancel();
        })
    };
    let quit = service.waiting().await;
    watcher.abort();
    if !stop.is_cancelled() {
        let reason = match quit {
            Ok(reason) => format!("session ended: {reason:?}"),
            Err(e) => format!("session task failed: {e}"),
        };
        let _ = actor.send_message(McpClientMsg::Lost { generation, reason });
    }
}

async fn connect(
    transport: &ServerTransport,
) -> Result<(RunningService<RoleClient, ClientConfig>, Option<u32>), String> {
    match transport {
        ServerTransport::Stdio { program, args } => {
            let mut command = tokio::process::Command::new(program);
            command.args(args);
            let child = TokioChildProcess::new(command)
                .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
            let pid = child.id();
            let service = ClientConfig::default()
                .serve(child)
                .await
                .map_err(|e| format!("initialize failed: {e}"))?;
            Ok((service, pid))
        }
        ServerTransport::Http { url } => {
            let transport = StreamableHttpClientTransport::from_config(
                StreamableHttpClientTransportConfig::with_uri(url.clone()),
            );
            let service = ClientConfig::default()
                .serve(transport)
                .await
                .map_err(|e| format!("initialize failed at {url}: {e}"))?;
            Ok((service, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_backoff_ms;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut delays = vec![100];
        for _ in 0..6 {
            delays.push(next_backoff_ms(*delays.last().unwrap(), 2_000));
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(next_backoff_ms(u64::MAX, u64::MAX), u64::MAX);
    }
}
