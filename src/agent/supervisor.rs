//! `IncidentSupervisor`: spawns one `IncidentActor` per incident under the registered name
//! `incident/{uuid}` (so a second one cannot exist), restarts one that dies before its
//! incident is finished (a bounded number of times, with backoff), then marks the incident
//! `failed` with the reason. Other incidents are never affected: the supervision handler is
//! overridden and never stops the supervisor.
//!
//! Every incident it holds holds a [`Slot`] of the agent's [`Admission`] (taken by the API
//! before the commit, or here): at most `live_max` have an actor, the others wait in a FIFO
//! queue, and the next one starts as soon as an actor ends. The queue is bounded by the
//! admission's capacity, so a storm never grows it without bound. On start, and every
//! `adopt_interval_ms`, it adopts the unfinished incidents in the database when there is
//! room (after a restart of the agent, or one it could not take when it was full).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use serde_json::json;
use uuid::Uuid;

use super::AgentCtx;
use super::admission::{Admission, Slot};
use super::incident::{DONE, DRAINED, IncidentActor, IncidentArgs, action_result};
use crate::core::page;
use crate::incident::{ActionStatus, Status, TimelineEntry, TimelineKind};
use crate::store::StoreError;

/// Bounds of supervision.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// Restarts of one incident's actor before the incident is marked failed.
    pub restarts_max: u32,
    /// Wait before the first restart; doubles with each further one.
    pub restart_backoff_ms: u64,
    /// Most incident actors alive at once (admission control for storms).
    pub live_max: usize,
    /// Most incidents admitted and waiting for a live actor, beyond `live_max`.
    pub queue_max: usize,
    /// How often unfinished incidents in the database are adopted.
    pub adopt_interval_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            restarts_max: 3,
            restart_backoff_ms: 200,
            live_max: 1_000,
            queue_max: 10_000,
            adopt_interval_ms: 5_000,
        }
    }
}

pub enum SupervisorMsg {
    /// An incident was committed or changed: handle it. A new incident comes with the slot
    /// the API took for it; without one (alert news, a human's decision) the supervisor
    /// takes one, or leaves the incident to the next scan when the agent is full.
    Spawn(Uuid, Option<Slot>),
    /// Adopt every unfinished incident not already handled.
    Adopt,
    /// Internal: restart the actor of an incident after its backoff.
    Respawn(Uuid),
    /// How many incident actors are alive.
    Live(RpcReplyPort<usize>),
}

pub struct SupervisorArgs {
    pub ctx: Arc<AgentCtx>,
    pub config: SupervisorConfig,
    pub admission: Arc<Admission>,
}

pub struct SupervisorState {
    ctx: Arc<AgentCtx>,
    config: SupervisorConfig,
    admission: Arc<Admission>,
    live: HashMap<ActorId, Uuid>,
    /// Every incident held: live, waiting, or waiting out a restart's backoff, with its slot.
    held: HashMap<Uuid, Slot>,
    /// Incidents held without an actor yet, oldest first.
    waiting: VecDeque<Uuid>,
    /// Restarts so far, per incident whose actor has died unfinished.
    restarts: HashMap<Uuid, u32>,
}

pub struct IncidentSupervisor;

pub fn actor_name(id: Uuid) -> String {
    format!("incident/{id}")
}

