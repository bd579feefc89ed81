//! Every gradlab optimizer as a [`candle_nn::Optimizer`] that updates candle [`Var`]s in
//! place.
//!
//! gradlab's engine owns the optimizer state; each parameter is updated inside one of
//! candle's in-place custom ops (`InplaceOp1`), so parameters are never copied. Gradients
//! are read straight from their storage. Parameters are named and kept in sorted name order,
//! so saved states are reproducible and keyed by name.

pub(crate) mod access;
mod closure;
mod config;
mod engine_view;
mod master;
mod saved;
pub mod sharded;
mod stats;
mod vars;

pub use config::{MissingGradients, OptimizerConfig};
pub use engine_view::EngineView;
pub use stats::TensorStats;

use crate::{Error, Result};
use access::{f32_values, f64_values, grad_slices, VarAccess, ViewSpace};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Var};
use gradlab::optim::{
    self, ClosureOutcome, Layout as ParamLayout, ParamAccess, ParamGroup, StateDict, StepOutcome,
};
use gradlab::schedule::Scheduler;
use master::MasterWeights;
pub(crate) use vars::varmap_vars;
use vars::{check_vars, refuse_unmatched_patterns, resolve_var_groups};

enum Inner {
    F32(Box<dyn optim::Optimizer<f32>>),
    F64(Box<dyn optim::Optimizer<f64>>),
    /// bf16 or f16 parameters, stepped through f32 master copies.
    Master(Box<MasterWeights>),
    Sharded(Box<sharded::ShardedOptimizer>),
}

/// A gradlab optimizer over named candle variables, with its schedule.
pub struct GradlabOptimizer {
    names: Vec<String>,
    vars: Vec<Var>,
    inner: Inner,
    last: Option<StepOutcome>,
    grads_f32: ViewSpace<f32>,
    grads_f64: ViewSpace<f64>,
    /// Per step: the parameters without a gradient.
    absent: Vec<bool>,
    /// What it was built from, groups by variable resolved to names.
    config: OptimizerConfig,
    /// Built without names (`candle_nn::Optimizer::new`): parameters are `param0`, ...
    unnamed: bool,
    scheduler: Option<Scheduler>,
    /// Each group's learning rate as configured (before any schedule).
    configured_lr: Vec<f64>,
    /// Per-parameter figures, when asked for.
    tracker: Option<stats::Tracker>,
}

impl GradlabOptimizer {
    /// An optimizer over `named` variables (sorted by name here), all f32 or all f64, all on
    /// the CPU. No variables is allowed (a step then does nothing).
    pub fn with_names(named: Vec<(String, Var)>, config: &OptimizerConfig) -> Result<Self> {
        Self::build(named, config, false)
    }

    /// An optimizer over every variable of `varmap`, named as in the map (the names that
    /// `VarBuilder` paths give, e.g. `fc1.weight`), so that groups match names and a saved
    /// state is matched by name.
    pub fn from_varmap(varmap: &candle_nn::VarMap, config: &OptimizerConfig) -> Result<Self> {
        Self::with_names(varmap_vars(varmap)?, config)
    }

