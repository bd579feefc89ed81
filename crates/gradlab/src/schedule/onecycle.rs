//! The one-cycle policy (Smith & Topin 2018), as PyTorch's `OneCycleLR`, with momentum
//! (or beta1) cycled inversely by default.
//!
//! Phases, with `T = total_steps`, `lr0 = max_lr/div_factor`, `lr_min = lr0/final_div_factor`:
//! ```text
//! two-phase:   [0, pct·T − 1]  lr0 → max_lr,   momentum max → base
//!              [.., T − 1]     max_lr → lr_min, momentum base → max
//! three-phase: [0, pct·T − 1]  lr0 → max_lr;  [.., 2·pct·T − 2] max_lr → lr0;  [.., T − 1] lr0 → lr_min
//! ```
//! inside a phase `cos`: `end + (start − end)(1 + cos(π·pct))/2`, `linear`: `start + (end − start)·pct`.
//! Like PyTorch, stepping it more than `total_steps` times is an error.

use super::{load_state, require_momentum, save_state, schedule_error, Hyper, Progress, Schedule};
use crate::spec::Domain;
use crate::spec::{Args, Spec};
use crate::Result;
use std::f64::consts::PI;

/// The one-cycle schedule.
#[derive(Debug, Clone)]
pub struct OneCycle {
    max_lr: f64,
    total_steps: u64,
    pct_start: f64,
    anneal_strategy: &'static str,
    cycle_momentum: bool,
    base_momentum: f64,
    max_momentum: f64,
    div_factor: f64,
    final_div_factor: f64,
    three_phase: bool,
    progress: Progress,
}

/// One phase: it ends at `end_step` (inclusive) and goes from `start` to `end` values.
struct Phase {
    end_step: f64,
    lr: (f64, f64),
    momentum: (f64, f64),
}

impl OneCycle {
    /// Parses `onecycle(max_lr, total_steps | epochs & steps_per_epoch, pct_start=0.3,
    /// anneal_strategy=cos, cycle_momentum=true, base_momentum=0.85, max_momentum=0.95,
    /// div_factor=25, final_div_factor=1e4, three_phase=false)`.
    pub fn parse(args: &Args) -> Result<Self> {
        let total = args.opt_count("total_steps")?;
        let epochs = args.opt_count("epochs")?;
        let per_epoch = args.opt_count("steps_per_epoch")?;
        let total_steps = match (total, epochs, per_epoch) {
            (Some(t), None, None) => t,
            (None, Some(e), Some(s)) => e * s,
            (Some(_), _, _) => {
                return Err(args.invalid(
                    "total_steps",
                    "give total_steps or epochs and steps_per_epoch, not both",
                ))
            }
            _ => {
                return Err(args.invalid(
                    "total_steps",
                    "is required (or give both epochs and steps_per_epoch)",
                ))
            }
        };
        if total_steps == 0 {
            return Err(args.invalid("total_steps", "must be at least 1"));
        }
        let pct_start = args.number("pct_start", 0.3, Domain::UNIT)?;
        Ok(OneCycle {
            max_lr: args.required_number("max_lr", Domain::NON_NEGATIVE)?,
            total_steps,
            pct_start,
            anneal_strategy: args.word("anneal_strategy", "cos", &["cos", "linear"])?,
            cycle_momentum: args.bool("cycle_momentum", true)?,
            base_momentum: args.number("base_momentum", 0.85, Domain::DECAY)?,
            max_momentum: args.number("max_momentum", 0.95, Domain::DECAY)?,
            div_factor: args.number("div_factor", 25.0, Domain::POSITIVE)?,
            final_div_factor: args.number("final_div_factor", 1e4, Domain::POSITIVE)?,
            three_phase: args.bool("three_phase", false)?,
            progress: Progress::default(),
        })
    }

    fn phases(&self) -> Vec<Phase> {
        let t = self.total_steps as f64;
        let initial = self.max_lr / self.div_factor;
        let min_lr = initial / self.final_div_factor;
        let (lo, hi) = (self.base_momentum, self.max_momentum);
        if self.three_phase {
            vec![
                Phase {
                    end_step: self.pct_start * t - 1.0,
                    lr: (initial, self.max_lr),
                    momentum: (hi, lo),
                },
                Phase {
                    end_step: 2.0 * self.pct_start * t - 2.0,
                    lr: (self.max_lr, initial),
                    momentum: (lo, hi),
                },
                Phase {
                    end_step: t - 1.0,
                    lr: (initial, min_lr),
                    momentum: (hi, hi),
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: self.pct_start * t - 1.0,
                    lr: (initial, self.max_lr),
                    momentum: (hi, lo),
                },
                Phase {
                    end_step: t - 1.0,
                    lr: (self.max_lr, min_lr),
                    momentum: (lo, hi),
                },
            ]
        }
    }

    fn anneal(&self, (start, end): (f64, f64), pct: f64) -> f64 {
        if self.anneal_strategy == "cos" {
            end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0)
        } else {
            (end - start) * pct + start
        }
    }

    fn apply(&self, hp: &mut [Hyper]) -> Result<()> {
        let step = self.progress.epoch;
        if step > self.total_steps {
            return Err(schedule_error(
                &self.spec(),
                format!(
                    "stepped {step} times, but total_steps is {}: the cycle is over (raise total_steps)",
                    self.total_steps
                ),
            ));
        }
        let phases = self.phases();
        let mut start_step = 0.0;
        let s = step as f64;
        for (i, phase) in phases.iter().enumerate() {
            if s <= phase.end_step || i == phases.len() - 1 {
                // At step total_steps (after the cycle's last step, which PyTorch still
                // allows) the last phase would extrapolate past its end (a negative lr
                // with linear annealing); the cycle's final values hold instead.
                let pct = ((s - start_step) / (phase.end_step - start_step)).min(1.0);
                let lr = self.anneal(phase.lr, pct);
                hp.iter_mut().for_each(|h| h.lr = lr);
                if self.cycle_momentum {
                    let m = self.anneal(phase.momentum, pct);
                    hp.iter_mut().for_each(|h| h.momentum = Some(m));
                }
                break;
            }
            start_step = phase.end_step;
        }
        Ok(())
    }
}

impl Schedule for OneCycle {
    fn spec(&self) -> Spec {
        Spec::new("onecycle")
            .with("max_lr", self.max_lr)
            .with("total_steps", self.total_steps as f64)
            .with("pct_start", self.pct_start)
            .with("anneal_strategy", self.anneal_strategy)
            .with("cycle_momentum", self.cycle_momentum)
            .with("base_momentum", self.base_momentum)
            .with("max_momentum", self.max_momentum)
            .with("div_factor", self.div_factor)
            .with("final_div_factor", self.final_div_factor)
            .with("three_phase", self.three_phase)
    }

    fn start(&mut self, hp: &mut [Hyper]) -> Result<()> {
        if self.cycle_momentum {
            require_momentum(&self.spec(), hp)?;
        }
        self.progress = Progress {
            epoch: 0,
            base_lrs: vec![self.max_lr / self.div_factor; hp.len()],
        };
        self.apply(hp)
    }

    fn step(&mut self, hp: &mut [Hyper], _metric: Option<f64>) -> Result<()> {
        self.progress.epoch += 1;
        self.apply(hp).inspect_err(|_| self.progress.epoch -= 1)
    }

    fn restart(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.progress.epoch = 0;
        self.apply(hp)
    }

    fn state(&self) -> serde_json::Value {
        save_state(&self.spec(), &self.progress)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.progress = load_state(&self.spec(), state)?;
        Ok(())
    }
}
