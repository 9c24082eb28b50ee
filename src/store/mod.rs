//! The store: the only module that touches `entity` and the database. Everything above it
//! speaks the domain types of [`crate::incident`].
//!
//! SQLite (the default) runs in WAL mode with a busy timeout, so concurrent writers queue
//! instead of failing with "database is locked". PostgreSQL is the production backend. Pool
//! sizes and every timeout are explicit ([`DbConfig`]): no library default is relied on.
//!
//! A lookup by a unique key (the id, an idempotency key, an open failure key) goes through
//! [`unique`]: `all()` and the first row, not sea-orm's `one()`. `one()` adds `LIMIT ?`, and
//! SQLite (3.51) takes a bound LIMIT into the statement's plan, so every new binding expires
//! the cached statement and the next run parses and plans it again. Under a storm that was
//! half of the read connections' CPU.

use std::str::FromStr;
use std::time::Duration;

use entity::incidents;
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Condition, ExprTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, QueryTrait, RuntimeErr, Selector,
    SelectorTrait, Set, Statement,
};
use uuid::Uuid;

use crate::core::alerts::{self, AlertEvent, AlertState, Alerts, Change};
use crate::core::policy::WindowRestart;
use crate::core::workflow;
use crate::incident::{
    ActionRecord, Cursor, IdempotencyKey, Incident, IncidentSummary, ListFilter, Metadata,
    NewIncident, Page, Status, TimelineEntry, TimelineKind, now,
};
use crate::trace::TraceId;

mod sqlite;
mod writer;

/// How to reach the database, and the bounds of the pool.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// `sqlite://FILE` (created when missing) or `postgres://…`.
    pub url: String,
    /// Most pooled connections for reads: half for the API ([`Store::front`]), the rest for
    /// the agent.
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before failing.
    pub acquire_timeout_ms: u64,
    /// How long opening one connection may take.
    pub connect_timeout_ms: u64,
    /// How long SQLite waits on a locked database before failing a statement.
    pub sqlite_busy_timeout_ms: u64,
    /// Longest statement PostgreSQL runs before cancelling it.
    pub statement_timeout_ms: u64,
}

impl DbConfig {
    /// Whether the URL names SQLite (else PostgreSQL).
    fn sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or had no free connection: worth retrying.
    // The cause is in the message, not a `source`, so a `{:#}` chain does not repeat it.
    #[error("database unavailable: {0}")]
    Unavailable(DbErr),
    /// The database refused the operation.
    #[error("database error: {0}")]
    Database(DbErr),
    /// A unique key (an id, an idempotency key, an open failure's key) is taken already.
    #[error("database refused a duplicate: {0}")]
    Duplicate(DbErr),
    /// The database URL names no backend this service supports. The URL itself is not
    /// repeated: it may hold a password.
    #[error("unusable database URL: expected sqlite://FILE or postgres://USER@HOST:PORT/DB")]
    BadUrl,
    /// No incident has this id.
    #[error("no incident with id {0}")]
    NotFound(Uuid),
    /// The incident was written by someone else since it was read (a human's decision, the
    /// actor, or alerts that joined before it could close): read it again and decide anew.
    #[error("incident {0} changed since it was read")]
    Conflict(Uuid),
    /// Other writers kept changing the same row first for longer than the budget: worth
    /// retrying later.
    #[error("{0}")]
    Contended(String),
    /// A stored row does not hold what this version of the code expects.
    #[error("stored incident {id} is unreadable: {reason}")]
    Corrupt { id: Uuid, reason: String },
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Contended(_))
    }
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        match e {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Self::Unavailable(e),
            DbErr::Exec(RuntimeErr::SqlxError(ref s))
            | DbErr::Query(RuntimeErr::SqlxError(ref s))
                if connection_lost(s.as_ref()) =>
            {
                Self::Unavailable(e)
            }
            _ if matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
            {
                Self::Duplicate(e)
            }
            _ => Self::Database(e),
        }
    }
}

/// Whether a driver error says the connection, not the statement, failed: the database
/// went away (an I/O error, a broken protocol stream, a dead pool worker), refused new work
/// for now, or ended the session. The same statement may pass on another connection.
fn connection_lost(e: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    match e {
        E::Io(_) | E::Protocol(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        E::Database(db) => db.code().is_some_and(|code| retryable_code(&code)),
        _ => false,
    }
}

/// SQLSTATE codes (PostgreSQL) and result codes (SQLite) of failures that pass: class 08
/// (connection exception), 57P01 admin shutdown ("terminating connection due to
/// administrator command"), 57P02 crash shutdown, 57P03 cannot connect now, 53300 too many
/// connections, 40001/40P01 serialization failure and deadlock; SQLite 5/6 (busy, locked)
/// and their extended codes.
fn retryable_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
        // SQLite's codes are short decimal numbers; PostgreSQL's always have five characters.
        || (code.len() < 5 && code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)))
}

/// What [`Store::create_incident_once`] did.
#[derive(Debug)]
pub enum Created {
    /// A new incident.
    New(Incident),
    /// The key was seen with the same request: the incident it created, nothing new.
    Replayed(Incident),
    /// The key was seen with another request (the incident it created is named).
    KeyReused(Uuid),
}

/// What [`Store::take_alert`] did with one alert.
#[derive(Debug)]
pub enum Taken {
    /// No incident was open for its failure: this one was opened.
    Opened(Box<Incident>),
    /// It joined the open incident `id` (or changed what that incident holds of it).
    Joined { id: Uuid, change: Change },
    /// An exact repeat, or an older state delivered late: nothing was written.
    Unchanged { id: Uuid },
    /// A new alert of an incident that tracks as many as it can: not recorded.
    Dropped { id: Uuid },
    /// A resolved alert with no open incident for its failure: nothing to record it on.
    NoIncident,
}

