//! The `incidents` table with the indexes its lookups need: by status (the supervisor's scan
//! for unfinished incidents, the list filter), by creation time (newest-first keyset pages)
//! and by trace id (from a log line to its incident).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Incidents {
    Table,
    Id,
    Status,
    Title,
    Description,
    Severity,
    TraceId,
    CreatedAt,
    UpdatedAt,
    RcaAnalysis,
    ActionsTaken,
    Metadata,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Incidents::Table)
                    .if_not_exists()
                    .col(pk_uuid(Incidents::Id))
                    .col(string_len(Incidents::Status, 50))
                    .col(string_len(Incidents::Title, 255))
                    .col(text_null(Incidents::Description))
                    .col(string_len(Incidents::Severity, 20))
                    .col(string_len(Incidents::TraceId, 32))
                    .col(timestamp_with_time_zone(Incidents::CreatedAt))
                    .col(timestamp_with_time_zone(Incidents::UpdatedAt))
                    .col(json_binary_null(Incidents::RcaAnalysis))
                    .col(json_binary(Incidents::ActionsTaken))
                    .col(json_binary(Incidents::Metadata))
                    .to_owned(),
            )
            .await?;
        let indexes = [
            (
                "idx_incidents_created_at",
                vec![Incidents::CreatedAt, Incidents::Id],
            ),
            (
                "idx_incidents_status_created_at",
                vec![Incidents::Status, Incidents::CreatedAt],
            ),
            ("idx_incidents_trace_id", vec![Incidents::TraceId]),
        ];
        for (name, columns) in indexes {
            let mut index = Index::create();
            index.name(name).table(Incidents::Table).if_not_exists();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Incidents::Table).if_exists().to_owned())
            .await
    }
}
