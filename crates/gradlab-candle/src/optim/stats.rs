//! Per-parameter figures of a step, on request: each gradient's norm and the size of the
//! update against the weight's (the update-to-weight ratio people log to see whether a layer
//! learns). Off by default; turned on, they cost a copy of the weights and two more reads of
//! weights and gradients per step.

use crate::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

/// One parameter's figures of the last step.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorStats {
    /// The parameter's name.
    pub name: String,
    /// The L2 norm of its gradient, before clipping (`None`: it had none and sat out).
    pub grad_norm: Option<f64>,
    /// The L2 norm of the weight before the step.
    pub weight_norm: f64,
    /// The L2 norm of the change the step made.
    pub update_norm: f64,
}

impl TensorStats {
    /// `update_norm / weight_norm` (0 when nothing moved; infinite for a weight of 0 that
    /// moved).
    pub fn update_ratio(&self) -> f64 {
        if self.update_norm == 0.0 {
            0.0
        } else {
            self.update_norm / self.weight_norm
        }
    }
}

/// The weights before a step, kept while tracking.
#[derive(Default)]
pub(super) struct Tracker {
    before: Vec<Vec<f64>>,
    pub(super) stats: Vec<TensorStats>,
}

fn values(v: &Var) -> Result<Vec<f64>> {
    Ok(v.as_tensor()
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?)
}

impl Tracker {
    /// Records the weights and the gradients' norms before a step.
    pub(super) fn before(
        &mut self,
        names: &[String],
        vars: &[Var],
        grads: &GradStore,
    ) -> Result<()> {
        self.before.clear();
        self.stats.clear();
        for (name, v) in names.iter().zip(vars) {
            let w = values(v)?;
            let grad_norm = match grads.get(v.as_tensor()) {
                Some(g) => Some(
                    g.to_dtype(DType::F64)?
                        .sqr()?
                        .sum_all()?
                        .to_scalar::<f64>()?
                        .sqrt(),
                ),
                None => None,
            };
            self.stats.push(TensorStats {
                name: name.clone(),
                grad_norm,
                weight_norm: w.iter().map(|x| x * x).sum::<f64>().sqrt(),
                update_norm: 0.0,
            });
            self.before.push(w);
        }
        Ok(())
    }

    /// Measures the updates after the step.
    pub(super) fn after(&mut self, vars: &[Var]) -> Result<()> {
        for ((s, v), old) in self.stats.iter_mut().zip(vars).zip(&self.before) {
            let new = values(v)?;
            s.update_norm = new
                .iter()
                .zip(old)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
        }
        Ok(())
    }
}
