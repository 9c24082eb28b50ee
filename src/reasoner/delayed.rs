//! `Delayed`: another reasoner's decisions, each after a fixed wait. It stands in for a slow
//! model with the rules' decisions (storms, tests): the agent's concurrency cap, timeouts and
//! queues meet a model's latency while the outcome stays deterministic. It decides nothing
//! of its own.

use std::sync::Arc;
use std::time::Duration;

use super::{Reasoner, ReplyFuture, StepFuture, Transcript};

pub struct Delayed {
    inner: Arc<dyn Reasoner>,
    /// How long every turn takes before the inner reasoner is asked.
    delay_ms: u64,
}

impl Delayed {
    pub fn new(inner: Arc<dyn Reasoner>, delay_ms: u64) -> Self {
        Delayed { inner, delay_ms }
    }
}

impl Reasoner for Delayed {
    /// The inner reasoner's name with the delay, e.g. `rules+50ms`: what the RCA, the
    /// timeline and the metrics show, so a run with a simulated model says so.
    fn name(&self) -> String {
        format!("{}+{}ms", self.inner.name(), self.delay_ms)
    }

    fn next_step<'a>(&'a self, transcript: &'a Transcript) -> StepFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
            self.inner.next_step(transcript).await
        })
    }

    /// The inner reasoner's reply, tokens included, after the wait.
    fn next_reply<'a>(&'a self, transcript: &'a Transcript) -> ReplyFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
            self.inner.next_reply(transcript).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::reasoner::rules::RulesReasoner;
    use crate::reasoner::{Step, oom_transcript};

    #[tokio::test]
    async fn a_delayed_turn_takes_its_delay_and_answers_what_the_inner_reasoner_answers() {
        let inner: Arc<dyn Reasoner> = Arc::new(RulesReasoner);
        let delayed = Delayed::new(inner.clone(), 40);
        assert_eq!(delayed.name(), "rules+40ms");
        let t = oom_transcript();
        let begun = Instant::now();
        let step = delayed.next_step(&t).await.unwrap();
        assert!(begun.elapsed() >= Duration::from_millis(40));
        let expected: Step = inner.next_step(&t).await.unwrap();
        assert_eq!(step, expected);
        let begun = Instant::now();
        let reply = delayed.next_reply(&t).await;
        assert!(begun.elapsed() >= Duration::from_millis(40));
        assert_eq!(reply.step.unwrap(), expected);
    }
}
