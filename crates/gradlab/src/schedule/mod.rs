//! Learning-rate (and momentum) schedules with PyTorch's semantics.
//!
//! A schedule is built from a spec (`cosine(t_max=100)`), started on an optimizer (PyTorch's
//! constructor: the epoch-0 values are written at once), then stepped after every optimizer
//! step, or every epoch — it only counts its own steps. Values follow PyTorch's *recursive*
//! `get_lr` (each step multiplies the current learning rate), not only its closed forms,
//! so they agree with PyTorch to the last bits; where PyTorch has a quirk, the schedule's
//! doc comment says how it is matched.
//!
//! ```
//! use gradlab::optim::{self, Layout, Options};
//! use gradlab::schedule::Scheduler;
//! let mut opt = optim::build::<f64>("sgd(lr=0.1)", Layout::single("w", 1), &[], Options::default())?;
//! let mut s = Scheduler::new("step(step_size=2, gamma=0.5)", opt.as_mut())?;
//! let mut lrs = Vec::new();
//! for _ in 0..5 {
//!     lrs.push(opt.lr(0)); // the value this step uses
//!     s.step(opt.as_mut())?;
//! }
//! assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025]);
//! # Ok::<(), gradlab::Error>(())
//! ```
//!
//! | spec | PyTorch |
//! |---|---|
//! | `step(step_size, gamma=0.1)` | `StepLR` |
//! | `multistep(milestones, gamma=0.1)` | `MultiStepLR` |
//! | `exponential(gamma)` | `ExponentialLR` |
//! | `cosine(t_max, eta_min=0)` | `CosineAnnealingLR` |
//! | `sgdr(t_0, t_mult=1, eta_min=0)` | `CosineAnnealingWarmRestarts` |
//! | `cyclic(base_lr, max_lr, step_size_up=2000, ...)` | `CyclicLR` |
//! | `onecycle(max_lr, total_steps, ...)` | `OneCycleLR` |
//! | `linear(start_factor=1/3, end_factor=1, total_iters=5)` | `LinearLR` |
//! | `polynomial(total_iters=5, power=1)` | `PolynomialLR` |
//! | `constant(factor=1/3, total_iters=5)` | `ConstantLR` |
//! | `noam(d_model, warmup, factor=1)` | Transformer warm-up as a `LambdaLR` |
//! | `sequential(s1, s2, ..., milestones=[...])` | `SequentialLR` |
//! | `warmup_cosine(warmup_steps, total_steps, eta_min, warmup_start_factor)` | `sequential(linear, cosine)` |
//! | `wsd(warmup_steps, stable_steps, decay_steps, eta_min)` | warm-up, stable, linear decay |
//! | `plateau(mode, factor, patience, ...)` | `ReduceLROnPlateau` (stepped with a metric) |
//! | `swalr(swa_lr, anneal_epochs=10, anneal_strategy=cos)` | `swa_utils.SWALR` |

pub mod chainable;
pub mod constant;
pub mod cosine;
pub mod cyclic;
pub mod exponential;
pub mod linear;
pub mod multistep;
pub mod noam;
pub mod onecycle;
pub mod plateau;
pub mod polynomial;
pub mod range_test;
pub mod sequential;
pub mod sgdr;
pub mod step;
pub mod swalr;
pub mod wsd;

use crate::optim::Optimizer;
use crate::spec::{Args, Spec};
use crate::{Error, Real, Result};
use chainable::Chained;
use serde::{Deserialize, Serialize};

/// The names every schedule spec may start with.
pub const SCHEDULES: &[&str] = &[
    "step",
    "multistep",
    "exponential",
    "cosine",
    "sgdr",
    "cyclic",
    "onecycle",
    "linear",
    "polynomial",
    "constant",
    "noam",
    "sequential",
    "warmup_cosine",
    "wsd",
    "plateau",
    "swalr",
];

/// The values a schedule drives: each parameter group's learning rate and momentum, owned
/// by the optimizer (see [`crate::optim::hyper`]).
pub use crate::optim::Hyper;

