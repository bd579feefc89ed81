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

use crate::Result;
use candle_core::{Tensor, Var};

mod ema;
mod swa;

pub(crate) use ema::ema_update;
pub use ema::Ema;
pub(crate) use swa::mean_update;
pub use swa::Swa;

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
