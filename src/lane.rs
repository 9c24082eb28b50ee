//! Lanes: small runtimes, each on a thread of its own, for work that must not queue behind
//! the thousands of incident actors that keep the main runtime busy under a storm.
//!
//! A ready task on a tokio runtime waits for every task ahead of it in the run queue; under
//! a storm that queue holds the steps of every live incident, and a `POST` (or a database
//! writer waiting for its connection's answer) waits behind them all. On a thread of its own the same task is the operating system's to schedule, and a
//! thread that mostly sleeps is woken ahead of busy ones.
//!
//! The agent has one, the front lane ([`spawn_front`]): the API's connections and
//! PostgreSQL's writers, the work a caller waits on (SQLite's writer has a thread of its
//! own, `store::writer`). What runs there waits on IO and hands work
//! on, so one thread (a current-thread runtime) is enough. It lives as long as the process
//! (started on first use); its tasks end with what owns them (the server at shutdown, a
//! store's writers when the store is dropped).

use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The name of the front lane's thread (as `top -H` and `perf` show it).
pub const FRONT: &str = "sre-front";

/// A current-thread runtime on a thread of its own; stopped (its tasks dropped) when the
/// `Lane` is dropped.
#[derive(Debug)]
pub struct Lane {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl Lane {
    /// Starts a lane on a new thread called `name`.
    pub fn start(name: &str) -> std::io::Result<Lane> {
        // The runtime is built on its thread, and never dropped anywhere else: a runtime
        // dropped by a task (as a closure that failed to start would drop it) panics.
        let (stop, stopped) = oneshot::channel::<()>();
        let (started, handle) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = started.send(Ok(runtime.handle().clone()));
                        let _ = runtime.block_on(stopped);
                    }
                    Err(error) => {
                        let _ = started.send(Err(error));
                    }
                }
            })?;
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("the lane's thread ended before it started"))??;
        Ok(Lane {
            handle,
            _stop: stop,
        })
    }

    /// Runs `task` on this lane.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }
}

/// Runs `task` on the front lane; on the caller's runtime if the lane cannot be started
/// (no thread to be had), which is slower under a storm but not wrong.
pub fn spawn_front<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static LANE: OnceLock<Option<Lane>> = OnceLock::new();
    let lane = LANE.get_or_init(|| {
        Lane::start(FRONT)
            .map_err(|error| tracing::warn!(%error, "cannot start the front lane"))
            .ok()
    });
    match lane {
        Some(lane) => lane.spawn(task),
        None => tokio::spawn(task),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_runs_on_its_lanes_thread() {
        let thread = || std::thread::current().name().map(str::to_owned);
        let name = spawn_front(async move { thread() }).await.unwrap();
        assert_eq!(name.as_deref(), Some(FRONT));
        let lane = Lane::start("a-lane").unwrap();
        let name = lane.spawn(async move { thread() }).await.unwrap();
        assert_eq!(name.as_deref(), Some("a-lane"));
    }

    #[tokio::test]
    async fn a_dropped_lane_drops_its_tasks() {
        let lane = Lane::start("a-lane").unwrap();
        let (_keep, never) = oneshot::channel::<()>();
        let task = lane.spawn(never);
        drop(lane);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the task ends with its lane");
        assert!(ended.unwrap_err().is_cancelled());
    }
}