/// A schedule; see the module documentation.
pub trait Schedule: Send {
    /// The canonical spec.
    fn spec(&self) -> Spec;
    /// Resets the schedule and takes its initial step (PyTorch's constructor): records the
    /// base learning rates and sets the values for the first optimizer step, one entry of
    /// `hp` per parameter group.
    fn start(&mut self, hp: &mut [Hyper]) -> Result<()>;
    /// One step (after an optimizer step, or an epoch); `metric` feeds `plateau`.
    fn step(&mut self, hp: &mut [Hyper], metric: Option<f64>) -> Result<()>;
    /// Restarts at epoch 0 from the base learning rates, as `SequentialLR` does at a
    /// milestone (`scheduler.step(0)`, which uses the closed form where PyTorch has one).
    fn restart(&mut self, hp: &mut [Hyper]) -> Result<()>;
    /// Whether [`Schedule::step`] needs a metric.
    fn needs_metric(&self) -> bool {
        false
    }
    /// The mutable state, for checkpoints.
    fn state(&self) -> serde_json::Value;
    /// Restores [`Schedule::state`].
    fn load_state(&mut self, state: &serde_json::Value) -> Result<()>;
}

/// Builds a schedule from a spec string.
pub fn build(spec: &str) -> Result<Box<dyn Schedule>> {
    build_from_spec(&crate::spec::parse(spec)?)
}

/// The canonical form of a schedule spec, every key written out (`cosine(t_max=10)` and
/// `cosine(t_max=1e1, eta_min=0)` give the same string).
pub fn canonical_spec(spec: &str) -> Result<String> {
    Ok(build(spec)?.spec().to_string())
}

/// Builds a schedule from a parsed spec.
pub fn build_from_spec(spec: &Spec) -> Result<Box<dyn Schedule>> {
    let args = Args::new(
        spec,
        if spec.name == "sequential" {
            usize::MAX
        } else {
            0
        },
    );
    let schedule: Box<dyn Schedule> = match spec.name.as_str() {
        "step" => Box::new(Chained::new(step::Step::parse(&args)?)),
        "multistep" => Box::new(Chained::new(multistep::MultiStep::parse(&args)?)),
        "exponential" => Box::new(Chained::new(exponential::Exponential::parse(&args)?)),
        "cosine" => Box::new(Chained::new(cosine::Cosine::parse(&args)?)),
        "linear" => Box::new(Chained::new(linear::Linear::parse(&args)?)),
        "polynomial" => Box::new(Chained::new(polynomial::Polynomial::parse(&args)?)),
        "constant" => Box::new(Chained::new(constant::Constant::parse(&args)?)),
        "sgdr" => Box::new(sgdr::Sgdr::parse(&args)?),
        "cyclic" => Box::new(cyclic::Cyclic::parse(&args)?),
        "onecycle" => Box::new(onecycle::OneCycle::parse(&args)?),
        "noam" => Box::new(noam::Noam::parse(&args)?),
        "sequential" => Box::new(sequential::Sequential::parse(&args)?),
        "warmup_cosine" => Box::new(sequential::warmup_cosine(&args)?),
        "wsd" => Box::new(wsd::Wsd::parse(&args)?),
        "plateau" => Box::new(plateau::Plateau::parse(&args)?),
        "swalr" => Box::new(swalr::Swalr::parse(&args)?),
        other => {
            return Err(Error::UnknownName {
                what: "schedule",
                name: other.to_string(),
                spec: spec.to_string(),
                known: SCHEDULES.join(", "),
            })
        }
    };
    args.finish()?;
    Ok(schedule)
}

/// A schedule attached to an optimizer: it writes the learning rate and momentum of the
/// optimizer's groups where the optimizer keeps them ([`Optimizer::hypers_mut`]).
pub struct Scheduler {
    schedule: Box<dyn Schedule>,
    /// The values before the schedule's last write, put back if it hands out a value out of
    /// range (kept here so that a step allocates nothing).
    before: Vec<Hyper>,
}

