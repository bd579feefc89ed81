//! `constant(factor=1/3, total_iters=5)`: PyTorch's `ConstantLR`, the learning rate times a
//! factor for the first `total_iters` epochs.

use super::chainable::Decay;
use crate::spec::{Args, Domain, Spec};
use crate::Result;

/// `ConstantLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    /// Factor before `total_iters`.
    pub factor: f64,
    /// Steps with the factor.
    pub total_iters: u64,
}

impl Constant {
    /// Parses `constant(factor=1/3, total_iters=5)`.
    pub fn parse(args: &Args) -> Result<Self> {
        Ok(Constant {
            factor: args.number("factor", 1.0 / 3.0, Domain::UNIT_OPEN_LOW)?,
            total_iters: args.count("total_iters", 5)?,
        })
    }
}

impl Decay for Constant {
    fn spec(&self) -> Spec {
        Spec::new("constant")
            .with("factor", self.factor)
            .with("total_iters", self.total_iters as f64)
    }

    fn recursive(&self, e: u64, lr: f64, _base: f64) -> f64 {
        if e == 0 {
            lr * self.factor
        } else if e != self.total_iters {
            lr
        } else {
            lr * (1.0 / self.factor)
        }
    }

    fn closed(&self, e: u64, base: f64) -> f64 {
        if e >= self.total_iters {
            base
        } else {
            base * self.factor
        }
    }
}
