//! Stochastic weight averaging (SWA, Izmailov et al. 2018): the running mean of the weights
//! at chosen moments, `AveragedModel`'s default.

use super::{copies, with_weights};
use crate::{Error, Result};
use candle_core::{Tensor, Var};

/// The running mean of `n` values and one more.
pub(crate) fn mean_update(mean: &mut [Tensor], n: usize, vars: &[Var]) -> Result<()> {
    let w = 1.0 / (n as f64 + 1.0);
    for (m, v) in mean.iter_mut().zip(vars) {
        *m = ((&*m * (1.0 - w))? + (v.as_tensor() * w)?)?;
    }
    Ok(())
}

/// Stochastic weight averaging: the mean of the variables' values at the moments
/// [`Swa::update`] is called (every epoch from the SWA start, say).
pub struct Swa {
    vars: Vec<Var>,
    mean: Vec<Tensor>,
    count: usize,
}

impl Swa {
    /// An empty average of `vars`.
    pub fn new(vars: &[Var]) -> Self {
        Swa {
            vars: vars.to_vec(),
            mean: Vec::new(),
            count: 0,
        }
    }

    /// Adds the variables' current values to the mean.
    pub fn update(&mut self) -> Result<()> {
        if self.count == 0 {
            self.mean = copies(&self.vars)?;
        } else {
            mean_update(&mut self.mean, self.count, &self.vars)?;
        }
        self.count += 1;
        Ok(())
    }

    /// How many values the mean holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The mean, in the order of the variables (empty before the first update).
    pub fn average(&self) -> &[Tensor] {
        &self.mean
    }

    /// Runs `f` with the mean in the variables, then restores their own values.
    pub fn with_average<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        self.with_average_recomputed(|| Ok(()), f)
    }

    /// [`Swa::with_average`] after `recompute` has refreshed whatever depends on the weights
    /// (batch-norm running statistics: forward passes over training batches in training
    /// mode). What `recompute` changes outside the variables stays changed.
    pub fn with_average_recomputed<R>(
        &self,
        recompute: impl FnOnce() -> Result<()>,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        if self.count == 0 {
            return Err(Error::unsupported(
                "the SWA average is empty: call update before using it",
            ));
        }
        with_weights(&self.vars, &self.mean, || {
            recompute()?;
            f()
        })
    }
}