    fn build(named: Vec<(String, Var)>, config: &OptimizerConfig, unnamed: bool) -> Result<Self> {
        config.check()?;
        let mut named = named;
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let dtype = check_vars(&named)?;
        let mut config = config.clone();
        resolve_var_groups(&mut config, &named)?;
        if unnamed {
            refuse_unmatched_patterns(&config, &named)?;
        }
        let layout = ParamLayout::new(named.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())))?;
        let (names, vars): (Vec<String>, Vec<Var>) = named.into_iter().unzip();
        let inner = match dtype {
            DType::F32 => Inner::F32(optim::build::<f32>(
                &config.spec,
                layout,
                &config.groups,
                config.options.clone(),
            )?),
            DType::BF16 | DType::F16 => Inner::Master(Box::new(MasterWeights::new(
                optim::build::<f32>(&config.spec, layout, &config.groups, config.options.clone())?,
                &vars,
            )?)),
            _ => Inner::F64(optim::build::<f64>(
                &config.spec,
                layout,
                &config.groups,
                config.options.clone(),
            )?),
        };
        Self::assemble(names, vars, inner, config, unnamed)
    }

    fn assemble(
        names: Vec<String>,
        vars: Vec<Var>,
        inner: Inner,
        config: OptimizerConfig,
        unnamed: bool,
    ) -> Result<Self> {
        let n = vars.len();
        let mut opt = GradlabOptimizer {
            names,
            vars,
            inner,
            last: None,
            grads_f32: ViewSpace::with_capacity(n),
            grads_f64: ViewSpace::with_capacity(n),
            absent: vec![false; n],
            config,
            unnamed,
            scheduler: None,
            configured_lr: Vec::new(),
            tracker: None,
        };
        opt.configured_lr = opt.with_engine(|e| e.hypers().iter().map(|h| h.lr).collect());
        if let Some(spec) = opt.config.schedule.clone() {
            opt.scheduler = Some(opt.with_engine(|e| e.scheduler(&spec))?);
        }
        Ok(opt)
    }

    /// One rank's optimizer in a data-parallel group: the optimizer state is sharded over the
    /// ranks of `collective` (ZeRO-1, see [`sharded`]). With one rank this is
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
        config.check()?;
        let mut sorted = named.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        if master::is_half(check_vars(&sorted)?) {
            return Err(Error::unsupported(
                "data-parallel training takes f32 parameters (16-bit parameters step through f32 \
                 master copies in one process)",
            ));
        }
        let mut config = config.clone();
        resolve_var_groups(&mut config, &sorted)?;
        let sharded = sharded::ShardedOptimizer::new(named, &config, collective)?;
        let (names, vars): (Vec<String>, Vec<Var>) = sorted.into_iter().unzip();
        Self::assemble(
            names,
            vars,
            Inner::Sharded(Box::new(sharded)),
            config,
            false,
        )
    }

    /// The sharded optimizer of a data-parallel rank.
    pub fn sharded(&self) -> Option<&sharded::ShardedOptimizer> {
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
        noise: Option<sharded::GradNoise>,
    ) -> Result<StepOutcome> {
        match &mut self.inner {
            Inner::Sharded(s) => {
                let outcome = s.step(grads, weight, noise)?;
                self.last = Some(outcome);
                Ok(outcome)
            }
            _ => {
                let grads = grads.ok_or_else(|| Error::unsupported("no gradients to step with"))?;
                if weight != 1.0 || noise.is_some() {
                    return Err(Error::Unsupported {
                        message:
                            "a single-process step takes the whole batch's gradients unweighted; \
                         add noise to them before the step"
                                .into(),
                    });
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
            Inner::Master(m) => Ok(Some(m.state_dict().to_bytes()?)),
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
            Inner::Master(m) => m
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
            Inner::Master(m) => Some(m.engine.as_mut()),
            Inner::F64(_) | Inner::Sharded(_) => None,
        }
    }

    /// Runs `f` on the engine whatever its float type.
    pub fn with_engine<R>(&mut self, f: impl FnOnce(&mut dyn EngineView) -> R) -> R {
        match &mut self.inner {
            Inner::F32(o) => f(o),
            Inner::F64(o) => f(o),
            Inner::Master(m) => f(&mut m.engine),
            Inner::Sharded(s) => f(s.engine()),
        }
    }

    /// One step from a gradient store: parameters are updated in place, nothing is copied
    /// and nothing allocated; then the schedule, if any, takes its step (unless the step was
    /// skipped). Parameters without a gradient sit out the step (see [`MissingGradients`]).
    pub fn step_grads(&mut self, grads: &GradStore) -> Result<StepOutcome> {
        if let Some(t) = &mut self.tracker {
            t.before(&self.names, &self.vars, grads)?;
        }
        let outcome = self.step_inner(grads)?;
        if let Some(t) = &mut self.tracker {
            t.after(&self.vars)?;
        }
        Ok(outcome)
    }

    /// Turns on (or off) the per-parameter figures of each step: gradient norms and the size
    /// of each update against its weight ([`GradlabOptimizer::tensor_stats`]). Off, a step
    /// reads nothing for them.
    pub fn track_tensors(&mut self, on: bool) {
        self.tracker = on.then(stats::Tracker::default);
    }

    /// The per-parameter figures of the last step (empty unless
    /// [`GradlabOptimizer::track_tensors`] is on).
    pub fn tensor_stats(&self) -> &[TensorStats] {
        self.tracker.as_ref().map_or(&[], |t| &t.stats)
    }

    fn step_inner(&mut self, grads: &GradStore) -> Result<StepOutcome> {
        let GradlabOptimizer {
            names,
            vars,
            inner,
            grads_f32,
            grads_f64,
            absent,
            config,
            ..
        } = self;
        let skip_missing = config.missing_gradients == MissingGradients::Skip;
        let outcome = match inner {
            Inner::Sharded(s) => {
                let share = 1.0 / s.shard().ranks as f32;
                s.step(Some(grads), share, None)?
            }
            Inner::F32(o) => grads_f32.lend(|views| {
                let mask = skip_missing.then_some(&mut absent[..]);
                grad_slices(names, vars, grads, f32_values, views, mask)?;
                Ok::<_, Error>(o.step_with_absent(views, absent, &mut VarAccess { vars })?)
            })?,
            Inner::Master(m) => m.step(names, vars, grads, skip_missing, absent)?,
            Inner::F64(o) => grads_f64.lend(|views| {
                let mask = skip_missing.then_some(&mut absent[..]);
                grad_slices(names, vars, grads, f64_values, views, mask)?;
                Ok::<_, Error>(o.step_with_absent(views, absent, &mut VarAccess { vars })?)
            })?,
        };
        self.last = Some(outcome);
        if !outcome.skipped {
            self.advance_schedule(None, false)?;
        }
        Ok(outcome)
    }

    /// Backpropagates `loss` and steps with its gradients (and the schedule).
    pub fn backward_step(&mut self, loss: &candle_core::Tensor) -> Result<StepOutcome> {
        let grads = loss.backward()?;
        self.step_grads(&grads)
    }

    /// Steps the schedule of a `plateau` schedule with the metric it watches (other schedules
    /// step by themselves after every optimizer step, and refuse this).
    pub fn schedule_step(&mut self, metric: f64) -> Result<()> {
        self.advance_schedule(Some(metric), true)
    }

    fn advance_schedule(&mut self, metric: Option<f64>, by_hand: bool) -> Result<()> {
        let Some(mut s) = self.scheduler.take() else {
            if by_hand {
                return Err(Error::unsupported(
                    "this optimizer has no schedule (OptimizerConfig::schedule)",
                ));
            }
            return Ok(());
        };
        let r = match (by_hand, s.needs_metric()) {
            (true, false) => Err(Error::Unsupported {
                message: format!(
                    "schedule '{}' steps by itself after every optimizer step; it takes no metric",
                    s.spec()
                ),
            }),
            // A plateau schedule waits for its metric.
            (false, true) => Ok(()),
            _ => self
                .with_engine(|e| e.step_schedule(&mut s, metric))
                .map_err(Error::from),
        };
        self.scheduler = Some(s);
        r
    }

    /// The learning rate of group 0 as it stands (scheduled).
    pub fn lr(&mut self) -> f64 {
        self.lr_of(0)
    }

    /// A group's learning rate as it stands (scheduled).
    pub fn lr_of(&mut self, group: usize) -> f64 {
        self.with_engine(|e| e.hypers()[group].lr)
    }

    /// The parameter group of the parameter `name` (0: the base spec; `i`: the `i`-th group
    /// of the config), or `None` for a name the optimizer does not hold.
    pub fn group_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)?;
        Some(
            self.config
                .groups
                .iter()
                .position(|g| g.params.iter().any(|p| optim::layout::glob_match(p, name)))
                .map_or(0, |i| i + 1),
        )
    }

    /// What the optimizer was built from (groups by variable appear by name).
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }
}

