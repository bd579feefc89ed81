//! Optimizers on named parameter segments.
//!
//! Every optimizer of the lecture is a [`Rule`](rule::Rule) (its update formula, written once,
//! in its own module) run by one generic [`engine::Engine`] that owns the state, the
//! thread pool plan, gradient clipping, non-finite handling and save/restore. Wrappers compose
//! ([`Lookahead`](lookahead::Lookahead) wraps any optimizer; AdamW is Adam with decoupled
//! decay; SGDW is SGD with decoupled decay).
//!
//! ```
//! use gradlab::optim::{self, Layout, Options};
//! let layout = Layout::new([("w", vec![2])]).unwrap();
//! let mut opt = optim::build::<f64>("adam(lr=0.1)", layout, &[], Options::default()).unwrap();
//! let mut w = vec![1.0, -2.0];
//! let g = vec![2.0, -4.0];
//! opt.step(&mut [&mut w], &[&g]).unwrap();
//! assert!((w[0] - 0.9).abs() < 1e-6 && (w[1] + 1.9).abs() < 1e-6);
//! ```
//!
//! | spec | update rule | reference |
//! |---|---|---|
//! | `sgd` | momentum / Nesterov, L2 decay | PyTorch `SGD` |
//! | `sgdw` | SGD with decoupled decay | Loshchilov & Hutter 2019 |
//! | `adagrad` | `θ -= lr g/(√Σg² + ε)` | PyTorch `Adagrad` |
//! | `rmsprop` | `θ -= lr g/(√E[g²] + ε)` (centered, momentum) | PyTorch `RMSprop` |
//! | `adam`, `adamw` | Adam / AMSGrad, L2 or decoupled decay | PyTorch `Adam`, `AdamW` |
//! | `adamax` | infinity-norm Adam | PyTorch `Adamax` |
//! | `nadam` | Nesterov Adam with momentum decay | PyTorch `NAdam` |
//! | `radam` | rectified Adam | PyTorch `RAdam` |
//! | `adadelta` | unit-corrected Adagrad | PyTorch `Adadelta` |
//! | `adabound` | Adam with dynamic bounds (AMSBound) | Luo et al. 2019 |
//! | `lamb` | layer-wise trust ratio on Adam | You et al. 2019 |
//! | `lars` | layer-wise trust ratio on SGD | You et al. 2017 |
//! | `lion` | sign of interpolated momentum | Chen et al. 2023 |
//! | `swats` | Adam that switches to SGD | Keskar & Socher 2017 |
//! | `lookahead(INNER)` | k fast steps, 1 slow step back | Zhang et al. 2019 |
//! | `adopt` | Adam normalising by the previous steps' v, clipped | pytorch-optimizer `ADOPT` |
//! | `ademamix` | Adam plus a slow momentum | pytorch-optimizer `AdEMAMix` |
//! | `rprop` | sign steps with per-element adaptive sizes | PyTorch `Rprop` |
//! | `asgd` | SGD with a decaying step and Polyak averaging | PyTorch `ASGD` |
//! | `sgd_schedulefree`, `adamw_schedulefree` | no schedule: train at y, evaluate the average x | `schedulefree` 1.4.1 |
//! | `muon` | orthogonalised (Newton–Schulz) momentum for 2-D weights, a fallback for the rest | PyTorch `Muon` |
//! | `adafactor` | factored second moment, relative step size, update clipping | PyTorch `Adafactor` |
//! | `prodigy` | Adam scaled by an estimated distance d to the solution (learning-rate free) | `prodigyopt` 1.1.2 |
//! | `lbfgs` | quasi-Newton with a limited memory, optional strong-Wolfe line search | PyTorch `LBFGS` |
//! | `sam(BASE)` | BASE stepped with the gradient at the sharpest nearby point | pytorch-optimizer `SAM` |

// Kernels spell each update as `x = x + ...`, the order PyTorch evaluates it in.
#![allow(clippy::assign_op_pattern)]

