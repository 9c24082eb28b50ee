//! The incident domain: the closed vocabularies (status, severity), a new incident parsed at
//! the edge ("parse, don't validate"), and the shapes of a stored incident. Pure: no IO.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core::text;
use crate::trace::TraceId;

/// Longest title, in characters (the column is `varchar(255)`).
pub const TITLE_CHARS_MAX: usize = 255;
/// Largest description, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 64 * 1024;
/// Longest alert type or service name, in characters.
pub const NAME_CHARS_MAX: usize = 128;
/// Most labels on one incident.
pub const LABELS_MAX: usize = 64;
/// Longest label key, in bytes.
pub const LABEL_KEY_BYTES_MAX: usize = 128;
/// Longest label value, in bytes.
pub const LABEL_VALUE_BYTES_MAX: usize = 1024;

/// Neither database stores a NUL character the same way (PostgreSQL refuses it in `text` and
/// `jsonb`), so no field may hold one.
const NUL_MESSAGE: &str = "must not contain NUL characters";

/// Why a field with a hidden or layout character is refused: such characters make text
/// read differently on a terminal, a page or a notification than it is.
fn hidden_message(c: char, expected: &str) -> String {
    format!(
        "must be {expected}: U+{:04X} (a control, line-separator, zero-width or bidirectional character) is not allowed",
        u32::from(c)
    )
}

/// How bad an incident is. Stored as its lowercase name in `varchar(20)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// The severity of the notification a human gets about such an incident.
    pub fn notification_severity(self) -> &'static str {
        match self {
            Self::Critical | Self::High => "critical",
            Self::Medium => "warning",
            Self::Low => "info",
        }
    }
}

/// Where an incident is in its lifecycle (see `ARCHITECTURE.md`). Stored as its lowercase
/// name in `varchar(50)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    New,
    Analyzing,
    Remediating,
    Resolved,
    Escalated,
    Failed,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Self::New,
        Self::Analyzing,
        Self::Remediating,
        Self::Resolved,
        Self::Escalated,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Analyzing => "analyzing",
            Self::Remediating => "remediating",
            Self::Resolved => "resolved",
            Self::Escalated => "escalated",
            Self::Failed => "failed",
        }
    }

    /// No more work happens on its own in a terminal state. `escalated` is terminal for the
    /// agent: only a human's approval moves it on.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Resolved | Self::Escalated | Self::Failed)
    }
}

/// A word that is not one of a closed vocabulary's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {given:?}; expected one of: {expected}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub given: String,
    pub expected: String,
}

fn parse_name<T: Copy>(
    kind: &'static str,
    all: &[T],
    name: fn(T) -> &'static str,
    given: &str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|v| name(*v).eq_ignore_ascii_case(given.trim()))
        .ok_or_else(|| UnknownName {
            kind,
            given: given.chars().take(64).collect(),
            expected: all.iter().map(|v| name(*v)).collect::<Vec<_>>().join(", "),
        })
}

impl FromStr for Severity {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name("severity", &Self::ALL, Self::as_str, s)
    }
}

