//! Every gradlab optimizer as a [`candle_nn::Optimizer`] that updates candle [`Var`]s in
//! place.
//!
//! gradlab's engine owns the optimizer state; each parameter is updated inside one of
//! candle's in-place custom ops ([`InplaceOp1`]), so parameters are never copied. Gradients
//! are read straight from their storage. Parameters are named and kept in sorted name order,
//! so saved states are reproducible and keyed by name.

use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Var};
use gradlab::optim::{
    self, ClosureOutcome, Layout as ParamLayout, Options, ParamAccess, ParamGroup, StateDict,
    StepOutcome,
};
use std::cell::RefCell;

/// What [`GradlabOptimizer::new`] takes as `candle_nn::Optimizer::Config`.
#[derive(Debug, Clone)]
pub struct OptimizerConfig {
    /// The optimizer spec, e.g. `adamw(lr=1e-3)`.
    pub spec: String,
    /// Parameter groups by name pattern.
    pub groups: Vec<ParamGroup>,
    /// Clipping and non-finite policy.
    pub options: Options,
}

impl OptimizerConfig {
    /// A config with no groups and default options.
    pub fn new(spec: impl Into<String>) -> Self {
        OptimizerConfig {
            spec: spec.into(),
            groups: Vec::new(),
            options: Options::default(),
        }
    }
}

enum Inner {
    F32(Box<dyn optim::Optimizer<f32>>),
    F64(Box<dyn optim::Optimizer<f64>>),
    Sharded(Box<crate::parallel::ShardedOptimizer>),
}

/// A gradlab optimizer over named candle variables.
pub struct GradlabOptimizer {
    names: Vec<String>,
    vars: Vec<Var>,
    inner: Inner,
    last: Option<StepOutcome>,
    grads_f32: Vec<&'static [f32]>,
    grads_f64: Vec<&'static [f64]>,
}

/// The engine's per-tensor update, lent to candle.
type Update<'a, T> = &'a mut dyn FnMut(&mut [T]);

/// Applies a closure to a tensor's storage in place.
struct InPlace<'a, T> {
    f: RefCell<Update<'a, T>>,
}

macro_rules! in_place {
    ($t:ty, $variant:ident) => {
        impl InplaceOp1 for InPlace<'_, $t> {
            fn name(&self) -> &'static str {
                "gradlab-step"
            }
            fn cpu_fwd(
                &self,
                storage: &mut CpuStorage,
                layout: &Layout,
            ) -> candle_core::Result<()> {
                let CpuStorage::$variant(values) = storage else {
                    candle_core::bail!("gradlab: parameter storage is not {}", stringify!($t));
                };
                let Some((start, end)) = layout.contiguous_offsets() else {
                    candle_core::bail!("gradlab: parameter is not contiguous");
                };
                (self.f.borrow_mut())(&mut values[start..end]);
                Ok(())
            }
        }
    };
}
in_place!(f32, F32);
in_place!(f64, F64);

/// Lends candle variables to the engine one at a time.
pub(crate) struct VarAccess<'a> {
    pub(crate) vars: &'a [Var],
}

macro_rules! var_access {
    ($t:ty, $variant:ident) => {
        impl ParamAccess<$t> for VarAccess<'_> {
            fn count(&self) -> usize {
                self.vars.len()
            }
            fn read(&mut self, seg: usize, f: &mut dyn FnMut(&[$t])) -> gradlab::Result<()> {
                let (storage, layout) = self.vars[seg].as_tensor().storage_and_layout();
                let Storage::Cpu(CpuStorage::$variant(values)) = &*storage else {
                    return Err(lend_error(
                        seg,
                        "is not a CPU tensor of the optimizer's float type",
                    ));
                };
                let (start, end) = layout
                    .contiguous_offsets()
                    .ok_or_else(|| lend_error(seg, "is not contiguous"))?;
                f(&values[start..end]);
                Ok(())
            }
            fn update(&mut self, seg: usize, f: &mut dyn FnMut(&mut [$t])) -> gradlab::Result<()> {
                let op = InPlace { f: RefCell::new(f) };
                self.vars[seg]
                    .as_tensor()
                    .inplace_op1(&op)
                    .map_err(|e| lend_error(seg, &e.to_string()))
            }
        }
    };
}
var_access!(f32, F32);
var_access!(f64, F64);

