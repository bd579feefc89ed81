//! A step of the engine: checks, the gradient check and clipping factors, and the rule's
//! passes over the tensors, held all at once or lent one at a time.

use super::Engine;
use crate::optim::clip::{norm_clip_factor, value_clip_bound};
use crate::optim::rule::Rule;
use crate::optim::state::state_error;
use crate::optim::{NonFinitePolicy, Optimizer, ParamAccess, StepOutcome};
use crate::{Error, Real, Result};

impl<T: Real, R: Rule> Engine<T, R> {
    /// One step: the arguments and the optimizer's state checked, the gradients checked (in a
    /// pass of their own, or inside the update when nothing must be known before it), the
    /// clipping factors, then the rule's sweep over every tensor at once (held) or tensor by
    /// tensor (lent), and the per-tensor scalars advanced.
    pub(super) fn step(
        &mut self,
        grads: &[&[T]],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        self.check_grads(grads)?;
        crate::optim::check_param_count(self.name(), &self.layout, params)?;
        // Without some gradients, the tensors go one at a time (the absent ones skipped).
        let some_absent = self.absent.iter().any(|&a| a);
        let held = !some_absent && params.pointers(&mut self.param_ptrs);
        if held {
            for seg in 0..self.param_ptrs.len() {
                self.check_param_len(seg, self.param_ptrs[seg].1)?;
            }
        }
        if some_absent {
            if self.sync.is_some() {
                let seg = self.absent.iter().position(|&a| a).unwrap_or(0);
                return Err(crate::optim::refuse_absent(self.name(), &self.layout, seg));
            }
            self.squares.fill(0.0);
        } else if self.sync.is_some() && !held {
            return Err(Error::Unsupported {
                what: self.name().to_string(),
                reason: "a sharded optimizer needs every parameter as a slice".into(),
            });
        }
        if let Some(reason) = &self.failed {
            return Err(state_error(None, reason.clone()));
        }
        self.hypers.check(self.name())?;
        if self.eval {
            return Err(Error::Unsupported {
                what: self.name().to_string(),
                reason: "the parameters hold the evaluation point (eval_mode); call train_mode \
                         before the next step"
                    .into(),
            });
        }
        // One pass over the gradients when nothing must be known before the update: they
        // are checked chunk by chunk while they are in the cache (see `pass`), tensor by
        // tensor when they are lent one at a time.
        let fused = self.sync.is_none()
            && self.options.clip_norm.is_none()
            && self.options.nonfinite == NonFinitePolicy::Error;
        let (sumsq, bad) = if fused {
            (0.0, None)
        } else {
            self.gradient_pass(grads)
        };
        let dist = self.sync.as_ref().map(|s| &s.dist);
        let (sumsq, bad) = crate::dist::combine_check(&self.layout, dist, sumsq, bad);
        if let Some((tensor, index, value)) = bad {
            return match self.options.nonfinite {
                NonFinitePolicy::Error => Err(Error::NonFiniteGradient {
                    step: self.step + 1,
                    tensor,
                    index,
                    value,
                    partly_updated: false,
                }),
                NonFinitePolicy::Skip => Ok(StepOutcome::SKIPPED),
            };
        }
        let mut grad_norm = sumsq.sqrt();
        let clip_coef = norm_clip_factor(&self.options, grad_norm);
        let scale = T::from_f64(clip_coef);
        let bound = value_clip_bound::<T>(&self.options);
        for (seg, &g) in self.seg_group.iter().enumerate() {
            if !self.absent[seg] {
                let (cfg, h) = (&self.configs[g], self.hypers.group(g));
                self.coefs[seg] = R::begin(cfg, h, &mut self.scalars[seg]);
            }
        }
        if held {
            // Every tensor at hand: each pass over all chunks at once.
            if R::PRE_PASS {
                if self.sweep::<true>(None, grads, scale, bound, fused) {
                    return Err(self.stop_on_non_finite(grads));
                }
                self.combine_sums();
                self.mid(None);
            }
            if self.sweep::<false>(None, grads, scale, bound, fused && !R::PRE_PASS) {
                return Err(self.stop_on_non_finite(grads));
            }
            if R::KERNEL_SUMS {
                self.combine_sums();
            }
        } else {
            // Tensors lent one at a time (e.g. by candle's in-place ops).
            for seg in 0..self.layout.segments().len() {
                if self.absent[seg] {
                    continue;
                }
                if R::PRE_PASS {
                    let mut outcome = Ok(false);
                    params.read(seg, &mut |p: &[T]| {
                        outcome = self.check_param_len(seg, p.len()).map(|()| {
                            self.param_ptrs[seg] = (p.as_ptr() as usize, p.len());
                            self.sweep::<true>(Some(seg), grads, scale, bound, fused)
                        });
                    })?;
                    if outcome? {
                        return Err(self.stop_on_non_finite(grads));
                    }
                    self.mid(Some(seg));
                }
                let mut outcome = Ok(false);
                params.update(seg, &mut |p: &mut [T]| {
                    outcome = self.check_param_len(seg, p.len()).map(|()| {
                        self.param_ptrs[seg] = (p.as_mut_ptr() as usize, p.len());
                        let check = fused && !R::PRE_PASS;
                        self.sweep::<false>(Some(seg), grads, scale, bound, check)
                    });
                })?;
                if outcome? {
                    return Err(self.stop_on_non_finite(grads));
                }
            }
        }
        if fused {
            grad_norm = self.squares.iter().sum::<f64>().sqrt();
        }
        for (seg, &g) in self.seg_group.iter().enumerate() {
            if self.absent[seg] {
                continue;
            }
            R::end(
                &self.configs[g],
                &mut self.scalars[seg],
                &self.coefs[seg],
                self.seg_sums[seg],
            );
        }
        self.step += 1;
        Ok(StepOutcome {
            skipped: false,
            grad_norm,
            clip_coef,
        })
    }

    /// One pass of the rule's pre-kernel (`PRE`) or update kernel over every tensor
    /// (`only == None`) or one, checking the gradients on the way when `check`; true when a
    /// non-finite gradient stopped it.
    fn sweep<const PRE: bool>(
        &mut self,
        only: Option<usize>,
        grads: &[&[T]],
        scale: T,
        bound: T,
        check: bool,
    ) -> bool {
        if check {
            self.pass::<PRE, true>(only, grads, scale, bound)
        } else {
            self.pass::<PRE, false>(only, grads, scale, bound)
        }
    }

    /// The rule's `mid` after a pre-pass, for every tensor or one.
    fn mid(&mut self, only: Option<usize>) {
        let segments = match only {
            None => 0..self.seg_group.len(),
            Some(seg) => seg..seg + 1,
        };
        for seg in segments {
            let g = self.seg_group[seg];
            R::mid(&self.configs[g], &mut self.coefs[seg], self.seg_sums[seg]);
        }
    }
}