impl FromStr for Status {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name("status", &Self::ALL, Self::as_str, s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client sends to open an incident, before validation. Unknown fields are refused so
/// that a typo (`severty`) is an error, not a silently dropped field.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewIncidentRequest {
    pub title: Option<String>,
    pub description: Option<String>,
    pub severity: Option<String>,
    pub alert_type: Option<String>,
    pub service: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    /// `false` opens a new incident even while one for the same failure is open; by default
    /// a report of a failure that has an open incident joins it.
    pub coalesce: Option<bool>,
}

/// Longest `Idempotency-Key`, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// A client's `Idempotency-Key`: 1 to [`IDEMPOTENCY_KEY_BYTES_MAX`] visible ASCII
/// characters (a UUID, a hash, an Alertmanager group key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= IDEMPOTENCY_KEY_BYTES_MAX
            && raw.iter().all(|b| (0x21..=0x7e).contains(b));
        if ok {
            Ok(IdempotencyKey(String::from_utf8_lossy(raw).into_owned()))
        } else {
            Err(format!(
                "must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters (no spaces)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What tells a retry from another request with the same key: the SHA-256 (hex) of the
/// request as parsed, so spacing and the order of its fields do not matter.
pub fn request_digest(request: &NewIncidentRequest) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One field that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A validated new incident: every field within its bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncident {
    pub title: String,
    pub description: Option<String>,
    pub severity: Severity,
    pub alert_type: Option<String>,
    pub service: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Where it came from (`api`, later `alertmanager`, `pagerduty`).
    pub source: String,
}

impl NewIncident {
    /// Validates a request, reporting every bad field at once.
    pub fn parse(req: NewIncidentRequest, source: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                message,
            })
        };

        let title = req.title.as_deref().map(str::trim).unwrap_or_default();
        if title.is_empty() {
            fail("title", "is required and must not be blank".into());
        } else if title.chars().count() > TITLE_CHARS_MAX {
            fail(
                "title",
                format!("must be at most {TITLE_CHARS_MAX} characters"),
            );
        } else if let Some(c) = text::first_hidden(title) {
            fail("title", hidden_message(c, "one line of visible text"));
        }

        let description = req.description.filter(|d| !d.trim().is_empty());
        if let Some(d) = &description {
            if d.len() > DESCRIPTION_BYTES_MAX {
                fail(
                    "description",
                    format!("must be at most {DESCRIPTION_BYTES_MAX} bytes"),
                );
            } else if d.contains('\0') {
                fail("description", NUL_MESSAGE.into());
            } else if let Some(c) = text::first_bidi(d) {
                fail("description", hidden_message(c, "text"));
            }
        }

        let severity = match req.severity.as_deref() {
            None => {
                fail("severity", "is required".into());
                None
            }
            Some(s) => match s.parse::<Severity>() {
                Ok(s) => Some(s),
                Err(e) => {
                    fail("severity", e.to_string());
                    None
                }
            },
        };

        let mut name = |field: &str, value: Option<String>| {
            let value = value.map(|v| v.trim().to_owned())?;
            let ok_chars = value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
            if value.is_empty() || value.chars().count() > NAME_CHARS_MAX || !ok_chars {
                fail(
                    field,
                    format!(
                        "must be 1 to {NAME_CHARS_MAX} characters of letters, digits and - _ . : /"
                    ),
                );
                return None;
            }
            Some(value)
        };
        let alert_type = name("alert_type", req.alert_type);
        let service = name("service", req.service);

        let labels = req.labels.unwrap_or_default();
        if labels.len() > LABELS_MAX {
            fail("labels", format!("must have at most {LABELS_MAX} entries"));
        }
        for (key, value) in labels.iter().take(LABELS_MAX + 1) {
            let shown: String = key.chars().take(32).collect();
            if key.is_empty() || key.len() > LABEL_KEY_BYTES_MAX {
                fail(
                    &format!("labels.{shown}"),
                    format!("key must be 1 to {LABEL_KEY_BYTES_MAX} bytes"),
                );
            }
            if value.len() > LABEL_VALUE_BYTES_MAX {
                fail(
                    &format!("labels.{shown}"),
                    format!("value must be at most {LABEL_VALUE_BYTES_MAX} bytes"),
                );
            }
            if key.contains('\0') || value.contains('\0') {
                fail(&format!("labels.{shown}"), NUL_MESSAGE.into());
            } else if let Some(c) = text::first_hidden(key).or_else(|| text::first_hidden(value)) {
                fail(
                    &format!("labels.{shown}"),
                    hidden_message(c, "visible text on one line"),
                );
            }
        }

        match severity {
            Some(severity) if errors.is_empty() => Ok(NewIncident {
                title: title.to_owned(),
                description,
                severity,
                alert_type,
                service,
                labels,
                source: source.to_owned(),
            }),
            _ => Err(errors),
        }
    }
}

/// What kind of step a timeline entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    /// The incident changed status.
    Status,
    /// A reasoner turn: what it was asked and what it proposed.
    Reasoner,
    /// A tool call, with a bounded excerpt of its result.
    ToolCall,
    /// A policy decision and its reason.
    Decision,
    /// Anything else worth reading later.
    Note,
    /// An alert joined, resolved or fired again (from the incident's alerts, shown in the
    /// story when it is read; never written into the agent's timeline).
    Alert,
    /// A human approved or rejected a proposal.
    Human,
}

/// One step of an incident's story.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub trace_id: String,
    pub kind: TimelineKind,
    pub message: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// The `metadata` column: where the incident came from, and its timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    pub trace_id: String,
    pub alert_type: Option<String>,
    pub service: Option<String>,
    pub source: String,
    pub labels: BTreeMap<String, String>,
    pub timeline: Vec<TimelineEntry>,
}

