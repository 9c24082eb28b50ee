//! What the three servers share: command-line arguments, both transports (stdio and
//! streamable HTTP), logging to stderr, and the one `call_tool` path every tool call takes.
//! That path reads the caller's trace id from the request `_meta`, runs the call in a span
//! carrying it, and logs the outcome. (Arguments that do not deserialize already come back
//! as tool errors, `isError`, from rmcp's router, so a model can read and correct them.)

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use crate::telemetry::LogFormat;

/// The `_meta` key that carries the trace id of the incident a call is for.
pub const TRACE_META_KEY: &str = "trace_id";
/// Largest request body the HTTP transport accepts.
pub const REQUEST_BODY_BYTES_MAX: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// JSON-RPC over the process's stdin and stdout (what an MCP client spawns).
    Stdio,
    /// Streamable HTTP at `/mcp`.
    Http,
}

/// Arguments every server takes.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerArgs {
    #[arg(long, env = "MCP_TRANSPORT", value_enum, default_value_t = Transport::Stdio)]
    pub transport: Transport,
    /// Address for `--transport http` (default: the server's own port on 127.0.0.1).
    #[arg(long, env = "MCP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Host header values accepted over HTTP, besides localhost, 127.0.0.1 and ::1
    /// (DNS-rebinding protection). Repeat for several.
    #[arg(
        long = "allowed-host",
        env = "MCP_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Read catalog, runbooks, fleet and scenarios from this folder instead of the
    /// embedded copies.
    #[arg(long, env = "SRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log line format (logs always go to stderr).
    #[arg(long, env = "SRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

pub use crate::backend::select::BackendArgs;

/// The trace id in a request's `_meta`, when it is a sane string.
pub fn trace_id(context: &RequestContext<RoleServer>) -> Option<String> {
    let value = context.meta.get(TRACE_META_KEY)?.as_str()?;
    let sane = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    sane.then(|| value.to_owned())
}

/// Runs one tool call through `router`, traced and logged.
pub async fn call_tool<S: Send + Sync + 'static>(
    server_name: &'static str,
    server: &S,
    router: &ToolRouter<S>,
    request: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let trace = trace_id(&context).unwrap_or_else(|| "-".to_owned());
    let tool = request.name.to_string();
    let span =
        tracing::info_span!("tool_call", server = server_name, tool = %tool, trace_id = %trace);
    async move {
        let started = Instant::now();
        let result = router
            .call(ToolCallContext::new(server, request, context))
            .await;
        let result = match result {
            Err(e) if e.code == ErrorCode::INVALID_PARAMS && router.has_route(&tool) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "invalid arguments for {tool}: {}",
                    e.message
                ))])
                .into())
            }
            other => other,
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => {
                let text = r
                    .content
                    .first()
                    .and_then(|c| c.as_text())
                    .map(|t| t.text.as_str());
                tracing::warn!(elapsed_ms, error = text.unwrap_or(""), "tool call refused");
            }
            Ok(_) => tracing::info!(elapsed_ms, "tool call"),
            Err(e) => tracing::warn!(elapsed_ms, error = %e.message, "tool call failed"),
        }
        result
    }
    .instrument(span)
    .await
}

/// Serves one server over the chosen transport until stdin closes (stdio) or the process
/// is told to stop (HTTP).
pub async fn run<S, F>(args: &ServerArgs, default_port: u16, factory: F) -> anyhow::Result<()>
where
    S: ServerHandler,
    F: Fn() -> S + Send + Sync + 'static,
{
    match args.transport {
        // stdin and stdout as pipes the runtime polls when they are pipes (as when an MCP
        // client spawned the server), reopened so that their non-blocking mode is this
        // transport's alone; else tokio's, which hands every read and write to its
        // blocking pool.
        Transport::Stdio => {
            factory()
                .serve(rmcp::transport::stdio_pipes())
                .await?
                .waiting()
                .await?;
        }
        Transport::Http => {
            let addr = args
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            tracing::info!(listen = %listener.local_addr()?, "serving MCP over streamable HTTP at /mcp");
            serve_http(
                listener,
                &args.allowed_hosts,
                factory,
                crate::process::shutdown_signal(),
            )
            .await?;
        }
    }
    Ok(())
}

/// Runs `mapping-mcp` on the catalog `args` names, as [`run`] does.
pub async fn run_mapping(args: &ServerArgs) -> anyhow::Result<()> {
    let catalog = std::sync::Arc::new(
        crate::data::load_catalog(args.data_dir.as_deref()).map_err(anyhow::Error::msg)?,
    );
    run(args, 8701, move || {
        crate::servers::mapping::MappingServer::new(catalog.clone())
    })
    .await
}

/// Runs `observability-mcp` on the backends `backends` names, as [`run`] does.
pub async fn run_observability(args: &ServerArgs, backends: &BackendArgs) -> anyhow::Result<()> {
    let catalog = std::sync::Arc::new(
        crate::data::load_catalog(args.data_dir.as_deref()).map_err(anyhow::Error::msg)?,
    );
    let backend = std::sync::Arc::new(
        crate::backend::select::ObservabilityBackends::build(backends, catalog)
            .await
            .map_err(anyhow::Error::msg)?,
    );
    run(args, 8702, move || {
        crate::servers::observability::ObservabilityServer::new(backend.clone())
    })
    .await
}

/// Runs `remediation-mcp` on the backends `backends` names, as [`run`] does.
pub async fn run_remediation(args: &ServerArgs, backends: &BackendArgs) -> anyhow::Result<()> {
    let catalog = std::sync::Arc::new(
        crate::data::load_catalog(args.data_dir.as_deref()).map_err(anyhow::Error::msg)?,
    );
    let backend = std::sync::Arc::new(
        crate::backend::select::RemediationBackends::build(backends, catalog)
            .await
            .map_err(anyhow::Error::msg)?,
    );
    run(args, 8703, move || {
        crate::servers::remediation::RemediationServer::new(backend.clone())
    })
    .await
}

/// Serves MCP over streamable HTTP at `/mcp` (and `GET /healthz`) on `listener` until
/// `shutdown` resolves. The Host header must be a loopback name or one of `allowed_hosts`.
pub async fn serve_http<S, F>(
    listener: tokio::net::TcpListener,
    allowed_hosts: &[String],
    factory: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: ServerHandler,
    F: Fn() -> S + Send + Sync + 'static,
{
    let cancel = CancellationToken::new();
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    hosts.extend(allowed_hosts.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_max_request_body_bytes(REQUEST_BODY_BYTES_MAX)
        .with_cancellation_token(cancel.child_token());
    let service: StreamableHttpService<S, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(factory()), Default::default(), config);
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await
}
