//! `IncidentActor`: one per incident, registered as `incident/{uuid}`, the only writer of
//! its row. It owns the state machine (`new → analyzing → remediating → resolved`, or
//! `escalated`, or `failed`) and the trace id. Each message does one step and persists it
//! before the next is sent:
//!
//! 1. `new`: move to `analyzing`.
//! 2. No analysis yet: one reasoner turn, asked for without waiting (the answer comes back
//!    as a message, `Decided`). Read-only calls run; mutating calls are deferred;
//!    unknown tools and unreadable arguments are refused back to the reasoner. The turn and
//!    each call (with a bounded excerpt and its duration) go into the timeline.
//! 3. The conclusion: the agent gathers the policy's facts itself (for the incident's own
//!    alert and service), puts every proposed action through `workflow::plan`, and writes
//!    the RCA and every action (`planned`, `proposed` or `denied`, with its reason).
//! 4. One action at a time: `started` is written (with its idempotency key) before the
//!    call, the result after; a restart is then verified through `get-metrics`. An action
//!    found `started` (the last actor died mid-call) is reconciled against the world.
//! 5. `workflow::finish`: resolved, or escalated with a notice to a human.
//!
//! The transcript lives in memory only: a restarted actor without an analysis re-runs the
//! (read-only) investigation; once the analysis is written it resumes from the actions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use mcp::catalog::{AlertMapping, Runbook};
use mcp::fleet::model::{LogPage, ServiceMetrics};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Map, Value, json};
use tracing::Instrument;
use uuid::Uuid;

use super::AgentCtx;
use super::tools::Called;
use crate::core::evidence;
use crate::core::policy::{self, Decision, WindowRestart};
use crate::core::workflow::{self, AlertsNow, Reconcile, Verification};
use crate::core::{approval, diagnosis, findings, page, text};
use crate::incident::{
    ActionDecision, ActionRecord, ActionStatus, Incident, Proposal, RootCauseAnalysis, Status,
    TimelineEntry, TimelineKind,
};
use crate::reasoner::{
    Arguments, CALLS_PER_TURN_MAX, Call, Conclusion, IncidentBrief, JsonText, Outcome, Reply,
    Server, Step, Transcript, Turn, is_mutating, repeated, string_args,
};

use super::llm::{LlmMsg, ReplyTo};

/// Why an actor stopped on purpose: its incident reached a terminal state (or is gone).
pub const DONE: &str = "done";

/// Why an actor stopped on purpose with its incident unfinished: the agent is stopping, and
/// the next start adopts the incident where this step left it.
pub const DRAINED: &str = "drained";

/// Turns in a row that only repeat earlier calls before the investigation is stopped: a
/// reasoner going round in circles learns nothing new from another turn.
pub const REPEATING_TURNS_MAX: usize = 3;

/// The message of a planned notification until it is sent: the page is written from the
/// decisions at that moment ([`page::compose`]).
pub const PAGE_PENDING: &str = "(written by the agent from its decisions when it is sent)";

/// A mutating call's outcome as its action record holds it: the status and the result.
pub(super) fn action_result(outcome: &Outcome) -> (ActionStatus, Value) {
    match outcome {
        Outcome::Ok { structured } => (ActionStatus::Succeeded, structured.value()),
        Outcome::Repeated { .. } => action_result(outcome.settled()),
        Outcome::Error { message }
        | Outcome::NotRun { message }
        | Outcome::Deferred { message } => (ActionStatus::Failed, json!({ "error": message })),
    }
}

/// Why a proposal lapses when the incident's alerts resolved without it.
const LAPSED_ON_ITS_OWN: &str =
    "every alert of the incident resolved on its own while it waited for a human";

/// How long the reads behind a plan count as fresh for running its restarts without
/// reading the world again.
const PLAN_FRESH_MS: u64 = 5_000;

/// How old a read of the reasoner's turns may be for the conclusion to take it as a fact of
/// its plan instead of reading again (the rules' diagnostics were read a moment before; a
/// model's turn usually takes longer). The plan counts as read when its oldest read was.
const READ_REUSE_AGE_MAX: Duration = Duration::from_secs(2);

/// What reconciliation saw of a restart found `started`.
enum Seen {
    /// A new instance of the pod: the restart happened.
    Done(String),
    /// The same instance: it did not.
    NotDone,
    /// The world could not be observed: the restart is not repeated blindly.
    Unknown(String),
}

/// What the agent read for itself before the policy decides.
#[derive(Default)]
struct Gathered {
    mapping: Option<AlertMapping>,
    runbook: Option<Runbook>,
    metrics: Option<ServiceMetrics>,
    logs: Option<LogPage>,
    /// When the oldest of the metrics and logs was read (by the agent's clock).
    read_at: Option<Instant>,
    /// The turn (from 1) whose reads were taken instead of reading again, if any.
    reused_turn: Option<usize>,
}

/// Whether [`IncidentState::gather`] may take reads of the reasoner's recent turns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Yes, when they are fresh enough (the conclusion).
    RecentTurns,
    /// No: everything is read now (a re-check before a restart).
    Nothing,
}

/// Test seam at the one dangerous boundary: around a mutating call, after its `started`
/// record is committed. The default does nothing.
pub trait IncidentHooks: Send + Sync + 'static {
    fn before_mutation(&self, _incident: Uuid, _action: &ActionRecord) -> HookFuture {
        Box::pin(async {})
    }
    fn after_mutation(&self, _incident: Uuid, _action: &ActionRecord) -> HookFuture {
        Box::pin(async {})
    }
}

pub type HookFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// No hooks.
pub struct NoHooks;
impl IncidentHooks for NoHooks {}

/// Bounds on one incident's work.
#[derive(Clone, Debug)]
pub struct IncidentConfig {
    /// Most reasoner turns before the investigation is cut short (and escalated).
    pub steps_max: u32,
    /// Most tokens the reasoner may report using for one investigation (in one actor's
    /// life) before it is cut short like the step budget (and escalated).
    pub tokens_per_incident_max: u64,
    /// Attempts at one reasoner step when the model is unavailable.
    pub reasoner_attempts_max: u32,
    /// Wait between those attempts, doubled each time.
    pub reasoner_retry_backoff_ms: u64,
    /// Longest one reasoner step may take, queueing for the model included: past it the
    /// `LlmActor` answers that the model is unavailable.
    pub reasoner_step_timeout_ms: u64,
    /// Checks of a restarted pod before it counts as not healthy.
    pub verify_attempts_max: u32,
    /// Wait between those checks.
    pub verify_interval_ms: u64,
    /// Bytes of a tool result quoted in the timeline.
    pub excerpt_bytes_max: usize,
    /// How long one database read or write keeps being retried while the database is
    /// unreachable (a restart, a failover, dropped connections) before the step fails and
    /// the actor with it.
    pub save_retry_deadline_ms: u64,
    /// Longest wait between those retries (the first is 100 ms, doubling).
    pub save_retry_backoff_max_ms: u64,
    /// Farthest the time of a `get-metrics` snapshot may be from the agent's clock for it to
    /// count as the world now (a lagging cache, a snapshot dated ahead, is no evidence).
    pub observation_skew_max_ms: u64,
    /// How long a proposal can be approved after it is made.
    pub proposal_ttl_secs: u64,
    /// How long an incident whose fix verified waits for its alerts to resolve before it
    /// escalates (the alert still fires: the fix may not have worked).
    pub alert_resolve_wait_secs: u64,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            steps_max: 16,
            tokens_per_incident_max: 200_000,
            reasoner_attempts_max: 3,
            reasoner_retry_backoff_ms: 500,
            reasoner_step_timeout_ms: 120_000,
            verify_attempts_max: 5,
            verify_interval_ms: 1_000,
            excerpt_bytes_max: 1_024,
            save_retry_deadline_ms: 30_000,
            save_retry_backoff_max_ms: 2_000,
            observation_skew_max_ms: 300_000,
            proposal_ttl_secs: 3_600,
            alert_resolve_wait_secs: 600,
        }
    }
}

