//! The restart window becomes durable: two columns derived from `actions_taken` name the
//! service an incident restarted pods of on the agent's own authority, and when; an index
//! on both makes "this service's autonomous restarts since T" one lookup. Idempotent: a
//! column that exists is left alone.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Incidents {
    Table,
    AutoRestartService,
    AutoRestartAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::add_incidents_column(
            manager,
            "auto_restart_service",
            string_len_null(Incidents::AutoRestartService, 128),
        )
        .await?;
        crate::add_incidents_column(
            manager,
            "auto_restart_at",
            timestamp_with_time_zone_null(Incidents::AutoRestartAt),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_incidents_auto_restart")
                    .table(Incidents::Table)
                    .col(Incidents::AutoRestartService)
                    .col(Incidents::AutoRestartAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::drop_incidents_index_and_columns(
            manager,
            "idx_incidents_auto_restart",
            &["auto_restart_service", "auto_restart_at"],
        )
        .await
    }
}