pub mod adabound;
pub mod adadelta;
pub mod adafactor;
pub mod adagrad;
pub mod adam;
pub mod adamax;
pub mod ademamix;
pub mod adopt;
pub mod asgd;
pub mod compact;
pub mod engine;
pub mod lamb;
pub mod lars;
pub mod layout;
pub mod lbfgs;
pub mod lion;
pub mod lookahead;
pub mod muon;
pub mod nadam;
pub mod plan;
pub mod prodigy;
pub mod radam;
pub mod rmsprop;
pub mod rprop;
pub mod rule;
pub mod sam;
pub mod schedule_free;
pub mod sgd;
pub(crate) mod simd;
pub(crate) mod standalone;
pub mod state;
pub mod swats;

pub use layout::{Layout, Segment};
pub use state::{StateDict, StateMeta};

use crate::spec::{Spec, Value};
use crate::{Error, Real, Result};
use engine::Engine;

/// The names every optimizer spec may start with.
pub const OPTIMIZERS: &[&str] = &[
    "sgd",
    "sgdw",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "adamax",
    "nadam",
    "radam",
    "adadelta",
    "adabound",
    "lamb",
    "lars",
    "lion",
    "swats",
    "lookahead",
    "adopt",
    "ademamix",
    "rprop",
    "asgd",
    "sam",
    "lbfgs",
    "sgd_schedulefree",
    "adamw_schedulefree",
    "muon",
    "adafactor",
    "prodigy",
];

/// What to do with a step whose gradients hold NaN or infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinitePolicy {
    /// Fail with an error naming the step, the tensor and the element (the default). When
    /// the gradients need no pass of their own (no norm clipping, one process) they are
    /// checked chunk by chunk inside the update, so the step reads memory once; the tensors
    /// before the bad chunk are then already updated, the error says so, and the optimizer
    /// refuses to step until a state is loaded.
    #[default]
    Error,
    /// Skip the step: parameters, state and every counter stay as they were.
    Skip,
}

impl std::str::FromStr for NonFinitePolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "error" => Ok(NonFinitePolicy::Error),
            "skip" => Ok(NonFinitePolicy::Skip),
            other => Err(format!(
                "unknown non-finite policy '{other}' (expected error or skip)"
            )),
        }
    }
}

/// Gradient handling shared by all optimizers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Clip by global L2 norm as PyTorch's `clip_grad_norm_`: every gradient is multiplied by
    /// `min(1, max_norm / (norm + 1e-6))`.
    pub clip_norm: Option<f64>,
    /// Clip every element to `[-v, v]` (`clip_grad_value_`), after norm clipping.
    pub clip_value: Option<f64>,
    /// Non-finite gradients.
    pub nonfinite: NonFinitePolicy,
    /// Set when the optimizer holds one shard of a model split across ranks (ZeRO-1): its
    /// per-tensor and global sums are then combined with the other ranks'.
    pub distributed: Option<crate::dist::Distributed>,
}

/// A parameter group: the tensors whose names match any of `params` (`*` is a wildcard)
/// get the base spec with `overrides` applied, e.g. `weight_decay=0` for `*.bias`.
/// Tensors that no group matches form group 0 with the base spec; a tensor matched by
/// several groups belongs to the first.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup {
    /// Name patterns.
    pub params: Vec<String>,
    /// Hyperparameters that differ from the base spec.
    pub overrides: Vec<(String, Value)>,
}

impl ParamGroup {
    /// A group from name patterns and an override string such as `"weight_decay=0, lr=0.1"`.
    pub fn parse(params: &[&str], overrides: &str) -> Result<Self> {
        let spec = crate::spec::parse(&format!("group({overrides})"))?;
        let mut out = Vec::new();
        for (k, v) in spec.args {
            let Some(k) = k else {
                return Err(Error::InvalidArgument {
                    spec: overrides.to_string(),
                    key: "(positional)".into(),
                    message: "group overrides must be key=value pairs".into(),
                });
            };
            out.push((k, v));
        }
        Ok(ParamGroup {
            params: params.iter().map(|s| s.to_string()).collect(),
            overrides: out,
        })
    }
}

