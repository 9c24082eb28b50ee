//! `LlmActor`: owns the reasoner and a cap on how many incidents consult it at once.
//! Each request runs in a task of its own behind a semaphore, with a timeout, so a slow
//! model never blocks the mailbox and a storm of incidents queues instead of flooding the
//! model endpoint. Each turn is measured here: how long it took once it had a permit, how it
//! ended, how many are in flight, and the tokens the model reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::reasoner::{Reasoner, ReasonerError, Reply, Transcript};

pub enum LlmMsg {
    /// The next step for this transcript, and the tokens it used, sent to `ReplyTo`.
    Decide(Arc<Transcript>, ReplyTo),
}

/// Where a turn's answer goes, exactly once. The asking incident does not wait on it (a
/// storm's thousands of incidents waiting for the model hold no future each): the answer
/// comes to it as a message. A request dropped unanswered (the actor stopped with it in its
/// mailbox, the runtime shutting down) answers `Unavailable` as it goes, so no incident waits
/// for an answer that will never come.
pub struct ReplyTo(Option<Box<dyn FnOnce(Reply) + Send>>);

impl ReplyTo {
    pub fn new(deliver: impl FnOnce(Reply) + Send + 'static) -> Self {
        ReplyTo(Some(Box::new(deliver)))
    }

    pub fn send(mut self, reply: Reply) {
        if let Some(deliver) = self.0.take() {
            deliver(reply);
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if let Some(deliver) = self.0.take() {
            deliver(Reply::unavailable(
                "the reasoner dropped the request unanswered",
            ));
        }
    }
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
                    return Reply::unavailable("the reasoner is shutting down");
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
                        Reply::unavailable(format!("no step within {timeout_ms} ms")),
                        "timeout",
                    ),
                };
            // The transcript is let go before the answer goes: the incident appends the
            // turn to it in place instead of copying it.
            drop(transcript);
            metrics.model_turn(&name, outcome, began.map(|b| b.elapsed()));
            metrics.model_tokens(
                &name,
                answer.usage.prompt_tokens,
                answer.usage.completion_tokens,
            );
            reply.send(answer);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::mpsc;

    use super::*;
    use crate::reasoner::rules::RulesReasoner;
    use crate::reasoner::{Step, Usage, oom_transcript};

    fn transcript() -> Arc<Transcript> {
        Arc::new(oom_transcript())
    }

    /// A `ReplyTo` whose answers land in the returned receiver, and a count of them.
    fn answers() -> (ReplyTo, mpsc::UnboundedReceiver<Reply>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        let reply_to = ReplyTo::new(move |reply| {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(reply);
        });
        (reply_to, rx, count)
    }

    async fn reasoner(concurrency_max: usize) -> ActorRef<LlmMsg> {
        let (actor, _) = Actor::spawn(
            None,
            LlmActor,
            LlmArgs {
                reasoner: Arc::new(RulesReasoner),
                concurrency_max,
                step_timeout_ms: 5_000,
                metrics: Arc::new(Metrics::new()),
            },
        )
        .await
        .unwrap();
        actor
    }

    #[tokio::test]
    async fn an_answer_is_delivered_once_and_a_dropped_request_answers_unavailable() {
        let (reply_to, mut rx, count) = answers();
        reply_to.send(Reply {
            step: Err(ReasonerError::Unusable("first".into())),
            usage: Usage::default(),
        });
        assert!(
            matches!(rx.recv().await.unwrap().step, Err(ReasonerError::Unusable(m)) if m == "first")
        );
        assert_eq!(count.load(Ordering::SeqCst), 1, "sent, then dropped: once");

        let (reply_to, mut rx, count) = answers();
        drop(reply_to);
        let reply = rx.recv().await.unwrap();
        assert!(
            matches!(&reply.step, Err(e @ ReasonerError::Unavailable(_)) if e.is_retryable()),
            "{:?}",
            reply.step.err()
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_turn_is_answered_through_its_reply_and_the_transcript_is_let_go_first() {
        let llm = reasoner(4).await;
        let transcript = transcript();
        let (reply_to, mut rx, _) = answers();
        llm.send_message(LlmMsg::Decide(transcript.clone(), reply_to))
            .unwrap();
        let reply = rx.recv().await.unwrap();
        assert!(
            matches!(reply.step, Ok(Step::Calls { .. })),
            "{:?}",
            reply.step
        );
        // The asker holds the only reference once the answer is in: appending the turn
        // does not copy the transcript.
        assert_eq!(Arc::strong_count(&transcript), 1);
        llm.stop(None);
    }

    #[tokio::test]
    async fn a_request_to_a_reasoner_that_is_gone_is_answered_unavailable_at_once() {
        let llm = reasoner(1).await;
        llm.stop(None);
        for _ in 0..100 {
            if llm.get_status() == ractor::ActorStatus::Stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (reply_to, mut rx, count) = answers();
        // Refused by the stopped actor: the request comes back in the error and is dropped.
        let _ = llm.send_message(LlmMsg::Decide(transcript(), reply_to));
        let reply = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("answered without waiting for any timeout")
            .unwrap();
        assert!(matches!(reply.step, Err(ReasonerError::Unavailable(_))));
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