/// A failure's closed incidents searched for an alert delivered late (the newest first).
const CLOSED_LOOKED_AT_MAX: u64 = 20;

/// How long [`Store::take_alert`] keeps trying when other writers (other replicas) keep
/// changing the incident's alerts first; each lost round waits a little longer (up to
/// [`TAKE_ALERT_BACKOFF_MAX_MS`], with jitter) before it reads again.
const TAKE_ALERT_BUDGET_MS: u64 = 5_000;
/// Longest wait between two rounds of [`Store::take_alert`].
const TAKE_ALERT_BACKOFF_MAX_MS: u64 = 50;

/// Attempts at storing a new incident while the database drops connections.
const INSERT_ATTEMPTS_MAX: u32 = 5;
/// Wait before the second attempt, doubled before each further one (50, 100, 200, 400 ms).
const INSERT_RETRY_BACKOFF_INITIAL_MS: u64 = 50;
/// No retry starts later than this after the first attempt began: the answer (stored, or
/// 503) comes well within the request timeout, and a refused request is not stored later.
const INSERT_RETRY_BUDGET_MS: u64 = 1_000;

/// Longest [`Store::close`] waits for the writers to commit what waits and end.
const WRITER_CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Writer connections (and tasks) on PostgreSQL; SQLite has one.
const POSTGRES_WRITERS: u32 = 4;
/// A pooled SQLite connection idle this long is pinged before it is handed out again.
const SQLITE_IDLE_PING_S: u64 = 30;
/// Page cache of a pooled connection that only reads a SQLite file (the writer has its
/// own connection), in KiB; SQLite's default is 2,000. Ten such connections held 22 MiB
/// of cached pages in the P3 storm; a read that misses asks the kernel's page cache.
const SQLITE_READ_CACHE_KIB: u32 = 512;

/// A handle on the database; cheap to clone (it is a pool, and handles on the writers).
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads, and the writes of the API and the intake: the agent's pool, or the API's for
    /// the handle [`Store::front`] gives.
    db: DatabaseConnection,
    /// The API's own pool: a request never waits for a connection that an incident actor
    /// holds while the actor waits for its turn on the busy runtime (a pooled connection goes
    /// back when the task that took it runs again).
    front_db: DatabaseConnection,
    /// The pooled connections of the group-commit writers (none for a SQLite file: its
    /// writer holds a connection of its own).
    writer_db: Option<DatabaseConnection>,
    writers: writer::Writers,
}

impl Store {
    /// Opens the pool. It does not migrate: call [`Store::migrate`].
    pub async fn connect(config: &DbConfig) -> Result<Self, StoreError> {
        let supported = ["sqlite:", "postgres://", "postgresql://"];
        if !supported.iter().any(|p| config.url.starts_with(p)) {
            return Err(StoreError::BadUrl);
        }
        let sqlite = config.sqlite();
        // The connections are shared between the API's pool and the agent's; an in-memory
        // database lives in its pool, which all share.
        // As sqlx reads the URL (`:memory:`, or `mode=memory` with any name).
        let sqlite_file = if sqlite {
            let options =
                SqliteConnectOptions::from_str(&config.url).map_err(|_| StoreError::BadUrl)?;
            use sea_orm::sqlx::ConnectOptions as _;
            let in_memory = options
                .to_url_lossy()
                .query_pairs()
                .any(|(k, v)| k == "mode" && v == "memory");
            (!in_memory).then(|| options.get_filename().to_owned())
        } else {
            None
        };
        let in_memory = sqlite && sqlite_file.is_none();
        let front = Ord::max(config.max_connections / 2, 1);
        let agent = Ord::max(config.max_connections.saturating_sub(front), 1);
        // A file's pooled connections only read; in memory the pages are the database.
        let read_cache_kib = sqlite_file.is_some().then_some(SQLITE_READ_CACHE_KIB);
        let db = Self::pool(config, agent, read_cache_kib).await?;
        let front_db = if in_memory {
            db.clone()
        } else {
            Self::pool(config, front, read_cache_kib).await?
        };
        // A write waits for a connection, then at worst for one statement that times out in
        // its batch and again alone.
        let write_timeout = Duration::from_millis(
            config
                .acquire_timeout_ms
                .saturating_add(config.connect_timeout_ms)
                .saturating_add(
                    Ord::max(config.statement_timeout_ms, config.sqlite_busy_timeout_ms)
                        .saturating_mul(2),
                ),
        );
        // A SQLite file: one writer, with its own connection on its own thread. In memory,
        // the writer shares the pool. PostgreSQL: a pool of a few writers.
        let (writers, writer_db) = if let Some(path) = &sqlite_file {
            let busy = Duration::from_millis(config.sqlite_busy_timeout_ms);
            let writers = writer::Writers::start_sqlite(path, busy, write_timeout)?;
            (writers, None)
        } else {
            let (count, writer_db) = if in_memory {
                (1, db.clone())
            } else {
                (
                    POSTGRES_WRITERS,
                    Self::pool(config, POSTGRES_WRITERS, None).await?,
                )
            };
            let writers =
                writer::Writers::start(vec![writer_db.clone(); count as usize], write_timeout);
            (writers, Some(writer_db))
        };
        Ok(Store {
            db,
            front_db,
            writer_db,
            writers,
        })
    }

    /// The same store, reading through the API's pool: the handle the API's handlers use.
    pub fn front(&self) -> Store {
        Store {
            db: self.front_db.clone(),
            ..self.clone()
        }
    }

