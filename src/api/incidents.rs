//! `POST /incidents`, `GET /incidents/{id}`, `GET /incidents`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::Instrument;

use super::extract::{ApiJson, ApiQuery, IncidentId};
use super::problem::{Problem, ProblemKind};
use super::{AppState, TRACE_ID_HEADER};
use crate::agent::supervisor::SupervisorMsg;
use crate::core::alerts::{self, AlertEvent, AlertSource, AlertState};
use crate::incident::{
    Cursor, FieldError, IdempotencyKey, ListFilter, NewIncident, NewIncidentRequest,
    PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, Severity, Status, request_digest,
};
use crate::store::Created;
use crate::trace::TraceId;

/// Header naming a client's retry key for `POST /incidents`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Opens an incident. Answers 202 only once the row is committed. With an
/// `Idempotency-Key`, a retry of the same request answers 200 with the incident the first
/// one opened and opens nothing; the key with another request is 409; a malformed key 422.
/// A slot of the agent is taken before anything is written: when none is free the answer
/// is 503 with `Retry-After` and nothing is stored (a report that would have joined an open
/// incident too: which one it is becomes known only as it is recorded).
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<NewIncidentRequest>,
) -> Result<Response, Problem> {
    if state.is_draining() {
        return Err(Problem::new(
            ProblemKind::Unavailable,
            "the service is stopping: send it again (with the same Idempotency-Key) in a moment",
        ));
    }
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(raw) => {
            let key = IdempotencyKey::parse(raw.as_bytes()).map_err(|message| {
                Problem::validation(vec![FieldError {
                    field: "Idempotency-Key".into(),
                    message,
                }])
            })?;
            Some((key, request_digest(&request)))
        }
    };
    let coalesce = request.coalesce != Some(false);
    let new = NewIncident::parse(request, "api").map_err(Problem::validation)?;
    // Given back when dropped: when the commit fails, when nothing new was opened (a join, a
    // replay), and after the incident's actor ends.
    let slot = state.admit(crate::metrics::Endpoint::Incidents)?;
    let trace_id = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceId::from_traceparent)
        .unwrap_or_else(TraceId::generate);
    // One failure, one incident: a report of an alert joins the open incident of its
    // failure. A request with an Idempotency-Key is the client's own retry key and opens at
    // most one incident for it (below); `"coalesce": false` opens a new one regardless.
    if coalesce
        && key.is_none()
        && let Some(alert_type) = new.alert_type.clone()
    {
        return report(&state, alert_type, new, trace_id, slot).await;
    }
    let span = tracing::info_span!(
        "incident",
        trace_id = %trace_id,
        incident_id = tracing::field::Empty
    );
    // The commit runs in a task of its own, so a client that hangs up or a request that
    // times out cannot cancel it halfway: once started, the incident is stored (and, with the
    // agent, handed on) whether or not anyone is still waiting for the answer.
    let store = state.store.clone();
    let supervisor = state.supervisor.clone();
    let metrics = state.metrics.clone();
    let keep = chrono::Duration::seconds(state.idempotency_key_keep_secs as i64);
    let (incident, replayed) = tokio::spawn(async move {
        let created = async {
            let creating = async {
                match &key {
                    None => Ok(Created::New(store.create_incident(new, &trace_id).await?)),
                    Some((key, digest)) => {
                        let kept_since = crate::incident::now() - keep;
                        store
                            .create_incident_once(new, &trace_id, key, digest, kept_since)
                            .await
                    }
                }
            };
            let created = metrics.db_write_timed("create", creating).await?;
            match &created {
                Created::New(incident) => {
                    tracing::Span::current()
                        .record("incident_id", tracing::field::display(incident.id));
                    tracing::info!(severity = %incident.severity, title = ?incident.title, "incident opened");
                }
                Created::Replayed(incident) => {
                    tracing::info!(incident_id = %incident.id, "a retry with the same idempotency key: nothing opened")
                }
                Created::KeyReused(_) => {}
            }
            Ok::<_, Problem>(created)
        }
        .instrument(span)
        .await?;
        let incident = match created {
            Created::New(incident) => {
                metrics.incident_opened(AlertSource::Api);
                incident
            }
            Created::Replayed(incident) => return Ok((incident, true)),
            Created::KeyReused(id) => {
                return Err(Problem::new(
                    ProblemKind::Conflict,
                    format!(
                        "this Idempotency-Key opened incident {id} for a different request; use a new key"
                    ),
                ));
            }
        };
        // After the commit, never before. A lost message is not a lost incident: the
        // supervisor's periodic adoption finds every unfinished row. Sent outside the
        // request's span, which the actor would otherwise inherit: it opens its own.
        if let Some(supervisor) = supervisor
            && let Err(error) = supervisor.cast(SupervisorMsg::Spawn(incident.id, slot))
        {
            tracing::error!(incident_id = %incident.id, %error, "the supervisor did not take the incident");
        }
        Ok::<_, Problem>((incident, false))
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "the task storing an incident failed");
        Problem::new(ProblemKind::Internal, "storing the incident failed")
    })??;

    let body = serde_json::json!({
        "id": incident.id,
        "trace_id": incident.trace_id,
        "status": incident.status,
    });
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    headers.insert(
        header::LOCATION,
        header_value(&format!("/incidents/{}", incident.id)),
    );
    headers.insert(TRACE_ID_HEADER, header_value(&incident.trace_id));
    Ok(response)
}

