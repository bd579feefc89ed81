//! Lookahead (Zhang, Lucas, Hinton & Ba 2019, arXiv:1907.08610, Algorithm 1): k steps
//! forward with any inner optimizer, one step back.
//!
//! ```text
//! φ ← θ0                                    (slow weights start at the initial point)
//! every k inner steps:  φ ← φ + α(θ − φ);  θ ← φ
//! ```
//! The inner optimizer keeps its state across synchronisations. Skipped inner steps
//! (non-finite gradients) do not count towards k.

use super::hyper::Hyper;
use super::state::StateDict;
use super::{
    build_from_spec, Closure, ClosureOutcome, Layout, Optimizer, Options, ParamAccess, ParamGroup,
    StepOutcome,
};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Lookahead around any optimizer.
pub struct Lookahead<T: Real> {
    inner: Box<dyn Optimizer<T>>,
    k: u64,
    alpha: f64,
    slow: Vec<T>,
    counter: u64,
    initialized: bool,
}

impl<T: Real> Lookahead<T> {
    /// Wraps `inner` with sync period `k >= 1` and slow step size `alpha` in [0, 1].
    pub fn new(inner: Box<dyn Optimizer<T>>, k: u64, alpha: f64) -> Self {
        let total = inner.layout().total();
        Lookahead {
            inner,
            k,
            alpha,
            slow: vec![T::ZERO; total],
            counter: 0,
            initialized: false,
        }
    }

    /// Parses `lookahead(INNER, k=5, alpha=0.5)`.
    pub fn from_spec(
        spec: &Spec,
        layout: Layout,
        groups: &[ParamGroup],
        options: Options,
    ) -> Result<Self> {
        let args = Args::new(spec, 1);
        let inner_spec = super::wrapped_spec(&args, "lookahead(adam(lr=0.001), k=5)")?;
        if inner_spec.name == "lookahead" {
            return Err(args.invalid("(inner)", "lookahead cannot wrap another lookahead"));
        }
        let k = args.count("k", 5)?;
        if k == 0 {
            return Err(args.invalid("k", "must be at least 1"));
        }
        let alpha = args.number("alpha", 0.5, crate::spec::Domain::UNIT_OPEN_LOW)?;
        args.finish()?;
        let inner = build_from_spec(&inner_spec, layout, groups, options)?;
        Ok(Self::new(inner, k, alpha))
    }

    /// Copies the starting point into the slow weights before the first step.
    fn start(&mut self, params: &mut dyn ParamAccess<T>) -> Result<()> {
        if self.initialized || params.count() != self.layout().segments().len() {
            return Ok(());
        }
        let Lookahead {
            inner,
            slow: all_slow,
            ..
        } = self;
        for (i, seg) in inner.layout().segments().iter().enumerate() {
            let slow = &mut all_slow[seg.offset..seg.offset + seg.len];
            params.read(i, &mut |p: &[T]| {
                if p.len() == slow.len() {
                    slow.copy_from_slice(p);
                }
            })?;
        }
        Ok(())
    }

    /// Counts a step the inner optimizer took and synchronises every k of them.
    fn after(&mut self, outcome: StepOutcome, params: &mut dyn ParamAccess<T>) -> Result<()> {
        if outcome.skipped {
            return Ok(());
        }
        self.initialized = true;
        self.counter += 1;
        if self.counter >= self.k {
            self.counter = 0;
            self.sync(params)?;
        }
        Ok(())
    }

    fn sync(&mut self, params: &mut dyn ParamAccess<T>) -> Result<()> {
        let alpha = T::from_f64(self.alpha);
        let Lookahead {
            inner,
            slow: all_slow,
            ..
        } = self;
        for (i, seg) in inner.layout().segments().iter().enumerate() {
            let slow = &mut all_slow[seg.offset..seg.offset + seg.len];
            params.update(i, &mut |p: &mut [T]| {
                for (s, x) in slow.iter_mut().zip(p.iter_mut()) {
                    *s = *s + alpha * (*x - *s);
                    *x = *s;
                }
            })?;
        }
        Ok(())
    }
}

const SLOW: &str = "lookahead_slow";

