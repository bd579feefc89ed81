//! Data-parallel steps with sharded optimizer state (ZeRO-1) over any
//! [`gradlab::dist::Collective`].
//!
//! Every rank holds the whole model and computes the gradient of its slice of the global
//! batch. A step then:
//! 1. copies the local gradients, weighted by `local examples / global examples`, into one
//!    flat buffer in the layout's order (padded to a multiple of the rank count);
//! 2. reduce-scatters it: rank r receives the summed (= global mean) gradient of shard r;
//! 3. runs the optimizer on shard r only, its state held by rank r alone (the per-tensor
//!    and global sums it needs are combined with small all-reduces, see `gradlab::dist`);
//! 4. all-gathers the updated shards and writes them into the model's `Var`s.
//!
//! Per step each rank sends and receives about `2·(N−1)/N · P · 4` bytes for P parameters
//! (reduce-scatter plus all-gather, as one all-reduce of the gradients would), plus
//! `8·(2 + 4·tensors)` bytes of all-reduced sums for rules with per-tensor norms.

use super::access::{f32_values, grad_slices, VarAccess, ViewSpace};
use super::OptimizerConfig;
use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Var};
use gradlab::dist::{self, Collective, Distributed, Shard};
use gradlab::optim::{self, Layout, Optimizer, Options, ParamAccess, StateDict, StepOutcome};
use std::sync::Arc;

/// Gradient noise for a shard: `noise(start, g)` perturbs the global mean gradient `g` of the
/// flat positions from `start` on.
pub type GradNoise<'a> = &'a dyn Fn(usize, &mut [f32]);

/// One rank's optimizer over its shard of the model's (sorted) parameters.
pub struct ShardedOptimizer {
    collective: Arc<dyn Collective>,
    names: Vec<String>,
    vars: Vec<Var>,
    full: Layout,
    shard: Shard,
    engine: Box<dyn Optimizer<f32>>,
    flat_grads: Vec<f32>,
    shard_grads: Vec<f32>,
    flat_params: Vec<f32>,
    shard_params: Vec<f32>,
    grad_views: ViewSpace<f32>,
}

