//! The exponential moving average of weights (EMA: `AveragedModel` with
//! `get_ema_multi_avg_fn`, timm's `ModelEmaV2`).

use super::{copies, with_weights};
use crate::{Error, Result};
use candle_core::{Tensor, Var};

/// `ema ← d·ema + (1 − d)·θ` for each variable.
pub(crate) fn ema_update(ema: &mut [Tensor], vars: &[Var], decay: f64) -> Result<()> {
    for (e, v) in ema.iter_mut().zip(vars) {
        *e = ((&*e * decay)? + (v.as_tensor() * (1.0 - decay))?)?;
    }
    Ok(())
}

/// An exponential moving average of variables.
pub struct Ema {
    vars: Vec<Var>,
    decay: f64,
    average: Vec<Tensor>,
}

impl Ema {
    /// An average of `vars` starting at their current values; `decay` in [0, 1).
    pub fn new(vars: &[Var], decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::setting(
                "decay",
                format!("EMA decay must be in [0, 1), got {decay}"),
            ));
        }
        Ok(Ema {
            vars: vars.to_vec(),
            decay,
            average: copies(vars)?,
        })
    }

    /// Takes in the variables' current values (after an optimizer step).
    pub fn update(&mut self) -> Result<()> {
        ema_update(&mut self.average, &self.vars, self.decay)
    }

    /// The averaged values, in the order of the variables.
    pub fn average(&self) -> &[Tensor] {
        &self.average
    }

    /// Runs `f` with the average in the variables, then restores their own values.
    pub fn with_average<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        with_weights(&self.vars, &self.average, f)
    }
}
