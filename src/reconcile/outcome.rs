//! What applying a plan did: one outcome per action and each secret's final
//! state. Report models and the engine read these without depending on how
//! the apply step runs its calls.

use crate::reconcile::plan::{Action, Plan, SecretPlan};
use crate::store::StoreError;

/// What happened to one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Report-only action (conflict, error): nothing was called.
    NotRun,
    /// The call succeeded.
    Ok,
    /// The call failed.
    Failed(StoreError),
    /// Not attempted because an earlier step for the same secret failed.
    Skipped,
}

/// Result of applying a plan.
#[derive(Debug, Clone)]
pub struct Applied {
    /// One outcome per plan action, same order.
    pub outcomes: Vec<Outcome>,
    /// Final per-secret states, same order as the plan's.
    pub secrets: Vec<SecretPlan>,
}

impl Applied {
    /// The actions of `plan` (the plan this was applied from) whose call
    /// succeeded: what the agent now knows it changed in AWS.
    pub fn succeeded<'a>(&'a self, plan: &'a Plan) -> impl Iterator<Item = &'a Action> + 'a {
        plan.actions
            .iter()
            .zip(&self.outcomes)
            .filter(|(_, o)| **o == Outcome::Ok)
            .map(|(a, _)| a)
    }

    /// Whether any call failed with an error that may pass by itself
    /// (throttling, outage): the pass should be retried later.
    pub fn has_transient_failure(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Failed(e) if e.is_transient()))
    }

    /// Whether any call failed because AWS throttled it.
    pub fn was_throttled(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Failed(e) if e.is_throttled()))
    }
}
