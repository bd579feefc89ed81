//! L-BFGS (Liu & Nocedal 1989; Nocedal & Wright, *Numerical Optimization*, Algorithms 7.4
//! and 3.5/3.6), as `torch.optim.LBFGS`: every tensor of the layout is one flat vector, and
//! each step calls the closure as often as its inner iterations and line search need.
//!
//! ```text
//! repeat up to max_iter times (while evaluations < max_eval):
//!   y = g − g_prev,  s = t·d;  if y·s > 1e-10: remember (y, s, ρ = 1/(y·s)), H₀ = y·s / y·y
//!   d = −H g           (two-loop recursion over the last history_size pairs; −g at first)
//!   t = lr             (min(1, 1/‖g‖₁)·lr at the very first iteration)
//!   x ← x + t·d        (t from a strong-Wolfe line search with line_search_fn=strong_wolfe)
//!   stop when max|g| ≤ tolerance_grad, max|t·d| ≤ tolerance_change or |Δloss| < tolerance_change
//! ```
//! The memory, direction, step length and counters persist across steps, as in PyTorch.

use super::hyper::{GroupHypers, Hyper};
use super::state::{state_error, StateDict};
use super::{
    gradient_buffers, Closure, ClosureOutcome, Layout, NonFinitePolicy, Optimizer, Options,
    ParamAccess, ParamGroup, StepOutcome,
};
use crate::spec::{Args, Spec};
use crate::{Error, Real, Result};
use std::collections::VecDeque;

mod config;
mod flat;
mod saved;
mod strong_wolfe;

use flat::{axpy, dot, max_abs};

pub use config::LbfgsConfig;

/// What persists between steps (PyTorch's `state` of the first parameter).
#[derive(Debug, Clone, PartialEq)]
struct Memory<T> {
    func_evals: u64,
    n_iter: u64,
    d: Vec<T>,
    t: f64,
    h_diag: f64,
    prev_flat_grad: Vec<T>,
    prev_loss: f64,
    /// (y, s, ρ), oldest first.
    pairs: VecDeque<(Vec<T>, Vec<T>, f64)>,
}

/// The flat vectors one step works with (kept to avoid allocating per step).
struct Work<T> {
    grads: Vec<Vec<T>>,
    flat_grad: Vec<T>,
    x_init: Vec<T>,
    q: Vec<T>,
    al: Vec<f64>,
    /// The newest curvature pair, before it is known to have positive curvature.
    y: Vec<T>,
    s: Vec<T>,
    /// The parameters where the step began (restored when it fails).
    start: Vec<T>,
    /// Line-search gradients: new, previous, and the bracket's two ends.
    g_new: Vec<T>,
    g_prev: Vec<T>,
    bracket_g: [Vec<T>; 2],
}

/// L-BFGS over the whole layout.
pub struct Lbfgs<T: Real> {
    layout: Layout,
    options: Options,
    config: LbfgsConfig,
    /// The step length as it stands (one group).
    hypers: GroupHypers,
    memory: Memory<T>,
    work: Work<T>,
    steps: u64,
    failed: Option<String>,
}

impl<T: Real> Lbfgs<T> {
    /// Parses `lbfgs(lr=1, max_iter=20, max_eval, tolerance_grad, tolerance_change,
    /// history_size, line_search_fn)`.
    pub fn from_spec(
        spec: &Spec,
        layout: Layout,
        groups: &[ParamGroup],
        options: Options,
    ) -> Result<Self> {
        let args = Args::new(spec, 0);
        let (config, hyper) = LbfgsConfig::parse(&args)?;
        args.finish()?;
        if !groups.is_empty() {
            return Err(Error::Unsupported {
                what: "lbfgs".into(),
                reason: "it optimizes all parameters as one group (as torch.optim.LBFGS): remove \
                         the parameter groups"
                    .into(),
            });
        }
        if options.clip_norm.is_some() || options.clip_value.is_some() {
            return Err(Error::Unsupported {
                what: "lbfgs".into(),
                reason: "gradient clipping would break its line search and curvature pairs; \
                         remove the clipping"
                    .into(),
            });
        }
        if options.distributed.is_some() {
            return Err(Error::Unsupported {
                what: "lbfgs".into(),
                reason: "a sharded (ZeRO-1) run is not supported; its two-loop recursion needs \
                         the whole gradient"
                    .into(),
            });
        }
        let n = layout.total();
        Ok(Lbfgs {
            work: Work {
                grads: gradient_buffers(&layout),
                flat_grad: vec![T::ZERO; n],
                x_init: vec![T::ZERO; n],
                q: vec![T::ZERO; n],
                al: Vec::new(),
                y: vec![T::ZERO; n],
                s: vec![T::ZERO; n],
                start: vec![T::ZERO; n],
                g_new: vec![T::ZERO; n],
                g_prev: vec![T::ZERO; n],
                bracket_g: [vec![T::ZERO; n], vec![T::ZERO; n]],
            },
            memory: Memory {
                func_evals: 0,
                n_iter: 0,
                d: vec![T::ZERO; n],
                t: 0.0,
                h_diag: 1.0,
                prev_flat_grad: vec![T::ZERO; n],
                prev_loss: 0.0,
                pairs: VecDeque::new(),
            },
            layout,
            options,
            config,
            hypers: GroupHypers::new(vec![hyper]),
            steps: 0,
            failed: None,
        })
    }