impl std::fmt::Debug for GradlabOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GradlabOptimizer({self} over {:?})", self.names)
    }
}

impl std::fmt::Display for GradlabOptimizer {
    /// The configured spec, with the learning rates as scheduled beside it when they differ:
    /// `adamw(lr=0.003, ...) [lr now 0.0012]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spec = gradlab::spec::parse(&self.config.spec)
            .map(|s| s.to_string())
            .unwrap_or_else(|_| self.config.spec.clone());
        write!(f, "{spec}")?;
        let now: Vec<f64> = match &self.inner {
            Inner::F32(o) => (0..o.num_groups()).map(|g| o.lr(g)).collect(),
            Inner::F64(o) => (0..o.num_groups()).map(|g| o.lr(g)).collect(),
            Inner::Master(m) => (0..m.engine.num_groups()).map(|g| m.engine.lr(g)).collect(),
            Inner::Sharded(s) => {
                let o = s.engine_ref();
                (0..o.num_groups()).map(|g| o.lr(g)).collect()
            }
        };
        if now != self.configured_lr {
            let shown: Vec<String> = now.iter().map(|lr| format!("{lr}")).collect();
            write!(f, " [lr now {}]", shown.join(", "))?;
        }
        Ok(())
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
        Ok(GradlabOptimizer::build(named, &config, true)?)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_grads(grads)?;
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        match &self.inner {
            Inner::F32(o) => o.lr(0),
            Inner::F64(o) => o.lr(0),
            Inner::Master(m) => m.engine.lr(0),
            Inner::Sharded(s) => s.engine_ref().lr(0),
        }
    }

    fn set_learning_rate(&mut self, lr: f64) {
        match &mut self.inner {
            Inner::F32(o) => o.set_lr_all(lr),
            Inner::F64(o) => o.set_lr_all(lr),
            Inner::Master(m) => m.engine.set_lr_all(lr),
            Inner::Sharded(s) => s.engine().set_lr_all(lr),
        }
    }
}