impl ParamGroup {
    /// The base spec with this group's overrides applied.
    pub fn apply(&self, base: &Spec) -> Spec {
        let mut merged = base.clone();
        for (k, v) in &self.overrides {
            merged
                .args
                .retain(|(key, _)| key.as_deref() != Some(k.as_str()));
            merged.args.push((Some(k.clone()), v.clone()));
        }
        merged
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// True when the step was skipped for non-finite gradients.
    pub skipped: bool,
    /// Global L2 norm of the gradients before clipping (NaN when skipped).
    pub grad_norm: f64,
    /// The factor global-norm clipping applied (1 when not clipping).
    pub clip_coef: f64,
}

impl StepOutcome {
    /// A step skipped for non-finite gradients (the `skip` policy).
    pub const SKIPPED: StepOutcome = StepOutcome {
        skipped: true,
        grad_norm: f64::NAN,
        clip_coef: 1.0,
    };
}

/// The first non-finite element of `grads` (tensor, index, value), in order.
pub(crate) fn first_non_finite<T: Real, G: AsRef<[T]>>(grads: &[G]) -> Option<(usize, usize, f64)> {
    grads.iter().enumerate().find_map(|(seg, g)| {
        let g = g.as_ref();
        g.iter()
            .position(|x| !x.is_finite())
            .map(|i| (seg, i, g[i].to_f64()))
    })
}

/// How an optimizer reaches the parameters during a step: as slices held by the caller, or
/// one tensor at a time (candle lends a tensor's storage only inside an in-place op).
///
/// # Safety
///
/// An implementation whose [`ParamAccess::pointers`] returns true promises that each
/// `(address, length)` it wrote is the start and length of a live, properly aligned buffer of
/// `T` that nothing else reads or writes, and that stays so while the optimizer step that
/// asked runs (until the `step_*` call returns): the optimizer's threads read and write the
/// tensors through those addresses. An implementation that keeps the default `pointers`
/// (returning false) has nothing more to uphold than safe code.
pub unsafe trait ParamAccess<T> {
    /// Number of tensors.
    fn count(&self) -> usize;
    /// The fast path, when the caller holds every tensor as a slice: writes each tensor's
    /// `(address, length)` to `out` and returns true. The addresses must stay valid and
    /// unaliased while the step that asked runs (the trait's safety contract).
    fn pointers(&mut self, _out: &mut [(usize, usize)]) -> bool {
        false
    }
    /// Calls `f` with tensor `seg`'s values, read-only.
    fn read(&mut self, seg: usize, f: &mut dyn FnMut(&[T])) -> Result<()>;
    /// Calls `f` with tensor `seg`'s values, to update in place.
    fn update(&mut self, seg: usize, f: &mut dyn FnMut(&mut [T])) -> Result<()>;
}

// SAFETY: the addresses are those of the caller's `&mut` slices, which are live, aligned and
// exclusively borrowed for as long as the step holds this access.
unsafe impl<T> ParamAccess<T> for &mut [&mut [T]] {
    fn count(&self) -> usize {
        self.len()
    }
    fn pointers(&mut self, out: &mut [(usize, usize)]) -> bool {
        for (o, p) in out.iter_mut().zip(self.iter_mut()) {
            *o = (p.as_mut_ptr() as usize, p.len());
        }
        true
    }
    fn read(&mut self, seg: usize, f: &mut dyn FnMut(&[T])) -> Result<()> {
        f(self[seg]);
        Ok(())
    }
    fn update(&mut self, seg: usize, f: &mut dyn FnMut(&mut [T])) -> Result<()> {
        f(self[seg]);
        Ok(())
    }
}

/// The loss and its gradient at the parameters as they stand now, for optimizers that need
/// more than one gradient per step (SAM, L-BFGS; PyTorch's `closure`). It reads the
/// parameters through the [`ParamAccess`] it is given (or from wherever the caller keeps the
/// tensors the access writes to), writes each tensor's gradient into the buffer of the same
/// index (layout order; each is exactly as long as its tensor) and returns the loss.
pub type Closure<'a, T> = dyn FnMut(&mut dyn ParamAccess<T>, &mut [Vec<T>]) -> Result<f64> + 'a;

/// What a step with a [`Closure`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClosureOutcome {
    /// The loss at the parameters the step started from (the closure's first result).
    pub loss: f64,
    /// How many times the step called the closure (forward and backward passes).
    pub evaluations: u32,
    /// The last update's gradient report.
    pub step: StepOutcome,
}

/// Gradient buffers shaped as a layout's tensors, for closures to write into.
pub fn gradient_buffers<T: Real>(layout: &Layout) -> Vec<Vec<T>> {
    layout
        .segments()
        .iter()
        .map(|s| vec![T::ZERO; s.len])
        .collect()
}

