//! `LlmActor`: owns the reasoner and a cap on how many incidents consult it at once.
//! Each request runs in a task of its own behind a semaphore, with a timeout, so a slow
//! model never blocks the mailbox and a storm of incidents queues instead of flooding the
//! model endpoint. Each turn is measured here: how long it took once it had a permit, how it
//! ended, how many are in flight, and the tokens the model reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::reasoner::{Reasoner, ReasonerError, Reply, Transcript, Usage};

pub enum LlmMsg {
    /// The next step for this transcript, and the tokens it used.
    Decide(Box<Transcript>, RpcReplyPort<Reply>),
}

pub struct LlmArgs {
    pub reasoner: Arc<dyn Reasoner>,
    /// Most reasoner requests in flight at once.
    pub concurrency_max: usize,
    /// Longest one step may take, queueing for a permit included.
    pub step_timeout_ms: u64,
    pub metrics: Arc<Metrics>,
}

pub struct LlmState {
    reasoner: Arc<dyn Reasoner>,
    /// The reasoner's name as the metrics label it (made once).
    name: Arc<str>,
    permits: Arc<Semaphore>,
    step_timeout_ms: u64,
    metrics: Arc<Metrics>,
}

pub struct LlmActor;

/// How a turn ended, as the metrics label it.
fn outcome_of(step: &Result<crate::reasoner::Step, ReasonerError>) -> &'static str {
    match step {
        Ok(_) => "ok",
        Err(ReasonerError::Unavailable(_)) => "unavailable",
        Err(ReasonerError::Unusable(_)) => "unusable",
        Err(ReasonerError::Config(_)) => "misconfigured",
    }
}

impl Actor for LlmActor {
    type Msg = LlmMsg;
    type State = LlmState;
    type Arguments = LlmArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: LlmArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(LlmState {
            name: Arc::from(args.reasoner.name()),
            reasoner: args.reasoner,
            permits: Arc::new(Semaphore::new(args.concurrency_max.max(1))),
            step_timeout_ms: args.step_timeout_ms,
            metrics: args.metrics,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let LlmMsg::Decide(transcript, reply) = message;
        let reasoner = state.reasoner.clone();
        let permits = state.permits.clone();
        let timeout_ms = state.step_timeout_ms;
        let (metrics, name) = (state.metrics.clone(), state.name.clone());
        tokio::spawn(async move {
            // When the turn got its permit, and what the model reported by then.
            let mut began: Option<Instant> = None;
            let step = async {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return Reply {
                        step: Err(ReasonerError::Unavailable(
                            "the reasoner is shutting down".into(),
                        )),
                        usage: Usage::default(),
                    };
                };
                let _in_flight = metrics.model_turn_in_flight();
                began = Some(Instant::now());
                reasoner.next_reply(&transcript).await
            };
            let (answer, outcome) =
                match tokio::time::timeout(Duration::from_millis(timeout_ms), step).await {
                    Ok(answer) => {
                        let outcome = outcome_of(&answer.step);
                        (answer, outcome)
                    }
                    // The tokens of a turn cut short are not known: the model's answer
                    // never came.
                    Err(_) => (
                        Reply {
                            step: Err(ReasonerError::Unavailable(format!(
                                "no step within {timeout_ms} ms"
                            ))),
                            usage: Usage::default(),
                        },
                        "timeout",
                    ),
                };
            metrics.model_turn(&name, outcome, began.map(|b| b.elapsed()));
            metrics.model_tokens(
                &name,
                answer.usage.prompt_tokens,
                answer.usage.completion_tokens,
            );
            let _ = reply.send(answer);
        });
        Ok(())
    }
}
