//! `exponential(gamma)`: PyTorch's `ExponentialLR`, the learning rate times γ every epoch.

use super::chainable::Decay;
use crate::spec::{Args, Domain, Spec};
use crate::Result;

/// `ExponentialLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exponential {
    /// Factor per step.
    pub gamma: f64,
}

impl Exponential {
    /// Parses `exponential(gamma)`.
    pub fn parse(args: &Args) -> Result<Self> {
        Ok(Exponential {
            gamma: args.required_number("gamma", Domain::NON_NEGATIVE)?,
        })
    }
}

impl Decay for Exponential {
    fn spec(&self) -> Spec {
        Spec::new("exponential").with("gamma", self.gamma)
    }

    fn recursive(&self, e: u64, lr: f64, _base: f64) -> f64 {
        if e == 0 {
            lr
        } else {
            lr * self.gamma
        }
    }

    fn closed(&self, e: u64, base: f64) -> f64 {
        base * self.gamma.powi(e as i32)
    }
}