/// A report of an alert through the API, through the intake: it opens an incident (202),
/// or joins the open incident of its failure (200, `coalesced: true`).
async fn report(
    state: &AppState,
    alert_type: String,
    new: NewIncident,
    trace_id: TraceId,
    slot: Option<crate::agent::admission::Slot>,
) -> Result<Response, Problem> {
    let event = AlertEvent {
        source: AlertSource::Api,
        fingerprint: alerts::report_fingerprint(&alert_type, new.service.as_deref(), &new.labels),
        alertname: alert_type,
        labels: new.labels.clone(),
        state: AlertState::Reported,
        starts_at: None,
        ends_at: None,
    };
    let intake = state.intake();
    // In a task of its own, like an insert: a client that hangs up cannot cancel it halfway.
    let (received, opened) =
        tokio::spawn(async move { intake.take(event, new, trace_id, slot).await })
            .await
            .map_err(|error| {
                tracing::error!(%error, "the task recording a report failed");
                Problem::new(ProblemKind::Internal, "recording the report failed")
            })??;
    let id = received.incident.ok_or_else(|| {
        Problem::new(
            ProblemKind::Internal,
            "the report was recorded on no incident",
        )
    })?;
    let (status, incident) = match opened {
        Some(incident) => (StatusCode::ACCEPTED, incident),
        None => match state.store.get_incident(id).await? {
            Some(incident) => (StatusCode::OK, incident),
            None => {
                return Err(Problem::new(
                    ProblemKind::Internal,
                    "the incident the report joined is gone",
                ));
            }
        },
    };
    let coalesced = status == StatusCode::OK;
    let mut response = (
        status,
        Json(serde_json::json!({
            "id": incident.id,
            "trace_id": incident.trace_id,
            "status": incident.status,
            "coalesced": coalesced,
            "failure": received.failure,
        })),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        header_value(&format!("/incidents/{}", incident.id)),
    );
    headers.insert(TRACE_ID_HEADER, header_value(&incident.trace_id));
    Ok(response)
}

/// The whole record of one incident.
pub async fn get(
    State(state): State<AppState>,
    IncidentId(id): IncidentId,
) -> Result<Response, Problem> {
    let Some(incident) = state.store.get_incident(id).await? else {
        return Err(Problem::new(
            ProblemKind::NotFound,
            format!("no incident with id {id}"),
        ));
    };
    let trace_id = header_value(&incident.trace_id);
    let mut incident = incident;
    // The story as a person reads it: the agent's timeline with a line for every change of
    // the incident's alerts, in time order.
    let mut lines = alerts::timeline(&incident.alerts, &incident.trace_id);
    if !lines.is_empty() {
        lines.append(&mut incident.metadata.timeline);
        lines.sort_by_key(|l| l.at);
        incident.metadata.timeline = lines;
    }
    let mut response = Json(incident).into_response();
    response.headers_mut().insert(TRACE_ID_HEADER, trace_id);
    Ok(response)
}

/// Query parameters of `GET /incidents`, as given; parsed by [`ListParams::parse`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    severity: Option<String>,
    trace_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl ListParams {
    fn parse(self) -> Result<ListFilter, Problem> {
        let bad = |detail: String| Problem::new(ProblemKind::BadRequest, detail);
        let limit = match self.limit.as_deref() {
            None => PAGE_LIMIT_DEFAULT,
            Some(s) => s
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=PAGE_LIMIT_MAX).contains(n))
                .ok_or_else(|| {
                    bad(format!(
                        "limit must be a whole number from 1 to {PAGE_LIMIT_MAX}"
                    ))
                })?,
        };
        Ok(ListFilter {
            status: self
                .status
                .map(|s| s.parse::<Status>())
                .transpose()
                .map_err(|e| bad(e.to_string()))?,
            severity: self
                .severity
                .map(|s| s.parse::<Severity>())
                .transpose()
                .map_err(|e| bad(e.to_string()))?,
            trace_id: self
                .trace_id
                .map(|t| TraceId::parse(t.trim()))
                .transpose()
                .map_err(|e| bad(format!("trace_id: {e}")))?,
            limit,
            after: self
                .cursor
                .map(|c| Cursor::decode(c.trim()))
                .map(|c| c.ok_or_else(|| bad("malformed cursor: pass next_cursor as given".into())))
                .transpose()?,
        })
    }
}

/// Incidents newest first, one page at a time.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, Problem> {
    let filter = params.parse()?;
    let page = state.store.list_incidents(&filter).await?;
    Ok(Json(page).into_response())
}

/// Values built here are ids, trace ids and paths of ASCII characters only.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
