//! `polynomial(total_iters=5, power=1)`: PyTorch's `PolynomialLR`, the learning rate going to
//! zero as `(1 − e/T)^p`.

use super::chainable::{positive, Decay};
use crate::spec::{Args, Domain, Spec};
use crate::Result;

/// `PolynomialLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct Polynomial {
    /// Steps to reach zero.
    pub total_iters: u64,
    /// Exponent.
    pub power: f64,
}

impl Polynomial {
    /// Parses `polynomial(total_iters=5, power=1)`.
    pub fn parse(args: &Args) -> Result<Self> {
        Ok(Polynomial {
            total_iters: positive(args, "total_iters", Some(5))?,
            power: args.number("power", 1.0, Domain::NON_NEGATIVE)?,
        })
    }
}

impl Decay for Polynomial {
    fn spec(&self) -> Spec {
        Spec::new("polynomial")
            .with("total_iters", self.total_iters as f64)
            .with("power", self.power)
    }

    fn recursive(&self, e: u64, lr: f64, _base: f64) -> f64 {
        if e == 0 || e > self.total_iters {
            lr
        } else {
            let (t, ef) = (self.total_iters as f64, e as f64);
            lr * ((1.0 - ef / t) / (1.0 - (ef - 1.0) / t)).powf(self.power)
        }
    }

    fn closed(&self, e: u64, base: f64) -> f64 {
        let done = e.min(self.total_iters) as f64 / self.total_iters as f64;
        base * (1.0 - done).powf(self.power)
    }
}
