//! `POST /incidents/{id}/actions/{seq}/approve` and `…/reject`: a human decides on one
//! proposal of an escalated incident.
//!
//! The request names the proposal it decides on in `If-Match` (its `proposal.digest`, as
//! `GET /incidents/{id}` shows it; 428 without it, 412 when the proposal changed), and who
//! decides: the approver token's name (`Authorization: Bearer …`, when `--approver-tokens`
//! is set), else the `X-Decided-By` header. An expired proposal is 410; a decision that
//! conflicts with one already recorded, a lapsed proposal or an incident that is not
//! waiting is 409; the same decision again is answered 200 and changes nothing. The
//! decision is written with the revision of the incident it was made on: of two decisions
//! racing, one wins and the other is answered from the winner's record. An approval moves
//! the incident to `remediating`; its actor re-checks the world before the call.

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::problem::{Problem, ProblemKind};
use super::{AppState, TRACE_ID_HEADER};
use crate::agent::supervisor::SupervisorMsg;
use crate::core::approval::{self, Decided, Refusal};
use crate::core::text;
use crate::incident::{FieldError, Verdict};
use crate::store::StoreError;

/// Header a decider names themselves with when no approver tokens are configured.
pub const DECIDED_BY_HEADER: &str = "x-decided-by";
/// Longest decider name, in characters.
pub const DECIDER_CHARS_MAX: usize = 128;
/// Longest comment, in characters.
pub const COMMENT_CHARS_MAX: usize = 1_000;
/// Reads and writes of one decision lost to concurrent writers before answering 409.
const DECIDE_ROUNDS_MAX: u32 = 4;

/// The optional body: why.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub comment: Option<String>,
}

pub async fn approve(
    state: State<AppState>,
    path: Path<(String, String)>,
    request: Request,
) -> Result<Response, Problem> {
    decide(state, path, request, Verdict::Approved).await
}

pub async fn reject(
    state: State<AppState>,
    path: Path<(String, String)>,
    request: Request,
) -> Result<Response, Problem> {
    decide(state, path, request, Verdict::Rejected).await
}

async fn decide(
    State(state): State<AppState>,
    Path((id, seq)): Path<(String, String)>,
    request: Request,
    verdict: Verdict,
) -> Result<Response, Problem> {
    let super::extract::IncidentId(id) = super::extract::IncidentId::parse(&id)?;
    let seq: u32 = seq.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
        Problem::new(
            ProblemKind::BadRequest,
            format!(
                "malformed action number {:?}: expected 1, 2, …",
                text::clean(&seq, 32)
            ),
        )
    })?;
    let headers = request.headers().clone();
    let by = decider(&state, &headers)?;
    if state.is_draining() {
        return Err(Problem::new(
            ProblemKind::Unavailable,
            "the service is stopping: decide again in a moment",
        ));
    }
    let proposal = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| approval::if_match_digest(v).to_owned())
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::PreconditionRequired,
                "name the proposal you decide on: If-Match: \"<proposal.digest>\" from GET /incidents/{id}",
            )
        })?;
    let body = if request_has_body(&headers) {
        super::extract::ApiJson::<DecisionRequest>::from_request(request, &())
            .await?
            .0
    } else {
        DecisionRequest::default()
    };
    let comment = body.comment.map(|c| text::clean(&c, COMMENT_CHARS_MAX));
    for _ in 0..DECIDE_ROUNDS_MAX {
        let Some(mut incident) = state.store.get_incident(id).await? else {
            return Err(Problem::new(
                ProblemKind::NotFound,
                format!("no incident with id {id}"),
            ));
        };
        let decided = approval::decide(
            &mut incident,
            seq,
            verdict,
            &proposal,
            &by,
            comment.clone(),
            crate::incident::now(),
        )
        .map_err(|refusal| match refusal {
            Refusal::NoAction(m) => Problem::new(ProblemKind::NotFound, m),
            Refusal::Conflict(m) => Problem::new(ProblemKind::Conflict, m),
            Refusal::Expired(m) => Problem::new(ProblemKind::Gone, m),
            Refusal::Changed(m) => Problem::new(ProblemKind::PreconditionFailed, m),
        })?;
        let incident = match decided {
            Decided::Again => incident,
            Decided::Now => match state.store.save(&incident).await {
                Ok(saved) => saved,
                // The incident changed since it was read (another decision, its actor):
                // decide again on what it holds now.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            },
        };
        if decided == Decided::Now {
            tracing::info!(incident_id = %id, seq, verdict = verdict.as_str(), by = %by, "a human decided");
            if verdict == Verdict::Approved
                && let Some(supervisor) = &state.supervisor
                && let Err(error) = supervisor.cast(SupervisorMsg::Spawn(id, None))
            {
                // The supervisor's scan adopts the remediating incident anyway.
                tracing::error!(incident_id = %id, %error, "the supervisor did not take the incident");
            }
        }
        let action = incident.actions_taken.iter().find(|a| a.seq == seq);
        let mut response = Json(json!({
            "incident": id,
            "status": incident.status,
            "action": action,
            "replayed": decided == Decided::Again,
        }))
        .into_response();
        if let Ok(v) = incident.trace_id.parse() {
            response.headers_mut().insert(TRACE_ID_HEADER, v);
        }
        return Ok(response);
    }
    Err(Problem::new(
        ProblemKind::Conflict,
        "the incident kept changing while the decision was being recorded; read it again",
    ))
}

/// Who decides: the approver whose token the request carries (when tokens are configured:
/// else 401), or the name in `X-Decided-By` (else 422).
fn decider(state: &AppState, headers: &HeaderMap) -> Result<String, Problem> {
    if !state.approver_tokens.is_empty() {
        let auth = headers.get(header::AUTHORIZATION);
        // Every token is compared, so the time taken does not say which one matched.
        let matched: Vec<&String> = state
            .approver_tokens
            .iter()
            .filter(|(_, token)| super::bearer_is(auth, token))
            .map(|(name, _)| name)
            .collect();
        return matched.first().map(|name| (*name).clone()).ok_or_else(|| {
            Problem::new(
                ProblemKind::Unauthorized,
                "deciding on proposals needs Authorization: Bearer <an approver's token>",
            )
        });
    }
    let raw = headers
        .get(DECIDED_BY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    if raw.is_empty()
        || raw.chars().count() > DECIDER_CHARS_MAX
        || text::first_hidden(raw).is_some()
    {
        return Err(Problem::validation(vec![FieldError {
            field: "X-Decided-By".into(),
            message: format!(
                "name who decides: 1 to {DECIDER_CHARS_MAX} visible characters (or configure --approver-tokens)"
            ),
        }]));
    }
    Ok(raw.to_owned())
}

fn request_has_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0)
        || headers.contains_key(header::TRANSFER_ENCODING)
}
