//! The Transformer warm-up ("Noam") schedule of Vaswani et al. 2017, as a `LambdaLR`
//! multiplier of the optimizer's learning rate:
//!
//! ```text
//! lr(e) = base · factor · d_model^−½ · min(t^−½, t · warmup^−³ᐟ²),   t = e + 1
//! ```
//! It rises linearly for `warmup` steps, peaks at `base·factor·(d_model·warmup)^−½`, then
//! decays as `t^−½`. (Use `adam(lr=1, betas=(0.9, 0.98), eps=1e-9)` for the paper's setting.)

use super::{ClosedForm, Progress};
use crate::spec::Domain;
use crate::spec::{Args, Spec};
use crate::Result;

/// The Noam schedule.
#[derive(Debug, Clone)]
pub struct Noam {
    d_model: f64,
    warmup: u64,
    factor: f64,
    progress: Progress,
}

impl Noam {
    /// Parses `noam(d_model, warmup, factor=1)`.
    pub fn parse(args: &Args) -> Result<Self> {
        let d_model = args.required_number("d_model", Domain::POSITIVE)?;
        if d_model <= 0.0 {
            return Err(args.invalid("d_model", "must be > 0"));
        }
        let warmup = args
            .opt_count("warmup")?
            .ok_or_else(|| args.invalid("warmup", "is required"))?;
        if warmup == 0 {
            return Err(args.invalid("warmup", "must be at least 1"));
        }
        Ok(Noam {
            d_model,
            warmup,
            factor: args.number("factor", 1.0, Domain::POSITIVE)?,
            progress: Progress::default(),
        })
    }

    fn value_at(&self, e: u64, base: f64) -> f64 {
        base * self.multiplier(e)
    }

    /// The multiplier at epoch `e`.
    pub fn multiplier(&self, e: u64) -> f64 {
        let t = (e + 1) as f64;
        self.factor
            * self.d_model.powf(-0.5)
            * t.powf(-0.5).min(t * (self.warmup as f64).powf(-1.5))
    }
}

impl ClosedForm for Noam {
    fn spec(&self) -> Spec {
        Spec::new("noam")
            .with("d_model", self.d_model)
            .with("warmup", self.warmup as f64)
            .with("factor", self.factor)
    }

    fn value(&self, epoch: u64, base: f64) -> f64 {
        self.value_at(epoch, base)
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    fn progress_mut(&mut self) -> &mut Progress {
        &mut self.progress
    }
}