impl ShardedOptimizer {
    /// The optimizer of `collective`'s rank over `named` (sorted by name like
    /// [`GradlabOptimizer`](crate::GradlabOptimizer)); f32 parameters only.
    pub fn new(
        mut named: Vec<(String, Var)>,
        config: &OptimizerConfig,
        collective: Arc<dyn Collective>,
    ) -> Result<Self> {
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some((name, v)) = named.iter().find(|(_, v)| v.dtype() != DType::F32) {
            return Err(Error::Unsupported {
                message: format!(
                    "data-parallel training needs f32 parameters; '{name}' is {:?}",
                    v.dtype()
                ),
            });
        }
        let full = Layout::new(named.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())))?;
        let shard = Shard::new(full.total(), collective.rank(), collective.size());
        let options = Options {
            distributed: Some(Distributed::new(collective.clone(), &full, &shard)),
            ..config.options.clone()
        };
        let engine =
            optim::build::<f32>(&config.spec, shard.layout(&full), &config.groups, options)?;
        let (names, vars): (Vec<String>, Vec<Var>) = named.into_iter().unzip();
        let padded = shard.padded_total();
        Ok(ShardedOptimizer {
            collective,
            grad_views: ViewSpace::with_capacity(names.len()),
            names,
            vars,
            full,
            engine,
            flat_grads: vec![0.0; padded],
            shard_grads: vec![0.0; shard.len],
            flat_params: vec![0.0; padded],
            shard_params: vec![0.0; shard.len],
            shard,
        })
    }

    /// This rank's shard.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// The whole model's layout.
    pub fn full_layout(&self) -> &Layout {
        &self.full
    }

    /// The optimizer over this rank's shard (learning rate, schedules, ...).
    pub fn engine(&mut self) -> &mut Box<dyn Optimizer<f32>> {
        &mut self.engine
    }

    /// The optimizer over this rank's shard, read-only.
    pub fn engine_ref(&self) -> &dyn Optimizer<f32> {
        self.engine.as_ref()
    }

    /// Bytes of optimizer state this rank holds (element buffers).
    pub fn state_bytes_held(&self) -> usize {
        self.engine.state_bytes()
    }

    /// Each tensor's norm of the last step's global mean gradient (before clipping; noise
    /// included), combined over the ranks (collective).
    pub fn last_tensor_grad_norms(&self) -> std::collections::HashMap<String, f64> {
        let mut sums = vec![0.0; self.full.segments().len()];
        let range = &self.shard.range;
        for (sum, seg) in sums.iter_mut().zip(self.full.segments()) {
            let lo = range.start.max(seg.offset);
            let hi = range.end.min(seg.offset + seg.len);
            if lo < hi {
                *sum = self.shard_grads[lo - range.start..hi - range.start]
                    .iter()
                    .map(|&x| x as f64 * x as f64)
                    .sum();
            }
        }
        self.collective.all_sum(&mut sums);
        self.names
            .iter()
            .cloned()
            .zip(sums.iter().map(|s| s.sqrt()))
            .collect()
    }

    /// One data-parallel step (collective: every rank calls it). `grads` are this rank's
    /// gradients of its mean loss (`None` when its slice of the batch is empty) and `weight`
    /// its share of the global batch; `noise(start, g)` may perturb the global mean gradient
    /// of the shard that starts at flat position `start`.
    pub fn step(
        &mut self,
        grads: Option<&GradStore>,
        weight: f32,
        noise: Option<GradNoise>,
    ) -> Result<StepOutcome> {
        self.gather_gradients(grads, weight)?;
        self.collective
            .reduce_scatter(&self.flat_grads, &mut self.shard_grads);
        let owned = self.shard.range.len();
        if let Some(noise) = noise {
            noise(self.shard.range.start, &mut self.shard_grads[..owned]);
        }
        self.read_params()?;
        let outcome = self
            .engine
            .step_flat(&mut self.shard_params[..owned], &self.shard_grads[..owned])?;
        self.collective
            .all_gather(&self.shard_params, &mut self.flat_params);
        self.write_params()?;
        Ok(outcome)
    }

    fn gather_gradients(&mut self, grads: Option<&GradStore>, weight: f32) -> Result<()> {
        self.flat_grads.fill(0.0);
        let Some(grads) = grads else {
            return Ok(());
        };
        let (names, vars, full) = (&self.names, &self.vars, &self.full);
        let flat = &mut self.flat_grads;
        self.grad_views.lend(|views| {
            grad_slices(names, vars, grads, f32_values, views, None)?;
            for (seg, g) in full.segments().iter().zip(views.iter()) {
                let dst = &mut flat[seg.offset..seg.offset + seg.len];
                for (d, x) in dst.iter_mut().zip(g.iter()) {
                    *d = x * weight;
                }
            }
            Ok(())
        })
    }

    /// Copies this rank's part of the current parameters (they may have been set since the
    /// last step, e.g. by a checkpoint restore) into the shard buffer, from the `Var`s'
    /// storage.
    fn read_params(&mut self) -> Result<()> {
        let range = self.shard.range.clone();
        let mut access = VarAccess { vars: &self.vars };
        for (i, seg) in self.full.segments().iter().enumerate() {
            let lo = range.start.max(seg.offset);
            let hi = range.end.min(seg.offset + seg.len);
            if lo >= hi {
                continue;
            }
            let dst = &mut self.shard_params[lo - range.start..hi - range.start];
            access.read(i, &mut |p: &[f32]| {
                dst.copy_from_slice(&p[lo - seg.offset..hi - seg.offset])
            })?;
        }
        Ok(())
    }

    /// Writes the gathered parameters into the `Var`s in place.
    fn write_params(&mut self) -> Result<()> {
        let mut access = VarAccess { vars: &self.vars };
        for (i, seg) in self.full.segments().iter().enumerate() {
            let src = &self.flat_params[seg.offset..seg.offset + seg.len];
            access.update(i, &mut |p: &mut [f32]| p.copy_from_slice(src))?;
        }
        Ok(())
    }

    /// The whole optimizer state as safetensors bytes on rank 0 (`None` on the others);
    /// collective.
    pub fn full_state_bytes(&self) -> Result<Option<Vec<u8>>> {
        let mine = self.engine.state_dict().to_bytes()?;
        let gathered = self.collective.gather_bytes(&mine);
        drop(mine);
        let Some(gathered) = gathered else {
            return Ok(None);
        };
        // Parse each shard and let its bytes go: rank 0 holds about two full states at most.
        let parts = gathered
            .into_iter()
            .map(|b| StateDict::<f32>::from_bytes(&b))
            .collect::<gradlab::Result<Vec<_>>>()?;
        Ok(Some(dist::merge_shards(&self.full, parts)?.to_bytes()?))
    }

    /// Loads this rank's part of a full state (saved by one process or by rank 0 of any
    /// number of ranks).
    pub fn load_state(&mut self, full_state: &StateDict<f32>) -> gradlab::Result<()> {
        let mine = dist::shard_state(full_state, &self.full, &self.shard)?;
        self.engine.load_state_dict(&mine)
    }
}
