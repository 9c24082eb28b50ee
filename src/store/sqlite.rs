//! The SQLite writer's own connection: a batch of statements runs in one go on the writer's
//! thread, with no hand-off per statement.
//!
//! Through sqlx every statement is a round trip between the async task that sends it and the
//! connection's worker thread; a commit of twelve steps is twenty-eight of them (`BEGIN`,
//! twelve statements, `COMMIT`, each there and back). Under a storm both threads wait for a
//! core at each hand-off, and the writer — busy the whole storm — spent its time waiting,
//! not writing. Here the writer holds a connection of its own (rusqlite, the same SQLite
//! library sqlx links) and runs the whole transaction on its thread.
//!
//! What it writes must read back through sqlx exactly as sqlx would have written it: the
//! values are encoded as sqlx encodes them for SQLite ([`bind`]: a uuid as its 16 bytes, a
//! time as RFC 3339 text, JSON as its text), so that rows written by either compare, sort
//! and decode alike. A test holds the two to the same bytes.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value as Sql, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use sea_orm::sea_query::Value;
use sea_orm::{DbErr, RuntimeErr, Statement};

use super::StoreError;

/// Prepared statements the connection keeps (an update's text varies with the number of
/// timeline entries it appends).
const STATEMENT_CACHE: usize = 64;

/// Opens the database file for writing, with the pool's settings: WAL, `synchronous =
/// NORMAL`, the busy timeout.
pub fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(to_store)?;
    conn.busy_timeout(busy_timeout).map_err(to_store)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(to_store)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(to_store)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(to_store)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Runs one statement; the rows it changed.
pub fn execute(conn: &Connection, statement: &Statement) -> Result<u64, StoreError> {
    let values = match &statement.values {
        Some(values) => values
            .0
            .iter()
            .map(bind)
            .collect::<Result<Vec<ToSqlOutput<'_>>, StoreError>>()?,
        None => vec![],
    };
    let mut prepared = conn.prepare_cached(&statement.sql).map_err(to_store)?;
    let rows = prepared
        .execute(rusqlite::params_from_iter(values))
        .map_err(to_store)?;
    Ok(rows as u64)
}

/// Runs `sql` with no values (`BEGIN`, `COMMIT`, `ROLLBACK`).
pub fn run(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.execute_batch(sql).map_err(to_store)
}

/// Ends a transaction left open (a `ROLLBACK` that failed after a failed statement or
/// `COMMIT`): a write run inside it would be answered as done and never committed. Refused
/// as unavailable (every caller retries) while the connection cannot leave it.
pub fn outside_transaction(conn: &Connection) -> Result<(), StoreError> {
    if conn.is_autocommit() {
        return Ok(());
    }
    tracing::warn!("the SQLite writer's connection was left inside a transaction; rolling it back");
    let _ = conn.execute_batch("ROLLBACK");
    if conn.is_autocommit() {
        Ok(())
    } else {
        Err(StoreError::Unavailable(DbErr::Custom(
            "the SQLite writer's connection cannot leave a transaction".into(),
        )))
    }
}