    /// The closure's loss and gradient at the parameters as they stand, the gradient
    /// flattened into `out`. A non-finite value is an error naming where it is.
    fn evaluate(
        &mut self,
        params: &mut dyn ParamAccess<T>,
        closure: &mut Closure<'_, T>,
        out: Target,
    ) -> Result<f64> {
        let loss = closure(params, &mut self.work.grads)?;
        let flat = match out {
            Target::FlatGrad => &mut self.work.flat_grad,
            Target::LineSearch => &mut self.work.g_new,
        };
        for (seg, g) in self.layout.segments().iter().zip(&self.work.grads) {
            flat[seg.offset..seg.offset + seg.len].copy_from_slice(g);
        }
        if let Some((seg, index, value)) = super::first_non_finite(&self.work.grads) {
            return Err(Error::NonFiniteGradient {
                step: self.steps + 1,
                tensor: self.layout.segments()[seg].name.clone(),
                index,
                value,
                partly_updated: false,
            });
        }
        if !loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                optimizer: "lbfgs".into(),
                step: self.steps + 1,
                loss,
            });
        }
        Ok(loss)
    }

    /// The parameters as one flat vector.
    fn read_flat(&self, params: &mut dyn ParamAccess<T>, out: &mut [T]) -> Result<()> {
        for (i, seg) in self.layout.segments().iter().enumerate() {
            let out = &mut out[seg.offset..seg.offset + seg.len];
            params.read(i, &mut |p: &[T]| out.copy_from_slice(p))?;
        }
        Ok(())
    }

    /// Sets the parameters to the flat vector `x`.
    fn write_flat(params: &mut dyn ParamAccess<T>, layout: &Layout, x: &[T]) -> Result<()> {
        for (i, seg) in layout.segments().iter().enumerate() {
            let x = &x[seg.offset..seg.offset + seg.len];
            params.update(i, &mut |p: &mut [T]| p.copy_from_slice(x))?;
        }
        Ok(())
    }

    /// Sets the parameters to `x + t·d` (`x` flat).
    fn write_moved(
        params: &mut dyn ParamAccess<T>,
        layout: &Layout,
        x: &[T],
        t: f64,
        d: &[T],
    ) -> Result<()> {
        let t = T::from_f64(t);
        for (i, seg) in layout.segments().iter().enumerate() {
            let range = seg.offset..seg.offset + seg.len;
            let (x, d) = (&x[range.clone()], &d[range]);
            params.update(i, &mut |p: &mut [T]| {
                for ((p, x), d) in p.iter_mut().zip(x).zip(d) {
                    *p = *x + t * *d;
                }
            })?;
        }
        Ok(())
    }

    /// The search direction `−H·g` by the two-loop recursion, into `memory.d`.
    fn direction(&mut self) {
        let Work {
            flat_grad, q, al, ..
        } = &mut self.work;
        let m = &mut self.memory;
        for (q, g) in q.iter_mut().zip(flat_grad.iter()) {
            *q = -*g;
        }
        al.clear();
        al.resize(m.pairs.len(), 0.0);
        for (i, (y, s, ro)) in m.pairs.iter().enumerate().rev() {
            al[i] = dot(s, q) * ro;
            axpy(q, -al[i], y);
        }
        let h = T::from_f64(m.h_diag);
        for (d, q) in m.d.iter_mut().zip(q.iter()) {
            *d = *q * h;
        }
        for (i, (y, s, ro)) in m.pairs.iter().enumerate() {
            let be = dot(y, &m.d) * ro;
            axpy(&mut m.d, al[i] - be, s);
        }
    }

    /// Adds the newest curvature pair from the last move (if it has positive curvature) and
    /// computes the next direction. The pair's buffers are reused once the memory is full.
    fn update_memory(&mut self) {
        let m = &mut self.memory;
        let Work {
            flat_grad: g, y, s, ..
        } = &mut self.work;
        let t = T::from_f64(m.t);
        for i in 0..g.len() {
            y[i] = g[i] - m.prev_flat_grad[i];
            s[i] = m.d[i] * t;
        }
        let ys = dot(y, s);
        if ys > 1e-10 {
            let (spare_y, spare_s) = if m.pairs.len() as u64 == self.config.history_size {
                let (y, s, _) = m.pairs.pop_front().expect("a full memory is not empty");
                (y, s)
            } else {
                (vec![T::ZERO; g.len()], vec![T::ZERO; g.len()])
            };
            let y = std::mem::replace(y, spare_y);
            let s = std::mem::replace(s, spare_s);
            m.h_diag = ys / dot(&y, &y);
            m.pairs.push_back((y, s, 1.0 / ys));
        }
        self.direction();
    }

    /// One step; on error the caller decides what the parameters become.
    fn run(
        &mut self,
        params: &mut dyn ParamAccess<T>,
        closure: &mut Closure<'_, T>,
    ) -> Result<(f64, u32, f64)> {
        self.hypers.check("lbfgs")?;
        let cfg = self.config.clone();
        let lr = self.hypers.group(0).lr;
        let orig_loss = self.evaluate(params, closure, Target::FlatGrad)?;
        let grad_norm = dot(&self.work.flat_grad, &self.work.flat_grad).sqrt();
        let mut loss = orig_loss;
        let mut current_evals: u64 = 1;
        self.memory.func_evals += 1;
        if max_abs(&self.work.flat_grad) <= cfg.tolerance_grad {
            return Ok((orig_loss, 1, grad_norm));
        }
        let mut n_iter = 0;
        while n_iter < cfg.max_iter {
            n_iter += 1;
            self.memory.n_iter += 1;
            if self.memory.n_iter == 1 {
                for (d, g) in self.memory.d.iter_mut().zip(&self.work.flat_grad) {
                    *d = -*g;
                }
                self.memory.pairs.clear();
                self.memory.h_diag = 1.0;
            } else {
                self.update_memory();
            }
            self.memory
                .prev_flat_grad
                .copy_from_slice(&self.work.flat_grad);
            self.memory.prev_loss = loss;
            self.memory.t = if self.memory.n_iter == 1 {
                let l1: f64 = self.work.flat_grad.iter().map(|g| g.to_f64().abs()).sum();
                (1.0f64).min(1.0 / l1) * lr
            } else {
                lr
            };
            let gtd = dot(&self.work.flat_grad, &self.memory.d);
            if gtd > -cfg.tolerance_change {
                break;
            }
            let mut x_init = std::mem::take(&mut self.work.x_init);
            self.read_flat(params, &mut x_init)?;
            let ls_evals;
            if cfg.strong_wolfe {
                let max_ls = cfg.max_eval.saturating_sub(current_evals);
                let searched = self.strong_wolfe(params, closure, &x_init, loss, gtd, max_ls);
                self.work.x_init = x_init;
                let (f, t, k) = searched?;
                loss = f;
                self.memory.t = t;
                ls_evals = k;
                Self::write_moved(params, &self.layout, &self.work.x_init, t, &self.memory.d)?;
            } else {
                Self::write_moved(params, &self.layout, &x_init, self.memory.t, &self.memory.d)?;
                self.work.x_init = x_init;
                if n_iter != cfg.max_iter {
                    loss = self.evaluate(params, closure, Target::FlatGrad)?;
                    ls_evals = 1;
                } else {
                    ls_evals = 0;
                }
            }
            current_evals += ls_evals;
            self.memory.func_evals += ls_evals;
            let t = self.memory.t;
            if n_iter == cfg.max_iter
                || current_evals >= cfg.max_eval
                || max_abs(&self.work.flat_grad) <= cfg.tolerance_grad
                || self
                    .memory
                    .d
                    .iter()
                    .fold(0.0f64, |m, d| m.max((d.to_f64() * t).abs()))
                    <= cfg.tolerance_change
                || (loss - self.memory.prev_loss).abs() < cfg.tolerance_change
            {
                break;
            }
        }
        Ok((orig_loss, current_evals as u32, grad_norm))
    }
}