impl<T: Real> Optimizer<T> for Lookahead<T> {
    fn name(&self) -> &'static str {
        "lookahead"
    }
    fn spec(&self) -> Spec {
        Spec::new("lookahead")
            .with_positional(self.inner.spec())
            .with("k", self.k as f64)
            .with("alpha", self.alpha)
    }
    fn group_specs(&self) -> Vec<Spec> {
        self.inner.group_specs()
    }
    fn layout(&self) -> &Layout {
        self.inner.layout()
    }
    fn options(&self) -> &Options {
        self.inner.options()
    }
    fn steps(&self) -> u64 {
        self.inner.steps()
    }
    fn hypers(&self) -> &[Hyper] {
        self.inner.hypers()
    }
    fn hypers_mut(&mut self) -> &mut [Hyper] {
        self.inner.hypers_mut()
    }

    fn step_with(
        &mut self,
        grads: &[&[T]],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        self.start(params)?;
        let outcome = self.inner.step_with(grads, params)?;
        self.after(outcome, params)?;
        Ok(outcome)
    }

    fn needs_closure(&self) -> bool {
        self.inner.needs_closure()
    }

    fn step_with_closure(
        &mut self,
        params: &mut dyn ParamAccess<T>,
        closure: &mut Closure<'_, T>,
    ) -> Result<ClosureOutcome> {
        self.start(params)?;
        let outcome = self.inner.step_with_closure(params, closure)?;
        self.after(outcome.step, params)?;
        Ok(outcome)
    }

    fn has_eval_point(&self) -> bool {
        self.inner.has_eval_point()
    }
    fn eval_mode(&mut self, params: &mut dyn ParamAccess<T>) -> Result<()> {
        self.inner.eval_mode(params)
    }
    fn train_mode(&mut self, params: &mut dyn ParamAccess<T>) -> Result<()> {
        self.inner.train_mode(params)
    }

    /// The inner optimizer's, plus the synchronisation (slow and fast weights read and
    /// written) every k steps.
    fn bytes_per_param(&self) -> f64 {
        self.inner.bytes_per_param() + 4.0 * std::mem::size_of::<T>() as f64 / self.k as f64
    }

    fn state_bytes(&self) -> usize {
        self.inner.state_bytes() + self.slow.len() * std::mem::size_of::<T>()
    }

    fn estimates(&self) -> Vec<(&'static str, f64)> {
        self.inner.estimates()
    }

    fn scalar_state(&self) -> Vec<(String, Vec<(&'static str, f64)>)> {
        self.inner.scalar_state()
    }

    fn state_dict(&self) -> StateDict<T> {
        let mut state = self.inner.state_dict();
        state
            .meta
            .extra
            .insert("lookahead_counter".into(), self.counter as f64);
        state.meta.extra.insert(
            "lookahead_initialized".into(),
            if self.initialized { 1.0 } else { 0.0 },
        );
        state.meta.extra.insert("lookahead_inner".into(), 0.0);
        state.meta.optimizer = format!("lookahead({})", state.meta.optimizer);
        for seg in self.layout().segments() {
            state.tensors.insert(
                format!("{}/{SLOW}", seg.name),
                (
                    seg.shape.clone(),
                    self.slow[seg.offset..seg.offset + seg.len].to_vec(),
                ),
            );
        }
        state
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        let expected = format!("lookahead({})", self.inner.name());
        let inner_name = super::state::inner_name(&state.meta.optimizer, "lookahead", &expected)?;
        let get = |k: &str| super::state::saved_extra(state, k);
        let counter = get("lookahead_counter")?;
        let initialized = get("lookahead_initialized")? != 0.0;
        let mut inner = state.clone();
        inner.meta.optimizer = inner_name.to_string();
        for k in [
            "lookahead_counter",
            "lookahead_initialized",
            "lookahead_inner",
        ] {
            inner.meta.extra.remove(k);
        }
        let mut slow = Vec::with_capacity(self.slow.len());
        for seg in self.layout().segments() {
            let key = format!("{}/{SLOW}", seg.name);
            slow.extend_from_slice(super::state::saved_tensor(state, &key, &seg.shape)?);
            inner.tensors.remove(&key);
        }
        self.inner.load_state_dict(&inner)?;
        self.slow = slow;
        self.counter = counter as u64;
        self.initialized = initialized;
        Ok(())
    }
}

impl<T: Real> std::fmt::Debug for Lookahead<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Optimizer::spec(self))
    }
}
