//! Group commit: the incident actors' step writes go through writer tasks, each with a
//! connection of its own, that commit every write waiting at that moment in one transaction.
//! Under a storm one commit carries many incidents' steps (one WAL append on SQLite, one
//! fsync on PostgreSQL); when it is quiet a write goes alone, with no added wait. A caller is
//! answered after the commit, so a step is still durable before the next one starts.
//!
//! SQLite has one writer (its write lock admits one anyway, and one connection keeps its
//! page cache warm instead of reloading what fifteen others changed); PostgreSQL has a few,
//! chosen by the incident's id so one incident's writes stay in order. The read pool never
//! waits behind them.
//!
//! A statement that fails inside a batch (a constraint, a value the database refuses) must
//! not fail its neighbours: the batch is rolled back and each write is retried alone, so
//! each caller gets its own answer.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, ExecResult, Statement, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::StoreError;

/// Most writes committed in one transaction.
pub const BATCH_MAX: usize = 256;
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
}

impl Writers {
    /// Starts one writer task per connection (at least one).
    pub fn start(connections: Vec<DatabaseConnection>) -> Writers {
        let queues = connections
            .into_iter()
            .map(|db| {
                let (first, first_rx) = mpsc::channel(QUEUE_MAX);
                let (steps, steps_rx) = mpsc::channel(QUEUE_MAX);
                tokio::spawn(run(db, first_rx, steps_rx));
                (first, steps)
            })
            .collect();
        Writers { queues }
    }

    /// Runs `statement` in the next commit of the writer of `key`; the rows it changed, once
    /// committed.
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
        queue
            .send(Job { statement, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable(DbErr::Custom("the database writer has stopped".into()))
}

async fn run(
    db: DatabaseConnection,
    mut first: mpsc::Receiver<Job>,
    mut steps: mpsc::Receiver<Job>,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let (mut first_open, mut steps_open) = (true, true);
    while first_open || steps_open {
        let job = tokio::select! {
            biased;
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
            commit(&db, &mut batch).await;
        }
    }
}

/// Commits `batch` (emptying it) and answers every write of it.
async fn commit(db: &DatabaseConnection, batch: &mut Vec<Job>) {
    if batch.len() > 1 {
        match together(db, batch).await.map_err(StoreError::from) {
            Ok(done) => {
                for (job, rows) in batch.drain(..).zip(done) {
                    let _ = job.reply.send(Ok(rows));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, writes = batch.len(), "a group commit failed; writing each alone");
            }
        }
    }
    let mut unreachable: Option<String> = None;
    for job in batch.drain(..) {
        // Once the database is seen unreachable, the rest of the batch is answered so at
        // once (their callers retry): each would otherwise wait out its own connect timeout.
        if let Some(why) = &unreachable {
            let _ = job
                .reply
                .send(Err(StoreError::Unavailable(DbErr::Custom(why.clone()))));
            continue;
        }
        let result = db
            .execute_raw(job.statement)
            .await
            .map(|r| r.rows_affected())
            .map_err(StoreError::from);
        if let Err(e @ StoreError::Unavailable(_)) = &result {
            unreachable = Some(e.to_string());
        }
        let _ = job.reply.send(result);
    }
}

async fn together(db: &DatabaseConnection, batch: &[Job]) -> Result<Vec<u64>, DbErr> {
    let txn = db.begin().await?;
    let mut done = Vec::with_capacity(batch.len());
    for job in batch {
        let result: ExecResult = txn.execute_raw(job.statement.clone()).await?;
        done.push(result.rows_affected());
    }
    txn.commit().await?;
    Ok(done)
}