/// The `rca_analysis` column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RootCauseAnalysis {
    pub summary: String,
    pub root_cause: String,
    /// 0–1.
    pub confidence: f64,
    pub evidence: Vec<String>,
    pub service: String,
    pub runbook: String,
    /// `rules` or `openai:{model}`.
    pub reasoner: String,
    /// The team that owns the service, from the agent's own mapping of the alert.
    #[serde(default)]
    pub owner: String,
    /// Set by the agent, never by a reasoner: the agent's own check found the service
    /// healthy now with only stale signs of the failure, and says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
}

impl RootCauseAnalysis {
    /// An analysis that determined nothing, saying why; no service, runbook or reasoner yet.
    pub fn undetermined(summary: String) -> Self {
        RootCauseAnalysis {
            summary,
            root_cause: "undetermined".into(),
            confidence: 0.0,
            evidence: vec![],
            service: String::new(),
            runbook: String::new(),
            reasoner: String::new(),
            owner: String::new(),
            recovered: None,
        }
    }
}

/// Who allowed an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionDecision {
    /// The policy let the agent act on its own.
    Auto,
    /// A human approved it.
    Approved,
    /// Waiting for a human.
    Proposed,
    /// Refused by the policy.
    Denied,
}

/// Where an action stands. `started` is written before the call is made: found after a
/// crash, it is reconciled against the world, never blindly re-run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionStatus {
    /// Allowed by the policy, not yet begun.
    Planned,
    Started,
    Succeeded,
    Failed,
    Proposed,
    Denied,
    /// A human said no to the proposal.
    Rejected,
    /// The proposal no longer applies: it expired, its alert resolved on its own, or the
    /// world changed between a human's approval and the call.
    Lapsed,
}

/// A proposal waiting for a human: what an approval must name, and until when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Digest of exactly what is proposed (tool, arguments, target instance, reason): an
    /// approval names it in `If-Match`, and is refused (412) when the proposal changed.
    pub digest: String,
    /// After this, the proposal can no longer be approved (410).
    pub expires_at: DateTime<Utc>,
}

/// What a human decided about a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approved,
    Rejected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Rejected => "rejected",
        }
    }
}

/// Who decided about a proposal, when, and what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanDecision {
    pub verdict: Verdict,
    /// From the approver token's name, or the `X-Decided-By` header.
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One record of `actions_taken`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Position in the incident's actions, from 1.
    pub seq: u32,
    pub server: String,
    pub tool: String,
    pub args: serde_json::Value,
    /// `{incident_id}:{seq}`.
    pub idempotency_key: String,
    pub decision: ActionDecision,
    pub reason: String,
    pub status: ActionStatus,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    pub trace_id: String,
    /// What the world looked like just before a mutating call (for a restart: the pod's
    /// `started_at` per `get-metrics`), so that a call found `started` after a crash is
    /// reconciled against the same clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<serde_json::Value>,
    /// For a restart that ran: whether `get-metrics` showed the pod healthy afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// For a proposal: what an approval binds to, and its expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<Proposal>,
    /// A human's decision about the proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<HumanDecision>,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Proposed => "proposed",
            Self::Denied => "denied",
            Self::Rejected => "rejected",
            Self::Lapsed => "lapsed",
        }
    }
}

impl ActionRecord {
    pub fn idempotency_key(incident: Uuid, seq: u32) -> String {
        format!("{incident}:{seq}")
    }
}

impl Incident {
    /// Entries in the incident's timeline, those forgotten included.
    pub fn timeline_len(&self) -> usize {
        self.timeline_offset + self.metadata.timeline.len()
    }

    /// Drops from memory the timeline entries the row holds (a live incident keeps only what
    /// it has not written yet). The copy can still be saved: a write appends the entries it
    /// holds; it can no longer be shown or written whole.
    pub fn forget_stored_timeline(&mut self) {
        let held = self
            .timeline_stored
            .saturating_sub(self.timeline_offset)
            .min(self.metadata.timeline.len());
        self.metadata.timeline.drain(..held);
        self.timeline_offset += held;
    }

