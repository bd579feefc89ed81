//! `cosine(t_max, eta_min=0)`: PyTorch's `CosineAnnealingLR` (Loshchilov & Hutter 2017
//! without restarts), in its recursive form.
//!
//! It keeps following the cosine beyond `t_max` (back up, period `2·t_max`), exactly as
//! PyTorch's recursive form does; it does not clamp.

use super::chainable::{positive, Decay};
use crate::spec::{Args, Domain, Spec};
use crate::Result;
use std::f64::consts::PI;

/// `CosineAnnealingLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cosine {
    /// Half period.
    pub t_max: u64,
    /// Minimum learning rate.
    pub eta_min: f64,
}

impl Cosine {
    /// Parses `cosine(t_max, eta_min=0)`.
    pub fn parse(args: &Args) -> Result<Self> {
        Ok(Cosine {
            t_max: positive(args, "t_max", None)?,
            eta_min: args.number("eta_min", 0.0, Domain::NON_NEGATIVE)?,
        })
    }
}

impl Decay for Cosine {
    fn spec(&self) -> Spec {
        Spec::new("cosine")
            .with("t_max", self.t_max as f64)
            .with("eta_min", self.eta_min)
    }

    fn recursive(&self, e: u64, lr: f64, base: f64) -> f64 {
        let (t, ef, eta_min) = (self.t_max as f64, e as f64, self.eta_min);
        if e == 0 {
            lr
        } else if (e as i64 - 1 - self.t_max as i64).rem_euclid(2 * self.t_max as i64) == 0 {
            lr + (base - eta_min) * (1.0 - (PI / t).cos()) / 2.0
        } else {
            eta_min
                + (lr - eta_min) * (1.0 + (PI * ef / t).cos()) / (1.0 + (PI * (ef - 1.0) / t).cos())
        }
    }

    fn closed(&self, e: u64, base: f64) -> f64 {
        let eta_min = self.eta_min;
        eta_min + (base - eta_min) * (1.0 + (PI * e as f64 / self.t_max as f64).cos()) / 2.0
    }
}
