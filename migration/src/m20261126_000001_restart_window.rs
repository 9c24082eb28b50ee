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
        // One column per statement: SQLite alters one thing at a time.
        if !manager
            .has_column("incidents", "auto_restart_service")
            .await?
        {
            manager
                .alter_table(
                    Table::alter()
                        .table(Incidents::Table)
                        .add_column(string_len_null(Incidents::AutoRestartService, 128))
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_column("incidents", "auto_restart_at").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Incidents::Table)
                        .add_column(timestamp_with_time_zone_null(Incidents::AutoRestartAt))
                        .to_owned(),
                )
                .await?;
        }
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
        manager
            .drop_index(
                Index::drop()
                    .name("idx_incidents_auto_restart")
                    .table(Incidents::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        for column in [Incidents::AutoRestartService, Incidents::AutoRestartAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Incidents::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
