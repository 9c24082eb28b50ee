//! `IncidentSupervisor`: spawns one `IncidentActor` per incident under the registered name
//! `incident/{uuid}` (so a second one cannot exist), restarts one that dies before its
//! incident is finished (a bounded number of times, with backoff), then marks the incident
//! `failed` with the reason. Other incidents are never affected: the supervision handler is
//! overridden and never stops the supervisor. On start, and every `adopt_interval_ms`, it
//! adopts the unfinished incidents in the database (at most `live_max` actors at once; the
//! rest wait in the table for the next scan).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use serde_json::json;
use uuid::Uuid;

use super::AgentCtx;
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
    /// How often unfinished incidents in the database are adopted.
    pub adopt_interval_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            restarts_max: 3,
            restart_backoff_ms: 200,
            live_max: 1_000,
            adopt_interval_ms: 5_000,
        }
    }
}

pub enum SupervisorMsg {
    /// A new incident was committed: handle it.
    Spawn(Uuid),
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
}

pub struct SupervisorState {
    ctx: Arc<AgentCtx>,
    config: SupervisorConfig,
    live: HashMap<ActorId, Uuid>,
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
            live: HashMap::new(),
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
            SupervisorMsg::Spawn(id) | SupervisorMsg::Respawn(id) => {
                state.spawn(&myself, id).await;
            }
            SupervisorMsg::Adopt => {
                let room = state.config.live_max.saturating_sub(state.live.len());
                if room == 0 {
                    return Ok(());
                }
                // Ask for more than the room: some of them are already live.
                let want = (room + state.live.len()) as u64;
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    state.ctx.store.unfinished(want),
                )
                .await
                {
                    Ok(Ok(ids)) => {
                        let live: std::collections::HashSet<Uuid> =
                            state.live.values().copied().collect();
                        for id in ids.into_iter().filter(|id| !live.contains(id)) {
                            if state.live.len() >= state.config.live_max {
                                break;
                            }
                            if state.restarts.contains_key(&id) {
                                continue; // waiting for its backoff
                            }
                            state.spawn(&myself, id).await;
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
                    }
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
        Ok(())
    }
}

impl SupervisorState {
    async fn spawn(&mut self, myself: &ActorRef<SupervisorMsg>, id: Uuid) {
        if self.ctx.draining.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::debug!(incident_id = %id, "the agent is stopping; the next start adopts it");
            return;
        }
        if self.live.len() >= self.config.live_max {
            tracing::debug!(incident_id = %id, "at the live incident cap; the next scan adopts it");
            return;
        }
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
            Err(ractor::SpawnErr::ActorAlreadyRegistered(_)) => {}
            Err(e) => {
                tracing::error!(incident_id = %id, error = %e, "cannot start the incident actor")
            }
        }
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
            tokio::spawn(async move {
                let reason = format!("its actor died {} times; last: {why}", restarts + 1);
                if let Err(e) = give_up(&ctx, id, reason).await {
                    tracing::error!(incident_id = %id, error = %e, "cannot mark the incident failed; the next adoption retries it");
                }
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
    let mut incident = ctx
        .metrics
        .db_write_timed("save", store.save(&incident))
        .await?;
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
    ctx.metrics
        .db_write_timed("save", store.save(&incident))
        .await?;
    Ok(())
}