    /// A page the agent decides on by itself (it escalates, or gives up): the incident's
    /// next action, `auto`, with its key, the incident's severity and `message`.
    pub fn own_page(
        &self,
        message: &str,
        reason: String,
        status: ActionStatus,
        at: DateTime<Utc>,
    ) -> ActionRecord {
        let seq = self.actions_taken.len() as u32 + 1;
        let key = ActionRecord::idempotency_key(self.id, seq);
        ActionRecord {
            seq,
            server: crate::reasoner::Server::Remediation.as_str().into(),
            tool: "send-notification".into(),
            args: serde_json::json!({
                "message": message,
                "severity": self.severity.notification_severity(),
                "idempotencyKey": key,
            }),
            idempotency_key: key,
            decision: ActionDecision::Auto,
            reason,
            status,
            result: None,
            started_at: at,
            finished_at: None,
            trace_id: self.trace_id.clone(),
            baseline: None,
            verified: None,
            proposal: None,
            human: None,
        }
    }
}

/// A whole incident, as `GET /incidents/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Incident {
    pub id: Uuid,
    pub trace_id: String,
    pub status: Status,
    pub title: String,
    pub description: Option<String>,
    pub severity: Severity,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub rca_analysis: Option<RootCauseAnalysis>,
    pub actions_taken: Vec<ActionRecord>,
    pub metadata: Metadata,
    /// The alerts that describe its failure (written by the intake, never by the actor).
    pub alerts: crate::core::alerts::Alerts,
    /// The failure it is about (`{service}/{class}`, or an alert's identity); alerts with the
    /// same key join it while it is open.
    pub failure_key: Option<String>,
    /// When an incident waiting for its alerts to resolve is looked at again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<DateTime<Utc>>,
    /// The row's revision as read: a write of the agent's columns names it.
    #[serde(skip)]
    pub revision: i64,
    /// The revision of `alerts` as read.
    #[serde(skip)]
    pub alerts_rev: i64,
    /// The revision of `alerts` the agent has taken into account (written with its state).
    #[serde(skip)]
    pub alerts_seen_rev: i64,
    /// How many timeline entries the row holds: a write appends the entries past them.
    #[serde(skip)]
    pub timeline_stored: usize,
    /// How many of the row's first timeline entries this copy no longer holds: an incident
    /// actor appends to its timeline and never reads it back, so it forgets what is written
    /// ([`Incident::forget_stored_timeline`]). `metadata.timeline` starts at this entry.
    #[serde(skip)]
    pub timeline_offset: usize,
}

/// An incident in a list: no description, analysis, actions or timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentSummary {
    pub id: Uuid,
    pub trace_id: String,
    pub status: Status,
    pub title: String,
    pub severity: Severity,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Timestamps are kept to the microsecond, the precision PostgreSQL stores, so that a value
/// read back compares equal to the one written on every backend (keyset cursors rely on it).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Most incidents in one page of `GET /incidents`.
pub const PAGE_LIMIT_MAX: u64 = 200;
/// Page size when the client names none.
pub const PAGE_LIMIT_DEFAULT: u64 = 50;

/// Where the next page starts: just after this incident, newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// An opaque token: `{created_at microseconds}.{id}`. Clients must not build their own.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }

    pub fn decode(token: &str) -> Option<Self> {
        let (micros, id) = token.split_once('.')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        let id = Uuid::try_parse(id).ok()?;
        Some(Cursor { created_at, id })
    }
}

/// What `GET /incidents` asks the store for.
#[derive(Clone, Debug, PartialEq)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub severity: Option<Severity>,
    pub trace_id: Option<TraceId>,
    /// 1 to [`PAGE_LIMIT_MAX`].
    pub limit: u64,
    pub after: Option<Cursor>,
}

