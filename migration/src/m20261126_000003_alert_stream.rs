//! The alert stream: an incident holds the alerts that describe its failure, and humans
//! decide on its proposals.
//!
//! - `revision`: bumped by every write of the agent's columns (status, analysis, actions,
//!   metadata); each such write names the revision it read, so a human's decision and the
//!   incident's actor never overwrite each other.
//! - `alerts` (JSON) and `alerts_rev`: written only by the intake (webhook, `POST
//!   /incidents`), compare-and-swap on `alerts_rev`; `alerts_seen_rev`: the last revision
//!   of them the agent took into account. A partial index finds the incidents with alert
//!   news not yet seen.
//! - `failure_key`: which failure the incident is about (service and failure class, or the
//!   alert's fingerprint); `open_key`: the same while the incident is open, `NULL` once it
//!   ends, under a unique index, so two deliveries racing for one failure open one incident.
//! - `wake_at`: an incident waiting for its alerts to resolve is looked at again then.
//!
//! Idempotent: a column or index that exists is left alone.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Incidents {
    Table,
    Revision,
    Alerts,
    AlertsRev,
    AlertsSeenRev,
    FailureKey,
    OpenKey,
    WakeAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use crate::add_incidents_column as add;
        add(
            manager,
            "revision",
            big_integer(Incidents::Revision).default(0).to_owned(),
        )
        .await?;
        add(manager, "alerts", json_binary_null(Incidents::Alerts)).await?;
        add(
            manager,
            "alerts_rev",
            big_integer(Incidents::AlertsRev).default(0).to_owned(),
        )
        .await?;
        add(
            manager,
            "alerts_seen_rev",
            big_integer(Incidents::AlertsSeenRev).default(0).to_owned(),
        )
        .await?;
        add(
            manager,
            "failure_key",
            string_len_null(Incidents::FailureKey, 255),
        )
        .await?;
        add(
            manager,
            "open_key",
            string_len_null(Incidents::OpenKey, 255),
        )
        .await?;
        add(
            manager,
            "wake_at",
            timestamp_with_time_zone_null(Incidents::WakeAt),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_incidents_open_key")
                    .table(Incidents::Table)
                    .col(Incidents::OpenKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_incidents_failure_key")
                    .table(Incidents::Table)
                    .col(Incidents::FailureKey)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Both backends support a partial index on a comparison of two columns; the
        // supervisor's scan for alert news uses exactly this condition.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS idx_incidents_alert_news ON incidents (alerts_rev) \
                 WHERE alerts_rev > alerts_seen_rev",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS idx_incidents_alert_news")
            .await?;
        crate::drop_incidents_index_and_columns(manager, "idx_incidents_failure_key", &[]).await?;
        crate::drop_incidents_index_and_columns(
            manager,
            "idx_incidents_open_key",
            &[
                "revision",
                "alerts",
                "alerts_rev",
                "alerts_seen_rev",
                "failure_key",
                "open_key",
                "wake_at",
            ],
        )
        .await
    }
}
