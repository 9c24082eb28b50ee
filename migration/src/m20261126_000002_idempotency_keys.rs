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
        // One column per statement: SQLite alters one thing at a time.
        if !manager.has_column("incidents", "idempotency_key").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Incidents::Table)
                        .add_column(string_len_null(Incidents::IdempotencyKey, 255))
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_column("incidents", "request_digest").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Incidents::Table)
                        .add_column(string_len_null(Incidents::RequestDigest, 64))
                        .to_owned(),
                )
                .await?;
        }
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
        manager
            .drop_index(
                Index::drop()
                    .name("idx_incidents_idempotency_key")
                    .table(Incidents::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        for column in [Incidents::IdempotencyKey, Incidents::RequestDigest] {
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
