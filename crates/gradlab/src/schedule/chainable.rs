//! What PyTorch's chainable schedules share: each step multiplies the current learning rate
//! (the recursive `get_lr`, so that a value written between steps carries on), and a restart
//! (`SequentialLR`'s milestone) uses the closed form. Each decay is in its own file:
//!
//! | spec | file | recursive step at epoch e | closed form |
//! |---|---|---|---|
//! | `step(step_size, gamma=0.1)` | [`step`](super::step) | `lr·γ` when `e % step_size == 0` | `base·γ^⌊e/step_size⌋` |
//! | `multistep(milestones, gamma=0.1)` | [`multistep`](super::multistep) | `lr·γ` at each milestone | `base·γ^#(milestones ≤ e)` |
//! | `exponential(gamma)` | [`exponential`](super::exponential) | `lr·γ` | `base·γ^e` |
//! | `cosine(t_max, eta_min=0)` | [`cosine`](super::cosine) | `η + (lr − η)(1 + cos(πe/T))/(1 + cos(π(e−1)/T))` | `η + (base − η)(1 + cos(πe/T))/2` |
//! | `linear(start_factor=1/3, end_factor=1, total_iters=5)` | [`linear`](super::linear) | `lr·(1 + (f1 − f0)/(T f0 + (e − 1)(f1 − f0)))` for e ≤ T | `base·(f0 + (f1 − f0)·min(e, T)/T)` |
//! | `polynomial(total_iters=5, power=1)` | [`polynomial`](super::polynomial) | `lr·((1 − e/T)/(1 − (e − 1)/T))^p` for e ≤ T | `base·(1 − min(e, T)/T)^p` |
//! | `constant(factor=1/3, total_iters=5)` | [`constant`](super::constant) | `lr·factor` at 0, `lr/factor` at T | `base·factor` before T, `base` after |

use super::{load_state, save_state, schedule_error, Hyper, Progress, Schedule};
use crate::spec::{Args, Spec};
use crate::Result;

/// One chainable decay: its spec and its two forms.
pub trait Decay: Send + std::fmt::Debug {
    /// The canonical spec.
    fn spec(&self) -> Spec;
    /// PyTorch's recursive `get_lr` at epoch `e` from the current `lr`.
    fn recursive(&self, e: u64, lr: f64, base: f64) -> f64;
    /// The closed form at epoch `e` (`_get_closed_form_lr`).
    fn closed(&self, e: u64, base: f64) -> f64;
}

/// A chainable decay as a [`Schedule`]: the decay and its progress.
#[derive(Debug)]
pub struct Chained<D> {
    decay: D,
    progress: Progress,
}

impl<D: Decay> Chained<D> {
    /// The schedule of `decay`, not yet started.
    pub fn new(decay: D) -> Self {
        Chained {
            decay,
            progress: Progress::default(),
        }
    }

    fn apply(&self, hp: &mut [Hyper]) {
        let e = self.progress.epoch;
        for (h, base) in hp.iter_mut().zip(&self.progress.base_lrs) {
            h.lr = self.decay.recursive(e, h.lr, *base);
        }
    }
}

impl<D: Decay> Schedule for Chained<D> {
    fn spec(&self) -> Spec {
        self.decay.spec()
    }

    fn start(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.progress = Progress {
            epoch: 0,
            base_lrs: super::lrs(hp),
        };
        self.apply(hp);
        Ok(())
    }

    fn step(&mut self, hp: &mut [Hyper], _metric: Option<f64>) -> Result<()> {
        if self.progress.base_lrs.len() != hp.len() {
            return Err(schedule_error(
                &self.spec(),
                "stepped before it was started",
            ));
        }
        self.progress.epoch += 1;
        self.apply(hp);
        Ok(())
    }

    fn restart(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.progress.epoch = 0;
        for (h, base) in hp.iter_mut().zip(&self.progress.base_lrs) {
            h.lr = self.decay.closed(0, *base);
        }
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        save_state(&self.spec(), &self.progress)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.progress = load_state(&self.spec(), state)?;
        Ok(())
    }
}

/// A count of steps, at least 1 (`default`: `None` when the key is required).
pub(super) fn positive(args: &Args, key: &'static str, default: Option<u64>) -> Result<u64> {
    let v = match default {
        Some(d) => args.count(key, d)?,
        None => args
            .opt_count(key)?
            .ok_or_else(|| args.invalid(key, "is required"))?,
    };
    if v == 0 {
        return Err(args.invalid(key, "must be at least 1"));
    }
    Ok(v)
}
