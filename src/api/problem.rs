//! Errors as RFC 9457 problem details (`application/problem+json`). Every error the API
//! returns goes through [`Problem`], so clients see one shape with a clear `detail`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::incident::FieldError;
use crate::store::StoreError;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// The kinds of problem the API reports; each has a stable `type` URI and a title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    MalformedJson,
    UnsupportedMediaType,
    PayloadTooLarge,
    ValidationFailed,
    BadRequest,
    NotFound,
    /// The request conflicts with what the server holds (an idempotency key reused).
    Conflict,
    MethodNotAllowed,
    /// Credentials are missing or wrong.
    Unauthorized,
    /// What the request names expired (a proposal past its time).
    Gone,
    /// The request's precondition (`If-Match`) does not hold.
    PreconditionFailed,
    /// The request must carry a precondition (`If-Match`).
    PreconditionRequired,
    Timeout,
    Unavailable,
    /// The agent holds as many incidents as it may: retry after `Retry-After` seconds.
    AtCapacity,
    Internal,
}

impl ProblemKind {
    fn parts(self) -> (&'static str, &'static str, StatusCode) {
        use ProblemKind::*;
        match self {
            MalformedJson => ("malformed-json", "Malformed JSON", StatusCode::BAD_REQUEST),
            UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported media type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            PayloadTooLarge => (
                "payload-too-large",
                "Payload too large",
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            ValidationFailed => (
                "validation-failed",
                "Validation failed",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            BadRequest => ("bad-request", "Bad request", StatusCode::BAD_REQUEST),
            NotFound => ("not-found", "Not found", StatusCode::NOT_FOUND),
            Conflict => ("conflict", "Conflict", StatusCode::CONFLICT),
            MethodNotAllowed => (
                "method-not-allowed",
                "Method not allowed",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            Unauthorized => ("unauthorized", "Unauthorized", StatusCode::UNAUTHORIZED),
            Gone => ("gone", "Gone", StatusCode::GONE),
            PreconditionFailed => (
                "precondition-failed",
                "Precondition failed",
                StatusCode::PRECONDITION_FAILED,
            ),
            PreconditionRequired => (
                "precondition-required",
                "Precondition required",
                StatusCode::PRECONDITION_REQUIRED,
            ),
            Timeout => (
                "timeout",
                "Request timed out",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            Unavailable => (
                "unavailable",
                "Service unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            AtCapacity => (
                "at-capacity",
                "Service at capacity",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            Internal => (
                "internal",
                "Internal error",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        }
    }
}

/// An RFC 9457 problem details object.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Per-field reasons of a validation failure (an RFC 9457 extension member).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub kind: ProblemKind,
    /// The `Retry-After` of a 503, in seconds (1 when not set).
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        let (slug, title, status) = kind.parts();
        Problem {
            type_uri: format!("urn:sre-agent:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            kind,
            retry_after_secs: None,
        }
    }

    /// A 503 saying the agent is full, with how long to wait.
    pub fn at_capacity(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Problem {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Problem::new(ProblemKind::AtCapacity, detail)
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Problem {
            errors,
            ..Problem::new(ProblemKind::ValidationFailed, detail)
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind.parts().2
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = matches!(
            self.kind,
            ProblemKind::Unavailable | ProblemKind::Timeout | ProblemKind::AtCapacity
        );
        let retry_after = HeaderValue::from(self.retry_after_secs.unwrap_or(1));
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if retry {
            headers.insert(header::RETRY_AFTER, retry_after);
        }
        if self.kind == ProblemKind::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        if let StoreError::Contended(why) = &error {
            tracing::warn!(%error, "a write lost to concurrent writers");
            return Problem::new(ProblemKind::Unavailable, format!("{why}; retry shortly"));
        }
        if error.is_retryable() {
            tracing::warn!(%error, "database unavailable");
            Problem::new(
                ProblemKind::Unavailable,
                "the database is unavailable; retry shortly",
            )
        } else {
            tracing::error!(%error, "store operation failed");
            Problem::new(
                ProblemKind::Internal,
                "the store failed; the error is in the service log",
            )
        }
    }
}
