//! SGDR: cosine annealing with warm restarts (Loshchilov & Hutter 2017), as PyTorch's
//! `CosineAnnealingWarmRestarts`.
//!
//! ```text
//! lr = η_min + (base − η_min)(1 + cos(π T_cur / T_i)) / 2
//! each step: T_cur += 1; when T_cur ≥ T_i: T_cur −= T_i, T_i ← T_i · t_mult
//! ```
//! The first period has `t_0` steps and each next one is `t_mult` times longer.

use super::{load_state, save_state, schedule_error, Hyper, Progress, Schedule};
use crate::spec::Domain;
use crate::spec::{Args, Spec};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// The SGDR schedule.
#[derive(Debug, Clone)]
pub struct Sgdr {
    t_0: u64,
    t_mult: u64,
    eta_min: f64,
    state: SgdrState,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SgdrState {
    progress: Progress,
    t_i: u64,
    t_cur: u64,
}

impl Sgdr {
    /// Parses `sgdr(t_0, t_mult=1, eta_min=0)`.
    pub fn parse(args: &Args) -> Result<Self> {
        let t_0 = args
            .opt_count("t_0")?
            .ok_or_else(|| args.invalid("t_0", "is required"))?;
        if t_0 == 0 {
            return Err(args.invalid("t_0", "must be at least 1"));
        }
        let t_mult = args.count("t_mult", 1)?;
        if t_mult == 0 {
            return Err(args.invalid("t_mult", "must be a whole number >= 1"));
        }
        Ok(Sgdr {
            t_0,
            t_mult,
            eta_min: args.number("eta_min", 0.0, Domain::NON_NEGATIVE)?,
            state: SgdrState::default(),
        })
    }

    fn apply(&self, hp: &mut [Hyper]) {
        let s = &self.state;
        let phase = (PI * s.t_cur as f64 / s.t_i as f64).cos();
        for (h, base) in hp.iter_mut().zip(&s.progress.base_lrs) {
            h.lr = self.eta_min + (base - self.eta_min) * (1.0 + phase) / 2.0;
        }
    }
}

impl Schedule for Sgdr {
    fn spec(&self) -> Spec {
        Spec::new("sgdr")
            .with("t_0", self.t_0 as f64)
            .with("t_mult", self.t_mult as f64)
            .with("eta_min", self.eta_min)
    }

    fn start(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.state = SgdrState {
            progress: Progress {
                epoch: 0,
                base_lrs: super::lrs(hp),
            },
            t_i: self.t_0,
            t_cur: 0,
        };
        self.apply(hp);
        Ok(())
    }

    fn step(&mut self, hp: &mut [Hyper], _metric: Option<f64>) -> Result<()> {
        if self.state.t_i == 0 {
            return Err(schedule_error(
                &self.spec(),
                "stepped before it was started",
            ));
        }
        let s = &mut self.state;
        s.progress.epoch += 1;
        s.t_cur += 1;
        if s.t_cur >= s.t_i {
            s.t_cur -= s.t_i;
            s.t_i *= self.t_mult;
        }
        self.apply(hp);
        Ok(())
    }

    fn restart(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.state.progress.epoch = 0;
        self.state.t_i = self.t_0;
        self.state.t_cur = 0;
        self.apply(hp);
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        save_state(&self.spec(), &self.state)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.state = load_state(&self.spec(), state)?;
        Ok(())
    }
}