fn lend_error(seg: usize, what: &str) -> gradlab::Error {
    gradlab::Error::Layout(format!("parameter {seg} {what}"))
}

/// Fills `out` with the gradient slice of every variable, in order, without copying or
/// allocating (`out` keeps its capacity between steps).
///
/// The slices borrow the gradients' storage past the read lock: that is sound because the
/// gradient store keeps the tensors alive for the whole step, nothing writes gradients
/// during a step, and the caller clears `out` before the step returns.
/// The values of an f32 storage.
pub(crate) fn f32_values(s: &CpuStorage) -> Option<&[f32]> {
    match s {
        CpuStorage::F32(v) => Some(v.as_slice()),
        _ => None,
    }
}

/// The values of an f64 storage.
fn f64_values(s: &CpuStorage) -> Option<&[f64]> {
    match s {
        CpuStorage::F64(v) => Some(v.as_slice()),
        _ => None,
    }
}

pub(crate) fn grad_slices<T>(
    names: &[String],
    vars: &[Var],
    grads: &GradStore,
    extract: impl Fn(&CpuStorage) -> Option<&[T]>,
    out: &mut Vec<&'static [T]>,
) -> Result<()> {
    out.clear();
    for (name, v) in names.iter().zip(vars) {
        let t = grads.get(v.as_tensor()).ok_or_else(|| {
            Error::Msg(format!(
                "no gradient for parameter '{name}': is it used by the loss?"
            ))
        })?;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(Error::Msg(format!(
                "gradient of '{name}' is not on the CPU"
            )));
        };
        let values = extract(cpu).ok_or_else(|| {
            Error::Msg(format!(
                "gradient of '{name}' has another float type than the parameter"
            ))
        })?;
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| Error::Msg(format!("gradient of '{name}' is not contiguous")))?;
        let slice = &values[start..end];
        // SAFETY: see the function's documentation.
        out.push(unsafe { std::slice::from_raw_parts(slice.as_ptr(), slice.len()) });
    }
    Ok(())
}

