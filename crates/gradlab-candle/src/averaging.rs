//! Weight averaging over any candle variables: an exponential moving average (EMA, as
//! `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn`, or timm's `ModelEmaV2`)
//! and stochastic weight averaging (SWA, Izmailov et al. 2018: the running mean of the weights
//! at chosen moments, `AveragedModel`'s default). The trainer keeps its averages with the same
//! formulas; a candle user keeps them beside any model:
//!
//! ```
//! use candle_core::{Device, Var};
//! use gradlab_candle::averaging::{Ema, Swa};
//! let w = Var::new(&[0.0f32, 0.0], &Device::Cpu)?;
//! let (mut ema, mut swa) = (Ema::new(&[w.clone()], 0.9)?, Swa::new(&[w.clone()]));
//! for step in 1..=3 {
//!     w.set(&candle_core::Tensor::new(&[step as f32, 1.0], &Device::Cpu)?)?;
//!     ema.update()?;
//!     swa.update()?;
//! }
//! // SWA: the mean of 1, 2, 3; the raw weights are back after the closure.
//! let mean = swa.with_average(|| Ok(w.as_tensor().to_vec1::<f32>()?))?;
//! assert_eq!(mean, [2.0, 1.0]);
//! assert_eq!(w.as_tensor().to_vec1::<f32>()?, [3.0, 1.0]);
//! # Ok::<(), gradlab_candle::Error>(())
//! ```
//!
//! Batch normalisation: its running statistics belong to the raw weights; evaluate an average
//! with [`Swa::with_average_recomputed`], given a closure that refreshes them (forward passes
//! over training batches in training mode, as `torch.optim.swa_utils.update_bn`).

use crate::{Error, Result};
use candle_core::{Tensor, Var};

/// `ema ← d·ema + (1 − d)·θ` for each variable.
pub(crate) fn ema_update(ema: &mut [Tensor], vars: &[Var], decay: f64) -> Result<()> {
    for (e, v) in ema.iter_mut().zip(vars) {
        *e = ((&*e * decay)? + (v.as_tensor() * (1.0 - decay))?)?;
    }
    Ok(())
}

/// The running mean of `n` values and one more.
pub(crate) fn mean_update(mean: &mut [Tensor], n: usize, vars: &[Var]) -> Result<()> {
    let w = 1.0 / (n as f64 + 1.0);
    for (m, v) in mean.iter_mut().zip(vars) {
        *m = ((&*m * (1.0 - w))? + (v.as_tensor() * w)?)?;
    }
    Ok(())
}

/// Copies of the variables' values.
pub(crate) fn copies(vars: &[Var]) -> Result<Vec<Tensor>> {
    Ok(vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?)
}

/// Puts `weights` into `vars`, runs `f`, and puts the variables' own values back (also when
/// `f` fails).
pub(crate) fn with_weights<R>(
    vars: &[Var],
    weights: &[Tensor],
    f: impl FnOnce() -> Result<R>,
) -> Result<R> {
    let raw = copies(vars)?;
    for (v, w) in vars.iter().zip(weights) {
        v.set(w)?;
    }
    let result = f();
    for (v, w) in vars.iter().zip(&raw) {
        v.set(w)?;
    }
    result
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
            return Err(Error::Msg(format!(
                "EMA decay must be in [0, 1), got {decay}"
            )));
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
            return Err(Error::Msg(
                "the SWA average is empty: call update before using it".into(),
            ));
        }
        with_weights(&self.vars, &self.mean, || {
            recompute()?;
            f()
        })
    }
}
