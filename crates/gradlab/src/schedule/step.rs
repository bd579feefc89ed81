//! `step(step_size, gamma=0.1)`: PyTorch's `StepLR`, the learning rate times γ every
//! `step_size` epochs.

use super::chainable::{positive, Decay};
use crate::spec::{Args, Domain, Spec};
use crate::Result;

/// `StepLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Period in steps.
    pub step_size: u64,
    /// Factor.
    pub gamma: f64,
}

impl Step {
    /// Parses `step(step_size, gamma=0.1)`.
    pub fn parse(args: &Args) -> Result<Self> {
        Ok(Step {
            step_size: positive(args, "step_size", None)?,
            gamma: args.number("gamma", 0.1, Domain::NON_NEGATIVE)?,
        })
    }
}

impl Decay for Step {
    fn spec(&self) -> Spec {
        Spec::new("step")
            .with("step_size", self.step_size as f64)
            .with("gamma", self.gamma)
    }

    fn recursive(&self, e: u64, lr: f64, _base: f64) -> f64 {
        if e == 0 || !e.is_multiple_of(self.step_size) {
            lr
        } else {
            lr * self.gamma
        }
    }

    fn closed(&self, e: u64, base: f64) -> f64 {
        base * self.gamma.powi((e / self.step_size) as i32)
    }
}