/// An optimizer over a fixed [`Layout`] of named tensors.
pub trait Optimizer<T: Real>: Send {
    /// Spec name (`adam`, `lookahead`, ...).
    fn name(&self) -> &'static str;
    /// Canonical spec of the base group with every hyperparameter, as it stands now.
    fn spec(&self) -> Spec;
    /// Canonical specs of every group (group 0 first).
    fn group_specs(&self) -> Vec<Spec>;
    /// The parameter layout.
    fn layout(&self) -> &Layout;
    /// Gradient handling options.
    fn options(&self) -> &Options;
    /// Steps taken (skipped steps do not count).
    fn steps(&self) -> u64;
    /// Number of parameter groups.
    fn num_groups(&self) -> usize;
    /// Learning rate of a group.
    fn lr(&self, group: usize) -> f64;
    /// Sets a group's learning rate (schedules call this before each step).
    fn set_lr(&mut self, group: usize, lr: f64);
    /// Momentum (SGD family) or beta1 (Adam family) of a group, if any.
    fn momentum(&self, group: usize) -> Option<f64>;
    /// Sets momentum / beta1; an error for optimizers without one.
    fn set_momentum(&mut self, group: usize, momentum: f64) -> Result<()>;
    /// One step with the parameters lent through `params` (see [`ParamAccess`]).
    /// Allocation-free.
    fn step_with(&mut self, grads: &[&[T]], params: &mut dyn ParamAccess<T>)
        -> Result<StepOutcome>;

    /// One step in which the tensors marked in `absent` have no gradient (PyTorch's
    /// `p.grad is None`, candle's missing entry of a gradient store): they are not moved,
    /// their state does not advance, and their entries of `grads` are not read (they may be
    /// empty). Norm clipping takes the gradients present. The element-wise optimizers take
    /// it; those whose step couples tensors (or is sharded) refuse it, naming a tensor.
    fn step_with_absent(
        &mut self,
        grads: &[&[T]],
        absent: &[bool],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        match absent.iter().position(|&a| a) {
            None => self.step_with(grads, params),
            Some(seg) => Err(refuse_absent(self.name(), self.layout(), seg)),
        }
    }

    /// One step: `params[i]` and `grads[i]` are the tensors of the layout, in order.
    /// Allocation-free.
    fn step(&mut self, mut params: &mut [&mut [T]], grads: &[&[T]]) -> Result<StepOutcome> {
        self.step_with(grads, &mut params)
    }
    /// Whether a step needs a [`Closure`] (more than one gradient per step): such optimizers
    /// refuse [`Optimizer::step_with`] and are stepped with [`Optimizer::step_with_closure`].
    fn needs_closure(&self) -> bool {
        false
    }

    /// One step that evaluates the loss and gradient itself, as often as the method needs
    /// (PyTorch's `optimizer.step(closure)`). Optimizers that need one gradient call the
    /// closure once and step with its gradient.
    fn step_with_closure(
        &mut self,
        params: &mut dyn ParamAccess<T>,
        closure: &mut Closure<'_, T>,
    ) -> Result<ClosureOutcome> {
        let mut grads = gradient_buffers::<T>(self.layout());
        let loss = closure(params, &mut grads)?;
        let views: Vec<&[T]> = grads.iter().map(Vec::as_slice).collect();
        let step = self.step_with(&views, params)?;
        Ok(ClosureOutcome {
            loss,
            evaluations: 1,
            step,
        })
    }

    /// Whether the model is evaluated at another point than where gradients are taken
    /// (schedule-free), so that [`Optimizer::eval_mode`] changes the parameters.
    fn has_eval_point(&self) -> bool {
        false
    }

    /// Puts into the parameters the point at which the model is to be evaluated (tested,
    /// checkpointed, analysed), for optimizers whose gradient point differs from it
    /// (schedule-free: x instead of y; PyTorch's `optimizer.eval()`). Nothing for the others.
    /// Idempotent; [`Optimizer::train_mode`] undoes it.
    fn eval_mode(&mut self, _params: &mut dyn ParamAccess<T>) -> Result<()> {
        Ok(())
    }

    /// Puts the gradient point back into the parameters (`optimizer.train()`); steps are
    /// refused in eval mode. Idempotent.
    fn train_mode(&mut self, _params: &mut dyn ParamAccess<T>) -> Result<()> {
        Ok(())
    }

