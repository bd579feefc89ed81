//! PyTorch's chainable decays: each step multiplies the current learning rate (the
//! recursive `get_lr`), and a restart uses the closed form.
//!
//! | spec | recursive step at epoch e | closed form |
//! |---|---|---|
//! | `step(step_size, gamma=0.1)` | `lr·γ` when `e % step_size == 0` | `base·γ^⌊e/step_size⌋` |
//! | `multistep(milestones, gamma=0.1)` | `lr·γ` at each milestone | `base·γ^#(milestones ≤ e)` |
//! | `exponential(gamma)` | `lr·γ` | `base·γ^e` |
//! | `cosine(t_max, eta_min=0)` | `η + (lr − η)(1 + cos(πe/T))/(1 + cos(π(e−1)/T))` | `η + (base − η)(1 + cos(πe/T))/2` |
//! | `linear(start_factor=1/3, end_factor=1, total_iters=5)` | `lr·(1 + (f1 − f0)/(T f0 + (e − 1)(f1 − f0)))` for e ≤ T | `base·(f0 + (f1 − f0)·min(e, T)/T)` |
//! | `polynomial(total_iters=5, power=1)` | `lr·((1 − e/T)/(1 − (e − 1)/T))^p` for e ≤ T | `base·(1 − min(e, T)/T)^p` |
//! | `constant(factor=1/3, total_iters=5)` | `lr·factor` at 0, `lr/factor` at T | `base·factor` before T, `base` after |
//!
//! `cosine` keeps following the cosine beyond `t_max` (back up, period `2·t_max`), exactly as
//! PyTorch's recursive form does; it does not clamp.

use super::{load_state, save_state, schedule_error, Hyper, Progress, Schedule};
use crate::spec::Domain;
use crate::spec::{Args, Spec, Value};
use crate::Result;
use std::f64::consts::PI;

/// The kind of decay and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `StepLR`.
    Step {
        /// Period in steps.
        step_size: u64,
        /// Factor.
        gamma: f64,
    },
    /// `MultiStepLR`.
    MultiStep {
        /// Strictly increasing steps at which to decay.
        milestones: Vec<u64>,
        /// Factor.
        gamma: f64,
    },
    /// `ExponentialLR`.
    Exponential {
        /// Factor per step.
        gamma: f64,
    },
    /// `CosineAnnealingLR`.
    Cosine {
        /// Half period.
        t_max: u64,
        /// Minimum learning rate.
        eta_min: f64,
    },
    /// `LinearLR`.
    Linear {
        /// Factor at step 0.
        start_factor: f64,
        /// Factor from `total_iters` on.
        end_factor: f64,
        /// Steps of the ramp.
        total_iters: u64,
    },
    /// `PolynomialLR`.
    Polynomial {
        /// Steps to reach zero.
        total_iters: u64,
        /// Exponent.
        power: f64,
    },
    /// `ConstantLR`.
    Constant {
        /// Factor before `total_iters`.
        factor: f64,
        /// Steps with the factor.
        total_iters: u64,
    },
}

/// A chainable decay schedule.
#[derive(Debug, Clone)]
pub struct Decay {
    kind: Kind,
    progress: Progress,
}

impl Decay {
    /// A decay of this kind.
    pub fn new(kind: Kind) -> Self {
        Decay {
            kind,
            progress: Progress::default(),
        }
    }