/// One page of a list, and the cursor of the next one when there may be more.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> NewIncidentRequest {
        NewIncidentRequest {
            title: Some("checkout-api pods OOMKilled".into()),
            severity: Some("critical".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_minimal_request_parses() {
        let new = NewIncident::parse(request(), "api").unwrap();
        assert_eq!(new.severity, Severity::Critical);
        assert_eq!(new.description, None);
        assert!(new.labels.is_empty());
    }

    #[test]
    fn severity_and_status_names_round_trip_and_ignore_case() {
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
            assert_eq!(s.as_str().to_uppercase().parse::<Severity>(), Ok(s));
        }
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        let err = "urgent".parse::<Severity>().unwrap_err().to_string();
        assert!(err.contains("low, medium, high, critical"), "{err}");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let req = NewIncidentRequest {
            title: Some("   ".into()),
            description: Some("x".repeat(DESCRIPTION_BYTES_MAX + 1)),
            severity: Some("urgent".into()),
            alert_type: Some("rm -rf /".into()),
            service: Some(String::new()),
            labels: Some(
                (0..=LABELS_MAX)
                    .map(|i| (i.to_string(), "v".into()))
                    .collect(),
            ),
            coalesce: None,
        };
        let fields: Vec<_> = NewIncident::parse(req, "api")
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        for f in [
            "title",
            "description",
            "severity",
            "alert_type",
            "service",
            "labels",
        ] {
            assert!(fields.iter().any(|g| g == f), "{f} missing in {fields:?}");
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        let mut req = request();
        req.title = Some("é".repeat(TITLE_CHARS_MAX));
        req.description = Some("d".repeat(DESCRIPTION_BYTES_MAX));
        req.labels = Some(
            (0..LABELS_MAX)
                .map(|i| {
                    (
                        format!("{i:0>width$}", width = LABEL_KEY_BYTES_MAX),
                        "v".repeat(LABEL_VALUE_BYTES_MAX),
                    )
                })
                .collect(),
        );
        assert!(NewIncident::parse(req, "api").is_ok());

        let mut req = request();
        req.title = Some("t".repeat(TITLE_CHARS_MAX + 1));
        assert!(NewIncident::parse(req, "api").is_err());
        let mut req = request();
        req.labels = Some([("k".into(), "v".repeat(LABEL_VALUE_BYTES_MAX + 1))].into());
        assert!(NewIncident::parse(req, "api").is_err());
    }

    #[test]
    fn nul_and_control_characters_are_refused_where_they_do_harm() {
        let mut req = request();
        req.title = Some("two\nlines".into());
        req.description = Some("a\0b".into());
        req.labels = Some([("k".into(), "v\0".into())].into());
        let fields: Vec<_> = NewIncident::parse(req, "api")
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["title", "description", "labels.k"]);

        let mut req = request();
        req.description = Some("line one\n\tline two".into());
        assert!(NewIncident::parse(req, "api").is_ok());
    }

    #[test]
    fn bidi_overrides_separators_and_zero_width_characters_are_refused_in_titles_and_labels() {
        for hostile in [
            "pay\u{202E}llik",
            "line\u{2028}break",
            "para\u{2029}graph",
            "zero\u{200B}width",
            "iso\u{2066}late",
        ] {
            let mut req = request();
            req.title = Some(hostile.into());
            req.labels =
                Some([("pod".into(), hostile.into()), (hostile.into(), "v".into())].into());
            let errors = NewIncident::parse(req, "api").unwrap_err();
            let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
            assert!(fields.contains(&"title"), "{hostile:?}: {fields:?}");
            assert_eq!(
                fields.iter().filter(|f| f.starts_with("labels.")).count(),
                2,
                "{hostile:?}: {fields:?}"
            );
            assert!(errors[0].message.contains("U+"), "{:?}", errors[0]);
        }
        let mut req = request();
        req.description = Some("first line\nsecond \u{202E}line".into());
        let errors = NewIncident::parse(req, "api").unwrap_err();
        assert_eq!(errors[0].field, "description");
        let mut req = request();
        req.description = Some("first line\nsecond line, déjà vu, 日本".into());
        assert!(NewIncident::parse(req, "api").is_ok());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_and_digests_ignore_field_order() {
        assert!(IdempotencyKey::parse(b"01a2-retry:7").is_ok());
        for bad in [
            &b""[..],
            b"has space",
            b"tab\t",
            "é".as_bytes(),
            &[b'k'; 256][..],
        ] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        let a: NewIncidentRequest =
            serde_json::from_str(r#"{"title":"t","severity":"low","labels":{"a":"1","b":"2"}}"#)
                .unwrap();
        let b: NewIncidentRequest = serde_json::from_str(
            r#"{ "labels": {"b":"2","a":"1"}, "severity": "low", "title": "t" }"#,
        )
        .unwrap();
        let c: NewIncidentRequest =
            serde_json::from_str(r#"{"title":"t","severity":"high"}"#).unwrap();
        assert_eq!(request_digest(&a), request_digest(&b));
        assert_ne!(request_digest(&a), request_digest(&c));
        assert_eq!(request_digest(&a).len(), 64);
    }

    #[test]
    fn a_missing_severity_is_an_error() {
        let mut req = request();
        req.severity = None;
        let errors = NewIncident::parse(req, "api").unwrap_err();
        assert_eq!(errors[0].field, "severity");
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            created_at: now(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            ".",
            "x.y",
            "1.",
            "99999999999999999999.0",
            "1.not-a-uuid",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn terminal_states_are_the_three_ends() {
        let terminal: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [Status::Resolved, Status::Escalated, Status::Failed]
        );
    }
}