impl Scheduler {
    /// Builds the schedule and starts it on `opt` (the first step's values are set at once).
    pub fn new<T: Real>(spec: &str, opt: &mut dyn Optimizer<T>) -> Result<Self> {
        Self::from_schedule(build(spec)?, opt)
    }

    /// Starts an already built schedule on `opt`.
    pub fn from_schedule<T: Real>(
        schedule: Box<dyn Schedule>,
        opt: &mut dyn Optimizer<T>,
    ) -> Result<Self> {
        let mut scheduler = Scheduler {
            schedule,
            before: Vec::new(),
        };
        let name = opt.name();
        scheduler
            .write(opt, |s, hp| s.start(hp))
            .map_err(|e| with_optimizer(e, name))?;
        Ok(scheduler)
    }

    /// A schedule continued from a saved [`Scheduler::state`], without the initial step (the
    /// optimizer's values were saved with its own state).
    pub fn resume(spec: &str, state: &serde_json::Value) -> Result<Self> {
        let mut schedule = build(spec)?;
        schedule.load_state(state)?;
        Ok(Scheduler {
            schedule,
            before: Vec::new(),
        })
    }

    /// The schedule's spec.
    pub fn spec(&self) -> Spec {
        self.schedule.spec()
    }

    /// Whether [`Scheduler::step_with_metric`] must be used.
    pub fn needs_metric(&self) -> bool {
        self.schedule.needs_metric()
    }

    /// Steps the schedule (call after the optimizer step, as in PyTorch).
    pub fn step<T: Real>(&mut self, opt: &mut dyn Optimizer<T>) -> Result<()> {
        self.advance(opt, None)
    }

    /// Steps a metric-driven schedule (`plateau`) with, e.g., the validation loss.
    pub fn step_with_metric<T: Real>(
        &mut self,
        opt: &mut dyn Optimizer<T>,
        metric: f64,
    ) -> Result<()> {
        self.advance(opt, Some(metric))
    }

    fn advance<T: Real>(&mut self, opt: &mut dyn Optimizer<T>, metric: Option<f64>) -> Result<()> {
        self.write(opt, |s, hp| s.step(hp, metric))
    }

    /// Lets the schedule write the optimizer's values in place; if it fails, or hands out a
    /// value out of range, the values are put back as they were and the error returned.
    fn write<T: Real>(
        &mut self,
        opt: &mut dyn Optimizer<T>,
        f: impl FnOnce(&mut dyn Schedule, &mut [Hyper]) -> Result<()>,
    ) -> Result<()> {
        let hp = opt.hypers_mut();
        self.before.clear();
        self.before.extend_from_slice(hp);
        let written =
            f(self.schedule.as_mut(), hp).and_then(|()| check_values(self.schedule.as_ref(), hp));
        if written.is_err() {
            hp.copy_from_slice(&self.before);
        }
        written
    }

    /// The schedule's state, to save beside the optimizer's.
    pub fn state(&self) -> serde_json::Value {
        self.schedule.state()
    }

    /// Restores a state saved with [`Scheduler::state`].
    pub fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.schedule.load_state(state)
    }
}

/// Whatever the combination of keys, a schedule never hands the optimizer a negative or
/// non-finite learning rate, or a momentum outside [0, 1): that is an error naming the
/// schedule, the group and the value.
fn check_values(schedule: &dyn Schedule, hp: &[Hyper]) -> Result<()> {
    let bad = |what: &str, group: usize, x: f64, range: &str| Error::Schedule {
        spec: schedule.spec().to_string(),
        message: format!(
            "it gives group {group} the {what} {}, which must be {range}",
            crate::spec::format_number(x)
        ),
    };
    for (g, h) in hp.iter().enumerate() {
        if !(h.lr.is_finite() && h.lr >= 0.0) {
            return Err(bad("learning rate", g, h.lr, "a finite number >= 0"));
        }
        if let Some(m) = h.momentum {
            if !(0.0..1.0).contains(&m) {
                return Err(bad("momentum", g, m, "in [0, 1)"));
            }
        }
    }
    Ok(())
}

