//! Steps that take more than one gradient (SAM, L-BFGS: PyTorch's `optimizer.step(closure)`)
//! and the evaluation point of schedule-free optimizers, on candle variables.

use super::*;

/// Copies the gradients of `vars` from `store` into `out` (layout order).
pub(super) fn copy_grads<T: Copy + 'static>(
    names: &[String],
    vars: &[Var],
    store: &GradStore,
    extract: impl Fn(&CpuStorage) -> Option<&[T]>,
    out: &mut [Vec<T>],
) -> Result<()> {
    let mut views = Vec::with_capacity(vars.len());
    grad_slices(names, vars, store, extract, &mut views, None)?;
    for (o, g) in out.iter_mut().zip(&views) {
        o.copy_from_slice(g);
    }
    views.clear();
    Ok(())
}

/// One closure step of `opt` over `vars`; `grads_at` computes the loss and gradients at the
/// variables' current values. Errors of the closure come back as they were raised.
pub(super) fn closure_step<T: gradlab::Real>(
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
            gradlab::Error::Callback(message.into())
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
            Inner::Master(m) => m.engine.needs_closure(),
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
        let outcome = match inner {
            Inner::F32(o) => closure_step(o.as_mut(), names, vars, f32_values, grads_at)?,
            Inner::F64(o) => closure_step(o.as_mut(), names, vars, f64_values, grads_at)?,
            Inner::Master(_) => {
                return Err(Error::unsupported(
                    "optimizers that take several gradients per step (SAM, L-BFGS) need f32 \
                         or f64 parameters",
                ))
            }
            Inner::Sharded(_) => {
                return Err(Error::unsupported(
                    "a sharded optimizer takes one gradient per step; closures are not \
                         supported",
                ))
            }
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
            Inner::Master(m) => m.engine.has_eval_point(),
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
            Inner::Master(m) => m.with_params(vars, |e, p| e.eval_mode(p))?,
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
            Inner::Master(m) => m.with_params(vars, |e, p| e.train_mode(p))?,
            Inner::Sharded(s) => refuse_sharded_eval_point(s)?,
        }
        Ok(())
    }
}

/// A sharded optimizer holds pieces of the variables, not the variables: optimizers with an
/// evaluation point are not run sharded (nothing to do for the others).
pub(super) fn refuse_sharded_eval_point(s: &super::sharded::ShardedOptimizer) -> Result<()> {
    if s.engine_ref().has_eval_point() {
        return Err(Error::Unsupported {
            message: format!(
                "{}: its evaluation point cannot be formed from shards; run it in one process",
                s.engine_ref().name()
            ),
        });
    }
    Ok(())
}
