//! A database that lives as long as a test: a SQLite file in a temporary directory, or a
//! fresh PostgreSQL schema (when `TEST_DATABASE_URL` is set), shared by the test suites.

// Each suite uses the part it needs.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectionTrait, Database};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that lives as long as the test: a SQLite file in a temporary directory, or a
/// PostgreSQL schema of its own.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// PostgreSQL schemas this old are left over from earlier runs and are dropped.
const STALE_SCHEMA_SECS: u64 = 3600;

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("incidents.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let base = std::env::var("TEST_DATABASE_URL")
                    .expect("the postgres tests run only when TEST_DATABASE_URL is set");
                let admin = Database::connect(base.as_str())
                    .await
                    .expect("TEST_DATABASE_URL answers");
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                drop_stale_schemas(&admin, now).await;
                let schema = format!("sre_test_{now}_{}", uuid::Uuid::new_v4().simple());
                admin
                    .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
                    .await
                    .expect("create a schema for this test");
                let _ = admin.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    url: format!("{base}{sep}options%5Bsearch_path%5D={schema}"),
                    _dir: None,
                }
            }
        }
    }
}

async fn drop_stale_schemas(admin: &sea_orm::DatabaseConnection, now: u64) {
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'sre_test_%'",
        ))
        .await
        .unwrap_or_default();
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "nspname") else {
            continue;
        };
        let created = name
            .strip_prefix("sre_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > STALE_SCHEMA_SECS) {
            let _ = admin
                .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .await;
        }
    }
}