    /// Parses the specs of the table above.
    pub fn parse(args: &Args) -> Result<Self> {
        let name = args.spec().name.as_str();
        let positive = |key: &'static str, default: Option<u64>| -> Result<u64> {
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
        };
        let kind = match name {
            "step" => Kind::Step {
                step_size: positive("step_size", None)?,
                gamma: args.number("gamma", 0.1, Domain::NON_NEGATIVE)?,
            },
            "multistep" => {
                let milestones = args.counts("milestones")?.ok_or_else(|| {
                    args.invalid("milestones", "is required, e.g. milestones=[30, 80]")
                })?;
                if milestones.windows(2).any(|w| w[1] <= w[0]) {
                    return Err(args.invalid("milestones", "must be strictly increasing"));
                }
                Kind::MultiStep {
                    milestones,
                    gamma: args.number("gamma", 0.1, Domain::NON_NEGATIVE)?,
                }
            }
            "exponential" => Kind::Exponential {
                gamma: args.required_number("gamma", Domain::NON_NEGATIVE)?,
            },
            "cosine" => Kind::Cosine {
                t_max: positive("t_max", None)?,
                eta_min: args.number("eta_min", 0.0, Domain::NON_NEGATIVE)?,
            },
            "linear" => {
                let start_factor = args.number("start_factor", 1.0 / 3.0, Domain::UNIT_OPEN_LOW)?;
                let end_factor = args.number("end_factor", 1.0, Domain::UNIT)?;
                Kind::Linear {
                    start_factor,
                    end_factor,
                    total_iters: positive("total_iters", Some(5))?,
                }
            }
            "polynomial" => Kind::Polynomial {
                total_iters: positive("total_iters", Some(5))?,
                power: args.number("power", 1.0, Domain::NON_NEGATIVE)?,
            },
            "constant" => Kind::Constant {
                factor: args.number("factor", 1.0 / 3.0, Domain::UNIT_OPEN_LOW)?,
                total_iters: args.count("total_iters", 5)?,
            },
            other => unreachable!("decay::parse called for '{other}'"),
        };
        Ok(Decay::new(kind))
    }

    /// PyTorch's recursive `get_lr` at epoch `e` from the current `lr`.
    fn recursive(&self, e: u64, lr: f64, base: f64) -> f64 {
        match &self.kind {
            Kind::Step { step_size, gamma } => {
                if e == 0 || !e.is_multiple_of(*step_size) {
                    lr
                } else {
                    lr * gamma
                }
            }
            Kind::MultiStep { milestones, gamma } => {
                if milestones.contains(&e) {
                    lr * gamma
                } else {
                    lr
                }
            }
            Kind::Exponential { gamma } => {
                if e == 0 {
                    lr
                } else {
                    lr * gamma
                }
            }
            Kind::Cosine { t_max, eta_min } => {
                let (t, ef) = (*t_max as f64, e as f64);
                if e == 0 {
                    lr
                } else if (e as i64 - 1 - *t_max as i64).rem_euclid(2 * *t_max as i64) == 0 {
                    lr + (base - eta_min) * (1.0 - (PI / t).cos()) / 2.0
                } else {
                    eta_min
                        + (lr - eta_min) * (1.0 + (PI * ef / t).cos())
                            / (1.0 + (PI * (ef - 1.0) / t).cos())
                }
            }
            Kind::Linear {
                start_factor,
                end_factor,
                total_iters,
            } => {
                if e == 0 {
                    lr * start_factor
                } else if e > *total_iters {
                    lr
                } else {
                    let d = end_factor - start_factor;
                    lr * (1.0 + d / (*total_iters as f64 * start_factor + (e as f64 - 1.0) * d))
                }
            }
            Kind::Polynomial { total_iters, power } => {
                if e == 0 || e > *total_iters {
                    lr
                } else {
                    let t = *total_iters as f64;
                    let ef = e as f64;
                    lr * ((1.0 - ef / t) / (1.0 - (ef - 1.0) / t)).powf(*power)
                }
            }
            Kind::Constant {
                factor,
                total_iters,
            } => {
                if e == 0 {
                    lr * factor
                } else if e != *total_iters {
                    lr
                } else {
                    lr * (1.0 / factor)
                }
            }
        }
    }

    /// The closed form at epoch `e`.
    fn closed(&self, e: u64, base: f64) -> f64 {
        match &self.kind {
            Kind::Step { step_size, gamma } => base * gamma.powi((e / step_size) as i32),
            Kind::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|m| **m <= e).count() as i32)
            }
            Kind::Exponential { gamma } => base * gamma.powi(e as i32),
            Kind::Cosine { t_max, eta_min } => {
                eta_min + (base - eta_min) * (1.0 + (PI * e as f64 / *t_max as f64).cos()) / 2.0
            }
            Kind::Linear {
                start_factor,
                end_factor,
                total_iters,
            } => {
                base * (start_factor
                    + (end_factor - start_factor) * e.min(*total_iters) as f64
                        / *total_iters as f64)
            }
            Kind::Polynomial { total_iters, power } => {
                base * (1.0 - e.min(*total_iters) as f64 / *total_iters as f64).powf(*power)
            }
            Kind::Constant {
                factor,
                total_iters,
            } => {
                if e >= *total_iters {
                    base
                } else {
                    base * factor
                }
            }
        }
    }

    fn apply(&self, hp: &mut [Hyper]) {
        let e = self.progress.epoch;
        for (h, base) in hp.iter_mut().zip(&self.progress.base_lrs) {
            h.lr = self.recursive(e, h.lr, *base);
        }
    }
}

impl Schedule for Decay {
    fn spec(&self) -> Spec {
        let count = |n: u64| n as f64;
        match &self.kind {
            Kind::Step { step_size, gamma } => Spec::new("step")
                .with("step_size", count(*step_size))
                .with("gamma", *gamma),
            Kind::MultiStep { milestones, gamma } => Spec::new("multistep")
                .with(
                    "milestones",
                    Value::List(milestones.iter().map(|m| Value::Num(*m as f64)).collect()),
                )
                .with("gamma", *gamma),
            Kind::Exponential { gamma } => Spec::new("exponential").with("gamma", *gamma),
            Kind::Cosine { t_max, eta_min } => Spec::new("cosine")
                .with("t_max", count(*t_max))
                .with("eta_min", *eta_min),
            Kind::Linear {
                start_factor,
                end_factor,
                total_iters,
            } => Spec::new("linear")
                .with("start_factor", *start_factor)
                .with("end_factor", *end_factor)
                .with("total_iters", count(*total_iters)),
            Kind::Polynomial { total_iters, power } => Spec::new("polynomial")
                .with("total_iters", count(*total_iters))
                .with("power", *power),
            Kind::Constant {
                factor,
                total_iters,
            } => Spec::new("constant")
                .with("factor", *factor)
                .with("total_iters", count(*total_iters)),
        }
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
            h.lr = self.closed(0, *base);
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