impl GradlabOptimizer {
    /// An optimizer over `named` variables (sorted by name here), all f32 or all f64.
    pub fn with_names(named: Vec<(String, Var)>, config: &OptimizerConfig) -> Result<Self> {
        let mut named = named;
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if named.is_empty() {
            return Err(Error::Msg(
                "an optimizer needs at least one parameter".into(),
            ));
        }
        let dtype = named[0].1.dtype();
        if let Some((name, _)) = named.iter().find(|(_, v)| v.dtype() != dtype) {
            return Err(Error::Msg(format!(
                "parameter '{name}' is not {dtype:?} like the others"
            )));
        }
        let layout = ParamLayout::new(named.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())))?;
        let inner = match dtype {
            DType::F32 => Inner::F32(optim::build::<f32>(
                &config.spec,
                layout,
                &config.groups,
                config.options.clone(),
            )?),
            DType::F64 => Inner::F64(optim::build::<f64>(
                &config.spec,
                layout,
                &config.groups,
                config.options.clone(),
            )?),
            other => {
                return Err(Error::Msg(format!(
                    "parameters of type {other:?} are not supported (f32 or f64)"
                )))
            }
        };
        let (names, vars): (Vec<String>, Vec<Var>) = named.into_iter().unzip();
        let n = vars.len();
        Ok(GradlabOptimizer {
            names,
            vars,
            inner,
            last: None,
            grads_f32: Vec::with_capacity(n),
            grads_f64: Vec::with_capacity(n),
        })
    }

    /// One rank's optimizer in a data-parallel group: the optimizer state is sharded over the
    /// ranks of `collective` (ZeRO-1, see [`crate::parallel`]). With one rank this is
    /// [`GradlabOptimizer::with_names`]. [`GradlabOptimizer::step_grads`] then assumes that
    /// every rank's loss is the mean over an equal share of the global batch; use
    /// [`GradlabOptimizer::step_shared`] for unequal shares.
    pub fn data_parallel(
        named: Vec<(String, Var)>,
        config: &OptimizerConfig,
        collective: std::sync::Arc<dyn gradlab::dist::Collective>,
    ) -> Result<Self> {
        if collective.size() == 1 {
            return Self::with_names(named, config);
        }
        let mut sorted = named.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let sharded = crate::parallel::ShardedOptimizer::new(named, config, collective)?;
        let (names, vars): (Vec<String>, Vec<Var>) = sorted.into_iter().unzip();
        Ok(GradlabOptimizer {
            names,
            vars,
            inner: Inner::Sharded(Box::new(sharded)),
            last: None,
            grads_f32: Vec::new(),
            grads_f64: Vec::new(),
        })
    }

    /// The sharded optimizer of a data-parallel rank.
    pub fn sharded(&self) -> Option<&crate::parallel::ShardedOptimizer> {
        match &self.inner {
            Inner::Sharded(s) => Some(s),
            _ => None,
        }
    }

    /// One step from this rank's share of a global batch: `grads` of its mean loss (`None`
    /// when its share is empty), `weight` = its examples / the global batch's, and optional
    /// gradient noise added to the global mean gradient (`noise(start, g)` for the flat
    /// positions from `start`, in the sorted-name layout). Collective when data-parallel.
    pub fn step_shared(
        &mut self,
        grads: Option<&GradStore>,
        weight: f32,
        noise: Option<crate::parallel::GradNoise>,
    ) -> Result<StepOutcome> {
        match &mut self.inner {
            Inner::Sharded(s) => {
                let outcome = s.step(grads, weight, noise)?;
                self.last = Some(outcome);
                Ok(outcome)
            }
            _ => {
                let grads = grads.ok_or_else(|| Error::Msg("no gradients to step with".into()))?;
                if weight != 1.0 || noise.is_some() {
                    return Err(Error::Msg(
                        "a single-process step takes the whole batch's gradients unweighted; \
                         add noise to them before the step"
                            .into(),
                    ));
                }
                self.step_grads(grads)
            }
        }
    }

    /// The whole optimizer state as safetensors bytes, on the rank that writes checkpoints
    /// (`None` on the others). Collective when data-parallel.
    pub fn full_state_bytes(&self) -> Result<Option<Vec<u8>>> {
        match &self.inner {
            Inner::F32(o) => Ok(Some(o.state_dict().to_bytes()?)),
            Inner::F64(o) => Ok(Some(o.state_dict().to_bytes()?)),
            Inner::Sharded(s) => s.full_state_bytes(),
        }
    }

    /// Loads a state from the bytes of a file written from
    /// [`GradlabOptimizer::full_state_bytes`]; `source` names the file in errors.
    pub fn load_state_bytes(&mut self, bytes: &[u8], source: &std::path::Path) -> Result<()> {
        let named = |e: gradlab::Error| match e {
            gradlab::Error::State { message, .. } => gradlab::Error::State {
                source_name: Some(source.display().to_string()),
                message,
            },
            other => other,
        };
        match &mut self.inner {
            Inner::F32(o) => o
                .load_state_dict(&StateDict::from_bytes(bytes).map_err(named)?)
                .map_err(named)?,
            Inner::F64(o) => o
                .load_state_dict(&StateDict::from_bytes(bytes).map_err(named)?)
                .map_err(named)?,
            Inner::Sharded(s) => s
                .load_state(&StateDict::from_bytes(bytes).map_err(named)?)
                .map_err(named)?,
        }
        Ok(())
    }

    /// Loads a state file written from [`GradlabOptimizer::full_state_bytes`] (by any number
    /// of ranks); a data-parallel rank keeps its shard.
    pub fn load_state_file(&mut self, path: &std::path::Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|error| gradlab::Error::Io {
            path: path.display().to_string(),
            error,
        })?;
        self.load_state_bytes(&bytes, path)
    }

    /// The parameter names, in the optimizer's order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The variables, in the optimizer's order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The outcome of the last step (gradient norm, clipping, skipped).
    pub fn last_outcome(&self) -> Option<StepOutcome> {
        self.last
    }

    /// The f32 engine (most models), if that is the parameters' type.
    pub fn engine_f32(&mut self) -> Option<&mut dyn optim::Optimizer<f32>> {
        match &mut self.inner {
            Inner::F32(o) => Some(o.as_mut()),
            Inner::F64(_) | Inner::Sharded(_) => None,
        }
    }

    /// Runs `f` on the engine whatever its float type.
    pub fn with_engine<R>(&mut self, f: impl FnOnce(&mut dyn EngineView) -> R) -> R {
        match &mut self.inner {
            Inner::F32(o) => f(o),
            Inner::F64(o) => f(o),
            Inner::Sharded(s) => f(s.engine()),
        }
    }

    /// One step from a gradient store: parameters are updated in place, nothing is copied
    /// and nothing allocated.
    pub fn step_grads(&mut self, grads: &GradStore) -> Result<StepOutcome> {
        let GradlabOptimizer {
            names,
            vars,
            inner,
            grads_f32,
            grads_f64,
            ..
        } = self;
        let outcome = match inner {
            Inner::Sharded(s) => {
                let share = 1.0 / s.shard().ranks as f32;
                s.step(Some(grads), share, None)?
            }
            Inner::F32(o) => {
                let r = grad_slices(names, vars, grads, f32_values, grads_f32)
                    .and_then(|()| Ok(o.step_with(grads_f32, &mut VarAccess { vars })?));
                grads_f32.clear();
                r?
            }
            Inner::F64(o) => {
                let r = grad_slices(names, vars, grads, f64_values, grads_f64)
                    .and_then(|()| Ok(o.step_with(grads_f64, &mut VarAccess { vars })?));
                grads_f64.clear();
                r?
            }
        };
        self.last = Some(outcome);
        Ok(outcome)
    }
}

