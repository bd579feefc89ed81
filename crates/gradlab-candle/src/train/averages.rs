//! The trainer's weight averages (EMA each step, SWA each epoch from `swa_start`) and SWA's
//! learning-rate schedule, with the formulas of [`crate::averaging`].

use super::{batch, TrainConfig};
use crate::data::Dataset;
use crate::models::Network;
use crate::Result;
use candle_core::{Tensor, Var};
use gradlab::landscape::Rng;

/// Weight averages kept beside the raw weights, and the SWA learning-rate schedule.
pub(crate) struct Averages {
    /// The EMA weights.
    pub(crate) ema: Option<Vec<Tensor>>,
    /// The SWA mean and how many epochs' weights it averages.
    pub(crate) swa: Option<(Vec<Tensor>, usize)>,
    /// `SWALR`, from the SWA start on: the one owner of the learning rate during SWA.
    pub(crate) swa_schedule: Option<gradlab::schedule::Scheduler>,
}

fn vars_of(model: &dyn Network) -> Vec<Var> {
    model.params().iter().map(|(_, v)| v.clone()).collect()
}

impl Averages {
    /// The averages `config` asks for, started at `model`'s weights (the EMA; SWA starts at
    /// its epoch).
    pub(crate) fn new(config: &TrainConfig, model: &dyn Network) -> Result<Self> {
        Ok(Averages {
            ema: match config.ema {
                Some(_) => Some(crate::averaging::copies(&vars_of(model))?),
                None => None,
            },
            swa: None,
            swa_schedule: None,
        })
    }

    /// After an optimizer step: the EMA takes in the new weights.
    pub(crate) fn after_step(&mut self, config: &TrainConfig, model: &dyn Network) -> Result<()> {
        if let (Some(decay), Some(ema)) = (config.ema, self.ema.as_mut()) {
            crate::averaging::ema_update(ema, &vars_of(model), decay)?;
        }
        Ok(())
    }

    /// After epoch `epoch` (0-based): SWA takes in the weights when the epoch averages.
    pub(crate) fn after_epoch(
        &mut self,
        config: &TrainConfig,
        model: &dyn Network,
        epoch: usize,
    ) -> Result<()> {
        if config.in_swa(epoch) {
            let vars = vars_of(model);
            self.swa = Some(match self.swa.take() {
                None => (crate::averaging::copies(&vars)?, 1),
                Some((mut mean, n)) => {
                    crate::averaging::mean_update(&mut mean, n, &vars)?;
                    (mean, n + 1)
                }
            });
        }
        Ok(())
    }
}

/// Swaps `weights` into the model, runs `f`, and puts the raw weights back.
pub(super) fn with_weights<R>(
    model: &dyn Network,
    weights: &[Tensor],
    f: impl FnOnce() -> Result<R>,
) -> Result<R> {
    crate::averaging::with_weights(&vars_of(model), weights, f)
}

/// Recomputes batch-norm statistics for the current weights with one pass over the
/// training data (torch.optim.swa_utils.update_bn).
pub(super) fn recompute_batch_norm(
    model: &dyn Network,
    data: &Dataset,
    batch_size: usize,
) -> Result<()> {
    model.set_cumulative_batch_norm(true)?;
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut rng = Rng::new(0);
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, _) = batch(data, chunk)?;
        model.forward(&x, true, &mut rng)?;
    }
    Ok(())
}
