//! `POST /incidents` honours an `Idempotency-Key`: the key a client sent, and the digest of
//! the request it came with, live on the incident they created; a unique index makes a
//! second insert with the same key fail, so two retries racing each other create one
//! incident. Idempotent: a column that exists is left alone.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Incidents {
    Table,
    IdempotencyKey,
    RequestDigest,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::add_incidents_column(
            manager,
            "idempotency_key",
            string_len_null(Incidents::IdempotencyKey, 255),
        )
        .await?;
        crate::add_incidents_column(
            manager,
            "request_digest",
            string_len_null(Incidents::RequestDigest, 64),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_incidents_idempotency_key")
                    .table(Incidents::Table)
                    .col(Incidents::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::drop_incidents_index_and_columns(
            manager,
            "idx_incidents_idempotency_key",
            &["idempotency_key", "request_digest"],
        )
        .await
    }
}
