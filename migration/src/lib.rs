//! Migrations of the sre-agent store. They run at start-up (`Application::build`) and with
//! `sre-agent migrate`; every statement is idempotent (`IF NOT EXISTS`) so two processes
//! starting at once on one database do not trip over each other.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_create_incidents;
mod m20261126_000001_restart_window;
mod m20261126_000002_idempotency_keys;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_incidents::Migration),
            Box::new(m20261126_000001_restart_window::Migration),
            Box::new(m20261126_000002_idempotency_keys::Migration),
        ]
    }
}