    /// A pool of `max_connections`; on SQLite with a page cache of `sqlite_cache_kib`
    /// each when given.
    async fn pool(
        config: &DbConfig,
        max_connections: u32,
        sqlite_cache_kib: Option<u32>,
    ) -> Result<DatabaseConnection, StoreError> {
        let mut opts = ConnectOptions::new(config.url.clone());
        opts.max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .idle_timeout(Duration::from_secs(600))
            .sqlx_logging(true)
            .sqlx_logging_level(log::LevelFilter::Trace)
            .sqlx_slow_statements_logging_settings(log::LevelFilter::Warn, Duration::from_secs(1));
        // PostgreSQL shows this name in `pg_stat_activity`; a URL may name its own (several
        // agents on one server, a test that must tell its connections apart).
        if !config.url.contains("application_name=") {
            opts.set_application_name("sre-agent");
        }
        // SQLite: a connection is a file this process opened, so it is pinged before it is
        // handed out only after it sat idle; sqlx's default pings at every checkout, a round
        // trip to the connection's thread before each read and each group commit.
        // PostgreSQL keeps the ping at every checkout: a server that failed over or went
        // silent is found there, within the acquire timeout, and the connection replaced,
        // rather than by the request that would use it.
        if config.sqlite() {
            opts.test_before_acquire_if_idle_for(Duration::from_secs(SQLITE_IDLE_PING_S));
        }
        let busy_timeout = Duration::from_millis(config.sqlite_busy_timeout_ms);
        opts.map_sqlx_sqlite_opts(move |o| {
            let o = o
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(busy_timeout);
            match sqlite_cache_kib {
                // Negative: KiB, not pages.
                Some(kib) => o.pragma("cache_size", format!("-{kib}")),
                None => o,
            }
        });
        let statement_timeout = config.statement_timeout_ms;
        opts.map_sqlx_postgres_opts(move |o| {
            o.options([("statement_timeout", format!("{statement_timeout}ms"))])
        });
        Database::connect(opts).await.map_err(|e| {
            // sea-orm repeats a URL it cannot parse, password and all: never pass that on.
            if e.to_string().contains(&config.url) {
                StoreError::BadUrl
            } else {
                StoreError::from(e)
            }
        })
    }

