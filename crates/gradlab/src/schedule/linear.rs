//! `linear(start_factor=1/3, end_factor=1, total_iters=5)`: PyTorch's `LinearLR`, the factor
//! on the learning rate going linearly from `start_factor` to `end_factor` (warm-up when it
//! rises).

use super::chainable::{positive, Decay};
use crate::spec::{Args, Domain, Spec};
use crate::Result;

/// `LinearLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// Factor at step 0.
    pub start_factor: f64,
    /// Factor from `total_iters` on.
    pub end_factor: f64,
    /// Steps of the ramp.
    pub total_iters: u64,
}

impl Linear {
    /// Parses `linear(start_factor=1/3, end_factor=1, total_iters=5)`.
    pub fn parse(args: &Args) -> Result<Self> {
        let start_factor = args.number("start_factor", 1.0 / 3.0, Domain::UNIT_OPEN_LOW)?;
        let end_factor = args.number("end_factor", 1.0, Domain::UNIT)?;
        Ok(Linear {
            start_factor,
            end_factor,
            total_iters: positive(args, "total_iters", Some(5))?,
        })
    }
}

impl Decay for Linear {
    fn spec(&self) -> Spec {
        Spec::new("linear")
            .with("start_factor", self.start_factor)
            .with("end_factor", self.end_factor)
            .with("total_iters", self.total_iters as f64)
    }

    fn recursive(&self, e: u64, lr: f64, _base: f64) -> f64 {
        let (f0, f1) = (self.start_factor, self.end_factor);
        if e == 0 {
            lr * f0
        } else if e > self.total_iters {
            lr
        } else {
            let d = f1 - f0;
            lr * (1.0 + d / (self.total_iters as f64 * f0 + (e as f64 - 1.0) * d))
        }
    }

    fn closed(&self, e: u64, base: f64) -> f64 {
        let (f0, f1) = (self.start_factor, self.end_factor);
        base * (f0 + (f1 - f0) * e.min(self.total_iters) as f64 / self.total_iters as f64)
    }
}
