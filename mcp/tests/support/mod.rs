//! Test harness: an in-process `sre-fleet` on a free loopback port, and rmcp clients for each
//! server over stdio (the real binary as a child process) or streamable HTTP.

#![allow(dead_code)]

use std::sync::Arc;

use mcp::backend::FleetClient;
use mcp::fleet::http::serve;
use mcp::fleet::model::LedgerEntry;
use mcp::servers::common::serve_http;
use mcp::servers::mapping::MappingServer;
use mcp::servers::observability::ObservabilityServer;
use mcp::servers::remediation::RemediationServer;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, RequestMetaObject};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub type Client = RunningService<RoleClient, ClientConfig>;

pub struct Fleet {
    pub url: String,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

pub async fn start_fleet() -> Fleet {
    let fleet = mcp::data::load_fleet(None, chrono::Utc::now()).expect("the embedded fleet loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, fleet, async {
        let _ = rx.await;
    }));
    Fleet {
        url,
        http: reqwest::Client::new(),
        _stop: tx,
    }
}

impl Fleet {
    pub async fn inject(&self, scenario: &str) {
        let r = self
            .http
            .post(format!("{}/v1/scenarios/{scenario}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "inject {scenario}");
    }

    pub async fn advance(&self, seconds: i64) {
        let r = self
            .http
            .post(format!("{}/v1/clock/advance", self.url))
            .json(&json!({ "seconds": seconds }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// What the fleet itself says of `service` (`GET /v1/services/{name}/metrics`).
    pub async fn metrics(&self, service: &str) -> mcp::fleet::model::ServiceMetrics {
        self.http
            .get(format!("{}/v1/services/{service}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Sends `body` to the fleet's `path` with `method`; the status code.
    pub async fn send_json(&self, method: reqwest::Method, path: &str, body: Value) -> u16 {
        self.http
            .request(method, format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn ledger(&self) -> Vec<LedgerEntry> {
        let body: Value = self
            .http
            .get(format!("{}/v1/ledger", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        serde_json::from_value(body["entries"].clone()).unwrap()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Mapping,
    Observability,
    Remediation,
}

impl Server {
    pub const ALL: [Server; 3] = [Server::Mapping, Server::Observability, Server::Remediation];

    pub fn binary(self) -> &'static str {
        match self {
            Server::Mapping => env!("CARGO_BIN_EXE_mapping-mcp"),
            Server::Observability => env!("CARGO_BIN_EXE_observability-mcp"),
            Server::Remediation => env!("CARGO_BIN_EXE_remediation-mcp"),
        }
    }

    pub fn tools(self) -> [&'static str; 2] {
        match self {
            Server::Mapping => ["get-runbook", "map-alert-to-service"],
            Server::Observability => ["get-logs", "get-metrics"],
            Server::Remediation => ["restart-pod", "send-notification"],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Stdio,
    Http,
}

/// A client of `server` over `transport`, talking to the fleet at `fleet_url`.
pub async fn connect(server: Server, transport: Transport, fleet_url: &str) -> Client {
    match transport {
        Transport::Stdio => {
            let mut command = tokio::process::Command::new(server.binary());
            command.env("RUST_LOG", "warn");
            if server != Server::Mapping {
                command.args(["--fleet-url", fleet_url]);
            }
            let child = TokioChildProcess::new(command).expect("the server binary starts");
            ClientConfig::default()
                .serve(child)
                .await
                .expect("initialize over stdio")
        }
        Transport::Http => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let backend = Arc::new(FleetClient::new(fleet_url, 5_000).unwrap());
            let never = std::future::pending::<()>();
            match server {
                Server::Mapping => {
                    let catalog = Arc::new(mcp::data::load_catalog(None).unwrap());
                    tokio::spawn(serve_http(
                        listener,
                        &[],
                        move || MappingServer::new(catalog.clone()),
                        never,
                    ));
                }
                Server::Observability => {
                    tokio::spawn(serve_http(
                        listener,
                        &[],
                        move || ObservabilityServer::new(backend.clone()),
                        never,
                    ));
                }
                Server::Remediation => {
                    tokio::spawn(serve_http(
                        listener,
                        &[],
                        move || RemediationServer::new(backend.clone()),
                        never,
                    ));
                }
            }
            http_client(&format!("http://{addr}/mcp")).await
        }
    }
}

pub async fn http_client(uri: &str) -> Client {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(uri.to_owned()),
    );
    ClientConfig::default()
        .serve(transport)
        .await
        .expect("initialize over HTTP")
}

pub fn request(tool: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(args) = args else {
        panic!("arguments are an object")
    };
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args)
}

/// Calls a tool, carrying `trace_id` in `_meta` when given.
pub async fn call(
    client: &Client,
    tool: &str,
    args: Value,
    trace_id: Option<&str>,
) -> CallToolResult {
    let mut params = request(tool, args);
    if let Some(trace) = trace_id {
        let Value::Object(meta) = json!({ "trace_id": trace }) else {
            unreachable!()
        };
        params.meta = Some(RequestMetaObject::from(meta));
    }
    client
        .call_tool(params)
        .await
        .expect("the call is answered")
}

/// The structured result of a successful call.
pub fn ok(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "tool error: {}", text(result));
    result
        .structured_content
        .clone()
        .expect("structured content")
}

/// The text of a tool error.
pub fn refused(result: &CallToolResult) -> String {
    assert_eq!(
        result.is_error,
        Some(true),
        "expected a tool error, got {:?}",
        result.structured_content
    );
    text(result)
}

pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