/// Where [`Lbfgs::evaluate`] puts the gradient.
#[derive(Clone, Copy)]
enum Target {
    FlatGrad,
    LineSearch,
}

const SLOTS: [&str; 2] = ["lbfgs_d", "lbfgs_prev_flat_grad"];

impl<T: Real> Optimizer<T> for Lbfgs<T> {
    fn name(&self) -> &'static str {
        "lbfgs"
    }
    fn spec(&self) -> Spec {
        self.config.to_spec(self.hypers.group(0))
    }
    fn group_specs(&self) -> Vec<Spec> {
        vec![self.spec()]
    }
    fn layout(&self) -> &Layout {
        &self.layout
    }
    fn options(&self) -> &Options {
        &self.options
    }
    fn steps(&self) -> u64 {
        self.steps
    }
    fn hypers(&self) -> &[Hyper] {
        self.hypers.values()
    }
    fn hypers_mut(&mut self) -> &mut [Hyper] {
        self.hypers.values_mut()
    }

    fn step_with(&mut self, _: &[&[T]], _: &mut dyn ParamAccess<T>) -> Result<StepOutcome> {
        Err(Error::Unsupported {
            what: "lbfgs".into(),
            reason: "it evaluates the loss several times per step (iterations, line search): \
                     step it with step_with_closure"
                .into(),
        })
    }

    fn needs_closure(&self) -> bool {
        true
    }

    fn step_with_closure(
        &mut self,
        params: &mut dyn ParamAccess<T>,
        closure: &mut Closure<'_, T>,
    ) -> Result<ClosureOutcome> {
        if let Some(reason) = &self.failed {
            return Err(state_error(None, reason.clone()));
        }
        crate::optim::check_param_count("lbfgs", &self.layout, params)?;
        let before_evals = self.memory.func_evals;
        let mut start = std::mem::take(&mut self.work.start);
        self.read_flat(params, &mut start)?;
        let result = self.run(params, closure);
        let restored = match &result {
            Ok(_) => Ok(()),
            Err(_) => Self::write_flat(params, &self.layout, &start),
        };
        self.work.start = start;
        restored?;
        let error = match result {
            Ok((loss, evaluations, grad_norm)) => {
                self.steps += 1;
                return Ok(ClosureOutcome {
                    loss,
                    evaluations,
                    step: StepOutcome {
                        skipped: false,
                        grad_norm,
                        clip_coef: 1.0,
                    },
                });
            }
            Err(e) => e,
        };
        if self.memory.func_evals == before_evals {
            // The first evaluation failed: nothing has changed.
            return match (&error, self.options.nonfinite) {
                (Error::NonFiniteGradient { .. }, NonFinitePolicy::Skip) => Ok(ClosureOutcome {
                    loss: f64::NAN,
                    evaluations: 1,
                    step: StepOutcome::SKIPPED,
                }),
                _ => Err(error),
            };
        }
        let failure = Error::StepFailed {
            optimizer: "lbfgs".into(),
            step: self.steps + 1,
            cause: error.to_string(),
        };
        self.failed = Some(failure.to_string());
        Err(failure)
    }

    /// Per iteration the two-loop recursion reads every remembered pair twice; this counts one
    /// iteration with the history full, plus the gradient, parameters and direction.
    fn bytes_per_param(&self) -> f64 {
        let pairs = self.memory.pairs.len().max(1) as f64;
        (6.0 + 4.0 * pairs) * std::mem::size_of::<T>() as f64
    }

    fn scalar_state(&self) -> Vec<(String, Vec<(&'static str, f64)>)> {
        vec![(
            "(all)".into(),
            vec![
                ("n_iter", self.memory.n_iter as f64),
                ("func_evals", self.memory.func_evals as f64),
                ("t", self.memory.t),
                ("H_diag", self.memory.h_diag),
                ("history", self.memory.pairs.len() as f64),
            ],
        )]
    }

    fn state_dict(&self) -> StateDict<T> {
        self.saved_state()
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        self.restore_state(state)
    }
}

impl<T: Real> std::fmt::Debug for Lbfgs<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Optimizer::spec(self))
    }
}
