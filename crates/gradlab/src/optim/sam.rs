//! Sharpness-aware minimisation (Foret et al. 2021, arXiv:2010.01412) and its adaptive form
//! ASAM (Kwon et al. 2021, arXiv:2102.11600), around any optimizer, as pytorch-optimizer
//! 4.1.0's `SAM`:
//!
//! ```text
//! g  = ∇L(w)
//! a  = |w| ⊙ g  (adaptive)  or  g
//! e  = ρ · (w² ⊙ g  or  g) / (‖a‖₂ + 1e-12)     (the norm over every tensor)
//! g' = ∇L(w + e)
//! w  ← BASE.step(w, g')                            (from w, with the gradient at w + e)
//! ```
//! Two gradients per step, so it is stepped with a closure
//! ([`Optimizer::step_with_closure`]). As the reference does, each tensor's norm is rounded
//! to float32 and the global norm, its reciprocal and ρ/‖a‖ are computed in float32; ASAM's
//! scaling is `|w|` without Kwon et al.'s offset η, so zero weights are never perturbed.

use super::hyper::Hyper;
use super::state::StateDict;
use super::{
    build_from_spec, gradient_buffers, Closure, ClosureOutcome, Layout, NonFinitePolicy, Optimizer,
    Options, ParamAccess, ParamGroup, StepOutcome,
};
use crate::spec::{Args, Domain, Spec};
use crate::{Error, Real, Result};

/// SAM or ASAM around a base optimizer.
pub struct Sam<T: Real> {
    base: Box<dyn Optimizer<T>>,
    rho: f64,
    adaptive: bool,
    grads: Vec<Vec<T>>,
    origin: Vec<T>,
}

impl<T: Real> Sam<T> {
    /// Wraps `base` with neighbourhood radius `rho >= 0`; `adaptive` makes it ASAM.
    pub fn new(base: Box<dyn Optimizer<T>>, rho: f64, adaptive: bool) -> Self {
        let grads = gradient_buffers(base.layout());
        let origin = vec![T::ZERO; base.layout().total()];
        Sam {
            base,
            rho,
            adaptive,
            grads,
            origin,
        }
    }

    /// Parses `sam(BASE, rho=0.05, adaptive=false)`.
    pub fn from_spec(
        spec: &Spec,
        layout: Layout,
        groups: &[ParamGroup],
        options: Options,
    ) -> Result<Self> {
        let args = Args::new(spec, 1);
        let base_spec = super::wrapped_spec(&args, "sam(sgd(lr=0.05, momentum=0.9), rho=0.05)")?;
        if matches!(base_spec.name.as_str(), "sam" | "lbfgs") {
            return Err(args.invalid(
                "(inner)",
                format!(
                    "sam cannot wrap {}: its base takes one gradient per step",
                    base_spec.name
                ),
            ));
        }
        let rho = args.number("rho", 0.05, Domain::NON_NEGATIVE)?;
        let adaptive = args.bool("adaptive", false)?;
        args.finish()?;
        if options.distributed.is_some() {
            return Err(Error::Unsupported {
                what: "sam".into(),
                reason: "a sharded (ZeRO-1) run is not supported; its perturbation needs the \
                         whole model's gradient norm in one process"
                    .into(),
            });
        }
        let base = build_from_spec(&base_spec, layout, groups, options)?;
        Ok(Self::new(base, rho, adaptive))
    }

    /// The perturbation's scale ρ / (‖a‖ + 1e-12), in float32 as the reference computes it.
    fn scale(&self, params: &mut dyn ParamAccess<T>) -> Result<f64> {
        let mut sum_sq = 0.0f32;
        for (i, g) in self.grads.iter().enumerate() {
            let mut sq = 0.0f64;
            if self.adaptive {
                params.read(i, &mut |p: &[T]| {
                    sq = p
                        .iter()
                        .zip(g)
                        .map(|(w, g)| {
                            let a = (w.abs() * *g).to_f64();
                            a * a
                        })
                        .sum();
                })?;
            } else {
                sq = g.iter().map(|g| g.to_f64() * g.to_f64()).sum();
            }
            let norm = sq.sqrt() as f32;
            sum_sq += norm * norm;
        }
        let norm = sum_sq.sqrt() + 1e-12f32;
        Ok(((1.0f32 / norm) * self.rho as f32) as f64)
    }

    /// The first non-finite element of the first gradient, as the error the policy asks for.
    fn first_non_finite(&self) -> Option<Error> {
        let (seg, index, value) = super::first_non_finite(&self.grads)?;
        Some(Error::NonFiniteGradient {
            step: self.base.steps() + 1,
            tensor: self.base.layout().segments()[seg].name.clone(),
            index,
            value,
            partly_updated: false,
        })
    }