impl Actor for IncidentSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(SupervisorMsg::Adopt)?;
        myself.send_interval(
            Duration::from_millis(args.config.adopt_interval_ms.max(100)),
            || SupervisorMsg::Adopt,
        );
        Ok(SupervisorState {
            ctx: args.ctx,
            config: args.config,
            admission: args.admission,
            live: HashMap::new(),
            held: HashMap::new(),
            waiting: VecDeque::new(),
            restarts: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Spawn(id, slot) => {
                state.admit(&myself, id, slot).await;
            }
            SupervisorMsg::Respawn(id) => {
                // Still held (its slot kept through the backoff): it goes first.
                if state.held.contains_key(&id) {
                    if state.live.len() < state.config.live_max {
                        state.start(&myself, id).await;
                    } else {
                        state.waiting.push_front(id);
                    }
                    state.gauges();
                }
            }
            SupervisorMsg::Adopt => {
                // The scan fills free live places only; what waits in the queue goes first.
                let room = state
                    .config
                    .live_max
                    .saturating_sub(state.live.len() + state.waiting.len());
                if room == 0 || state.ctx.is_draining() {
                    return Ok(());
                }
                // Ask for more than the room: some of them are already held.
                let want = (room + state.held.len()) as u64;
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    state.ctx.store.unfinished(want),
                )
                .await
                {
                    Ok(Ok(ids)) => {
                        for id in ids {
                            if state.live.len() >= state.config.live_max {
                                break;
                            }
                            if state.held.contains_key(&id) {
                                continue; // live, waiting, or waiting out its backoff
                            }
                            // Slots like any other: none free, none adopted.
                            let Some(slot) = state.admission.reserve() else {
                                break;
                            };
                            state.admit(&myself, id, Some(slot)).await;
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "adopting unfinished incidents failed")
                    }
                    Err(_) => tracing::warn!("adopting unfinished incidents timed out"),
                }
            }
            SupervisorMsg::Live(reply) => {
                let _ = reply.send(state.live.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if matches!(reason.as_deref(), Some(DONE | DRAINED)) {
                    if let Some(id) = state.live.remove(&cell.get_id()) {
                        state.restarts.remove(&id);
                        state.held.remove(&id);
                    }
                    state.next(&myself).await;
                    return Ok(());
                }
                (
                    cell,
                    format!("stopped: {}", reason.unwrap_or_else(|| "no reason".into())),
                )
            }
            SupervisionEvent::ActorFailed(cell, error) => (cell, format!("crashed: {error}")),
            _ => return Ok(()),
        };
        state.died(&myself, cell, why);
        state.next(&myself).await;
        Ok(())
    }
}

impl SupervisorState {
    /// Holds incident `id` with `slot` (or one taken now): starts its actor when a live
    /// place is free, else queues it. One already held keeps the slot it has; the new one
    /// is given back.
    async fn admit(&mut self, myself: &ActorRef<SupervisorMsg>, id: Uuid, slot: Option<Slot>) {
        if self.ctx.is_draining() {
            tracing::debug!(incident_id = %id, "the agent is stopping; the next start adopts it");
            return;
        }
        if self.held.contains_key(&id) {
            return; // live, waiting, or waiting out its backoff: it will see the news
        }
        let Some(slot) = slot.or_else(|| self.admission.reserve()) else {
            tracing::debug!(incident_id = %id, "the agent is full; the next scan adopts it");
            return;
        };
        self.held.insert(id, slot);
        if self.live.len() < self.config.live_max {
            self.start(myself, id).await;
        } else {
            self.waiting.push_back(id);
        }
        self.gauges();
    }

