//! What the trainer, checkpoints and curvature tools need of any model ([`Network`]), the
//! built-in [`Model`] and a candle user's own module as one, and the loss and accuracy of
//! their logits.

use super::Model;
use crate::ops;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var, D};
use gradlab::landscape::Rng;

/// Mean cross-entropy of logits against labels ([`ops::cross_entropy`]).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(ops::cross_entropy(logits, labels)?)
}

/// Number of correct predictions.
pub fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred
        .eq(labels)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize)
}

/// A scalar tensor's value as f64, whatever its float type.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// What the trainer needs of a model: named parameters, class logits for a batch of inputs,
/// and (for batch norm) running statistics. The built-in [`Model`] is one; a candle user's own
/// `ModuleT` is another ([`crate::train::Trainer`]).
pub trait Network {
    /// Named parameters (the optimizer's, the checkpoint's).
    fn params(&self) -> &[(String, Var)];
    /// Logits `(N, classes)` for inputs `(N, rows, cols)`; `train` selects training behaviour
    /// (batch statistics, dropout from `rng`).
    fn forward(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<Tensor>;
    /// Number of scalar parameters.
    fn num_parameters(&self) -> usize {
        self.params().iter().map(|(_, v)| v.elem_count()).sum()
    }
    /// Running statistics saved with the weights (batch norm's).
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Restores a buffer of [`Network::buffers`].
    fn set_buffer(&self, name: &str, _value: Tensor) -> Result<()> {
        Err(Error::Model {
            message: format!("the model has no buffer '{name}'"),
        })
    }
    /// Whether the model has batch norm (whose statistics are recomputed for averaged weights).
    fn has_batch_norm(&self) -> bool {
        false
    }
    /// Batch norm: a cumulative average of the next batches' statistics (`true`), or back to
    /// the running average.
    fn set_cumulative_batch_norm(&self, _on: bool) -> Result<()> {
        Ok(())
    }
}

impl Network for Model {
    fn params(&self) -> &[(String, Var)] {
        Model::params(self)
    }
    fn forward(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<Tensor> {
        Model::forward(self, x, train, rng)
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Model::buffers(self)
    }
    fn set_buffer(&self, name: &str, value: Tensor) -> Result<()> {
        Model::set_buffer(self, name, value)
    }
    fn has_batch_norm(&self) -> bool {
        Model::has_batch_norm(self)
    }
    fn set_cumulative_batch_norm(&self, on: bool) -> Result<()> {
        Model::set_cumulative_batch_norm(self, on)
    }
}

/// A candle `ModuleT` of the user's as a [`Network`]: `forward_t(x, train)` gives the logits.
pub struct CustomModel<M> {
    module: M,
    params: Vec<(String, Var)>,
}

impl<M: candle_nn::ModuleT> CustomModel<M> {
    /// `module` with its named parameters (from its `VarMap`, sorted by name).
    pub fn new(module: M, params: Vec<(String, Var)>) -> Result<Self> {
        if params.is_empty() {
            return Err(Error::Model {
                message: "a model to train needs parameters".into(),
            });
        }
        let mut params = params;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(CustomModel { module, params })
    }

    /// The module.
    pub fn module(&self) -> &M {
        &self.module
    }
}

impl<M: candle_nn::ModuleT> Network for CustomModel<M> {
    fn params(&self) -> &[(String, Var)] {
        &self.params
    }
    /// The batch (f32) is given in the parameters' type, so an f64 or bf16 module takes it.
    fn forward(&self, x: &Tensor, train: bool, _rng: &mut Rng) -> Result<Tensor> {
        let dtype = self.params[0].1.dtype();
        let x = if x.dtype() == dtype {
            x.clone()
        } else {
            x.to_dtype(dtype)?
        };
        Ok(self.module.forward_t(&x, train)?)
    }
}

/// Named tensors of a model (parameters and buffers) for safetensors.
pub fn model_tensors(model: &dyn Network) -> std::collections::HashMap<String, Tensor> {
    let mut map: std::collections::HashMap<String, Tensor> = model
        .params()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    map.extend(model.buffers());
    map
}
