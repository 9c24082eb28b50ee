//! Group commit: the incident actors' step writes and new incidents go through writer tasks,
//! each with a connection of its own, that commit every write waiting at that moment in one
//! transaction (new incidents first: a client waits for them).
//! Under a storm one commit carries many incidents' steps (one WAL append on SQLite, one
//! fsync on PostgreSQL); when it is quiet a write goes alone, with no added wait. A caller is
//! answered after the commit, so a step is still durable before the next one starts.
//!
//! SQLite has one writer (its write lock admits one anyway, and one connection keeps its
//! page cache warm instead of reloading what fifteen others changed): a thread of its own
//! with its own connection that runs a whole commit without a hand-off per statement
//! ([`super::sqlite`]). PostgreSQL has a few tasks on the front lane ([`crate::lane`]), each
//! with a pooled connection, chosen by the incident's id so one incident's writes stay in
//! order. The read pool never waits behind them.
//!
//! A statement that fails inside a batch (a constraint, a value the database refuses) must
//! not fail its neighbours: the batch is rolled back and each write is tried alone, so each
//! caller gets its own answer. A batch whose commit may or may not have happened (the
//! connection lost, the answer lost) is never replayed: every caller hears "unavailable" and
//! retries, which a step survives by its revision and an insert by its id. A caller waits a
//! bounded time.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement, TransactionTrait};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::StoreError;

/// Most writes committed in one transaction. A new incident's caller waits for the commit
/// in progress and then its own, whole: small commits keep that wait short (`POST` p99 under
/// a storm: 56 ms at 256, 41-44 at 64, 34 at 32), and, with no round trip per statement on
/// SQLite, cost no throughput (BENCHMARKS.md).
pub const BATCH_MAX: usize = 32;
/// Attempts at a batch whose connection was lost before its commit.
const BATCH_ATTEMPTS_MAX: u32 = 3;
/// Writes waiting for one writer before a caller waits for room (backpressure).
const QUEUE_MAX: usize = 4_096;

/// One write: a statement, and where its rows-affected count goes.
struct Job {
    statement: Statement,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// Which queue of a writer a write waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A new incident: a client waits for the answer. Taken into the next commit before any
    /// step, so a `POST` does not queue behind the steps of every live incident.
    First,
    /// An incident actor's step.
    Step,
}

