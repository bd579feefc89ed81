//! Warm-up, stable, decay (WSD; Hu et al. 2024, "MiniCPM"): a linear warm-up, a constant
//! plateau, then a linear decay to `eta_min`.
//!
//! ```text
//! e < W:              lr = base · (s + (1 − s) · e/W)          (s = warmup_start_factor)
//! W ≤ e < W + S:      lr = base
//! W + S ≤ e < W+S+D:  lr = base + (η_min − base) · (e − W − S)/D
//! e ≥ W + S + D:      lr = η_min
//! ```

use super::{ClosedForm, Progress};
use crate::spec::Domain;
use crate::spec::{Args, Spec};
use crate::Result;

/// The WSD schedule.
#[derive(Debug, Clone)]
pub struct Wsd {
    warmup_steps: u64,
    stable_steps: u64,
    decay_steps: u64,
    eta_min: f64,
    warmup_start_factor: f64,
    progress: Progress,
}

impl Wsd {
    /// Parses `wsd(warmup_steps, stable_steps, decay_steps, eta_min=0, warmup_start_factor=0.01)`.
    pub fn parse(args: &Args) -> Result<Self> {
        let required = |k: &'static str| -> Result<u64> {
            args.opt_count(k)?
                .ok_or_else(|| args.invalid(k, "is required"))
        };
        let warmup_start_factor = args.number("warmup_start_factor", 0.01, Domain::UNIT)?;
        let eta_min = args.number("eta_min", 0.0, Domain::NON_NEGATIVE)?;
        Ok(Wsd {
            warmup_steps: required("warmup_steps")?,
            stable_steps: required("stable_steps")?,
            decay_steps: required("decay_steps")?,
            eta_min,
            warmup_start_factor,
            progress: Progress::default(),
        })
    }

    fn value_at(&self, e: u64, base: f64) -> f64 {
        let (w, s, d) = (self.warmup_steps, self.stable_steps, self.decay_steps);
        if e < w {
            base * (self.warmup_start_factor
                + (1.0 - self.warmup_start_factor) * e as f64 / w as f64)
        } else if e < w + s {
            base
        } else if e < w + s + d {
            base + (self.eta_min - base) * (e - w - s) as f64 / d as f64
        } else {
            self.eta_min
        }
    }
}

impl ClosedForm for Wsd {
    fn spec(&self) -> Spec {
        Spec::new("wsd")
            .with("warmup_steps", self.warmup_steps as f64)
            .with("stable_steps", self.stable_steps as f64)
            .with("decay_steps", self.decay_steps as f64)
            .with("eta_min", self.eta_min)
            .with("warmup_start_factor", self.warmup_start_factor)
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
