//! `POST /webhooks/alertmanager`: Alertmanager's webhook (version 4). Every alert of the
//! group is recorded by its fingerprint on the incident of its failure (or opens one); a
//! repeated or redelivered group changes nothing it already recorded and is answered 200,
//! so Alertmanager stops retrying. A broken envelope is refused whole (problem+json 4xx,
//! nothing recorded); an alert that cannot be taken is refused alone and listed under
//! `refused` (Alertmanager does not retry a 4xx: refusing the group would lose its good
//! alerts). A database that fails mid-delivery is a 503, which Alertmanager retries: the
//! alerts already recorded are then exact repeats. So is an agent at capacity: the delivery
//! is refused with 503 and `Retry-After` before anything of it is recorded.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::extract::{ApiBody, ApiJson};
use super::problem::{Problem, ProblemKind};
use crate::intake::alertmanager::{self, Webhook};
use crate::trace::TraceId;

pub async fn alertmanager(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, Problem> {
    // The token first: an unauthenticated caller learns nothing about the payload's shape.
    if let Some(token) = &state.alertmanager_token
        && !super::bearer_is(headers.get(header::AUTHORIZATION), token)
    {
        return Err(Problem::new(
            ProblemKind::Unauthorized,
            "this endpoint needs Authorization: Bearer <token> (http_config.authorization in Alertmanager's receiver)",
        ));
    }
    if state.is_draining() {
        return Err(Problem::new(
            ProblemKind::Unavailable,
            "the service is stopping: Alertmanager will retry",
        ));
    }
    let ApiJson(hook) = ApiJson::<Webhook>::from_parts(&headers, &body)?;
    let parsed = alertmanager::parse(hook).map_err(Problem::validation)?;
    // Full: nothing recorded, Alertmanager retries. Otherwise every alert that opens an
    // incident takes a slot without refusing (see `Intake::take`).
    if let Some(admission) = &state.admission
        && admission.is_full()
    {
        return Err(state.at_capacity(admission, crate::metrics::Endpoint::Alertmanager));
    }
    for r in &parsed.refused {
        tracing::warn!(index = r.index, fingerprint = %r.fingerprint, errors = ?r.errors, "an alert of the delivery was refused");
    }
    let intake = state.intake();
    let mut received = Vec::with_capacity(parsed.delivered.len());
    for d in parsed.delivered {
        let (r, _) = intake
            .take(d.event, d.incident, TraceId::generate(), None)
            .await?;
        received.push(r);
    }
    let count = |o: &str| received.iter().filter(|r| r.outcome == o).count();
    let body = json!({
        "received": received.len(),
        "opened": count("opened"),
        "unchanged": count("unchanged"),
        "alerts": received,
        "refused": parsed.refused,
    });
    Ok(Json(body).into_response())
}