    /// Brings the schema up to date. Idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(StoreError::Unavailable)
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Sqlite => "sqlite",
            DbBackend::Postgres => "postgres",
            _ => "other",
        }
    }

    /// Commits a new incident in status `new` and returns it as stored.
    pub async fn create_incident(
        &self,
        new: NewIncident,
        trace_id: &TraceId,
    ) -> Result<Incident, StoreError> {
        self.insert(new, trace_id, Extra::default()).await
    }

    /// Commits a new incident once per `Idempotency-Key`: a key seen since `kept_since` with
    /// the same request digest answers with the incident it created; with another digest it
    /// is refused. Keys older than that are forgotten. Two requests racing with one key
    /// create one incident (the unique index decides; the loser reads the winner's row).
    pub async fn create_incident_once(
        &self,
        new: NewIncident,
        trace_id: &TraceId,
        key: &IdempotencyKey,
        digest: &str,
        kept_since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Created, StoreError> {
        use incidents::Column as C;
        let extra = || Extra {
            key: Some((key, digest)),
            ..Extra::default()
        };
        // The insert comes first: a new key (nearly every request) costs one write and no
        // read. A key taken already is refused by its unique index; then its row answers,
        // unless it is older than `kept_since`: that key is forgotten (its row lets it go)
        // and the request is a new one, inserted again. Two rounds at most: a key forgotten
        // and taken again in between is answered by the row that took it.
        for round in 0..2 {
            let taken = match self.insert(new.clone(), trace_id, extra()).await {
                Ok(incident) => return Ok(Created::New(incident)),
                Err(StoreError::Duplicate(e)) => e,
                Err(e) => return Err(e),
            };
            match self.by_key_row(key).await? {
                Some(row) if row.created_at < kept_since && round == 0 => {
                    incidents::Entity::update_many()
                        .col_expr(
                            C::IdempotencyKey,
                            sea_orm::sea_query::Expr::value(Option::<String>::None),
                        )
                        .col_expr(
                            C::RequestDigest,
                            sea_orm::sea_query::Expr::value(Option::<String>::None),
                        )
                        .filter(C::Id.eq(row.id))
                        .filter(C::CreatedAt.lt(kept_since))
                        .exec(&self.db)
                        .await?;
                }
                Some(row) => return Self::seen(row, digest),
                // Let go since the insert was refused: tried again.
                None if round == 0 => {}
                None => return Err(StoreError::Duplicate(taken)),
            }
        }
        unreachable!("the second round returns")
    }

    /// The row that holds `key`, if one does (the key is unique).
    async fn by_key_row(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<incidents::Model>, StoreError> {
        use incidents::Column as C;
        let by_key = incidents::Entity::find().filter(C::IdempotencyKey.eq(key.as_str()));
        Ok(unique(by_key.into_model::<incidents::Model>(), &self.db).await?)
    }

    /// What the row of a key stands for, to a request with `digest`: its incident (the same
    /// request again), or a refusal (another request under the same key).
    fn seen(row: incidents::Model, digest: &str) -> Result<Created, StoreError> {
        if row.request_digest.as_deref() != Some(digest) {
            return Ok(Created::KeyReused(row.id));
        }
        Ok(Created::Replayed(incident_from_row(row)?))
    }

    async fn insert(
        &self,
        new: NewIncident,
        trace_id: &TraceId,
        extra: Extra<'_>,
    ) -> Result<Incident, StoreError> {
        let key = extra.key;
        let id = Uuid::now_v7();
        let at = now();
        let metadata = Metadata {
            trace_id: trace_id.to_string(),
            timeline: vec![TimelineEntry {
                at,
                trace_id: trace_id.to_string(),
                kind: TimelineKind::Status,
                message: format!("incident opened from {} as {}", new.source, Status::New),
                detail: serde_json::json!({ "status": Status::New, "source": new.source }),
            }],
            alert_type: new.alert_type,
            service: new.service,
            source: new.source,
            labels: new.labels,
        };
        let incident = Incident {
            id,
            trace_id: trace_id.to_string(),
            status: Status::New,
            title: new.title,
            description: new.description,
            severity: new.severity,
            created_at: at,
            updated_at: at,
            rca_analysis: None,
            actions_taken: vec![],
            timeline_stored: metadata.timeline.len(),
            timeline_offset: 0,
            metadata,
            alerts: extra.alerts.unwrap_or_default(),
            failure_key: extra.failure_key,
            wake_at: None,
            revision: 0,
            alerts_rev: 0,
            alerts_seen_rev: 0,
        };
        let json = |v: serde_json::Result<serde_json::Value>| v.map_err(|e| corrupt(id, e));
        let row = incidents::ActiveModel {
            id: Set(id),
            status: Set(incident.status.as_str().to_owned()),
            title: Set(incident.title.clone()),
            description: Set(incident.description.clone()),
            severity: Set(incident.severity.as_str().to_owned()),
            trace_id: Set(incident.trace_id.clone()),
            created_at: Set(at),
            updated_at: Set(at),
            rca_analysis: Set(None),
            actions_taken: Set(serde_json::json!([])),
            metadata: Set(json(serde_json::to_value(&incident.metadata))?),
            auto_restart_service: Set(None),
            auto_restart_at: Set(None),
            idempotency_key: Set(key.map(|(k, _)| k.as_str().to_owned())),
            request_digest: Set(key.map(|(_, d)| d.to_owned())),
            revision: Set(0),
            alerts: Set(incident
                .failure_key
                .is_some()
                .then(|| json(serde_json::to_value(&incident.alerts)))
                .transpose()?),
            alerts_rev: Set(0),
            alerts_seen_rev: Set(0),
            failure_key: Set(incident.failure_key.clone()),
            open_key: Set(incident.failure_key.clone()),
            wake_at: Set(None),
        };
        let statement = insert_statement(row, self.db.get_database_backend());
        // A dropped connection is tried again on another, with the same id: if the first
        // attempt committed after all, the id is taken, and that row is the answer. So a
        // request is answered 503 only when the database stays away for the whole budget.
        // The insert goes through the group-commit writers, like the actor's steps.
        let began = std::time::Instant::now();
        let mut wait_ms = INSERT_RETRY_BACKOFF_INITIAL_MS;
        for attempt in 1..=INSERT_ATTEMPTS_MAX {
            let in_budget = began.elapsed() + Duration::from_millis(wait_ms)
                < Duration::from_millis(INSERT_RETRY_BUDGET_MS);
            let written = self
                .writers
                .execute(id, writer::Priority::First, statement.clone())
                .await;
            match written.and_then(inserted) {
                Ok(()) => return Ok(incident),
                Err(e) if e.is_retryable() && attempt < INSERT_ATTEMPTS_MAX && in_budget => {
                    tracing::warn!(error = %e, attempt, "storing a new incident failed; retrying");
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    wait_ms *= 2;
                }
                // A unique key taken by this very row (an attempt that committed after all,
                // whatever its answer said) is success; another's row is the caller's to judge.
                Err(e @ StoreError::Duplicate(_)) | Err(e @ StoreError::Database(_))
                    if attempt > 1 || matches!(e, StoreError::Duplicate(_)) =>
                {
                    return match self.get_incident(id).await? {
                        Some(stored) => Ok(stored),
                        None => Err(e),
                    };
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// The whole incident, or `None` when there is none with that id.
    pub async fn get_incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError> {
        unique(
            incidents::Entity::find_by_id(id).into_model::<incidents::Model>(),
            &self.db,
        )
        .await?
        .map(incident_from_row)
        .transpose()
    }

    /// Writes an incident's progress in one statement: status, analysis, actions, the
    /// timeline entries added since the row was read (appended in the database: the entries
    /// already stored are neither sent nor rewritten), `updated_at` set to now, and the
    /// revision bumped. The statement goes through the group-commit writers and is answered
    /// once committed. The write names the revision it read: when someone else wrote the
    /// row since (a human's decision), it is refused with [`StoreError::Conflict`] and
    /// nothing is written. A write that ends the incident (resolved or failed: its failure
    /// key is let go) is also refused when alerts joined it since the writer last looked at
    /// them (`alerts_seen_rev`). Returns what the row now holds of it ([`Saved::apply`]).
    pub async fn save(&self, incident: &Incident) -> Result<Saved, StoreError> {
        let id = incident.id;
        let at = now();
        let statement = update_statement(self.db.get_database_backend(), incident, at)
            .map_err(|e| corrupt(id, e))?;
        let rows = self
            .writers
            .execute(id, writer::Priority::Step, statement)
            .await?;
        if rows == 0 {
            use incidents::Column as C;
            let id_only = incidents::Entity::find_by_id(id)
                .select_only()
                .column(C::Id)
                .into_tuple::<Uuid>();
            let exists = unique(id_only, &self.db).await?;
            return Err(match exists {
                Some(_) => StoreError::Conflict(id),
                None => StoreError::NotFound(id),
            });
        }
        Ok(Saved {
            revision: incident.revision + 1,
            updated_at: at,
            timeline_stored: incident.timeline_len(),
        })
    }

    /// The alerts of an incident as they are now, with their revision.
    pub async fn alerts_of(&self, id: Uuid) -> Result<(Alerts, i64), StoreError> {
        use incidents::Column as C;
        let alerts = incidents::Entity::find_by_id(id)
            .select_only()
            .column(C::Alerts)
            .column(C::AlertsRev)
            .into_tuple::<(Option<serde_json::Value>, i64)>();
        let row = unique(alerts, &self.db).await?;
        let (alerts, rev) = row.ok_or(StoreError::NotFound(id))?;
        Ok((alerts_from(id, alerts)?, rev))
    }

    /// Records one alert on the open incident of its failure (`key`), or opens one for it
    /// (`open`, when it fires or is a report). Each alert is its own atomic step: a
    /// compare-and-swap on the incident's `alerts_rev`, or an insert that the unique index
    /// on `open_key` lets only one delivery win; the loser of a race reads the winner's row
    /// and tries again. An exact repeat writes nothing.
    pub async fn take_alert(
        &self,
        key: &str,
        event: &AlertEvent,
        open: impl Fn() -> (NewIncident, TraceId),
    ) -> Result<Taken, StoreError> {
        use incidents::Column as C;
        let began = std::time::Instant::now();
        for round in 0u64.. {
            if round > 0 {
                if began.elapsed() > Duration::from_millis(TAKE_ALERT_BUDGET_MS) {
                    break;
                }
                // Jitter from the clock: racing writers do not retry in lockstep.
                let jitter = u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos()),
                ) % 5;
                let wait = Ord::min(round * 2 + jitter, TAKE_ALERT_BACKOFF_MAX_MS);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            let open_one = incidents::Entity::find()
                .select_only()
                .column(C::Id)
                .column(C::Alerts)
                .column(C::AlertsRev)
                .filter(C::OpenKey.eq(key))
                .into_tuple::<(Uuid, Option<serde_json::Value>, i64)>();
            let row = unique(open_one, &self.db).await?;
            if let Some((id, stored, rev)) = row {
                let mut alerts = alerts_from(id, stored)?;
                let change = alerts::apply(&mut alerts, event, now());
                match change {
                    Change::Unchanged => return Ok(Taken::Unchanged { id }),
                    Change::Dropped => return Ok(Taken::Dropped { id }),
                    _ => {}
                }
                let value = serde_json::to_value(&alerts).map_err(|e| corrupt(id, e))?;
                let done = incidents::Entity::update_many()
                    .col_expr(C::Alerts, sea_orm::sea_query::Expr::value(value))
                    .col_expr(C::AlertsRev, sea_orm::sea_query::Expr::value(rev + 1))
                    .filter(C::Id.eq(id))
                    .filter(C::AlertsRev.eq(rev))
                    .filter(C::OpenKey.eq(key))
                    .exec(&self.db)
                    .await?;
                if done.rows_affected == 1 {
                    return Ok(Taken::Joined { id, change });
                }
                continue; // another delivery, or the incident's end, came first
            }
            // No open incident: a delivery retried late (a firing state its closed incident
            // already saw resolve) must not open a new one.
            if let Some(id) = self.seen_closed(key, event).await? {
                return Ok(Taken::Unchanged { id });
            }
            if event.state == AlertState::Resolved {
                return Ok(Taken::NoIncident);
            }
            let (new, trace_id) = open();
            let mut first = Alerts::default();
            alerts::apply(&mut first, event, now());
            let extra = Extra {
                failure_key: Some(key.to_owned()),
                alerts: Some(first),
                ..Extra::default()
            };
            match self.insert(new, &trace_id, extra).await {
                Ok(incident) => return Ok(Taken::Opened(Box::new(incident))),
                // Another delivery opened it first: join that one.
                Err(StoreError::Duplicate(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contended(format!(
            "the alert could not be recorded within {TAKE_ALERT_BUDGET_MS} ms: other writers kept changing the incident's alerts first"
        )))
    }

    /// The newest of the failure's last [`CLOSED_LOOKED_AT_MAX`] incidents that holds the
    /// alert of `event`, when it saw that alert resolve and holds `event` or a later state
    /// of it: the event is a late redelivery.
    async fn seen_closed(&self, key: &str, event: &AlertEvent) -> Result<Option<Uuid>, StoreError> {
        use incidents::Column as C;
        if event.starts_at.is_none() {
            return Ok(None);
        }
        let latest: Vec<(Uuid, Option<serde_json::Value>)> = incidents::Entity::find()
            .select_only()
            .column(C::Id)
            .column(C::Alerts)
            .filter(C::FailureKey.eq(key))
            .order_by_desc(C::CreatedAt)
            .limit(CLOSED_LOOKED_AT_MAX)
            .into_tuple()
            .all(&self.db)
            .await?;
        for (id, stored) in latest {
            let mut alerts = alerts_from(id, stored)?;
            let Some(record) = alerts
                .records
                .iter()
                .find(|r| r.source == event.source && r.fingerprint == event.fingerprint)
            else {
                continue;
            };
            // Only an alert its incident saw resolve: one that still fired when its incident
            // failed is a failure nobody handles, and its next delivery opens a new incident.
            let stale = record.state == AlertState::Resolved
                && alerts::apply(&mut alerts, event, now()) == Change::Unchanged;
            return Ok(stale.then_some(id));
        }
        Ok(None)
    }

    /// An incident of failure `key` that ended resolved after an agent restart since
    /// `since`: the same failure came back after a fix.
    pub async fn fixed_since(
        &self,
        key: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Uuid>, StoreError> {
        use incidents::Column as C;
        Ok(incidents::Entity::find()
            .select_only()
            .column(C::Id)
            .filter(C::FailureKey.eq(key))
            .filter(C::Status.eq(Status::Resolved.as_str()))
            .filter(C::AutoRestartAt.gte(since))
            .order_by_desc(C::AutoRestartAt)
            .into_tuple::<Uuid>()
            .one(&self.db)
            .await?)
    }

    /// The agent's restarts of `service`'s pods planned or made since `since`, by every
    /// incident: the restart window, read from the rows (so an agent restart forgets
    /// nothing). One indexed lookup; at most a handful of rows, since the window's budget
    /// bounds how many incidents restart a service's pods.
    pub async fn restarts_in_window(
        &self,
        service: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<WindowRestart>, StoreError> {
        use incidents::Column as C;
        let rows: Vec<(Uuid, serde_json::Value)> = incidents::Entity::find()
            .select_only()
            .column(C::Id)
            .column(C::ActionsTaken)
            .filter(C::AutoRestartService.eq(service))
            .filter(C::AutoRestartAt.gte(since))
            .order_by_asc(C::AutoRestartAt)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut window = Vec::new();
        for (id, actions) in rows {
            let actions: Vec<ActionRecord> =
                serde_json::from_value(actions).map_err(|e| corrupt(id, e))?;
            window.extend(
                actions
                    .iter()
                    .filter(|a| workflow::is_agent_restart(a) && a.started_at >= since)
                    .map(|a| WindowRestart {
                        pod: workflow::pod_arg(a).to_owned(),
                        in_flight: workflow::restart_in_flight(a),
                        key: a.idempotency_key.clone(),
                    }),
            );
        }
        Ok(window)
    }

    /// Ids of incidents the agent has work on, oldest first: what the supervisor adopts at
    /// start and on its periodic scan. That is every incident not in a terminal state
    /// (except one waiting for its alerts until its `wake_at`), and every incident with alert
    /// news the agent has not seen (an escalated one whose alerts resolved, say). At most
    /// `limit`.
    pub async fn unfinished(&self, limit: u64) -> Result<Vec<Uuid>, StoreError> {
        use incidents::Column as C;
        let open: Vec<&str> = Status::ALL
            .iter()
            .filter(|s| !s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        let mut ids: Vec<(chrono::DateTime<chrono::Utc>, Uuid)> = incidents::Entity::find()
            .select_only()
            .column(C::CreatedAt)
            .column(C::Id)
            .filter(C::Status.is_in(open))
            .filter(
                Condition::any()
                    .add(C::WakeAt.is_null())
                    .add(C::WakeAt.lte(now())),
            )
            .order_by_asc(C::CreatedAt)
            .order_by_asc(C::Id)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        let news: Vec<(chrono::DateTime<chrono::Utc>, Uuid)> = incidents::Entity::find()
            .select_only()
            .column(C::CreatedAt)
            .column(C::Id)
            .filter(
                sea_orm::sea_query::Expr::col(C::AlertsRev)
                    .gt(sea_orm::sea_query::Expr::col(C::AlertsSeenRev)),
            )
            .order_by_asc(C::CreatedAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        ids.extend(news);
        ids.sort();
        ids.dedup();
        Ok(ids
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id)
            .collect())
    }

    /// One page of incidents, newest first (by creation time, then id).
    pub async fn list_incidents(
        &self,
        filter: &ListFilter,
    ) -> Result<Page<IncidentSummary>, StoreError> {
        use incidents::Column as C;
        let mut query = incidents::Entity::find()
            .select_only()
            .columns([
                C::Id,
                C::TraceId,
                C::Status,
                C::Title,
                C::Severity,
                C::CreatedAt,
                C::UpdatedAt,
            ])
            .order_by_desc(C::CreatedAt)
            .order_by_desc(C::Id)
            // One more than asked, to know whether another page follows.
            .limit(filter.limit + 1);
        if let Some(status) = filter.status {
            query = query.filter(C::Status.eq(status.as_str()));
        }
        if let Some(severity) = filter.severity {
            query = query.filter(C::Severity.eq(severity.as_str()));
        }
        if let Some(trace_id) = &filter.trace_id {
            query = query.filter(C::TraceId.eq(trace_id.as_str()));
        }
        if let Some(after) = filter.after {
            query = query.filter(
                Condition::any().add(C::CreatedAt.lt(after.created_at)).add(
                    Condition::all()
                        .add(C::CreatedAt.eq(after.created_at))
                        .add(C::Id.lt(after.id)),
                ),
            );
        }
        let rows = query.into_model::<SummaryRow>().all(&self.db).await?;
        let more = rows.len() as u64 > filter.limit;
        let items = rows
            .into_iter()
            .take(filter.limit as usize)
            .map(summary_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = match items.last() {
            Some(last) if more => Some(
                Cursor {
                    created_at: last.created_at,
                    id: last.id,
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    /// Closes the pool, waiting for connections in use to be returned (and, on SQLite,
    /// letting the last connection checkpoint the WAL).
    pub async fn close(self) {
        for pool in [self.db, self.front_db].into_iter().chain(self.writer_db) {
            if let Err(error) = pool.close().await {
                tracing::warn!(%error, "closing the database pool failed");
            }
        }
        // The SQLite writer's connection last: the last to close checkpoints the log.
        self.writers.close(WRITER_CLOSE_WAIT).await;
    }
}

#[derive(Debug, FromQueryResult)]
struct SummaryRow {
    id: Uuid,
    trace_id: String,
    status: String,
    title: String,
    severity: String,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// What a new row holds besides the incident itself.
#[derive(Default)]
struct Extra<'a> {
    /// The client's `Idempotency-Key` and its request's digest.
    key: Option<(&'a IdempotencyKey, &'a str)>,
    /// The failure it is about (also its `open_key`).
    failure_key: Option<String>,
    /// The alert that opened it.
    alerts: Option<Alerts>,
}

/// The row of a lookup by a unique key (the id, an idempotency key, an open failure key):
/// `all()` and its first row. Never sea-orm's `one()` for these: its bound `LIMIT ?` makes
/// SQLite prepare the statement anew at every run (see the module doc).
async fn unique<S: SelectorTrait>(
    select: Selector<S>,
    db: &DatabaseConnection,
) -> Result<Option<S::Item>, DbErr> {
    Ok(select.all(db).await?.into_iter().next())
}

fn alerts_from(id: Uuid, stored: Option<serde_json::Value>) -> Result<Alerts, StoreError> {
    stored
        .map(serde_json::from_value)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e| corrupt(id, e))
}

fn corrupt(id: Uuid, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        id,
        reason: reason.to_string(),
    }
}

fn summary_from_row(row: SummaryRow) -> Result<IncidentSummary, StoreError> {
    Ok(IncidentSummary {
        status: row.status.parse().map_err(|e| corrupt(row.id, e))?,
        severity: row.severity.parse().map_err(|e| corrupt(row.id, e))?,
        id: row.id,
        trace_id: row.trace_id,
        title: row.title,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn incident_from_row(row: incidents::Model) -> Result<Incident, StoreError> {
    let id = row.id;
    let metadata: Metadata = serde_json::from_value(row.metadata).map_err(|e| corrupt(id, e))?;
    Ok(Incident {
        status: row.status.parse().map_err(|e| corrupt(id, e))?,
        severity: row.severity.parse().map_err(|e| corrupt(id, e))?,
        timeline_stored: metadata.timeline.len(),
        timeline_offset: 0,
        metadata,
        id,
        trace_id: row.trace_id,
        title: row.title,
        description: row.description,
        created_at: row.created_at,
        updated_at: row.updated_at,
        rca_analysis: row
            .rca_analysis
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| corrupt(id, e))?,
        actions_taken: serde_json::from_value(row.actions_taken).map_err(|e| corrupt(id, e))?,
        alerts: alerts_from(id, row.alerts)?,
        failure_key: row.failure_key,
        wake_at: row.wake_at,
        revision: row.revision,
        alerts_rev: row.alerts_rev,
        alerts_seen_rev: row.alerts_seen_rev,
    })
}

/// What a [`Store::save`] wrote: the row's new revision, its `updated_at`, and how many
/// timeline entries it now holds.
#[derive(Clone, Copy, Debug)]
#[must_use = "the incident must learn its new revision"]
pub struct Saved {
    pub revision: i64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub timeline_stored: usize,
}

impl Saved {
    /// Brings `incident` up to the row as written.
    pub fn apply(self, incident: &mut Incident) {
        incident.revision = self.revision;
        incident.updated_at = self.updated_at;
        incident.timeline_stored = self.timeline_stored;
    }
}

/// The `INSERT` of a new row. A unique key already taken (an idempotency key, an open
/// failure's key, the id of an earlier attempt that committed) inserts nothing rather than
/// failing the statement: a failed statement rolls back the whole group commit, and every
/// write in it would be tried again alone. [`inserted`] reads the answer.
fn insert_statement(row: incidents::ActiveModel, backend: DbBackend) -> Statement {
    let mut statement = incidents::Entity::insert(row).build(backend);
    statement.sql.push_str(" ON CONFLICT DO NOTHING");
    statement
}

/// Whether [`insert_statement`] inserted its row: none means a unique key was taken.
fn inserted(rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::Duplicate(DbErr::Custom(
            "a unique key of the new incident is taken".into(),
        )))
    } else {
        Ok(())
    }
}

/// Most timeline entries one SQLite `json_insert` appends (it takes at most 1,000 arguments);
/// more are appended by nested calls of this many each.
const APPENDED_MAX: usize = 64;

/// The `UPDATE` of [`Store::save`], written by hand for each backend: sea-orm's update
/// would send the whole timeline again, serialised twice (to a JSON tree, then to text).
/// New timeline entries are appended inside the database (SQLite's `json_insert` with
/// `[#]`, PostgreSQL's `jsonb ||`). An incident read whole whose row holds no timeline yet
/// is written whole; one that forgot entries it holds no longer
/// ([`Incident::forget_stored_timeline`]) only ever appends.
fn update_statement(
    backend: DbBackend,
    incident: &Incident,
    at: chrono::DateTime<chrono::Utc>,
) -> serde_json::Result<Statement> {
    use sea_orm::Value;
    let auto_restart_at = incident
        .actions_taken
        .iter()
        .filter(|a| workflow::is_agent_restart(a))
        .map(|a| a.started_at)
        .max();
    let auto_restart_service = auto_restart_at.and(
        incident
            .rca_analysis
            .as_ref()
            .map(|r| r.service.clone())
            .filter(|s| !s.is_empty()),
    );
    let ends = matches!(incident.status, Status::Resolved | Status::Failed);
    let timeline = &incident.metadata.timeline;
    let (stored, offset) = (incident.timeline_stored, incident.timeline_offset);
    // The entries past the row's: `None` writes the metadata whole (a copy that holds the
    // whole timeline of a row with none yet).
    let appended = if stored == 0 && offset == 0 {
        None
    } else {
        // Entries the row lacks were forgotten before they were written: never by the
        // actor, which forgets only what a write confirmed.
        let new = stored.checked_sub(offset).and_then(|i| timeline.get(i..));
        Some(new.ok_or_else(|| {
            serde::ser::Error::custom(format!(
                "the timeline holds {} entries from entry {offset}, the row {stored}",
                timeline.len()
            ))
        })?)
    };
    let postgres = backend == DbBackend::Postgres;
    let mut values: Vec<Value> = Vec::with_capacity(16);
    // `?` on SQLite, `$n` on PostgreSQL.
    let param = |values: &mut Vec<Value>, v: Value| -> String {
        values.push(v);
        if postgres {
            format!("${}", values.len())
        } else {
            "?".to_owned()
        }
    };
    let jsonb = |p: String| if postgres { format!("{p}::jsonb") } else { p };
    let mut sql = String::with_capacity(512);
    sql.push_str("UPDATE incidents SET status = ");
    sql += &param(&mut values, incident.status.as_str().into());
    sql += ", auto_restart_service = ";
    sql += &param(&mut values, auto_restart_service.into());
    sql += ", auto_restart_at = ";
    sql += &param(&mut values, auto_restart_at.into());
    sql += ", updated_at = ";
    sql += &param(&mut values, at.into());
    sql += ", rca_analysis = ";
    let rca = incident
        .rca_analysis
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    sql += &jsonb(param(&mut values, rca.into()));
    sql += ", actions_taken = ";
    let actions = serde_json::to_string(&incident.actions_taken)?;
    sql += &jsonb(param(&mut values, actions.into()));
    match appended {
        Some([]) => {}
        Some(entries) if postgres => {
            sql += ", metadata = jsonb_set(metadata, '{timeline}', coalesce(metadata->'timeline', '[]'::jsonb) || ";
            sql += &jsonb(param(&mut values, serde_json::to_string(entries)?.into()));
            sql += ")";
        }
        Some(entries) => {
            // SQLite takes at most 1,000 arguments in one call: a turn of hundreds of
            // refused calls is appended by nested calls of `APPENDED_MAX` entries each.
            let chunks = entries.chunks(APPENDED_MAX);
            sql += ", metadata = ";
            sql += &"json_insert(".repeat(chunks.len());
            sql += "metadata";
            for chunk in chunks {
                for entry in chunk {
                    sql += ", '$.timeline[#]', json(";
                    sql += &param(&mut values, serde_json::to_string(entry)?.into());
                    sql += ")";
                }
                sql += ")";
            }
        }
        None => {
            sql += ", metadata = ";
            let whole = serde_json::to_string(&incident.metadata)?;
            sql += &jsonb(param(&mut values, whole.into()));
        }
    }
    sql += ", alerts_seen_rev = ";
    sql += &param(&mut values, incident.alerts_seen_rev.into());
    sql += ", open_key = ";
    let open_key = if ends {
        None
    } else {
        incident.failure_key.clone()
    };
    sql += &param(&mut values, open_key.into());
    sql += ", wake_at = ";
    sql += &param(&mut values, incident.wake_at.into());
    sql += ", revision = ";
    sql += &param(&mut values, (incident.revision + 1).into());
    sql += " WHERE id = ";
    sql += &param(&mut values, incident.id.into());
    sql += " AND revision = ";
    sql += &param(&mut values, incident.revision.into());
    if ends {
        sql += " AND alerts_rev <= ";
        sql += &param(&mut values, incident.alerts_seen_rev.into());
    }
    Ok(Statement::from_sql_and_values(backend, sql, values))
}

#[cfg(test)]
mod tests {
    use super::{retryable_code, update_statement};
    use crate::incident::{Incident, Metadata, Severity, Status};
    use sea_orm::DbBackend;

    fn incident() -> Incident {
        let at = crate::incident::now();
        Incident {
            id: uuid::Uuid::now_v7(),
            trace_id: "t".into(),
            status: Status::Analyzing,
            title: "t".into(),
            description: None,
            severity: Severity::High,
            created_at: at,
            updated_at: at,
            rca_analysis: None,
            actions_taken: vec![],
            metadata: Metadata::default(),
            alerts: Default::default(),
            failure_key: None,
            wake_at: None,
            revision: 1,
            alerts_rev: 0,
            alerts_seen_rev: 0,
            timeline_stored: 4,
            timeline_offset: 4,
        }
    }

    #[test]
    fn a_new_row_with_a_taken_key_inserts_nothing_instead_of_failing_its_commit() {
        use entity::incidents;
        use sea_orm::ActiveValue::NotSet;
        let row = incidents::ActiveModel {
            id: sea_orm::Set(uuid::Uuid::now_v7()),
            ..Default::default()
        };
        assert!(matches!(row.status, NotSet));
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let sql = super::insert_statement(row.clone(), backend).sql;
            assert!(sql.ends_with(") ON CONFLICT DO NOTHING"), "{sql}");
            assert!(!sql.contains("RETURNING"), "{sql}");
        }
        assert!(super::inserted(1).is_ok());
        assert!(matches!(
            super::inserted(0),
            Err(super::StoreError::Duplicate(_))
        ));
    }

    #[test]
    fn a_copy_that_forgot_entries_the_row_does_not_hold_is_never_written() {
        let mut inc = incident();
        let at = crate::incident::now();
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            assert!(update_statement(backend, &inc, at).is_ok());
        }
        // It holds entries from the 6th on, but the row has only 4: the 5th would be lost.
        inc.timeline_offset = 5;
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let refused = update_statement(backend, &inc, at).unwrap_err();
            assert!(refused.to_string().contains("from entry 5"), "{refused}");
        }
    }

    #[test]
    fn connection_losses_and_busy_databases_are_retryable_and_statement_errors_are_not() {
        for code in [
            "08006", "08003", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "5", "6", "517",
        ] {
            assert!(retryable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "57014", "1", "19", "2067"] {
            assert!(!retryable_code(code), "{code}");
        }
    }
}