pub enum IncidentMsg {
    /// Do the next step.
    Advance,
    /// The reasoner's answer to the turn this actor asked for (`asked` names the request).
    /// The actor does not wait for it inside a step: while the model thinks, an incident
    /// is a row, its transcript and an idle mailbox.
    Decided { asked: u64, reply: Box<Reply> },
}

pub struct IncidentArgs {
    pub id: Uuid,
    pub ctx: Arc<AgentCtx>,
}

pub struct IncidentState {
    id: Uuid,
    ctx: Arc<AgentCtx>,
    /// This actor, for the reasoner's answer to come back to.
    myself: ActorRef<IncidentMsg>,
    /// The reasoner turn asked for and not answered yet.
    awaiting: Option<Asked>,
    /// Requests to the reasoner so far (names each, so a late answer is told apart).
    asked: u64,
    incident: Option<Incident>,
    /// Shared with the reasoner's task for a turn, not copied (`Arc::make_mut` after).
    transcript: Option<Arc<Transcript>>,
    /// When this actor read the world for the plan it wrote. A restart run soon after is
    /// decided on reads that are still fresh; one planned by an earlier actor, or longer
    /// ago, is put to the policy again on new reads before its call.
    planned_at: Option<Instant>,
    /// Status moves of the step running, counted once the step has written them.
    entered: Vec<(Status, Status)>,
    /// Counts this investigation in flight until its conclusion is written.
    investigating: Option<crate::metrics::InFlight>,
    /// Tokens the reasoner reported for this investigation so far (in memory, like the
    /// transcript).
    tokens_used: u64,
    /// When each turn of the transcript began its calls, by the agent's clock (the reads
    /// of a turn are at most this old): what [`IncidentState::recent`] reuses.
    turns_at: Vec<Instant>,
    /// `incident` span with the trace id: every log line of this incident runs in it.
    span: tracing::Span,
}

pub struct IncidentActor;

impl Actor for IncidentActor {
    type Msg = IncidentMsg;
    type State = IncidentState;
    type Arguments = IncidentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: IncidentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(IncidentMsg::Advance)?;
        Ok(IncidentState {
            span: tracing::info_span!("incident", incident_id = %args.id, trace_id = tracing::field::Empty),
            id: args.id,
            ctx: args.ctx,
            myself: myself.clone(),
            awaiting: None,
            asked: 0,
            incident: None,
            transcript: None,
            planned_at: None,
            entered: Vec::new(),
            investigating: None,
            tokens_used: 0,
            turns_at: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let span = state.span.clone();
        if let IncidentMsg::Decided { asked, .. } = &message
            && state.awaiting.as_ref().map(|a| a.seq) != Some(*asked)
        {
            tracing::debug!(asked, "an answer to a request no longer awaited; dropped");
            return Ok(());
        }
        // A step runs in one of the agent's working slots, in a box of its own that exists
        // only while it runs: thousands of live incidents wait (for the model, for a slot)
        // as small futures, not as thousands of reads and calls queued at once at the MCP
        // servers and the database.
        let ctx = state.ctx.clone();
        let _working = {
            let _waiting = ctx.metrics.step_waiting();
            ctx.working.acquire().await?
        };
        if matches!(message, IncidentMsg::Advance) && ctx.is_draining() {
            // The agent began to stop while this actor waited for its slot: no new step (a
            // mutating call above all); the next start adopts the incident where it is. An
            // answer of the model already asked for is still taken, as before.
            myself.stop(Some(DRAINED.into()));
            return Ok(());
        }
        let done = match message {
            IncidentMsg::Advance => Box::pin(state.step()).instrument(span).await,
            IncidentMsg::Decided { reply, .. } => {
                Box::pin(state.decided(*reply)).instrument(span).await
            }
        };
        let then = match done {
            Ok(then) => {
                // Written: the moves of this step count.
                state
                    .ctx
                    .metrics
                    .incident_moves(std::mem::take(&mut state.entered));
                then
            }
            Err(e) if e.is::<Reload>() => {
                // Someone else wrote the row since it was read (a human's decision, alerts
                // that joined before it could close): nothing of this step was written.
                // Read it again and decide anew.
                tracing::info!("the incident changed under its actor; reading it again");
                state.incident = None;
                state.entered.clear();
                Then::Advance
            }
            Err(e) => return Err(e),
        };
        match then {
            Then::Stop => myself.stop(Some(DONE.into())),
            // The answer comes as a message; a draining agent stops this actor after it.
            Then::Wait => {}
            Then::Advance if state.ctx.is_draining() => myself.stop(Some(DRAINED.into())),
            Then::Advance => myself.send_message(IncidentMsg::Advance)?,
        }
        Ok(())
    }
}

/// What the actor does once a step is written.
enum Then {
    /// The next step.
    Advance,
    /// Nothing until the reasoner's answer comes ([`IncidentMsg::Decided`]).
    Wait,
    /// Stop: the incident needs nothing more from this actor.
    Stop,
}

type StepResult = Result<Then, ActorProcessingErr>;

/// A reasoner turn asked for.
struct Asked {
    seq: u64,
    /// Attempts at this turn so far, this one included.
    attempt: u32,
    began: Instant,
}

/// A step's write was refused because the row changed since it was read
/// ([`crate::store::StoreError::Conflict`]): the actor reads the incident again.
#[derive(Debug, thiserror::Error)]
#[error("the incident changed since it was read")]
struct Reload;

impl IncidentState {
    fn inc(&mut self) -> &mut Incident {
        self.incident.as_mut().expect("loaded before any step")
    }

    /// One step, and what comes after it.
    async fn step(&mut self) -> StepResult {
        if self.incident.is_none() {
            let (store, id) = (&self.ctx.store, self.id);
            let loaded = retrying(&self.ctx.config, || store.get_incident(id)).await?;
            let Some(mut incident) = loaded else {
                tracing::warn!("incident not found; nothing to do");
                return Ok(Then::Stop);
            };
            self.span.record("trace_id", incident.trace_id.as_str());
            if !incident.status.is_terminal() && incident.status != Status::New {
                tracing::info!(status = %incident.status, "resuming incident");
            }
            incident.forget_stored_timeline();
            self.incident = Some(incident);
        }
        let incident = self.inc();
        if incident.status.is_terminal() {
            if incident.status == Status::Escalated
                && incident.alerts_rev > incident.alerts_seen_rev
            {
                return self.alert_news().await;
            }
            return Ok(Then::Stop);
        }
        if incident.status == Status::New {
            let reasoner = self.ctx.reasoner_name.clone();
            self.transition(
                Status::Analyzing,
                format!("investigation begins with the {reasoner} reasoner"),
            );
            self.save().await?;
            return Ok(Then::Advance);
        }
        if incident.rca_analysis.is_none() {
            return self.investigate().await;
        }
        if let Some(i) = next_action(&self.inc().actions_taken) {
            return self.act(i).await;
        }
        self.finish().await
    }

    // ----- investigation -----

    async fn investigate(&mut self) -> StepResult {
        if self.transcript.is_none() {
            let incident = self.inc();
            let resumed = incident.actions_taken.is_empty() && incident.timeline_len() > 2;
            let brief = brief(incident);
            let tools = self.ctx.tools.specs().await;
            if resumed {
                self.note("resumed: the investigation starts over (its reads are repeated; nothing was changed yet)", json!({}));
            }
            self.investigating = Some(self.ctx.metrics.investigation_in_flight());
            self.transcript = Some(Arc::new(Transcript {
                incident: brief,
                tools,
                turns: vec![],
            }));
        }
        let transcript = self.transcript.as_ref().expect("built above");
        let turns = transcript.turns.len();
        // An investigation the agent stops (a budget spent, a reasoner going round in
        // circles or failing) ends undetermined, and a human is told why (by `finish`, as
        // for any escalation).
        if turns >= self.ctx.config.steps_max as usize {
            let step = self.undetermined(format!(
                "the investigation used its {} steps without a conclusion",
                self.ctx.config.steps_max
            ));
            return self.take(step).await;
        }
        if transcript.repeating(REPEATING_TURNS_MAX) {
            let step = self.undetermined(format!(
                "the reasoner only repeated calls it had made, {REPEATING_TURNS_MAX} turns in a row, without a conclusion"
            ));
            return self.take(step).await;
        }
        self.ask(1, Duration::ZERO);
        Ok(Then::Wait)
    }

