//! The `rules` reasoner: offline and deterministic. It runs the runbook
//! ([`crate::core::rules`], the pure recipe) and keeps no state between steps.

use super::{Reasoner, Step, StepFuture, Transcript};

pub const NAME: &str = "rules";

#[derive(Clone, Copy, Debug, Default)]
pub struct RulesReasoner;

impl Reasoner for RulesReasoner {
    fn name(&self) -> String {
        NAME.into()
    }

    fn next_step<'a>(&'a self, transcript: &'a Transcript) -> StepFuture<'a> {
        let step: Step = crate::core::rules::next_step(transcript);
        Box::pin(async move { Ok(step) })
    }
}