/// Copies the gradients of `vars` from `store` into `out` (layout order).
fn copy_grads<T: Copy + 'static>(
    names: &[String],
    vars: &[Var],
    store: &GradStore,
    extract: impl Fn(&CpuStorage) -> Option<&[T]>,
    out: &mut [Vec<T>],
) -> Result<()> {
    let mut views = Vec::with_capacity(vars.len());
    grad_slices(names, vars, store, extract, &mut views)?;
    for (o, g) in out.iter_mut().zip(&views) {
        o.copy_from_slice(g);
    }
    views.clear();
    Ok(())
}

/// One closure step of `opt` over `vars`; `grads_at` computes the loss and gradients at the
/// variables' current values. Errors of the closure come back as they were raised.
fn closure_step<T: gradlab::Real>(
    opt: &mut dyn optim::Optimizer<T>,
    names: &[String],
    vars: &[Var],
    extract: impl Fn(&CpuStorage) -> Option<&[T]> + Copy,
    mut grads_at: impl FnMut() -> Result<(f64, GradStore)>,
) -> Result<ClosureOutcome>
where
    for<'a> VarAccess<'a>: ParamAccess<T>,
{
    let mut raised: Option<Error> = None;
    let mut closure = |_: &mut dyn ParamAccess<T>, out: &mut [Vec<T>]| -> gradlab::Result<f64> {
        let evaluated = grads_at().and_then(|(loss, store)| {
            copy_grads(names, vars, &store, extract, out)?;
            Ok(loss)
        });
        evaluated.map_err(|e| {
            let message = e.to_string();
            raised = Some(e);
            gradlab::Error::Layout(message)
        })
    };
    let outcome = opt.step_with_closure(&mut VarAccess { vars }, &mut closure);
    match (outcome, raised) {
        (Ok(o), _) => Ok(o),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
    }
}

impl GradlabOptimizer {
    /// Whether the optimizer takes more than one gradient per step (SAM, L-BFGS): step it
    /// with [`GradlabOptimizer::step_with_closure`] or [`GradlabOptimizer::step_with_loss`].
    pub fn needs_closure(&self) -> bool {
        match &self.inner {
            Inner::F32(o) => o.needs_closure(),
            Inner::F64(o) => o.needs_closure(),
            Inner::Sharded(s) => s.engine_ref().needs_closure(),
        }
    }

