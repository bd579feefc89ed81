//! Reduce the learning rate when a metric stops improving, as PyTorch's `ReduceLROnPlateau`.
//!
//! Each step takes the metric (e.g. the validation loss). It is better than the best so far
//! when `a < best·(1 − threshold)` (`rel`, `min` mode), `a < best − threshold` (`abs`), or the
//! mirror images in `max` mode. After more than `patience` steps without improvement, every
//! group's lr becomes `max(lr·factor, min_lr)` (only if that changes it by more than `eps`),
//! and `cooldown` steps follow in which bad steps are not counted. A NaN metric counts as
//! no improvement, as in PyTorch.

use super::{load_state, save_state, schedule_error, Hyper, Schedule};
use crate::spec::Domain;
use crate::spec::{Args, Spec};
use crate::Result;
use serde::{Deserialize, Serialize};

/// The plateau schedule.
#[derive(Debug, Clone)]
pub struct Plateau {
    mode: &'static str,
    factor: f64,
    patience: u64,
    threshold: f64,
    threshold_mode: &'static str,
    cooldown: u64,
    min_lr: f64,
    eps: f64,
    state: PlateauState,
}

/// Plateau's mutable state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    /// Best metric so far.
    pub best: Option<f64>,
    /// Steps since the last improvement.
    pub num_bad_epochs: u64,
    /// Remaining cooldown steps.
    pub cooldown_counter: u64,
    /// Steps taken.
    pub epoch: u64,
}

impl Plateau {
    /// Parses `plateau(mode=min, factor=0.1, patience=10, threshold=1e-4, threshold_mode=rel,
    /// cooldown=0, min_lr=0, eps=1e-8)`.
    pub fn parse(args: &Args) -> Result<Self> {
        let min_lr = args.number("min_lr", 0.0, Domain::NON_NEGATIVE)?;
        Ok(Plateau {
            mode: args.word("mode", "min", &["min", "max"])?,
            factor: args.number("factor", 0.1, Domain::UNIT_OPEN)?,
            patience: args.count("patience", 10)?,
            threshold: args.number("threshold", 1e-4, Domain::NON_NEGATIVE)?,
            threshold_mode: args.word("threshold_mode", "rel", &["rel", "abs"])?,
            cooldown: args.count("cooldown", 0)?,
            min_lr,
            eps: args.number("eps", 1e-8, Domain::NON_NEGATIVE)?,
            state: PlateauState::default(),
        })
    }

    fn is_better(&self, a: f64) -> bool {
        let Some(best) = self.state.best else {
            return !a.is_nan();
        };
        match (self.mode, self.threshold_mode) {
            ("min", "rel") => a < best * (1.0 - self.threshold),
            ("min", _) => a < best - self.threshold,
            (_, "rel") => a > best * (self.threshold + 1.0),
            _ => a > best + self.threshold,
        }
    }

    /// The current state (best value, bad steps, cooldown).
    pub fn plateau_state(&self) -> &PlateauState {
        &self.state
    }
}

impl Schedule for Plateau {
    fn spec(&self) -> Spec {
        Spec::new("plateau")
            .with("mode", self.mode)
            .with("factor", self.factor)
            .with("patience", self.patience as f64)
            .with("threshold", self.threshold)
            .with("threshold_mode", self.threshold_mode)
            .with("cooldown", self.cooldown as f64)
            .with("min_lr", self.min_lr)
            .with("eps", self.eps)
    }

    fn start(&mut self, _hp: &mut [Hyper]) -> Result<()> {
        self.state = PlateauState::default();
        Ok(())
    }

    fn step(&mut self, hp: &mut [Hyper], metric: Option<f64>) -> Result<()> {
        let Some(current) = metric else {
            return Err(schedule_error(
                &self.spec(),
                "plateau must be stepped with a metric (e.g. the validation loss)",
            ));
        };
        self.state.epoch += 1;
        if self.is_better(current) {
            self.state.best = Some(current);
            self.state.num_bad_epochs = 0;
        } else {
            self.state.num_bad_epochs += 1;
        }
        if self.state.cooldown_counter > 0 {
            self.state.cooldown_counter -= 1;
            self.state.num_bad_epochs = 0;
        }
        if self.state.num_bad_epochs > self.patience {
            for h in hp.iter_mut() {
                let new_lr = (h.lr * self.factor).max(self.min_lr);
                if h.lr - new_lr > self.eps {
                    h.lr = new_lr;
                }
            }
            self.state.cooldown_counter = self.cooldown;
            self.state.num_bad_epochs = 0;
        }
        Ok(())
    }

    fn restart(&mut self, _hp: &mut [Hyper]) -> Result<()> {
        self.state = PlateauState::default();
        Ok(())
    }

    fn needs_metric(&self) -> bool {
        true
    }

    fn state(&self) -> serde_json::Value {
        save_state(&self.spec(), &self.state)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.state = load_state(&self.spec(), state)?;
        Ok(())
    }
}