/// Handle on the writer tasks; cheap to clone.
#[derive(Clone, Debug)]
pub struct Writers {
    /// One `(first, steps)` pair of queues per writer.
    queues: Vec<(mpsc::Sender<Job>, mpsc::Sender<Job>)>,
    /// Longest a caller waits for its write's commit, queueing included.
    timeout: std::time::Duration,
    /// Tells the writers to take no more writes, commit what waits, and end.
    stop: std::sync::Arc<watch::Sender<bool>>,
    /// The SQLite writer's thread, joined by [`Writers::close`].
    thread: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Writers {
    /// Starts one writer task on the front lane per pooled connection (at least one); a
    /// caller waits at most `timeout` for its commit.
    pub fn start(connections: Vec<DatabaseConnection>, timeout: std::time::Duration) -> Writers {
        let (stop, stopping) = watch::channel(false);
        let queues = connections
            .into_iter()
            .map(|db| {
                let (queues, first, steps) = queues();
                crate::lane::spawn_front(run(Pooled(db), first, steps, stopping.clone()));
                queues
            })
            .collect();
        Writers {
            queues,
            timeout,
            stop: std::sync::Arc::new(stop),
            thread: Default::default(),
        }
    }

    /// Starts the one writer of the SQLite file at `path` on a thread of its own, with a
    /// connection of its own (opened here, so that a file that cannot be opened is said at
    /// once).
    pub fn start_sqlite(
        path: &std::path::Path,
        busy_timeout: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Result<Writers, StoreError> {
        let conn = super::sqlite::open(path, busy_timeout)?;
        let (queues, first, steps) = queues();
        let (stop, stopping) = watch::channel(false);
        let unavailable = |why: String| StoreError::Unavailable(DbErr::Custom(why));
        // The thread's runtime only waits for the queues; a commit runs on the thread itself,
        // and nothing else shares it. Built there (a runtime dropped by a task panics), and
        // said to be running before this returns.
        let (started, running) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sre-sqlite-writer".into())
            .spawn(
                move || match tokio::runtime::Builder::new_current_thread().build() {
                    Ok(runtime) => {
                        let _ = started.send(Ok(()));
                        runtime.block_on(run(Own(conn), first, steps, stopping));
                    }
                    Err(error) => {
                        let _ = started.send(Err(error));
                    }
                },
            )
            .map_err(|e| unavailable(format!("no writer thread: {e}")))?;
        running
            .recv()
            .map_err(|_| unavailable("the writer's thread ended at its start".into()))?
            .map_err(|e| unavailable(format!("no runtime for the writer: {e}")))?;
        Ok(Writers {
            queues: vec![queues],
            timeout,
            stop: std::sync::Arc::new(stop),
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Ends the writers: what waits is committed, a later write is refused as unavailable,
    /// and the SQLite writer's connection is closed (the last connection to close
    /// checkpoints the write-ahead log into the database file). Waits at most `wait`.
    pub async fn close(&self, wait: std::time::Duration) {
        self.stop.send_replace(true);
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(wait, joined).await.is_err() {
                tracing::warn!(
                    wait_ms = wait.as_millis() as u64,
                    "the SQLite writer did not end in time"
                );
            }
        }
    }

    /// Runs `statement` in the next commit of the writer of `key`; the rows it changed, once
    /// committed. Past the timeout the caller is told the database is unavailable; the write
    /// may still commit later, which a retry survives (a step names its revision, an insert
    /// its id).
    pub async fn execute(
        &self,
        key: Uuid,
        priority: Priority,
        statement: Statement,
    ) -> Result<u64, StoreError> {
        let lane = (key.as_u128() % self.queues.len().max(1) as u128) as usize;
        let (first, steps) = &self.queues[lane];
        let queue = match priority {
            Priority::First => first,
            Priority::Step => steps,
        };
        let (reply, answer) = oneshot::channel();
        let committed = async {
            queue
                .send(Job { statement, reply })
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        tokio::time::timeout(self.timeout, committed)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(DbErr::Custom(format!(
                    "no commit within {} ms",
                    self.timeout.as_millis()
                ))))
            })
    }
}

type Queues = (mpsc::Sender<Job>, mpsc::Sender<Job>);

/// A writer's two queues: the senders, and the receivers of new incidents and of steps.
fn queues() -> (Queues, mpsc::Receiver<Job>, mpsc::Receiver<Job>) {
    let (first, first_rx) = mpsc::channel(QUEUE_MAX);
    let (steps, steps_rx) = mpsc::channel(QUEUE_MAX);
    ((first, steps), first_rx, steps_rx)
}

fn stopped() -> StoreError {
    StoreError::Unavailable(DbErr::Custom("the database writer has stopped".into()))
}

/// A writer's connection: how it runs a batch in one transaction, and one write alone.
trait Conn {
    async fn together(&mut self, batch: &[Job]) -> Result<Vec<u64>, Failed>;
    async fn alone(&mut self, statement: Statement) -> Result<u64, StoreError>;
}

/// A connection of a pool (PostgreSQL; SQLite in memory, which lives in its pool).
struct Pooled(DatabaseConnection);

impl Conn for Pooled {
    async fn together(&mut self, batch: &[Job]) -> Result<Vec<u64>, Failed> {
        let txn = self.0.begin().await.map_err(Failed::before_commit)?;
        let mut done = Vec::with_capacity(batch.len());
        for job in batch {
            let result = txn
                .execute_raw(job.statement.clone())
                .await
                .map_err(Failed::before_commit)?;
            done.push(result.rows_affected());
        }
        txn.commit()
            .await
            .map_err(|e| Failed::Commit(StoreError::from(e)))?;
        Ok(done)
    }

    async fn alone(&mut self, statement: Statement) -> Result<u64, StoreError> {
        Ok(self.0.execute_raw(statement).await?.rows_affected())
    }
}

/// The SQLite writer's own connection, on its own thread: the calls block that thread only.
struct Own(rusqlite::Connection);

impl Conn for Own {
    async fn together(&mut self, batch: &[Job]) -> Result<Vec<u64>, Failed> {
        use super::sqlite::{execute, outside_transaction, run};
        outside_transaction(&self.0).map_err(Failed::Lost)?;
        // `IMMEDIATE`: the write lock is taken (or waited for, up to the busy timeout) at the
        // start, not found taken halfway through.
        run(&self.0, "BEGIN IMMEDIATE").map_err(Failed::before)?;
        let done: Result<Vec<u64>, StoreError> = batch
            .iter()
            .map(|job| execute(&self.0, &job.statement))
            .collect();
        match done {
            Ok(done) => {
                run(&self.0, "COMMIT").map_err(|e| {
                    // A failed COMMIT may leave the transaction open: end it, so that the
                    // next batch does not begin inside it.
                    let _ = run(&self.0, "ROLLBACK");
                    Failed::Commit(e)
                })?;
                Ok(done)
            }
            Err(e) => {
                let _ = run(&self.0, "ROLLBACK");
                Err(Failed::before(e))
            }
        }
    }

    async fn alone(&mut self, statement: Statement) -> Result<u64, StoreError> {
        super::sqlite::outside_transaction(&self.0)?;
        super::sqlite::execute(&self.0, &statement)
    }
}

async fn run(
    mut conn: impl Conn,
    mut first: mpsc::Receiver<Job>,
    mut steps: mpsc::Receiver<Job>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let (mut first_open, mut steps_open, mut stopping) = (true, true, false);
    while first_open || steps_open {
        let job = tokio::select! {
            biased;
            // No more writes are taken; what waits is still committed, then the queues end.
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                first.close();
                steps.close();
                None
            }
            job = first.recv(), if first_open => job.or_else(|| {
                first_open = false;
                None
            }),
            job = steps.recv(), if steps_open => job.or_else(|| {
                steps_open = false;
                None
            }),
        };
        batch.extend(job);
        // Whatever else waits joins this commit, new incidents before steps.
        while batch.len() < BATCH_MAX
            && let Ok(job) = first.try_recv()
        {
            batch.push(job);
        }
        while batch.len() < BATCH_MAX
            && let Ok(job) = steps.try_recv()
        {
            batch.push(job);
        }
        if !batch.is_empty() {
            commit(&mut conn, &mut batch).await;
        }
    }
}

/// Commits `batch` (emptying it) and answers every write of it.
async fn commit(conn: &mut impl Conn, batch: &mut Vec<Job>) {
    if batch.len() > 1 {
        let mut attempt = 1;
        let failed = loop {
            match conn.together(batch).await {
                Ok(done) => {
                    for (job, rows) in batch.drain(..).zip(done) {
                        let _ = job.reply.send(Ok(rows));
                    }
                    return;
                }
                // The connection was lost (or the database busy) before the commit: nothing
                // was written, so the batch is tried again at once (a database that drops
                // connections is not a reason to fail hundreds of callers).
                Err(Failed::Lost(_)) if attempt < BATCH_ATTEMPTS_MAX => attempt += 1,
                Err(failed) => break failed,
            }
        };
        match failed {
            // One statement was refused (a constraint, a value): nothing was committed; each
            // write is tried alone, so that only the bad one fails.
            Failed::Refused(e) => {
                tracing::debug!(error = %e, writes = batch.len(), "a group commit failed; writing each alone");
            }
            // The database went away, or the commit's answer was lost: whether it committed
            // is unknown, so nothing is tried again here. Every caller is told the database
            // is unavailable and retries, and its retry is safe: a step names the revision it
            // read (one that committed after all is refused as a conflict and the actor reads
            // the row again), an insert finds its own row by its id.
            Failed::Lost(e) | Failed::Commit(e) => {
                let why = format!("the group commit did not complete: {e}");
                for job in batch.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Unavailable(DbErr::Custom(why.clone()))));
                }
                return;
            }
        }
    }
    let mut given_up: Option<String> = None;
    for job in batch.drain(..) {
        // After a failure that is not this write's own (the database unreachable, a
        // statement timeout), the rest are answered at once (their callers retry): each
        // would otherwise wait out the same timeout alone.
        if let Some(why) = &given_up {
            let _ = job
                .reply
                .send(Err(StoreError::Unavailable(DbErr::Custom(why.clone()))));
            continue;
        }
        let result = conn.alone(job.statement).await;
        if let Err(e) = &result
            && !matches!(e, StoreError::Duplicate(_))
        {
            given_up = Some(format!("an earlier write of the batch failed: {e}"));
        }
        let _ = job.reply.send(result);
    }
}

/// Why a group commit failed.
enum Failed {
    /// A statement was refused before the commit (a constraint, a value): nothing was
    /// written, and the statement would be refused again.
    Refused(StoreError),
    /// The connection was lost before the commit: nothing was written.
    Lost(StoreError),
    /// At the commit: whether it was written is unknown.
    Commit(StoreError),
}

impl Failed {
    /// A failure before the commit, by whether it may pass on another try.
    fn before(e: StoreError) -> Failed {
        if e.is_retryable() {
            Failed::Lost(e)
        } else {
            Failed::Refused(e)
        }
    }

    fn before_commit(e: DbErr) -> Failed {
        Failed::before(StoreError::from(e))
    }
}