    /// One step that evaluates the model as often as the optimizer needs (PyTorch's
    /// `optimizer.step(closure)`): `grads_at` runs the forward and backward pass at the
    /// variables' current values and returns the loss and the gradient store. Optimizers
    /// that take one gradient call it once. Not for sharded optimizers.
    pub fn step_with_closure(
        &mut self,
        grads_at: impl FnMut() -> Result<(f64, GradStore)>,
    ) -> Result<ClosureOutcome> {
        let GradlabOptimizer {
            names, vars, inner, ..
        } = self;
        let outcome =
            match inner {
                Inner::F32(o) => closure_step(o.as_mut(), names, vars, f32_values, grads_at)?,
                Inner::F64(o) => closure_step(o.as_mut(), names, vars, f64_values, grads_at)?,
                Inner::Sharded(_) => return Err(Error::Msg(
                    "a sharded optimizer takes one gradient per step; closures are not supported"
                        .into(),
                )),
            };
        self.last = Some(outcome.step);
        Ok(outcome)
    }

    /// [`GradlabOptimizer::step_with_closure`] for a closure that returns the loss tensor
    /// (a scalar): the backward passes are done here.
    pub fn step_with_loss(
        &mut self,
        mut loss_at: impl FnMut() -> Result<candle_core::Tensor>,
    ) -> Result<ClosureOutcome> {
        self.step_with_closure(|| {
            let loss = loss_at()?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            Ok((value, loss.backward()?))
        })
    }

    /// Whether [`GradlabOptimizer::eval_mode`] changes the variables (schedule-free).
    pub fn has_eval_point(&self) -> bool {
        match &self.inner {
            Inner::F32(o) => o.has_eval_point(),
            Inner::F64(o) => o.has_eval_point(),
            Inner::Sharded(s) => s.engine_ref().has_eval_point(),
        }
    }

    /// Puts the evaluation point into the variables (schedule-free: x; PyTorch's
    /// `optimizer.eval()`); nothing for other optimizers. Call before testing or saving
    /// the model, and [`GradlabOptimizer::train_mode`] before the next step.
    pub fn eval_mode(&mut self) -> Result<()> {
        let GradlabOptimizer { vars, inner, .. } = self;
        match inner {
            Inner::F32(o) => o.eval_mode(&mut VarAccess { vars })?,
            Inner::F64(o) => o.eval_mode(&mut VarAccess { vars })?,
            Inner::Sharded(s) => refuse_sharded_eval_point(s)?,
        }
        Ok(())
    }

    /// Puts the gradient point back into the variables (`optimizer.train()`).
    pub fn train_mode(&mut self) -> Result<()> {
        let GradlabOptimizer { vars, inner, .. } = self;
        match inner {
            Inner::F32(o) => o.train_mode(&mut VarAccess { vars })?,
            Inner::F64(o) => o.train_mode(&mut VarAccess { vars })?,
            Inner::Sharded(s) => refuse_sharded_eval_point(s)?,
        }
        Ok(())
    }
}

/// A sharded optimizer holds pieces of the variables, not the variables: optimizers with an
/// evaluation point are not run sharded (nothing to do for the others).
fn refuse_sharded_eval_point(s: &crate::parallel::ShardedOptimizer) -> Result<()> {
    if s.engine_ref().has_eval_point() {
        return Err(Error::Msg(format!(
            "{}: its evaluation point cannot be formed from shards; run it in one process",
            s.engine_ref().name()
        )));
    }
    Ok(())
}