    /// `w ← w + e`, keeping `w` in `origin`.
    fn perturb(&mut self, params: &mut dyn ParamAccess<T>, scale: f64) -> Result<()> {
        let scale = T::from_f64(scale);
        let adaptive = self.adaptive;
        let Sam {
            base,
            grads,
            origin,
            ..
        } = self;
        for (i, seg) in base.layout().segments().iter().enumerate() {
            let kept = &mut origin[seg.offset..seg.offset + seg.len];
            let g = &grads[i];
            params.update(i, &mut |p: &mut [T]| {
                kept.copy_from_slice(p);
                for (w, g) in p.iter_mut().zip(g) {
                    let direction = if adaptive { *w * *w * *g } else { *g };
                    *w = *w + direction * scale;
                }
            })?;
        }
        Ok(())
    }

    /// `w ← origin`, exactly.
    fn restore(&mut self, params: &mut dyn ParamAccess<T>) -> Result<()> {
        for (i, seg) in self.base.layout().segments().iter().enumerate() {
            let kept = &self.origin[seg.offset..seg.offset + seg.len];
            params.update(i, &mut |p: &mut [T]| p.copy_from_slice(kept))?;
        }
        Ok(())
    }
}

impl<T: Real> Optimizer<T> for Sam<T> {
    fn name(&self) -> &'static str {
        "sam"
    }
    fn spec(&self) -> Spec {
        Spec::new("sam")
            .with_positional(self.base.spec())
            .with("rho", self.rho)
            .with("adaptive", self.adaptive)
    }
    fn group_specs(&self) -> Vec<Spec> {
        self.base.group_specs()
    }
    fn layout(&self) -> &Layout {
        self.base.layout()
    }
    fn options(&self) -> &Options {
        self.base.options()
    }
    fn steps(&self) -> u64 {
        self.base.steps()
    }
    fn hypers(&self) -> &[Hyper] {
        self.base.hypers()
    }
    fn hypers_mut(&mut self) -> &mut [Hyper] {
        self.base.hypers_mut()
    }

    fn step_with(&mut self, _: &[&[T]], _: &mut dyn ParamAccess<T>) -> Result<StepOutcome> {
        Err(Error::Unsupported {
            what: "sam".into(),
            reason: "it takes two gradients per step (at w and at w + e): step it with \
                     step_with_closure"
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
        let loss = closure(params, &mut self.grads)?;
        if let Some(error) = self.first_non_finite() {
            return match self.base.options().nonfinite {
                NonFinitePolicy::Error => Err(error),
                NonFinitePolicy::Skip => Ok(ClosureOutcome {
                    loss,
                    evaluations: 1,
                    step: StepOutcome::SKIPPED,
                }),
            };
        }
        let scale = self.scale(params)?;
        self.perturb(params, scale)?;
        let second = closure(params, &mut self.grads);
        self.restore(params)?;
        second?;
        let views: Vec<&[T]> = self.grads.iter().map(Vec::as_slice).collect();
        let step = self.base.step_with(&views, params)?;
        Ok(ClosureOutcome {
            loss,
            evaluations: 2,
            step,
        })
    }

    fn has_eval_point(&self) -> bool {
        self.base.has_eval_point()
    }
    fn eval_mode(&mut self, params: &mut dyn ParamAccess<T>) -> Result<()> {
        self.base.eval_mode(params)
    }
    fn train_mode(&mut self, params: &mut dyn ParamAccess<T>) -> Result<()> {
        self.base.train_mode(params)
    }

    /// The base's update plus the perturbation: the gradient read twice (norm and `e`), the
    /// parameters saved, moved and restored.
    fn bytes_per_param(&self) -> f64 {
        self.base.bytes_per_param() + 7.0 * std::mem::size_of::<T>() as f64
    }

    fn state_bytes(&self) -> usize {
        self.base.state_bytes()
    }

    fn estimates(&self) -> Vec<(&'static str, f64)> {
        self.base.estimates()
    }

    fn scalar_state(&self) -> Vec<(String, Vec<(&'static str, f64)>)> {
        self.base.scalar_state()
    }

    fn state_dict(&self) -> StateDict<T> {
        let mut state = self.base.state_dict();
        state.meta.optimizer = format!("sam({})", state.meta.optimizer);
        state
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        let expected = format!("sam({})", self.base.name());
        let base_name = super::state::inner_name(&state.meta.optimizer, "sam", &expected)?;
        let mut base = state.clone();
        base.meta.optimizer = base_name.to_string();
        self.base.load_state_dict(&base)
    }
}

impl<T: Real> std::fmt::Debug for Sam<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Optimizer::spec(self))
    }
}
