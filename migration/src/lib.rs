//! Migrations of the sre-agent store. They run at start-up (`Application::build`) and with
//! `sre-agent migrate`; every statement is idempotent (`IF NOT EXISTS`) so two processes
//! starting at once on one database do not trip over each other.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_create_incidents;
mod m20261126_000001_restart_window;
mod m20261126_000002_idempotency_keys;
mod m20261126_000003_alert_stream;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_incidents::Migration),
            Box::new(m20261126_000001_restart_window::Migration),
            Box::new(m20261126_000002_idempotency_keys::Migration),
            Box::new(m20261126_000003_alert_stream::Migration),
        ]
    }
}

/// Adds a column to `incidents` unless it is there already: SQLite alters one thing per
/// statement and has no `ADD COLUMN IF NOT EXISTS`, and two processes may migrate at once.
pub(crate) async fn add_incidents_column(
    manager: &SchemaManager<'_>,
    name: &str,
    column: ColumnDef,
) -> Result<(), DbErr> {
    if manager.has_column("incidents", name).await? {
        return Ok(());
    }
    manager
        .alter_table(
            Table::alter()
                .table(Alias::new("incidents"))
                .add_column(column)
                .to_owned(),
        )
        .await
}

/// Drops an index of `incidents`, then columns of it, one statement each.
pub(crate) async fn drop_incidents_index_and_columns(
    manager: &SchemaManager<'_>,
    index: &str,
    columns: &[&str],
) -> Result<(), DbErr> {
    manager
        .drop_index(
            Index::drop()
                .name(index)
                .table(Alias::new("incidents"))
                .if_exists()
                .to_owned(),
        )
        .await?;
    for column in columns {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("incidents"))
                    .drop_column(Alias::new(*column))
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}