    /// Starts the actor of a held incident; gives its slot back when it cannot start.
    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, id: Uuid) {
        let args = IncidentArgs {
            id,
            ctx: self.ctx.clone(),
        };
        match Actor::spawn_linked(Some(actor_name(id)), IncidentActor, args, myself.get_cell())
            .await
        {
            Ok((actor, _)) => {
                self.live.insert(actor.get_id(), id);
            }
            Err(ractor::SpawnErr::ActorAlreadyRegistered(_)) => {
                // An actor of it is still alive (its end not heard yet): it is handled.
                self.held.remove(&id);
            }
            Err(e) => {
                // Unfinished in the table: the next scan tries again.
                tracing::error!(incident_id = %id, error = %e, "cannot start the incident actor");
                self.held.remove(&id);
            }
        }
    }

    /// Starts waiting incidents while live places are free; when stopping, lets them go
    /// (unfinished in the table, the next start adopts them).
    async fn next(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if self.ctx.is_draining() {
            for id in std::mem::take(&mut self.waiting) {
                self.held.remove(&id);
            }
        }
        while self.live.len() < self.config.live_max
            && let Some(id) = self.waiting.pop_front()
        {
            self.start(myself, id).await;
        }
        self.gauges();
    }

    fn gauges(&self) {
        let m = &self.ctx.metrics;
        m.incidents_live.set(self.live.len() as i64);
        m.incidents_queued.set(self.waiting.len() as i64);
    }

    fn died(&mut self, myself: &ActorRef<SupervisorMsg>, cell: ActorCell, why: String) {
        let Some(id) = self.live.remove(&cell.get_id()) else {
            return;
        };
        let n = self.restarts.entry(id).or_insert(0);
        *n += 1;
        if *n > self.config.restarts_max {
            let restarts = *n - 1;
            self.restarts.remove(&id);
            tracing::error!(incident_id = %id, restarts, reason = %why, "incident actor keeps dying; failing the incident");
            let ctx = self.ctx.clone();
            // Its slot is given back once the incident is marked failed (or that failed).
            let slot = self.held.remove(&id);
            tokio::spawn(async move {
                let reason = format!("its actor died {} times; last: {why}", restarts + 1);
                if let Err(e) = give_up(&ctx, id, reason).await {
                    tracing::error!(incident_id = %id, error = %e, "cannot mark the incident failed; the next adoption retries it");
                }
                drop(slot);
            });
            return;
        }
        let wait_ms = self
            .config
            .restart_backoff_ms
            .saturating_mul(1 << (*n - 1).min(16));
        tracing::warn!(incident_id = %id, restart = *n, wait_ms, reason = %why, "incident actor died; restarting it");
        myself.send_after(Duration::from_millis(wait_ms), move || {
            SupervisorMsg::Respawn(id)
        });
    }
}

/// Marks an incident `failed` (when not already finished), with the reason in its timeline,
/// and tells a human: a page written from the record, itself recorded as an action
/// (`started` with its key before the call, the result after). The supervisor writes the
/// row only once no actor of it is alive.
async fn give_up(ctx: &AgentCtx, id: Uuid, reason: String) -> Result<(), StoreError> {
    let store = &ctx.store;
    let Some(mut incident) = store.get_incident(id).await? else {
        return Ok(());
    };
    if incident.status.is_terminal() {
        return Ok(());
    }
    let from = incident.status;
    let at = crate::incident::now();
    incident.status = Status::Failed;
    // The alerts as read with the row are the ones this write takes into account; one that
    // joins before it commits makes the write fail, and the next adoption tries again.
    incident.alerts_seen_rev = incident.alerts_rev;
    incident.metadata.timeline.push(TimelineEntry {
        at,
        trace_id: incident.trace_id.clone(),
        kind: TimelineKind::Status,
        message: format!("{from} → failed: {reason}"),
        detail: json!({ "from": from, "to": Status::Failed, "reason": reason }),
    });
    // The page is composed before its own record exists: it says what the agent did.
    let notice = incident.own_page(
        &page::compose(&incident),
        format!("the agent tells a human when it gives up on an incident ({reason})"),
        ActionStatus::Started,
        at,
    );
    let (seq, args) = (
        notice.seq,
        notice.args.as_object().cloned().unwrap_or_default(),
    );
    incident.actions_taken.push(notice);
    ctx.metrics
        .db_write_timed("save", store.save(&incident))
        .await?
        .apply(&mut incident);
    ctx.metrics.incident_entered(Status::Failed);
    let called = ctx
        .tools
        .call("send-notification", args, &incident.trace_id.clone())
        .await;
    let (status, result) = action_result(&called.outcome);
    ctx.metrics.page(status == ActionStatus::Succeeded);
    if let Some(a) = incident.actions_taken.last_mut() {
        a.status = status;
        a.result = Some(result);
        a.finished_at = Some(crate::incident::now());
    }
    incident.metadata.timeline.push(TimelineEntry {
        at: crate::incident::now(),
        trace_id: incident.trace_id.clone(),
        kind: TimelineKind::ToolCall,
        message: format!(
            "send-notification (action #{seq}, {}): a human is told the agent gave up",
            status.as_str()
        ),
        detail: json!({ "seq": seq, "tool": "send-notification", "outcome": status.as_str() }),
    });
    let _ = ctx
        .metrics
        .db_write_timed("save", store.save(&incident))
        .await?;
    Ok(())
}
