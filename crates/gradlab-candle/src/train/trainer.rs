//! The trainer around a candle user's own model.

use super::{run, split, Event, InputScale, RunData, Summary, TrainConfig};
use crate::data::Split;
use crate::models::{CustomModel, ModelSpec};
use crate::{Error, Result};
use gradlab::dist::Local;
use std::path::Path;
use std::sync::Arc;

/// The trainer for a candle user's own model: the same loop, metrics (`metrics.jsonl`),
/// checkpoints, resume, schedules, clipping, EMA/SWA and summary as `gradlab train` gives the
/// built-in models, around a `candle_nn::ModuleT` that maps a batch of inputs
/// `(N, rows, cols)` to class logits, trained with cross-entropy on `data`.
///
/// `config` is [`TrainConfig`] with its model part ignored (the model is yours: its
/// `ModuleT::forward_t(x, train)` decides dropout and batch norm); its data part is `data`
/// (cut to `config.classes`, `config.validation` and `config.train_limit`). Batches come as f32 and are cast to the parameters' type.
/// Batch-norm statistics of a user's model are its own (candle's running averages): SWA's
/// average is evaluated with them, not with statistics recomputed for the averaged weights.
/// A checkpoint of such a run resumes through [`Trainer::run`] with the same module; the
/// weights alone are `checkpoint/model.safetensors`.
pub struct Trainer<M> {
    config: TrainConfig,
    model: CustomModel<M>,
    data: RunData,
}

impl<M: candle_nn::ModuleT> Trainer<M> {
    /// A trainer of `module` whose parameters are `params` (named: checkpoints and parameter
    /// groups go by name).
    pub fn new(
        module: M,
        params: Vec<(String, candle_core::Var)>,
        data: Split,
        mut config: TrainConfig,
    ) -> Result<Self> {
        config.model = ModelSpec {
            widths: Vec::new(),
            ..ModelSpec::new(crate::models::ModelKind::Custom)
        };
        config.data_dir = None;
        config.check()?;
        if config.inputs != InputScale::Standardized {
            return Err(Error::setting(
                "inputs",
                format!(
                "inputs = {}: a user's data is used as given (scale it before making the Split)",
                config.inputs.name()
            ),
            ));
        }
        let data = split::prepare(data, &config)?;
        Ok(Trainer {
            config,
            model: CustomModel::new(module, params)?,
            data,
        })
    }

    /// [`Trainer::new`] with the parameters of `varmap` (the names its `VarBuilder` gave).
    pub fn from_varmap(
        module: M,
        varmap: &candle_nn::VarMap,
        data: Split,
        config: TrainConfig,
    ) -> Result<Self> {
        Self::new(module, crate::optim::varmap_vars(varmap)?, data, config)
    }

    /// Trains (from the checkpoint in `resume`, if given), writing to `config.out`.
    pub fn run(&self, resume: Option<&Path>, on_event: impl FnMut(Event)) -> Result<Summary> {
        run(
            &self.config,
            resume,
            on_event,
            Arc::new(Local),
            self.data.clone(),
            &self.model,
        )
    }

    /// The model.
    pub fn module(&self) -> &M {
        self.model.module()
    }

    /// The configuration as it runs.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
}