fn with_optimizer(e: Error, optimizer: &str) -> Error {
    match e {
        Error::Schedule { spec, message } => Error::Schedule {
            spec,
            message: format!("{message} (optimizer '{optimizer}')"),
        },
        other => other,
    }
}

/// What every schedule records: how many steps it took and the base learning rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// PyTorch's `last_epoch`: 0 after the initial step.
    pub epoch: u64,
    /// The learning rates the schedule scales (PyTorch's `base_lrs`).
    pub base_lrs: Vec<f64>,
}

/// A schedule given by a closed form `lr = value(epoch, base_lr)`, with no state beyond its
/// [`Progress`]; the [`Schedule`] implementation comes with it.
pub trait ClosedForm: Send {
    /// The canonical spec.
    fn spec(&self) -> Spec;
    /// The learning rate at `epoch` for a group whose base learning rate is `base`.
    fn value(&self, epoch: u64, base: f64) -> f64;
    /// The progress record.
    fn progress(&self) -> &Progress;
    /// The progress record, mutably.
    fn progress_mut(&mut self) -> &mut Progress;
}

fn apply_closed_form<C: ClosedForm>(c: &C, hp: &mut [Hyper]) {
    let p = c.progress();
    for (h, base) in hp.iter_mut().zip(&p.base_lrs) {
        h.lr = c.value(p.epoch, *base);
    }
}

impl<C: ClosedForm> Schedule for C {
    fn spec(&self) -> Spec {
        ClosedForm::spec(self)
    }

    fn start(&mut self, hp: &mut [Hyper]) -> Result<()> {
        *self.progress_mut() = Progress {
            epoch: 0,
            base_lrs: lrs(hp),
        };
        apply_closed_form(self, hp);
        Ok(())
    }

    fn step(&mut self, hp: &mut [Hyper], _metric: Option<f64>) -> Result<()> {
        self.progress_mut().epoch += 1;
        apply_closed_form(self, hp);
        Ok(())
    }

    fn restart(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.progress_mut().epoch = 0;
        apply_closed_form(self, hp);
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        save_state(&ClosedForm::spec(self), self.progress())
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        *self.progress_mut() = load_state(&ClosedForm::spec(self), state)?;
        Ok(())
    }
}

/// Serialises a schedule's state together with its spec, so a state is never loaded into a
/// different schedule.
pub(crate) fn save_state<S: Serialize>(spec: &Spec, state: &S) -> serde_json::Value {
    serde_json::json!({ "spec": spec.to_string(), "state": state })
}

/// Reads a state written by [`save_state`], checking the spec.
pub(crate) fn load_state<S: for<'de> Deserialize<'de>>(
    spec: &Spec,
    value: &serde_json::Value,
) -> Result<S> {
    let err = |message: String| Error::Schedule {
        spec: spec.to_string(),
        message,
    };
    let saved = value
        .get("spec")
        .and_then(|s| s.as_str())
        .ok_or_else(|| err("the saved schedule state has no spec".into()))?;
    if saved != spec.to_string() {
        return Err(err(format!(
            "the saved state belongs to schedule '{saved}'"
        )));
    }
    serde_json::from_value(value.get("state").cloned().unwrap_or_default())
        .map_err(|e| err(format!("malformed saved state: {e}")))
}

/// An error about a schedule.
pub(crate) fn schedule_error(spec: &Spec, message: impl Into<String>) -> Error {
    Error::Schedule {
        spec: spec.to_string(),
        message: message.into(),
    }
}

/// The groups' learning rates (what a schedule records as its base).
pub(crate) fn lrs(hp: &[Hyper]) -> Vec<f64> {
    hp.iter().map(|h| h.lr).collect()
}

/// Momentum values for schedules that cycle momentum: an error when the optimizer has none.
pub(crate) fn require_momentum(spec: &Spec, hp: &[Hyper]) -> Result<()> {
    if hp.iter().any(|h| h.momentum.is_none()) {
        return Err(schedule_error(
            spec,
            "cycle_momentum needs an optimizer with momentum or beta1; pass cycle_momentum=false",
        ));
    }
    Ok(())
}
