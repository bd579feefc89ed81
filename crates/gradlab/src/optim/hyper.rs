//! The hyperparameters that change during a run, with one owner.
//!
//! PyTorch keeps every hyperparameter in `optimizer.param_groups` and lets schedulers write
//! `group['lr']` and `group['momentum']` / `group['betas'][0]`. Here each optimizer owns one
//! [`Hyper`] per parameter group and reads it at every step; schedules
//! ([`crate::schedule::Scheduler`]), SWA, the learning-rate range test and users write that
//! one value through [`Optimizer::hypers_mut`](super::Optimizer::hypers_mut). What never
//! changes during a run (betas' second half, ε, weight decay, flags) stays in each rule's
//! configuration.

use crate::spec::{Spec, Value};
use crate::{Error, Result};

/// One parameter group's learning rate and momentum (or β1), as they stand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    /// Learning rate γ.
    pub lr: f64,
    /// Momentum μ (SGD family) or β1 (Adam family); `None` for optimizers without one.
    pub momentum: Option<f64>,
}

impl Hyper {
    /// A group's values.
    pub fn new(lr: f64, momentum: Option<f64>) -> Self {
        Hyper { lr, momentum }
    }

    /// Momentum or β1, 0 for an optimizer without one.
    pub fn momentum_or_zero(&self) -> f64 {
        self.momentum.unwrap_or(0.0)
    }

    /// Checks values written from outside before a step uses them: a finite learning rate
    /// `>= 0` and a momentum in `[0, 1)`, present exactly where the optimizer has one
    /// (`reference` holds the group's values as the optimizer was built).
    pub fn check(&self, reference: &Hyper, optimizer: &str, group: usize) -> Result<()> {
        let key = |what: &str| format!("optimizer '{optimizer}', group {group}: {what}");
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::OutOfRange {
                key: key("lr"),
                value: self.lr,
                range: "a finite number >= 0".into(),
            });
        }
        match (self.momentum, reference.momentum) {
            (Some(m), Some(_)) if !(0.0..1.0).contains(&m) => Err(Error::OutOfRange {
                key: key("momentum (beta1)"),
                value: m,
                range: "in [0, 1)".into(),
            }),
            (Some(_), None) => Err(Error::Unsupported {
                what: format!("optimizer '{optimizer}' has no momentum or beta1"),
                reason: format!("group {group} was given one; remove it"),
            }),
            (None, Some(_)) => Err(Error::Unsupported {
                what: format!("optimizer '{optimizer}', group {group}"),
                reason: "its momentum (beta1) was removed; give it a value in [0, 1)".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl Hyper {
    /// `spec` (a group's canonical spec) with these values in place of its `lr` and its
    /// `momentum` or first `betas` item: the spec of a group whose values are held by another
    /// optimizer (Muon's fallback) and handed to it at its next step.
    pub fn written_into(&self, mut spec: Spec) -> Spec {
        for (key, value) in &mut spec.args {
            match (key.as_deref(), value, self.momentum) {
                (Some("lr"), v, _) => *v = Value::Num(self.lr),
                (Some("momentum"), v, Some(m)) => *v = Value::Num(m),
                (Some("betas"), Value::Tuple(items), Some(m)) if !items.is_empty() => {
                    items[0] = Value::Num(m)
                }
                _ => {}
            }
        }
        spec
    }
}

/// Every group's [`Hyper`] as an optimizer owns them: the values as they stand, and as the
/// optimizer was built (what is present, to check values written later against).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupHypers {
    now: Vec<Hyper>,
    built: Vec<Hyper>,
}

impl GroupHypers {
    /// The groups' values as built.
    pub fn new(values: Vec<Hyper>) -> Self {
        GroupHypers {
            built: values.clone(),
            now: values,
        }
    }

    /// The values as they stand, group 0 first.
    pub fn values(&self) -> &[Hyper] {
        &self.now
    }

    /// The values, to write.
    pub fn values_mut(&mut self) -> &mut [Hyper] {
        &mut self.now
    }

    /// Group `g`'s values.
    pub fn group(&self, g: usize) -> &Hyper {
        &self.now[g]
    }

    /// Replaces the values (from a saved state parsed with the same optimizer).
    pub fn restore(&mut self, values: Vec<Hyper>) {
        self.now = values;
    }

    /// Checks every group's values before a step (see [`Hyper::check`]).
    pub fn check(&self, optimizer: &str) -> Result<()> {
        for (g, (h, b)) in self.now.iter().zip(&self.built).enumerate() {
            h.check(b, optimizer, g)?;
        }
        Ok(())
    }
}
