//! `LlmActor`: owns the reasoner and a cap on how many incidents consult it at once.
//! Each request runs in a task of its own behind a semaphore, with a timeout, so a slow
//! model never blocks the mailbox and a storm of incidents queues instead of flooding the
//! model endpoint.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Semaphore;

use crate::reasoner::{Reasoner, ReasonerError, Step, Transcript};

pub enum LlmMsg {
    /// The next step for this transcript.
    Decide(Arc<Transcript>, RpcReplyPort<Result<Step, ReasonerError>>),
}

pub struct LlmArgs {
    pub reasoner: Arc<dyn Reasoner>,
    /// Most reasoner requests in flight at once.
    pub concurrency_max: usize,
    /// Longest one step may take, queueing for a permit included.
    pub step_timeout_ms: u64,
}

pub struct LlmState {
    reasoner: Arc<dyn Reasoner>,
    permits: Arc<Semaphore>,
    step_timeout_ms: u64,
}

pub struct LlmActor;

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
            reasoner: args.reasoner,
            permits: Arc::new(Semaphore::new(args.concurrency_max.max(1))),
            step_timeout_ms: args.step_timeout_ms,
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
        tokio::spawn(async move {
            let step = async {
                let _permit = permits.acquire_owned().await.map_err(|_| {
                    ReasonerError::Unavailable("the reasoner is shutting down".into())
                })?;
                reasoner.next_step(&transcript).await
            };
            let result = tokio::time::timeout(Duration::from_millis(timeout_ms), step)
                .await
                .unwrap_or_else(|_| {
                    Err(ReasonerError::Unavailable(format!(
                        "no step within {timeout_ms} ms"
                    )))
                });
            let _ = reply.send(result);
        });
        Ok(())
    }
}