    /// Asks the reasoner for the next turn of the transcript, `after` a wait (a retry's
    /// backoff, spent idle like the wait for the model); the answer comes as
    /// [`IncidentMsg::Decided`].
    fn ask(&mut self, attempt: u32, after: Duration) {
        self.asked += 1;
        let seq = self.asked;
        self.awaiting = Some(Asked {
            seq,
            attempt,
            began: Instant::now(),
        });
        let transcript = self.transcript.clone().expect("built before asking");
        let myself = self.myself.clone();
        let reply_to = ReplyTo::new(move |reply| {
            // An actor gone since it asked has no use for the answer.
            let _ = myself.send_message(IncidentMsg::Decided {
                asked: seq,
                reply: Box::new(reply),
            });
        });
        // A reasoner that is gone drops the request, and the request answers
        // `Unavailable` as it goes: retried like any unavailable model. So does a delayed
        // request the runtime drops before it is sent.
        let request = move || LlmMsg::Decide(transcript, reply_to);
        if after.is_zero() {
            let _ = self.ctx.llm.send_message(request());
        } else {
            self.ctx.llm.send_after(after, request);
        }
    }

    /// The reasoner's answer to the turn awaited: asked again while the model is unavailable
    /// (with backoff, up to the attempts allowed), else taken.
    async fn decided(&mut self, reply: Reply) -> StepResult {
        let asked = self.awaiting.take().expect("checked by the caller");
        let cfg = &self.ctx.config;
        self.tokens_used = self.tokens_used.saturating_add(reply.usage.total());
        let step = match reply.step {
            Ok(step) => {
                tracing::debug!(
                    duration_ms = asked.began.elapsed().as_millis() as u64,
                    tokens_used = self.tokens_used,
                    "reasoner step"
                );
                step
            }
            Err(e) if !e.is_retryable() => self.undetermined(format!(
                "the investigation stopped: reasoner {}: {e}",
                self.ctx.reasoner_name
            )),
            Err(e) if asked.attempt < cfg.reasoner_attempts_max => {
                tracing::warn!(attempt = asked.attempt, error = %e, "reasoner step failed");
                let backoff_ms = cfg
                    .reasoner_retry_backoff_ms
                    .saturating_mul(1 << (asked.attempt - 1).min(16));
                self.ask(asked.attempt + 1, Duration::from_millis(backoff_ms));
                return Ok(Then::Wait);
            }
            Err(e) => {
                tracing::warn!(attempt = asked.attempt, error = %e, "reasoner step failed");
                self.undetermined(format!(
                    "the investigation stopped: reasoner {} unavailable after {} attempts: {e}",
                    self.ctx.reasoner_name, cfg.reasoner_attempts_max
                ))
            }
        };
        // Past the token budget the investigation stops as at the step budget: what the
        // turn that passed it asked for or concluded is not acted on.
        let tokens_max = self.ctx.config.tokens_per_incident_max;
        let step = if self.tokens_used > tokens_max {
            self.undetermined(format!(
                "the investigation used {} tokens, over its budget of {tokens_max}, without a conclusion",
                self.tokens_used
            ))
        } else {
            step
        };
        self.take(step).await
    }

    /// A reasoner's step taken: its calls run as a turn, or its conclusion planned.
    async fn take(&mut self, step: Step) -> StepResult {
        match step {
            Step::Calls {
                calls,
                reasoning,
                content,
                verbatim,
            } => self.run_turn(calls, reasoning, content, verbatim).await,
            Step::Conclude(conclusion) => self.conclude(conclusion).await,
        }
    }

    /// A conclusion with no analysis. What the reasoner proposed in the turns before still
    /// goes to the policy: a proposal is never the reasoner's say-so, and dropping a right
    /// one helps nobody.
    fn undetermined(&self, summary: String) -> Step {
        let actions = self
            .transcript
            .as_ref()
            .map(|t| t.proposals())
            .unwrap_or_default();
        Step::Conclude(Conclusion {
            rca: RootCauseAnalysis {
                reasoner: self.ctx.reasoner_name.clone(),
                ..RootCauseAnalysis::undetermined(summary)
            },
            actions,
        })
    }