/// A value as sqlx encodes it for SQLite (sea-query's binder, then sqlx's `Encode`). Text
/// and bytes the statement holds are bound where they are (a step's JSON is kilobytes), not
/// copied.
fn bind(value: &Value) -> Result<ToSqlOutput<'_>, StoreError> {
    Ok(match value {
        Value::String(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        Value::Bytes(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        Value::Uuid(Some(u)) => ToSqlOutput::Borrowed(ValueRef::Blob(u.as_bytes())),
        owned => ToSqlOutput::Owned(owned_value(owned)?),
    })
}

fn owned_value(value: &Value) -> Result<Sql, StoreError> {
    let int = |v: Option<i64>| v.map_or(Sql::Null, Sql::Integer);
    Ok(match value {
        Value::Bool(v) => int(v.map(i64::from)),
        Value::TinyInt(v) => int(v.map(i64::from)),
        Value::SmallInt(v) => int(v.map(i64::from)),
        Value::Int(v) => int(v.map(i64::from)),
        Value::BigInt(v) => int(*v),
        Value::TinyUnsigned(v) => int(v.map(i64::from)),
        Value::SmallUnsigned(v) => int(v.map(i64::from)),
        Value::Unsigned(v) => int(v.map(i64::from)),
        Value::Float(v) => v.map_or(Sql::Null, |f| Sql::Real(f64::from(f))),
        Value::Double(v) => v.map_or(Sql::Null, Sql::Real),
        Value::Char(v) => v.map_or(Sql::Null, |c| Sql::Text(c.to_string())),
        Value::Json(v) => v.as_ref().map_or(Sql::Null, |j| Sql::Text(j.to_string())),
        Value::ChronoDateTimeUtc(v) => v.map_or(Sql::Null, |t| {
            Sql::Text(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
        }),
        // Their values are bound borrowed by `bind`.
        Value::String(None) | Value::Bytes(None) | Value::Uuid(None) => Sql::Null,
        other => {
            return Err(StoreError::Database(DbErr::Custom(format!(
                "the SQLite writer does not write values like {other:?}"
            ))));
        }
    })
}

/// SQLite's answer as the store's: busy or locked is worth retrying, a unique key taken is
/// a duplicate, the rest is the database's refusal.
fn to_store(e: rusqlite::Error) -> StoreError {
    let db = || DbErr::Exec(RuntimeErr::Internal(format!("sqlite: {e}")));
    match e.sqlite_error() {
        Some(f) if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(db())
        }
        // 1555: a primary key taken; 2067: a unique index.
        Some(f) if matches!(f.extended_code, 1555 | 2067) => StoreError::Duplicate(db()),
        _ => StoreError::Database(db()),
    }
}

#[cfg(test)]
mod tests {
    use entity::incidents;
    use sea_orm::{ActiveValue::Set, ConnectionTrait, DbBackend, EntityTrait, QueryTrait};

    use super::*;
    use crate::store::{DbConfig, Store};

    /// Every column as SQLite shows a value: type and bytes (`quote`), row by row.
    fn rows(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('incidents') ORDER BY cid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
        let sql = format!(
            "SELECT {} FROM incidents ORDER BY id",
            quoted.join(" || '|' || ")
        );
        conn.prepare(&sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    async fn migrated(url: String) -> Store {
        let config = DbConfig {
            url,
            max_connections: 2,
            acquire_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            sqlite_busy_timeout_ms: 5_000,
            statement_timeout_ms: 5_000,
        };
        let store = Store::connect(&config).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    fn file_url(path: &Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    #[tokio::test]
    async fn the_pooled_connections_of_a_sqlite_file_read_with_a_small_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = migrated(file_url(&dir.path().join("cache.db"))).await;
        let want = -i64::from(crate::store::SQLITE_READ_CACHE_KIB);
        for db in [&store.db, &store.front_db] {
            let pragma = sea_orm::Statement::from_string(DbBackend::Sqlite, "PRAGMA cache_size");
            let row = db.query_one_raw(pragma).await.unwrap().unwrap();
            assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), want);
        }
        store.close().await;
    }

    fn report(title: &str) -> crate::incident::NewIncident {
        let request = crate::incident::NewIncidentRequest {
            title: Some(title.into()),
            severity: Some("critical".into()),
            ..Default::default()
        };
        crate::incident::NewIncident::parse(request, "api").unwrap()
    }

    #[tokio::test]
    async fn the_writer_stores_each_value_as_sqlx_does() {
        let dir = tempfile::tempdir().unwrap();
        let (by_sqlx, by_writer) = (dir.path().join("sqlx.db"), dir.path().join("writer.db"));
        let a = migrated(file_url(&by_sqlx)).await;
        let b = migrated(file_url(&by_writer)).await;
        let conn = open(&by_writer, Duration::from_secs(5)).unwrap();
        // Times with and without sub-microsecond digits, ids, JSON with non-ASCII text and
        // escapes, NULLs, integers.
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let rows_of = [
            (
                "2026-11-27T09:20:43.459031+00:00",
                Some("2026-11-27T09:20:43.000000001Z"),
            ),
            ("2026-01-01T00:00:00Z", None),
        ];
        for (i, (created, restarted)) in rows_of.into_iter().enumerate() {
            let id = uuid::Uuid::now_v7();
            let row = incidents::ActiveModel {
                id: Set(id),
                status: Set("analyzing".into()),
                title: Set(format!("OOM «checkout» \"{i}\"\n")),
                description: Set((i == 0).then(|| "é\u{0}x".to_owned())),
                severity: Set("high".into()),
                trace_id: Set("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                created_at: Set(at(created)),
                updated_at: Set(at(created)),
                rca_analysis: Set(None),
                actions_taken: Set(serde_json::json!([{ "seq": 1, "tool": "restart-pod" }])),
                metadata: Set(serde_json::json!({ "labels": { "pod": "checkout-7d9\u{1F600}" } })),
                auto_restart_service: Set(restarted.map(|_| "checkout".to_owned())),
                auto_restart_at: Set(restarted.map(at)),
                idempotency_key: Set(Some(format!("key-{i}"))),
                request_digest: Set(None),
                revision: Set(i64::MAX),
                alerts: Set(None),
                alerts_rev: Set(-1),
                alerts_seen_rev: Set(0),
                failure_key: Set(None),
                open_key: Set(Some(format!("open-{i}"))),
                wake_at: Set(None),
            };
            let insert = incidents::Entity::insert(row).build(DbBackend::Sqlite);
            a.db.execute_raw(insert.clone()).await.unwrap();
            assert_eq!(execute(&conn, &insert).unwrap(), 1);
        }
        let (written, expected) = (rows(&by_writer), rows(&by_sqlx));
        assert_eq!(written.len(), 2);
        assert_eq!(written, expected);
        drop((a, b));
    }

    #[tokio::test]
    async fn a_closed_store_leaves_everything_in_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("closed.db");
        let store = migrated(file_url(&path)).await;
        let new = report("checkout-api OOMKilled");
        let trace = crate::trace::TraceId::generate();
        let id = store.create_incident(new.clone(), &trace).await.unwrap().id;
        let kept = store.clone();
        store.close().await;
        // The writer committed, closed last and checkpointed: the log holds nothing.
        let wal = dir.path().join("closed.db-wal");
        assert!(
            !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
            "{} bytes left in the log",
            std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0)
        );
        let conn = Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM incidents WHERE id = ?",
                [id.as_bytes().to_vec()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        // A write after the close is refused, not lost silently.
        let refused = kept.create_incident(new, &trace).await.unwrap_err();
        assert!(refused.is_retryable(), "{refused}");
    }

    #[tokio::test]
    async fn a_database_in_memory_by_its_mode_is_written_in_memory_not_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("named.db");
        let store = migrated(format!("sqlite://{}?mode=memory", path.display())).await;
        let id = store
            .create_incident(
                report("payments-db down"),
                &crate::trace::TraceId::generate(),
            )
            .await
            .unwrap()
            .id;
        assert!(store.front().get_incident(id).await.unwrap().is_some());
        assert!(!path.exists(), "nothing is written to a file");
    }

    #[test]
    fn a_transaction_left_open_is_ended_before_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db"), Duration::from_millis(10)).unwrap();
        run(&conn, "CREATE TABLE t (k TEXT)").unwrap();
        run(&conn, "BEGIN IMMEDIATE").unwrap();
        run(&conn, "INSERT INTO t VALUES ('never')").unwrap();
        outside_transaction(&conn).unwrap();
        assert!(conn.is_autocommit());
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "what the open transaction held is not committed");
    }

    #[test]
    fn a_taken_key_is_a_duplicate_and_a_busy_database_is_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open(&path, Duration::from_millis(10)).unwrap();
        run(&conn, "CREATE TABLE t (k TEXT PRIMARY KEY)").unwrap();
        let insert = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO t (k) VALUES (?)",
            [Value::String(Some("a".into()))],
        );
        assert_eq!(execute(&conn, &insert).unwrap(), 1);
        assert!(matches!(
            execute(&conn, &insert),
            Err(StoreError::Duplicate(_))
        ));
        let other = open(&path, Duration::from_millis(10)).unwrap();
        run(&other, "BEGIN IMMEDIATE").unwrap();
        let busy = run(&conn, "BEGIN IMMEDIATE").unwrap_err();
        assert!(busy.is_retryable(), "{busy}");
        let odd = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO t (k) VALUES (?)",
            [Value::BigUnsigned(Some(u64::MAX))],
        );
        assert!(matches!(execute(&conn, &odd), Err(StoreError::Database(_))));
    }
}
