//! `multistep(milestones, gamma=0.1)`: PyTorch's `MultiStepLR`, the learning rate times γ at
//! each milestone.

use super::chainable::Decay;
use crate::spec::{Args, Domain, Spec, Value};
use crate::Result;

/// `MultiStepLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStep {
    /// Strictly increasing steps at which to decay.
    pub milestones: Vec<u64>,
    /// Factor.
    pub gamma: f64,
}

impl MultiStep {
    /// Parses `multistep(milestones, gamma=0.1)`.
    pub fn parse(args: &Args) -> Result<Self> {
        let milestones = args
            .counts("milestones")?
            .ok_or_else(|| args.invalid("milestones", "is required, e.g. milestones=[30, 80]"))?;
        if milestones.windows(2).any(|w| w[1] <= w[0]) {
            return Err(args.invalid("milestones", "must be strictly increasing"));
        }
        Ok(MultiStep {
            milestones,
            gamma: args.number("gamma", 0.1, Domain::NON_NEGATIVE)?,
        })
    }
}

impl Decay for MultiStep {
    fn spec(&self) -> Spec {
        let milestones = self.milestones.iter().map(|m| Value::Num(*m as f64));
        Spec::new("multistep")
            .with("milestones", Value::List(milestones.collect()))
            .with("gamma", self.gamma)
    }

    fn recursive(&self, e: u64, lr: f64, _base: f64) -> f64 {
        if self.milestones.contains(&e) {
            lr * self.gamma
        } else {
            lr
        }
    }

    fn closed(&self, e: u64, base: f64) -> f64 {
        let passed = self.milestones.iter().filter(|m| **m <= e).count();
        base * self.gamma.powi(passed as i32)
    }
}
