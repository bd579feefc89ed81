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
mod adam_bf16;
pub mod adamax;
pub mod ademamix;
pub mod adopt;
pub mod asgd;
pub mod bf16;
mod build;
pub mod clip;
pub mod engine;
pub mod hyper;
pub mod lamb;
pub mod lars;
pub mod layout;
pub mod lbfgs;
pub mod lion;
pub mod lookahead;
pub mod muon;
pub mod nadam;
mod options;
pub mod plan;
pub(crate) mod prefetch;
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

pub(crate) use build::{assign_groups, check_param_count, refuse_absent, wrapped_spec};
pub use build::{build, build_from_spec, canonical_spec, OPTIMIZERS};
pub use hyper::Hyper;
pub use layout::{Layout, Segment};
pub use options::{NonFinitePolicy, Options, ParamGroup, StepOutcome};
pub use state::{StateDict, StateMeta};

use crate::spec::{Spec, Value};
use crate::{Error, Real, Result};
use engine::Engine;

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
    /// Each parameter group's learning rate and momentum (β1) as they stand, group 0 first
    /// (see [`hyper`]).
    fn hypers(&self) -> &[Hyper];
    /// The values the next step reads: schedules, SWA and users write them here (PyTorch's
    /// `param_group['lr'] = ...`). A step refuses values out of range, naming the group.
    fn hypers_mut(&mut self) -> &mut [Hyper];
    /// Number of parameter groups.
    fn num_groups(&self) -> usize {
        self.hypers().len()
    }
    /// Learning rate of a group.
    fn lr(&self, group: usize) -> f64 {
        self.hypers()[group].lr
    }
    /// Momentum (SGD family) or beta1 (Adam family) of a group, if any.
    fn momentum(&self, group: usize) -> Option<f64> {
        self.hypers()[group].momentum
    }
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
        for h in self.hypers_mut() {
            h.lr = lr;
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