    async fn run_turn(
        &mut self,
        calls: Vec<Call>,
        reasoning: Option<String>,
        content: Option<String>,
        verbatim: Option<JsonText>,
    ) -> StepResult {
        let began = Instant::now();
        let n = self.transcript.as_ref().map_or(0, |t| t.turns.len()) + 1;
        let asked: Vec<String> = calls.iter().map(|c| c.tool.clone()).collect();
        let limit = self.ctx.config.excerpt_bytes_max;
        self.entry(
            TimelineKind::Reasoner,
            format!(
                "reasoner turn {n}: asks for {}",
                if asked.is_empty() {
                    "nothing".into()
                } else {
                    asked.join(", ")
                }
            ),
            json!({
                "reasoner": self.ctx.reasoner_name,
                "reasoning": reasoning.as_deref().map(|r| excerpt(r, limit)),
                "content": content.as_deref().map(|c| excerpt(c, limit)),
            }),
        );
        let transcript = self.transcript.clone().expect("built before");
        let mut done: Vec<(Call, Outcome)> = Vec::with_capacity(calls.len());
        for (i, call) in calls.into_iter().enumerate() {
            let repeats = || {
                repeated(transcript.calls().chain(done.iter()), &call)
                    .map(|(earlier, outcome)| (earlier.id.clone(), outcome.clone()))
            };
            let outcome = if i >= CALLS_PER_TURN_MAX {
                self.note(
                    &format!(
                        "{} not run: too many calls in one turn",
                        excerpt(&call.tool, 80)
                    ),
                    json!({}),
                );
                Outcome::NotRun {
                    message: format!("at most {CALLS_PER_TURN_MAX} calls per turn; ask again"),
                }
            } else if let Some(why) = &call.invalid_arguments {
                self.entry(
                    TimelineKind::ToolCall,
                    format!("{} not run: {}", excerpt(&call.tool, 80), excerpt(why, 200)),
                    json!({ "tool": excerpt(&call.tool, 200), "outcome": "not_run", "reason": why }),
                );
                Outcome::NotRun {
                    message: format!("{}: {why}", call.tool),
                }
            } else if Server::of(&call.tool).is_none() {
                let message = format!(
                    "{:?} is not a tool; the tools are: {}",
                    call.tool,
                    crate::reasoner::TOOL_SERVERS
                        .iter()
                        .map(|(t, _)| *t)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.entry(
                    TimelineKind::Decision,
                    format!(
                        "denied {:?}: not one of the six tools",
                        excerpt(&call.tool, 80)
                    ),
                    json!({ "decision": "denied", "tool": excerpt(&call.tool, 200) }),
                );
                Outcome::NotRun { message }
            } else if let Some((of, earlier)) = repeats() {
                self.entry(
                    TimelineKind::ToolCall,
                    format!(
                        "{} repeated: not called again, answered with the result of {}",
                        call.tool,
                        excerpt(&of, 80)
                    ),
                    json!({ "tool": call.tool, "outcome": "repeated", "of": excerpt(&of, 200) }),
                );
                Outcome::Repeated {
                    of,
                    earlier: Box::new(earlier),
                }
            } else if is_mutating(&call.tool) {
                Outcome::Deferred {
                    message: format!(
                        "{} is recorded as a proposed action; when you conclude, the agent's safety policy decides whether it runs",
                        call.tool
                    ),
                }
            } else {
                self.call_read(&call.tool, &call.arguments, "")
                    .await
                    .outcome
            };
            done.push((call, outcome));
        }
        // The reader above let go, so the turn is appended in place, not to a copy.
        drop(transcript);
        let transcript = self.transcript.as_mut().expect("built before");
        Arc::make_mut(transcript).turns.push(Turn {
            reasoning,
            content,
            calls: done,
            verbatim,
        });
        self.turns_at.push(began);
        self.save().await?;
        Ok(Then::Advance)
    }

    async fn conclude(&mut self, conclusion: Conclusion) -> StepResult {
        let Conclusion { mut rca, actions } = conclusion;
        let seen = self.gather(Reuse::RecentTurns).await;
        self.planned_at = Some(seen.read_at.unwrap_or_else(Instant::now));
        // The agent's own mapping of the incident's alert names the service, whatever the
        // reasoner wrote: verification and reconciliation read that service's pods.
        if let Some(m) = &seen.mapping {
            if !rca.service.is_empty() && rca.service != m.service {
                self.note(
                    &format!(
                        "the reasoner named service {:?}; the incident's alert maps to {:?}, which is used",
                        text::clean(&rca.service, 128),
                        m.service
                    ),
                    json!({}),
                );
            }
            rca.service = m.service.clone();
            rca.runbook = m.runbook.clone();
            rca.owner = m.owner.clone();
        } else {
            // Without the agent's own mapping, no service is named, whatever the reasoner
            // looked up.
            rca.service.clear();
            rca.runbook.clear();
            rca.owner.clear();
        }
        // What a model cites is its claim, never evidence; only the agent says "recovered".
        if rca.reasoner != crate::reasoner::rules::NAME {
            rca.evidence = rca
                .evidence
                .iter()
                .take(diagnosis::EVIDENCE_PER_SIGNAL_MAX)
                .map(|e| format!("[claim by the model, unverified] {}", text::quote(e, 300)))
                .collect();
        }
        rca.recovered = match (&seen.runbook, &seen.metrics) {
            (Some(r), Some(m)) => {
                let logs = seen.logs.clone().unwrap_or_else(|| workflow::empty_logs(m));
                diagnosis::recovered(r, m, &logs)
            }
            _ => None,
        };
        let service = seen
            .mapping
            .as_ref()
            .map(|m| m.service.clone())
            .unwrap_or_default();
        // Restarts of one service are planned one incident at a time, against the window
        // the database holds, and the plan is written before the lock is let go.
        let restart_proposed = actions.iter().any(|a| a.tool == "restart-pod");
        let _planning = if restart_proposed && !service.is_empty() {
            Some(self.ctx.restart_locks.lock(&service).await)
        } else {
            None
        };
        let window = if restart_proposed && !service.is_empty() {
            self.window(&service).await?
        } else {
            vec![]
        };
        let mut facts = workflow::facts(
            seen.mapping.as_ref(),
            seen.runbook.as_ref(),
            seen.metrics.as_ref(),
            seen.logs.as_ref(),
            &self.inc().actions_taken,
            window,
        );
        if restart_proposed {
            facts.recurrence = self.recurrence().await?;
        }
        let plan = workflow::plan(&actions, &facts, self.ctx.limits);
        for why in &plan.ignored {
            self.note(&format!("left out of the plan: {why}"), json!({}));
        }
        self.entry(
            TimelineKind::Note,
            format!("analysis ({:.0}% confident): {}", rca.confidence * 100.0, rca.summary),
            json!({ "root_cause": rca.root_cause, "evidence": rca.evidence, "reasoner": rca.reasoner, "facts_of_turn": seen.reused_turn }),
        );
        if let Some(why) = &rca.recovered {
            self.entry(
                TimelineKind::Decision,
                format!("the agent's own check: recovered on its own ({why})"),
                json!({ "recovered": true }),
            );
        }
        self.inc().rca_analysis = Some(rca);
        let trace_id = self.inc().trace_id.clone();
        let severity = self.inc().severity.notification_severity();
        let id = self.id;
        for planned in plan.actions {
            let tool = planned.call.tool.clone();
            let seq = self.inc().actions_taken.len() as u32 + 1;
            let key = ActionRecord::idempotency_key(id, seq);
            // A mutating call's arguments are the agent's, built anew: nothing else the
            // reasoner put in them (an extra field, its own page) reaches the world. The
            // page is written from the decisions when it is sent; the reasoner's text stays
            // in the timeline as its draft.
            let draft = (tool == "send-notification")
                .then(|| planned.call.arguments.string("message"))
                .flatten()
                .map(|m| excerpt(&m, 1_024));
            let seen_pod = workflow::pod_of(&planned.call)
                .and_then(|pod| seen.metrics.as_ref()?.pods.iter().find(|p| p.name == pod));
            let args = match tool.as_str() {
                // The uid binds the restart to the instance diagnosed: a pod replaced since
                // (another instance under the name) is not restarted.
                "restart-pod" => {
                    let pod = workflow::pod_of(&planned.call).unwrap_or_default();
                    let mut args = json!({ "podName": pod, "idempotencyKey": key });
                    if let Some(p) = seen_pod {
                        args["podUid"] = Value::String(p.uid.clone());
                    }
                    args
                }
                "send-notification" => json!({
                    "message": PAGE_PENDING,
                    "severity": severity,
                    "idempotencyKey": key,
                }),
                _ => Value::Object(planned.call.arguments.object()),
            };
            let (decision, status) = match &planned.decision {
                Decision::Auto { .. } => (ActionDecision::Auto, ActionStatus::Planned),
                Decision::NeedsApproval { .. } => {
                    (ActionDecision::Proposed, ActionStatus::Proposed)
                }
                Decision::Deny { .. } => (ActionDecision::Denied, ActionStatus::Denied),
            };
            // The service's pod uids too: a replacement under a new name is one not among
            // them.
            let uids: Vec<&str> = seen
                .metrics
                .iter()
                .flat_map(|m| m.pods.iter().map(|p| p.uid.as_str()))
                .collect();
            let baseline = seen_pod.map(|p| {
                json!({ "pod_started_at": p.started_at, "pod_uid": p.uid, "service_uids": uids })
            });
            self.ctx.metrics.policy_decision(&tool, &planned.decision);
            let reason = planned.decision.reason().to_owned();
            let target = workflow::pod_of(&planned.call)
                .map(|p| format!(" {}", text::clean(&p, 120)))
                .unwrap_or_default();
            self.entry(
                TimelineKind::Decision,
                format!(
                    "{}{target}: {} ({reason})",
                    text::clean(&tool, 80),
                    planned.decision.label()
                ),
                json!({ "seq": seq, "tool": text::clean(&tool, 200), "decision": planned.decision.label(), "reason": reason, "draft": draft }),
            );
            let mut record = ActionRecord {
                seq,
                server: Server::of(&tool).map_or("none", Server::as_str).to_owned(),
                tool: text::clean(&tool, 200),
                args,
                idempotency_key: key,
                decision,
                reason,
                status,
                result: None,
                started_at: now(),
                finished_at: None,
                trace_id: trace_id.clone(),
                baseline,
                verified: None,
                proposal: None,
                human: None,
            };
            self.propose(&mut record);
            self.inc().actions_taken.push(record);
        }
        if plan.next == Status::Remediating {
            self.transition(Status::Remediating, plan.reason);
        } else {
            self.entry(
                TimelineKind::Decision,
                format!("plan: {}", plan.reason),
                json!({}),
            );
        }
        self.save().await?;
        self.investigating = None; // the conclusion is written
        Ok(Then::Advance)
    }

    /// What the agent reads for itself before the policy decides, for the incident's own
    /// alert: its mapping and runbook (from the transcript when the agent already read
    /// them), the service's pods and its logs over the runbook's range. Pods and logs are
    /// read afresh (membership and evidence must hold now), except, with `reuse` (the
    /// conclusion), a read of a turn that began at most `READ_REUSE_AGE_MAX` ago with
    /// exactly the agent's arguments: the agent made that call, a moment ago. A re-check
    /// before a restart always reads again.
    async fn gather(&mut self, reuse: Reuse) -> Gathered {
        let mapping: Option<AlertMapping> = match self.mapping_args() {
            Some(args) => match self.known_args("map-alert-to-service", &args) {
                Some(m) => Some(m),
                None => self.read_args("map-alert-to-service", args).await,
            },
            None => None,
        };
        let Some(m) = &mapping else {
            return Gathered::default();
        };
        let service = m.service.clone();
        let runbook: Option<Runbook> = match self.known("get-runbook", &[("serviceName", &service)])
        {
            Some(r) => Some(r),
            None => self.read("get-runbook", &[("serviceName", &service)]).await,
        };
        let mut read_at = Instant::now();
        let mut reused_turn = None;
        let recent = self.recent::<ServiceMetrics>(
            reuse,
            "get-metrics",
            &string_args(&[("serviceName", &service)]),
        );
        // A reused read the skew check refuses is read again, not done without.
        let metrics = match recent.and_then(|(m, at, turn)| Some((self.observed_now(m)?, at, turn)))
        {
            Some((m, at, turn)) => {
                read_at = read_at.min(at);
                reused_turn = Some(turn);
                Some(m)
            }
            None => self.metrics_now(&service).await,
        };
        // The agent reads the logs itself, over the runbook's range: what a model chose to
        // read (another interval, one line) decides nothing; the same read, made a moment
        // ago with these arguments, is taken.
        let range = runbook
            .as_ref()
            .and_then(|r| r.spec.diagnostics.iter().find_map(|d| d.time_range.clone()))
            .unwrap_or_else(|| mcp::catalog::EVIDENCE_WINDOW_DEFAULT.to_owned());
        let log_args = string_args(&[("serviceName", &service), ("timeRange", &range)]);
        let logs: Option<LogPage> = match self.recent(reuse, "get-logs", &log_args) {
            Some((logs, at, turn)) => {
                read_at = read_at.min(at);
                reused_turn = reused_turn.max(Some(turn));
                Some(logs)
            }
            None => self.read_args("get-logs", log_args).await,
        };
        Gathered {
            mapping,
            runbook,
            metrics,
            logs,
            read_at: Some(read_at),
            reused_turn,
        }
    }

    /// The incident's own `map-alert-to-service` arguments: its alert type and labels.
    fn mapping_args(&self) -> Option<Arguments> {
        let m = &self.incident.as_ref()?.metadata;
        Some(crate::reasoner::mapping_args(
            m.alert_type.as_deref()?,
            m.service.as_deref(),
            &m.labels,
        ))
    }

    fn known<T: serde::de::DeserializeOwned>(
        &self,
        tool: &str,
        pairs: &[(&str, &str)],
    ) -> Option<T> {
        self.known_args(tool, &string_args(pairs))
    }

    fn known_args<T: serde::de::DeserializeOwned>(
        &self,
        tool: &str,
        wanted: &Arguments,
    ) -> Option<T> {
        let result = self.transcript.as_ref()?.latest_ok(tool, |a| a == wanted)?;
        result.parse().ok()
    }

    /// With `reuse`, the result of `tool` called with exactly `wanted` in a turn of this
    /// actor that began at most `READ_REUSE_AGE_MAX` ago, the latest first, with when that
    /// turn began and its number (from 1). The call was the agent's own (a reasoner only
    /// names calls; the agent makes them), so only its age is in question; a transcript this
    /// actor did not build (none after a restart) offers nothing.
    fn recent<T: serde::de::DeserializeOwned>(
        &self,
        reuse: Reuse,
        tool: &str,
        wanted: &Arguments,
    ) -> Option<(T, Instant, usize)> {
        if reuse == Reuse::Nothing {
            return None;
        }
        let transcript = self.transcript.as_ref()?;
        let (result, at, turn) = transcript
            .turns
            .iter()
            .zip(&self.turns_at)
            .enumerate()
            .rev()
            .take_while(|(_, (_, at))| at.elapsed() <= READ_REUSE_AGE_MAX)
            .flat_map(|(n, (turn, at))| turn.calls.iter().rev().map(move |c| (c, at, n + 1)))
            .find_map(|((call, outcome), at, n)| match outcome {
                Outcome::Ok { structured } if call.tool == tool && &call.arguments == wanted => {
                    Some((structured, *at, n))
                }
                _ => None,
            })?;
        Some((result.parse().ok()?, at, turn))
    }

    /// A read-only call the agent makes for itself; logged in the timeline.
    async fn read<T: serde::de::DeserializeOwned>(
        &mut self,
        tool: &str,
        pairs: &[(&str, &str)],
    ) -> Option<T> {
        self.read_args(tool, string_args(pairs)).await
    }

    async fn read_args<T: serde::de::DeserializeOwned>(
        &mut self,
        tool: &str,
        arguments: Arguments,
    ) -> Option<T> {
        let called = self
            .call_read(tool, &arguments, " (the agent's own check)")
            .await;
        match called.outcome {
            Outcome::Ok { structured } => structured.parse().ok(),
            _ => None,
        }
    }

    /// Makes a read-only call, the reasoner's or the agent's own, and writes its timeline
    /// entry (`note` after the outcome).
    async fn call_read(&mut self, tool: &str, arguments: &Arguments, note: &str) -> Called {
        let trace_id = self.inc().trace_id.clone();
        let arguments = arguments.object();
        let called = self
            .ctx
            .tools
            .call(tool, arguments.clone(), &trace_id)
            .await;
        self.tool_entry(tool, &arguments, &called, note);
        called
    }

    // ----- actions -----

    async fn act(&mut self, i: usize) -> StepResult {
        let action = self.inc().actions_taken[i].clone();
        match action.status {
            ActionStatus::Planned => {
                if action.tool == "restart-pod"
                    && action.decision == ActionDecision::Auto
                    && let Some(held) = self.recheck(i).await?
                {
                    self.hold(i, held, "not run");
                    self.save().await?;
                    return Ok(Then::Advance);
                }
                if action.tool == "restart-pod"
                    && action.decision == ActionDecision::Approved
                    && self.recheck_approved(i).await?
                {
                    self.save().await?;
                    return Ok(Then::Advance);
                }
                if action.tool == "send-notification" {
                    let page = page::compose(self.incident.as_ref().expect("loaded"));
                    if let Some(args) = self.inc().actions_taken[i].args.as_object_mut() {
                        args.insert("message".into(), Value::String(page));
                    }
                }
                {
                    let a = &mut self.inc().actions_taken[i];
                    a.status = ActionStatus::Started;
                    a.started_at = now();
                }
                self.entry(
                    TimelineKind::ToolCall,
                    format!(
                        "{} #{} started (key {})",
                        action.tool, action.seq, action.idempotency_key
                    ),
                    json!({ "seq": action.seq, "tool": action.tool, "status": "started" }),
                );
                self.save().await?;
                let started = self.inc().actions_taken[i].clone();
                self.ctx.hooks.before_mutation(self.id, &started).await;
                let called = self.call_action(&started).await;
                self.ctx.hooks.after_mutation(self.id, &started).await;
                self.record_result(i, called);
                self.save().await?;
            }
            ActionStatus::Started => {
                self.entry(
                    TimelineKind::Decision,
                    format!("{} #{} was found started after the last actor stopped: reconciling with the world", action.tool, action.seq),
                    json!({ "seq": action.seq }),
                );
                let seen = if action.tool == "restart-pod" {
                    self.restart_already_done(&action).await
                } else {
                    Seen::NotDone
                };
                let held = match seen {
                    Seen::NotDone if action.tool == "restart-pod" => self.recheck(i).await?,
                    _ => None,
                };
                match (seen, held) {
                    (Seen::Unknown(why), _) => {
                        // Never re-run blindly: what cannot be checked is not repeated.
                        let a = &mut self.inc().actions_taken[i];
                        a.status = ActionStatus::Failed;
                        a.finished_at = Some(now());
                        a.result = Some(json!({ "error": format!("not reconciled: {why}") }));
                        self.entry(
                            TimelineKind::Decision,
                            format!(
                                "#{} could not be reconciled ({why}): not repeated, a human must check the pod",
                                action.seq
                            ),
                            json!({ "seq": action.seq, "reconcile": "unknown" }),
                        );
                    }
                    (Seen::NotDone, Some(held)) => self.hold(i, held, "not repeated"),
                    (Seen::Done(evidence), _) => {
                        let a = &mut self.inc().actions_taken[i];
                        a.status = ActionStatus::Succeeded;
                        a.finished_at = Some(now());
                        a.result = Some(json!({ "reconciled": evidence }));
                        self.entry(
                            TimelineKind::Decision,
                            format!(
                                "#{} reconciled: the restart happened ({evidence}); not repeated",
                                action.seq
                            ),
                            json!({ "seq": action.seq, "reconcile": "already-done" }),
                        );
                    }
                    (Seen::NotDone, None) => {
                        self.entry(
                            TimelineKind::Decision,
                            format!("#{} reconciled: no sign it happened; reissued with the same key {} (a repeat is answered, not redone)", action.seq, action.idempotency_key),
                            json!({ "seq": action.seq, "reconcile": "reissue-same-key" }),
                        );
                        self.ctx.hooks.before_mutation(self.id, &action).await;
                        let called = self.call_action(&action).await;
                        self.ctx.hooks.after_mutation(self.id, &action).await;
                        self.record_result(i, called);
                    }
                }
                self.save().await?;
            }
            ActionStatus::Succeeded => {
                // A restart that ran and is not verified yet.
                self.verify(i).await;
                self.save().await?;
            }
            _ => unreachable!("next_action picks only planned, started or unverified actions"),
        }
        Ok(Then::Advance)
    }

    async fn call_action(&mut self, action: &ActionRecord) -> Called {
        let arguments = action.args.as_object().cloned().unwrap_or_default();
        let trace_id = self.inc().trace_id.clone();
        self.ctx
            .tools
            .call(&action.tool, arguments, &trace_id)
            .await
    }

    fn record_result(&mut self, i: usize, called: Called) {
        let a = self.inc().actions_taken[i].clone();
        let (status, result) = action_result(&called.outcome);
        match a.tool.as_str() {
            "restart-pod" => self.ctx.metrics.restart(status == ActionStatus::Succeeded),
            "send-notification" => self.ctx.metrics.page(status == ActionStatus::Succeeded),
            _ => {}
        }
        {
            let r = &mut self.inc().actions_taken[i];
            r.status = status;
            r.result = Some(result);
            r.finished_at = Some(now());
        }
        let args = a.args.as_object().cloned().unwrap_or_default();
        self.tool_entry(
            &a.tool,
            &args,
            &called,
            &format!(" (action #{}, {})", a.seq, status.as_str()),
        );
    }

    /// Whether `get-metrics` shows a new instance of the pod since the agent looked before
    /// the call.
    async fn restart_already_done(&mut self, action: &ActionRecord) -> Seen {
        let pod = workflow::pod_arg(action).to_owned();
        let Some(service) = self.service() else {
            return Seen::Unknown("the incident names no service to look at".into());
        };
        let Some(metrics) = self
            .read::<ServiceMetrics>("get-metrics", &[("serviceName", &service)])
            .await
        else {
            return Seen::Unknown("get-metrics gave nothing usable".into());
        };
        let (uid_before, started_before) = baseline_of(action);
        let uids = uids_before(action);
        match workflow::reconcile_restart(
            &pod,
            uid_before.as_deref(),
            &uids,
            started_before,
            &metrics,
        ) {
            Reconcile::AlreadyDone => {
                let now_pod = metrics.pods.iter().find(|p| p.name == pod);
                Seen::Done(now_pod.map_or_else(
                    || format!("{pod} was replaced"),
                    |p| {
                        format!(
                            "{pod} is instance {} started at {}, not the one seen before the call",
                            p.uid,
                            p.started_at.to_rfc3339()
                        )
                    },
                ))
            }
            Reconcile::ReissueWithSameKey => Seen::NotDone,
        }
    }

    /// The service's agent restarts in the window, from the database.
    async fn window(&self, service: &str) -> Result<Vec<WindowRestart>, ActorProcessingErr> {
        let secs = i64::try_from(self.ctx.restart_window_secs).unwrap_or(i64::MAX / 1_000_000);
        let since = now() - chrono::Duration::try_seconds(secs).unwrap_or(chrono::Duration::MAX);
        let store = &self.ctx.store;
        Ok(retrying(&self.ctx.config, || {
            store.restarts_in_window(service, since)
        })
        .await?)
    }

    /// Asks again, just before the call, whether the autonomous restart `i` may still run:
    /// whether an earlier restart of the incident failed, and, unless this actor planned it
    /// within [`PLAN_FRESH_MS`], the policy on what the agent sees now (this action left out
    /// of the budgets and the window it reserved).
    async fn recheck(&mut self, i: usize) -> Result<Option<Decision>, ActorProcessingErr> {
        let action = self.inc().actions_taken[i].clone();
        if self
            .planned_at
            .is_some_and(|t| t.elapsed() < Duration::from_millis(PLAN_FRESH_MS))
        {
            // The plan's own reads are still fresh: only what happened since (an earlier
            // restart of this incident that failed) can change the decision.
            let planned = Decision::Auto {
                code: policy::ReasonCode::RunbookGrantsAuto,
                reason: action.reason.clone(),
            };
            return Ok(workflow::recheck(&self.inc().actions_taken, i, &planned));
        }
        let (_, now_decision) = self.decide_again(i).await?;
        Ok(workflow::recheck(
            &self.inc().actions_taken,
            i,
            &now_decision,
        ))
    }

    /// The policy's decision on restart `i` on what the agent reads now (this action left
    /// out of the budgets and of the window it reserved), and the pods it read.
    async fn decide_again(
        &mut self,
        i: usize,
    ) -> Result<(Option<ServiceMetrics>, Decision), ActorProcessingErr> {
        let action = self.inc().actions_taken[i].clone();
        let seen = self.gather(Reuse::Nothing).await;
        let service = seen.mapping.as_ref().map(|m| m.service.clone());
        let window = match &service {
            Some(s) => self
                .window(s)
                .await?
                .into_iter()
                .filter(|w| w.key != action.idempotency_key)
                .collect(),
            None => vec![],
        };
        let others: Vec<ActionRecord> = self
            .inc()
            .actions_taken
            .iter()
            .filter(|a| a.seq != action.seq)
            .cloned()
            .collect();
        let mut facts = workflow::facts(
            seen.mapping.as_ref(),
            seen.runbook.as_ref(),
            seen.metrics.as_ref(),
            seen.logs.as_ref(),
            &others,
            window,
        );
        facts.recurrence = self.recurrence().await?;
        let decision = policy::decide(
            "restart-pod",
            Some(workflow::pod_arg(&action)),
            &facts,
            self.ctx.limits,
        );
        Ok((seen.metrics, decision))
    }

    /// Another incident of the same failure that an agent restart fixed within the restart
    /// window, said as a fact for the policy.
    async fn recurrence(&self) -> Result<Option<String>, ActorProcessingErr> {
        let Some(key) = self.incident.as_ref().and_then(|i| i.failure_key.clone()) else {
            return Ok(None);
        };
        let secs = i64::try_from(self.ctx.restart_window_secs).unwrap_or(i64::MAX / 1_000_000);
        let since = now() - chrono::Duration::try_seconds(secs).unwrap_or(chrono::Duration::MAX);
        let store = &self.ctx.store;
        let found = retrying(&self.ctx.config, || store.fixed_since(&key, since)).await?;
        Ok(found.filter(|other| *other != self.id).map(|other| {
            format!("incident {other} restarted a pod for {key} within the window and was resolved")
        }))
    }

    /// Re-checks the approved restart `i` against the world just before its call; when it
    /// may not run, records why (lapsed, or denied) instead.
    async fn recheck_approved(&mut self, i: usize) -> Result<bool, ActorProcessingErr> {
        let (metrics, decision) = self.decide_again(i).await?;
        let action = self.inc().actions_taken[i].clone();
        let Some(held) = workflow::recheck_approved(&action, metrics.as_ref(), &decision) else {
            return Ok(false);
        };
        let (status, why) = match held {
            workflow::Held::Lapsed(why) => (ActionStatus::Lapsed, why),
            workflow::Held::Denied(why) => {
                self.ctx.metrics.policy_decision(&action.tool, &decision);
                (ActionStatus::Denied, why)
            }
        };
        {
            let a = &mut self.inc().actions_taken[i];
            a.status = status;
            if status == ActionStatus::Denied {
                a.decision = ActionDecision::Denied;
            }
            a.reason = format!("{why} ({})", a.reason);
            a.finished_at = Some(now());
        }
        self.entry(
            TimelineKind::Decision,
            format!("restart-pod #{} approved, not run: {why}", action.seq),
            json!({ "seq": action.seq, "status": status.as_str() }),
        );
        Ok(true)
    }

    /// Turns the restart `i` into a proposal or a denial (`held`), with the reason, instead
    /// of running it.
    fn hold(&mut self, i: usize, held: Decision, what: &str) {
        let (decision, status) = match held {
            Decision::Deny { .. } => (ActionDecision::Denied, ActionStatus::Denied),
            _ => (ActionDecision::Proposed, ActionStatus::Proposed),
        };
        self.ctx.metrics.policy_decision("restart-pod", &held);
        let reason = held.reason().to_owned();
        let mut a = self.inc().actions_taken[i].clone();
        a.decision = decision;
        a.status = status;
        a.reason = reason.clone();
        a.finished_at = Some(now());
        self.propose(&mut a);
        let seq = a.seq;
        self.inc().actions_taken[i] = a;
        self.entry(
            TimelineKind::Decision,
            format!("restart-pod #{seq} {what}: {} ({reason})", held.label()),
            json!({ "seq": seq, "decision": held.label(), "reason": reason }),
        );
    }

    async fn verify(&mut self, i: usize) {
        let action = self.inc().actions_taken[i].clone();
        let pod = action
            .args
            .get("podName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let (uid_before, _) = baseline_of(&action);
        let uids_before = uids_before(&action);
        let mut verdict = Verification::NotHealthy(format!("{pod}: its service is unknown"));
        if let Some(service) = self.service() {
            let attempts = self.ctx.config.verify_attempts_max.max(1);
            for attempt in 1..=attempts {
                verdict = match self
                    .read::<ServiceMetrics>("get-metrics", &[("serviceName", &service)])
                    .await
                {
                    Some(m) => {
                        workflow::verify_restart(&pod, uid_before.as_deref(), &uids_before, &m)
                    }
                    None => Verification::NotHealthy("get-metrics gave nothing usable".into()),
                };
                if verdict == Verification::Healthy || attempt == attempts {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(self.ctx.config.verify_interval_ms)).await;
            }
        }
        let (healthy, message) = match &verdict {
            Verification::Healthy => (
                true,
                format!("verified: {pod} runs, is ready and has not crashed since the restart"),
            ),
            Verification::NotHealthy(why) => (false, format!("not verified: {why}")),
        };
        self.inc().actions_taken[i].verified = Some(healthy);
        self.ctx.metrics.restart_verified(healthy);
        self.entry(
            TimelineKind::Decision,
            message,
            json!({ "seq": action.seq, "verified": healthy }),
        );
    }

    /// A proposal waiting for a human gets what an approval must name (the digest of
    /// exactly this proposal) and its expiry; anything else has none.
    fn propose(&self, record: &mut ActionRecord) {
        record.proposal = (record.status == ActionStatus::Proposed).then(|| Proposal {
            digest: approval::digest(self.id, record),
            expires_at: now()
                + chrono::Duration::try_seconds(
                    i64::try_from(self.ctx.config.proposal_ttl_secs).unwrap_or(i64::MAX),
                )
                .unwrap_or(chrono::Duration::MAX),
        });
    }

    /// The incident's alerts as the intake holds them now, remembered as seen, and what the
    /// end of the incident reads of them: which fire, whether one fired again after the
    /// fix, whether the wait for them ran out, and, when every one resolved, the agent's own
    /// check of the service.
    async fn alerts_now(&mut self) -> Result<AlertsNow, ActorProcessingErr> {
        // Alerts are recorded only on an incident with a failure key (through its open
        // key); one without (a report that opted out of coalescing) has none to read.
        if self.inc().failure_key.is_some() {
            let (store, id) = (&self.ctx.store, self.id);
            let (alerts, rev) = retrying(&self.ctx.config, || store.alerts_of(id)).await?;
            let incident = self.inc();
            incident.alerts = alerts;
            incident.alerts_seen_rev = rev;
        }
        let fixed_at = workflow::fixed_at(&self.inc().actions_taken);
        let incident = self.inc();
        let view = crate::core::alerts::view(&incident.alerts, fixed_at);
        let waited_out = incident.wake_at.filter(|w| *w <= now());
        let healthy = if view.all_resolved() {
            Some(self.healthy_now().await)
        } else {
            None
        };
        Ok(AlertsNow {
            view,
            waited_out,
            healthy,
        })
    }

    /// The agent's own check that the service is well: every pod runs and is ready, and
    /// none ended a container within the runbook's window, on a fresh `get-metrics`.
    async fn healthy_now(&mut self) -> bool {
        let Some(service) = self.service() else {
            return false;
        };
        let window = self
            .known::<Runbook>("get-runbook", &[("serviceName", &service)])
            .map_or(900, |r| r.spec.window_secs());
        self.metrics_now(&service)
            .await
            .is_some_and(|m| evidence::healthy_now(&m, window))
    }

    /// The service's pods as `get-metrics` shows them now. A snapshot that is not of the
    /// world now (a lagging cache, a future date) is no evidence: it is noted and dropped,
    /// so the policy sees no pods and denies any restart.
    async fn metrics_now(&mut self, service: &str) -> Option<ServiceMetrics> {
        let m: ServiceMetrics = self
            .read("get-metrics", &[("serviceName", service)])
            .await?;
        self.observed_now(m)
    }

    /// `m` if its observation time is now, within the skew allowed; otherwise a note why not.
    fn observed_now(&mut self, m: ServiceMetrics) -> Option<ServiceMetrics> {
        let skew_max_secs =
            i64::try_from(self.ctx.config.observation_skew_max_ms / 1_000).unwrap_or(i64::MAX);
        match evidence::observed_now(m.observed_at, now(), skew_max_secs) {
            Ok(()) => Some(m),
            Err(why) => {
                self.note(&format!("get-metrics is not used: {why}"), json!({}));
                None
            }
        }
    }

    /// An escalated incident with alert news: when every alert resolved and the agent's own
    /// check agrees, it closes as resolved and what waited for a human lapses; otherwise the
    /// news is taken as seen and it keeps waiting.
    async fn alert_news(&mut self) -> StepResult {
        let (alerts, end) = self.how_it_ends().await?;
        // Closing needs the agent's own check now, whatever escalated the incident (a
        // proposal, a fix that did not hold, a wait that ran out).
        if end.status == Status::Resolved && alerts.healthy == Some(true) {
            self.lapse_proposals(LAPSED_ON_ITS_OWN);
            self.inc().wake_at = None;
            self.transition(end.status, end.reason);
        } else if alerts.view.all_resolved() {
            self.entry(
                TimelineKind::Decision,
                "every alert resolved, but the agent's own check does not find the service healthy: it stays escalated".into(),
                json!({ "healthy": alerts.healthy }),
            );
        }
        self.save().await?;
        Ok(Then::Stop)
    }

    /// Every proposal still waiting for a human lapses, with the reason.
    fn lapse_proposals(&mut self, why: &str) {
        let at = now();
        let mut lapsed = Vec::new();
        for a in self
            .inc()
            .actions_taken
            .iter_mut()
            .filter(|a| a.status == ActionStatus::Proposed)
        {
            a.status = ActionStatus::Lapsed;
            a.reason = format!("{why} (was: {})", a.reason);
            a.finished_at = Some(at);
            lapsed.push(a.seq);
        }
        for seq in lapsed {
            self.entry(
                TimelineKind::Decision,
                format!("proposal #{seq} lapsed: {why}"),
                json!({ "seq": seq, "status": "lapsed" }),
            );
        }
    }

    fn service(&self) -> Option<String> {
        let incident = self.incident.as_ref()?;
        incident
            .rca_analysis
            .as_ref()
            .map(|r| r.service.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| incident.metadata.service.clone())
    }

    // ----- the end -----

    /// The incident's alerts now, and the end `workflow::finish` decides on them.
    async fn how_it_ends(&mut self) -> Result<(AlertsNow, workflow::Finish), ActorProcessingErr> {
        let alerts = self.alerts_now().await?;
        let incident = self.incident.as_ref().expect("loaded");
        let end = workflow::finish(
            incident.rca_analysis.as_ref(),
            &incident.actions_taken,
            &alerts,
        );
        Ok((alerts, end))
    }

    async fn finish(&mut self) -> StepResult {
        let (_, end) = self.how_it_ends().await?;
        let incident = self.incident.as_ref().expect("loaded");
        if end.notify {
            let reason = workflow::escalation_page_reason(&end.reason);
            let page =
                incident.own_page(PAGE_PENDING, reason.clone(), ActionStatus::Planned, now());
            self.entry(
                TimelineKind::Decision,
                format!("send-notification: auto ({reason})"),
                json!({ "seq": page.seq, "tool": "send-notification", "decision": "auto", "reason": reason }),
            );
            self.inc().actions_taken.push(page);
            self.save().await?;
            return Ok(Then::Advance);
        }
        if end.wait {
            // The fix holds; its alerts have not caught up yet. Looked at again when one of
            // them changes (the supervisor's scan for alert news) or when the wait runs out.
            if self.inc().wake_at.is_none() {
                let wait = chrono::Duration::try_seconds(
                    i64::try_from(self.ctx.config.alert_resolve_wait_secs).unwrap_or(i64::MAX),
                )
                .unwrap_or(chrono::Duration::MAX);
                let until = now() + wait;
                self.inc().wake_at = Some(until);
                if self.inc().status == Status::Remediating {
                    self.entry(
                        TimelineKind::Decision,
                        format!("{} (until {})", end.reason, until.to_rfc3339()),
                        json!({ "wake_at": until }),
                    );
                } else {
                    self.transition(
                        Status::Remediating,
                        format!("{} (until {})", end.reason, until.to_rfc3339()),
                    );
                }
            }
            self.save().await?;
            return Ok(Then::Stop);
        }
        if end.lapse {
            self.lapse_proposals(LAPSED_ON_ITS_OWN);
        }
        self.inc().wake_at = None;
        self.transition(end.status, end.reason);
        self.save().await?;
        Ok(Then::Stop)
    }

    // ----- persistence and the timeline -----

    fn transition(&mut self, to: Status, reason: String) {
        let from = self.inc().status;
        let to = if workflow::can_move(from, to) {
            to
        } else {
            tracing::error!(%from, %to, "illegal status change refused; failing the incident");
            Status::Failed
        };
        tracing::info!(%from, %to, reason = %reason, "status");
        self.entered.push((from, to));
        self.inc().status = to;
        self.entry(
            TimelineKind::Status,
            format!("{from} → {to}: {reason}"),
            json!({ "from": from, "to": to, "reason": reason }),
        );
    }

    fn note(&mut self, message: &str, detail: Value) {
        self.entry(TimelineKind::Note, message.to_owned(), detail);
    }

    fn entry(&mut self, kind: TimelineKind, message: String, detail: Value) {
        let incident = self.inc();
        let trace_id = incident.trace_id.clone();
        incident.metadata.timeline.push(TimelineEntry {
            at: now(),
            trace_id,
            kind,
            message,
            detail,
        });
    }

    fn tool_entry(
        &mut self,
        tool: &str,
        arguments: &Map<String, Value>,
        called: &Called,
        note: &str,
    ) {
        let limit = self.ctx.config.excerpt_bytes_max;
        let (kind, quoted, found) = match &called.outcome {
            Outcome::Ok { structured } => (
                "ok",
                excerpt(&structured.as_str(), limit),
                findings::summarize(tool, structured),
            ),
            Outcome::Error { message } => (
                "error",
                excerpt(message, limit),
                Some(excerpt(message, 200)),
            ),
            Outcome::NotRun { message } => ("not_run", excerpt(message, limit), None),
            Outcome::Deferred { message } => ("deferred", excerpt(message, limit), None),
            Outcome::Repeated { of, .. } => ("repeated", excerpt(of, limit), None),
        };
        let shown: Vec<String> = arguments
            .iter()
            .filter(|(k, _)| k.as_str() != "message" && k.as_str() != "idempotencyKey")
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        tracing::info!(
            tool,
            outcome = kind,
            duration_ms = called.duration_ms,
            attempts = called.attempts,
            "tool call"
        );
        self.entry(
            TimelineKind::ToolCall,
            format!(
                "{tool}({}) → {kind} in {} ms{note}{}",
                shown.join(", "),
                called.duration_ms,
                found.map(|f| format!(": {f}")).unwrap_or_default()
            ),
            json!({
                "tool": tool,
                "server": Server::of(tool).map(Server::as_str),
                "args": arguments,
                "outcome": kind,
                "duration_ms": called.duration_ms,
                "attempts": called.attempts,
                "excerpt": quoted,
            }),
        );
    }

    /// Writes the incident, retrying what may pass.
    async fn save(&mut self) -> Result<(), ActorProcessingErr> {
        let incident = self.incident.as_ref().expect("loaded");
        let store = &self.ctx.store;
        let saving = retrying(&self.ctx.config, || store.save(incident));
        match self.ctx.metrics.db_write_timed("save", saving).await {
            Ok(saved) => {
                saved.apply(self.inc());
                self.inc().forget_stored_timeline();
                Ok(())
            }
            Err(crate::store::StoreError::Conflict(_)) => Err(Reload.into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs a store operation until it succeeds, fails in a way that will not pass, or the
/// retry deadline is spent, waiting 100 ms, then twice as long each time up to the cap.
async fn retrying<T, F, Fut>(
    config: &IncidentConfig,
    mut op: F,
) -> Result<T, crate::store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, crate::store::StoreError>>,
{
    let deadline = Instant::now() + Duration::from_millis(config.save_retry_deadline_ms);
    let mut wait_ms = 100u64;
    let mut attempt = 1u32;
    loop {
        match op().await {
            Err(e)
                if e.is_retryable()
                    && Instant::now() + Duration::from_millis(wait_ms) < deadline =>
            {
                tracing::warn!(error = %e, attempt, wait_ms, "the database failed; retrying");
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                wait_ms = (wait_ms * 2).min(config.save_retry_backoff_max_ms.max(1));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The uids of the service's pods that `get-metrics` showed before a restart (none in a
/// record older than them).
fn uids_before(action: &ActionRecord) -> Vec<String> {
    action
        .baseline
        .as_ref()
        .and_then(|b| b.get("service_uids"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The pod's uid and container start that `get-metrics` showed before a restart.
fn baseline_of(action: &ActionRecord) -> (Option<String>, chrono::DateTime<Utc>) {
    let baseline = action.baseline.as_ref();
    let uid = baseline
        .and_then(|b| b.get("pod_uid"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let started = baseline
        .and_then(|b| b.get("pod_started_at"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or(action.started_at);
    (uid, started)
}

/// The first action that still needs work: planned, started, or a restart not verified.
pub fn next_action(actions: &[ActionRecord]) -> Option<usize> {
    actions.iter().position(|a| {
        matches!(a.status, ActionStatus::Planned | ActionStatus::Started)
            || (a.tool == "restart-pod"
                && a.status == ActionStatus::Succeeded
                && a.verified.is_none())
    })
}

fn brief(incident: &Incident) -> IncidentBrief {
    IncidentBrief {
        id: incident.id.to_string(),
        title: incident.title.clone(),
        description: incident.description.clone(),
        severity: incident.severity.as_str().into(),
        alert_type: incident.metadata.alert_type.clone(),
        service: incident.metadata.service.clone(),
        labels: incident.metadata.labels.clone(),
    }
}

/// At most `bytes_max` bytes of `text`, cut on a character boundary, marked when cut.
pub fn excerpt(text: &str, bytes_max: usize) -> String {
    if text.len() <= bytes_max {
        return text.to_owned();
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} of {} bytes]", &text[..end], end, text.len())
}

fn now() -> chrono::DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_is_cut_on_a_character_boundary_and_says_so() {
        assert_eq!(excerpt("short", 10), "short");
        let cut = excerpt("ééééé", 3);
        assert!(
            cut.starts_with('é') && cut.contains("[2 of 10 bytes]"),
            "{cut}"
        );
    }
}
