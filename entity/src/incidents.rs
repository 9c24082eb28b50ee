//! The `incidents` table: one row per incident, the whole story of it in three JSON columns.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "incidents")]
pub struct Model {
    /// Time-ordered (UUIDv7) so ids sort roughly by creation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Lifecycle state (`new`, `analyzing`, `remediating`, `resolved`, `escalated`, `failed`).
    #[sea_orm(column_type = "String(StringLen::N(50))")]
    pub status: String,
    #[sea_orm(column_type = "String(StringLen::N(255))")]
    pub title: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    /// `low`, `medium`, `high` or `critical`.
    #[sea_orm(column_type = "String(StringLen::N(20))")]
    pub severity: String,
    /// W3C trace id (32 lowercase hex digits) that ties the row to every log line of its work.
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub trace_id: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// `{summary, root_cause, confidence, evidence[], service, runbook, reasoner}`, once known.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub rca_analysis: Option<Json>,
    /// One record per action (see `ARCHITECTURE.md`); `[]` until the first one.
    #[sea_orm(column_type = "JsonBinary")]
    pub actions_taken: Json,
    /// `{trace_id, alert_type, service, source, labels, timeline[]}`.
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
    /// The service whose pods this incident restarted on the agent's own authority; derived
    /// from `actions_taken` at every write, so that the restart window across incidents is
    /// one indexed lookup that survives a restart of the agent.
    #[sea_orm(column_type = "String(StringLen::N(128))", nullable)]
    pub auto_restart_service: Option<String>,
    /// When the latest of those restarts was planned or started.
    pub auto_restart_at: Option<DateTimeUtc>,
    /// The `Idempotency-Key` of the request that opened the incident (unique while kept).
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub idempotency_key: Option<String>,
    /// SHA-256 (hex) of that request, to tell a retry from a different request with the
    /// same key.
    #[sea_orm(column_type = "String(StringLen::N(64))", nullable)]
    pub request_digest: Option<String>,
    /// Bumped by every write of the agent's columns; a write names the revision it read.
    pub revision: i64,
    /// The alerts that describe the incident's failure (written by the intake only).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub alerts: Option<Json>,
    /// Bumped by every change of `alerts` (compare-and-swap).
    pub alerts_rev: i64,
    /// The revision of `alerts` the agent last took into account.
    pub alerts_seen_rev: i64,
    /// The failure the incident is about: `{service}/{class}`, or the alert's fingerprint.
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub failure_key: Option<String>,
    /// `failure_key` while the incident is open, `NULL` once it ends (unique).
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub open_key: Option<String>,
    /// When an incident waiting for its alerts to resolve is looked at again.
    pub wake_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
