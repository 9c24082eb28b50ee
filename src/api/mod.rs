//! The HTTP API (axum): incidents, health, metrics, and the middleware around them (body
//! limit, request timeout, panic catcher, access log). Handlers only validate, call the
//! store and answer; they never wait on a reasoner or an MCP server.

mod decisions;
mod extract;
mod incidents;
pub mod problem;
pub mod server;
mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use ractor::ActorRef;

use crate::agent::supervisor::SupervisorMsg;
use crate::config::HttpConfig;
use crate::store::Store;
use problem::{Problem, ProblemKind};

/// Header carrying the trace id of the incident a response is about.
pub const TRACE_ID_HEADER: HeaderName = HeaderName::from_static("x-trace-id");

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Where committed incidents are handed on; `None` runs the API alone (no agent).
    pub supervisor: Option<ActorRef<SupervisorMsg>>,
    /// How long an `Idempotency-Key` of `POST /incidents` is remembered.
    pub idempotency_key_keep_secs: u64,
    /// Set when the service is stopping: readiness answers 503 and new incidents are
    /// refused with 503 and `Retry-After` (a retry reaches the next instance); reads go on.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The catalog alerts are routed with (to tell which ones are one failure).
    pub catalog: std::sync::Arc<mcp::catalog::Catalog>,
    /// The bearer token `POST /webhooks/alertmanager` requires, if any.
    pub alertmanager_token: Option<std::sync::Arc<str>>,
    /// `(name, token)` of each approver; empty: deciders name themselves.
    pub approver_tokens: std::sync::Arc<Vec<(String, String)>>,
    /// The intake's locks, one per failure key.
    pub intake_locks: std::sync::Arc<crate::locks::KeyedLocks>,
    /// The agent's slots: a new incident takes one before it is committed, and is refused
    /// with 503 and `Retry-After` when none is free. `None` without an agent.
    pub admission: Option<std::sync::Arc<crate::agent::admission::Admission>>,
    /// What `GET /metrics` shows; the intake counts into it too.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl AppState {
    /// The intake of alerts, over this state's store, supervisor and catalog.
    pub fn intake(&self) -> crate::intake::Intake {
        crate::intake::Intake {
            store: self.store.clone(),
            supervisor: self.supervisor.clone(),
            catalog: self.catalog.clone(),
            locks: self.intake_locks.clone(),
            admission: self.admission.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// A slot for a new incident, or the 503 that refuses it (counted for `endpoint`).
    pub fn admit(
        &self,
        endpoint: crate::metrics::Endpoint,
    ) -> Result<Option<crate::agent::admission::Slot>, Problem> {
        let Some(admission) = &self.admission else {
            return Ok(None);
        };
        match admission.reserve() {
            Some(slot) => Ok(Some(slot)),
            None => Err(self.at_capacity(admission, endpoint)),
        }
    }

    /// The 503 of a full agent, counted for `endpoint`.
    pub fn at_capacity(
        &self,
        admission: &crate::agent::admission::Admission,
        endpoint: crate::metrics::Endpoint,
    ) -> Problem {
        self.metrics.admission_refused(endpoint);
        let secs = admission.retry_after_secs();
        tracing::warn!(
            capacity = admission.capacity(),
            retry_after_secs = secs,
            endpoint = endpoint.as_str(),
            "at capacity: a new incident is refused"
        );
        Problem::at_capacity(
            format!(
                "the agent holds as many incidents as it may ({}): nothing was recorded; retry in {secs} s",
                admission.capacity()
            ),
            secs,
        )
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub fn router(state: AppState, http: &HttpConfig) -> Router {
    let timeout = Duration::from_millis(http.request_timeout_ms);
    Router::new()
        .route("/incidents", get(incidents::list).post(incidents::create))
        .route("/incidents/{id}", get(incidents::get))
        .route(
            "/incidents/{id}/actions/{seq}/approve",
            post(decisions::approve),
        )
        .route(
            "/incidents/{id}/actions/{seq}/reject",
            post(decisions::reject),
        )
        .route("/webhooks/alertmanager", post(webhooks::alertmanager))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(http.request_body_limit_bytes))
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                Problem::new(ProblemKind::Internal, "the request handler failed").into_response()
            },
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The process is up and serving.
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// The agent's metrics in the OpenMetrics text format; unauthenticated, like `/healthz`.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.encode();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

/// The database answers.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return Problem::new(ProblemKind::Unavailable, "the service is stopping").into_response();
    }
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({
            "status": "ready",
            "database": state.store.backend(),
        }))
        .into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            Problem::new(ProblemKind::Unavailable, "the database does not answer").into_response()
        }
    }
}

async fn not_found(request: Request) -> Problem {
    let path: String = request.uri().path().chars().take(200).collect();
    Problem::new(ProblemKind::NotFound, format!("no route for {path}"))
}

async fn method_not_allowed(request: Request) -> Problem {
    let path: String = request.uri().path().chars().take(200).collect();
    Problem::new(
        ProblemKind::MethodNotAllowed,
        format!("{} is not allowed on {path}", request.method()),
    )
}

/// Whether `given` (an `Authorization` header) carries `Bearer <token>`. The SHA-256 of
/// both are compared in full, so the time taken says nothing about where they differ or
/// how long the token is.
pub(crate) fn bearer_is(given: Option<&axum::http::HeaderValue>, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let presented = given
        .and_then(|v| v.to_str().ok())
        .and_then(|g| {
            g.strip_prefix("Bearer ")
                .or_else(|| g.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return false;
    };
    let (a, b) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Answers 503 when a request takes longer than the configured timeout. The handler's future
/// is dropped; a store write it had started is either committed or not, never half done.
async fn request_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "request timed out");
            Problem::new(
                ProblemKind::Timeout,
                format!("the request took longer than {} ms", timeout.as_millis()),
            )
            .into_response()
        }
    }
}