    /// Quantities the optimizer estimates as it runs, reported in training metrics (Prodigy's
    /// step-size estimate `d`); empty for most.
    fn estimates(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }

    /// Bytes per parameter the step must move (see `Rule::traffic`), for benchmarks.
    fn bytes_per_param(&self) -> f64;
    /// Bytes of element state held (as stored: 2 per element in bfloat16).
    fn state_bytes(&self) -> usize {
        let state = self.state_dict();
        let elements: usize = state.tensors.values().map(|(_, v)| v.len()).sum();
        elements * std::mem::size_of::<T>()
    }
    /// Per-tensor scalar state (`step`, SWATS's `switched_at` and `sgd_lr`, ...).
    fn scalar_state(&self) -> Vec<(String, Vec<(&'static str, f64)>)>;
    /// A copy of the full state.
    fn state_dict(&self) -> StateDict<T>;
    /// Restores a state; every tensor is checked first, nothing changes on error.
    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()>;

    /// Sets every group's learning rate.
    fn set_lr_all(&mut self, lr: f64) {
        for g in 0..self.num_groups() {
            self.set_lr(g, lr);
        }
    }

    /// One step on a single flat buffer holding every tensor of the layout back to back.
    fn step_flat(&mut self, params: &mut [T], grads: &[T]) -> Result<StepOutcome> {
        let layout = self.layout().clone();
        let gs = layout.split(grads)?;
        let mut ps = layout.split_mut(params)?;
        self.step(&mut ps, &gs)
    }

    /// Saves the state atomically to a safetensors file.
    fn save_state(&self, path: &std::path::Path) -> Result<()> {
        self.state_dict().save(path)
    }

    /// Loads a state saved with [`Optimizer::save_state`]; errors name the file and tensor.
    fn load_state(&mut self, path: &std::path::Path) -> Result<()> {
        let state = StateDict::load(path)?;
        self.load_state_dict(&state).map_err(|e| match e {
            Error::State { message, .. } => Error::State {
                source_name: Some(path.display().to_string()),
                message,
            },
            other => other,
        })
    }
}

/// The canonical form of an optimizer spec, every hyperparameter written out: specs that mean
/// the same optimizer (`adamw(lr=1e-3)`, `adamw(lr=0.001, betas=(0.9, 0.999))`) give the same
/// string. An invalid spec is its error.
pub fn canonical_spec(spec: &str) -> Result<String> {
    let parsed = crate::spec::parse(spec)?;
    // A matrix (Muon needs one), and a vector when Muon has a fallback to check.
    let mut tensors = vec![("w", vec![1, 1])];
    if parsed.name == "muon" && parsed.get("fallback").is_some() {
        tensors.push(("b", vec![1]));
    }
    let layout = Layout::new(tensors)?;
    Ok(
        build_from_spec::<f64>(&parsed, layout, &[], Options::default())?
            .spec()
            .to_string(),
    )
}

/// Builds an optimizer from a spec string such as `"adamw(lr=1e-3, weight_decay=0.05)"`.
pub fn build<T: Real>(
    spec: &str,
    layout: Layout,
    groups: &[ParamGroup],
    options: Options,
) -> Result<Box<dyn Optimizer<T>>> {
    build_from_spec(&crate::spec::parse(spec)?, layout, groups, options)
}

/// Builds an optimizer from a parsed spec.
pub fn build_from_spec<T: Real>(
    spec: &Spec,
    layout: Layout,
    groups: &[ParamGroup],
    options: Options,
) -> Result<Box<dyn Optimizer<T>>> {
    fn engine<T: Real, R: rule::Rule>(
        spec: &Spec,
        layout: Layout,
        groups: &[ParamGroup],
        options: Options,
    ) -> Result<Box<dyn Optimizer<T>>> {
        Ok(Box::new(Engine::<T, R>::from_spec(
            spec, layout, groups, options,
        )?))
    }
    match spec.name.as_str() {
        "sgd" | "sgdw" => engine::<T, sgd::Sgd>(spec, layout, groups, options),
        "adagrad" => engine::<T, adagrad::Adagrad>(spec, layout, groups, options),
        "rmsprop" => engine::<T, rmsprop::RmsProp>(spec, layout, groups, options),
        "adam" | "adamw" => engine::<T, adam::Adam>(spec, layout, groups, options),
        "adamax" => engine::<T, adamax::Adamax>(spec, layout, groups, options),
        "nadam" => engine::<T, nadam::NAdam>(spec, layout, groups, options),
        "radam" => engine::<T, radam::RAdam>(spec, layout, groups, options),
        "adadelta" => engine::<T, adadelta::Adadelta>(spec, layout, groups, options),
        "adabound" => engine::<T, adabound::AdaBound>(spec, layout, groups, options),
        "lamb" => engine::<T, lamb::Lamb>(spec, layout, groups, options),
        "lars" => engine::<T, lars::Lars>(spec, layout, groups, options),
        "lion" => engine::<T, lion::Lion>(spec, layout, groups, options),
        "swats" => engine::<T, swats::Swats>(spec, layout, groups, options),
        "adopt" => engine::<T, adopt::Adopt>(spec, layout, groups, options),
        "ademamix" => engine::<T, ademamix::Ademamix>(spec, layout, groups, options),
        "rprop" => engine::<T, rprop::Rprop>(spec, layout, groups, options),
        "asgd" => engine::<T, asgd::Asgd>(spec, layout, groups, options),
        "sgd_schedulefree" | "adamw_schedulefree" => {
            engine::<T, schedule_free::ScheduleFree>(spec, layout, groups, options)
        }
        "lookahead" => Ok(Box::new(lookahead::Lookahead::from_spec(
            spec, layout, groups, options,
        )?)),
        "sam" => Ok(Box::new(sam::Sam::from_spec(
            spec, layout, groups, options,
        )?)),
        "muon" => Ok(Box::new(muon::Muon::from_spec(
            spec, layout, groups, options,
        )?)),
        "adafactor" => Ok(Box::new(adafactor::Adafactor::from_spec(
            spec, layout, groups, options,
        )?)),
        "prodigy" => Ok(Box::new(prodigy::Prodigy::from_spec(
            spec, layout, groups, options,
        )?)),
        "lbfgs" => Ok(Box::new(lbfgs::Lbfgs::from_spec(
            spec, layout, groups, options,
        )?)),
        other => Err(Error::UnknownName {
            what: "optimizer",
            name: other.to_string(),
            spec: spec.to_string(),
            known: OPTIMIZERS.join(", "),
        }),
    }
}

/// The optimizer a wrapper (`lookahead`, `sam`) takes as its first argument; `example`
/// shows the form in the error when it is missing.
pub(crate) fn wrapped_spec(args: &crate::spec::Args, example: &str) -> Result<Spec> {
    let wrapper = args.spec().name.clone();
    match args.positional(0) {
        Some(Value::Spec(s)) => Ok(s.clone()),
        Some(Value::Word(w)) => Ok(Spec::new(w.clone())),
        Some(other) => Err(args.invalid(
            "(inner)",
            format!("the first argument must be an optimizer spec, got {other}"),
        )),
        None => Err(args.invalid(
            "(inner)",
            format!("{wrapper} needs the optimizer it wraps as first argument, e.g. {example}"),
        )),
    }
}

/// The error of an optimizer that cannot step without a tensor's gradient.
pub(crate) fn refuse_absent(name: &str, layout: &Layout, seg: usize) -> Error {
    Error::MissingGradient {
        optimizer: name.to_string(),
        tensor: layout
            .segments()
            .get(seg)
            .map_or_else(|| format!("#{seg}"), |s| s.name.clone()),
    }
}

/// Group index of every segment (0 when no group matches).
pub(crate) fn assign_groups(
    layout: &Layout,
    groups: &[ParamGroup],
    options: &Options,
) -> Result<Vec<usize>> {
    // A shard holds pieces of some tensors only: patterns must match in the whole model.
    let model = options.distributed.as_ref().map_or(layout, |d| &*d.full);
    for group in groups {
        for pattern in &group.params {
            if !model
                .segments()
                .iter()
                .any(|s| layout::glob_match(pattern, &s.name))
            {
                return Err(Error::Layout(format!(
                    "parameter group pattern '{pattern}' matches no tensor (tensors: {})",
                    model
                        .segments()
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(layout
        .segments()
        .iter()
        .map(|s| {
            groups
                .iter()
                .position(|g| g.params.iter().any(|p| layout::glob_match(p, &s.name)))
                .map_or(0, |i| i + 1)
        })
        .collect())
}
