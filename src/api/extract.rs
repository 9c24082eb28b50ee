//! Extractors that turn every bad request into a [`Problem`] with a clear message, instead of
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::problem::{Problem, ProblemKind};

/// A JSON body: `Content-Type: application/json` (or `application/*+json`), within the body
/// limit, syntactically valid (else 400) and of the expected shape (else 422).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let headers = req.headers().clone();
        content_type_is_json(&headers)?;
        let ApiBody(bytes) = ApiBody::from_request(req, state).await?;
        Self::from_parts(&headers, &bytes)
    }
}

impl<T: DeserializeOwned> ApiJson<T> {
    /// A body already read: JSON by its `Content-Type`, syntactically valid (else 400) and
    /// of the expected shape (else 422).
    pub fn from_parts(headers: &HeaderMap, bytes: &[u8]) -> Result<Self, Problem> {
        content_type_is_json(headers)?;
        serde_json::from_slice(bytes).map(ApiJson).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => Problem::new(ProblemKind::ValidationFailed, e.to_string()),
                Category::Syntax | Category::Eof | Category::Io => {
                    Problem::new(ProblemKind::MalformedJson, format!("malformed JSON: {e}"))
                }
            }
        })
    }
}

/// A request body within the body limit (else 413 as a problem), not yet interpreted.
pub struct ApiBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        Bytes::from_request(req, state)
            .await
            .map(ApiBody)
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        ProblemKind::PayloadTooLarge,
                        "the request body is larger than this service accepts",
                    )
                } else {
                    Problem::new(ProblemKind::BadRequest, rejection.body_text())
                }
            })
    }
}

fn content_type_is_json(headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if is_json(content_type) {
        return Ok(());
    }
    let given = if content_type.is_empty() {
        "none".to_owned()
    } else {
        format!("{:?}", content_type.chars().take(100).collect::<String>())
    };
    Err(Problem::new(
        ProblemKind::UnsupportedMediaType,
        format!("expected Content-Type: application/json, got {given}"),
    ))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// An incident id in the path: a UUID, else 400.
pub struct IncidentId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IncidentId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|r| Problem::new(ProblemKind::BadRequest, r.body_text()))?;
        IncidentId::parse(&raw)
    }
}

impl IncidentId {
    /// An incident id from a path segment, else 400 naming it.
    pub fn parse(raw: &str) -> Result<Self, Problem> {
        Uuid::try_parse(raw).map(IncidentId).map_err(|_| {
            let shown: String = raw.chars().take(64).collect();
            Problem::new(
                ProblemKind::BadRequest,
                format!("malformed incident id {shown:?}: expected a UUID"),
            )
        })
    }
}

/// Query parameters, else 400 naming what is wrong (unknown parameters included).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r| {
                Problem::new(
                    ProblemKind::BadRequest,
                    format!("bad query string: {}", r.body_text()),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types_are_recognised() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/xml",
            "json",
            "application/jsonx",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