/// The float-type-independent part of an engine (learning rate, momentum, state files).
pub trait EngineView {
    /// Number of groups.
    fn groups(&self) -> usize;
    /// A group's learning rate.
    fn lr_of(&self, group: usize) -> f64;
    /// Sets every group's learning rate.
    fn set_lr_of(&mut self, group: usize, lr: f64);
    /// Momentum/beta1 of group 0.
    fn momentum0(&self) -> Option<f64>;
    /// Saves the state atomically.
    fn save(&self, path: &std::path::Path) -> gradlab::Result<()>;
    /// Loads a saved state.
    fn load(&mut self, path: &std::path::Path) -> gradlab::Result<()>;
    /// Canonical spec.
    fn spec_string(&self) -> String;
    /// Steps taken.
    fn steps_taken(&self) -> u64;
    /// Bytes of per-element optimizer state held (this rank's, when sharded).
    fn state_bytes_held(&self) -> usize;
    /// SWATS status, if applicable.
    fn swats(&self) -> Option<Vec<gradlab::optim::swats::SwitchStatus>>;
    /// What the optimizer estimates as it runs (Prodigy's `d`), see
    /// [`gradlab::optim::Optimizer::estimates`].
    fn estimates(&self) -> Vec<(&'static str, f64)>;
    /// Attaches a schedule.
    fn scheduler(&mut self, spec: &str) -> gradlab::Result<gradlab::schedule::Scheduler>;
    /// Steps a schedule.
    fn step_schedule(
        &mut self,
        s: &mut gradlab::schedule::Scheduler,
        metric: Option<f64>,
    ) -> gradlab::Result<()>;
}

impl<T: gradlab::Real> EngineView for Box<dyn optim::Optimizer<T>> {
    fn groups(&self) -> usize {
        self.num_groups()
    }
    fn lr_of(&self, group: usize) -> f64 {
        self.lr(group)
    }
    fn set_lr_of(&mut self, group: usize, lr: f64) {
        self.set_lr(group, lr)
    }
    fn momentum0(&self) -> Option<f64> {
        self.momentum(0)
    }
    fn save(&self, path: &std::path::Path) -> gradlab::Result<()> {
        self.save_state(path)
    }
    fn load(&mut self, path: &std::path::Path) -> gradlab::Result<()> {
        self.load_state(path)
    }
    fn spec_string(&self) -> String {
        self.spec().to_string()
    }
    fn steps_taken(&self) -> u64 {
        self.steps()
    }
    fn state_bytes_held(&self) -> usize {
        let state = self.state_dict();
        let elements: usize = state.tensors.values().map(|(_, v)| v.len()).sum();
        elements * std::mem::size_of::<T>()
    }
    fn swats(&self) -> Option<Vec<gradlab::optim::swats::SwitchStatus>> {
        gradlab::optim::swats::switch_status(self.as_ref())
    }
    fn estimates(&self) -> Vec<(&'static str, f64)> {
        self.as_ref().estimates()
    }
    fn scheduler(&mut self, spec: &str) -> gradlab::Result<gradlab::schedule::Scheduler> {
        gradlab::schedule::Scheduler::new(spec, self.as_mut())
    }
    fn step_schedule(
        &mut self,
        s: &mut gradlab::schedule::Scheduler,
        metric: Option<f64>,
    ) -> gradlab::Result<()> {
        match metric {
            Some(m) => s.step_with_metric(self.as_mut(), m),
            None => s.step(self.as_mut()),
        }
    }
}

impl candle_nn::Optimizer for GradlabOptimizer {
    type Config = OptimizerConfig;

    /// Variables without names are called `param0`, `param1`, ... in the order given.
    fn new(vars: Vec<Var>, config: OptimizerConfig) -> candle_core::Result<Self> {
        let width = vars.len().to_string().len();
        let named = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("param{i:0width$}"), v))
            .collect();
        GradlabOptimizer::with_names(named, &config)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_grads(grads)
            .map(|_| ())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn learning_rate(&self) -> f64 {
        match &self.inner {
            Inner::F32(o) => o.lr(0),
            Inner::F64(o) => o.lr(0),
            Inner::Sharded(s) => s.engine_ref().lr(0),
        }
    }

    fn set_learning_rate(&mut self, lr: f64) {
        match &mut self.inner {
            Inner::F32(o) => o.set_lr_all(lr),
            Inner::F64(o) => o.set_lr_all(lr),
            Inner::Sharded(s) => s.engine().set_lr_all(lr),
        }
    }
}
