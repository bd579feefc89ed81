//! What the optimizers that run off the engine share (Muon, Adafactor, Prodigy: their steps
//! need whole tensors or optimizer-wide sums before any element moves): the gradient checks
//! before a step, gradient clipping and sums over chunks in a fixed order.

use super::plan::CHUNK;
use super::rule::Grad;
use super::{Layout, NonFinitePolicy, Options, StepOutcome};
use crate::{Error, Real, Result};

/// The gradients of a step, checked: their global norm and the clipping to apply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked<T> {
    /// Global L2 norm before clipping.
    pub norm: f64,
    /// The norm-clipping factor (1 without `clip_norm`).
    pub coef: f64,
    scale: T,
    bound: T,
}

impl<T: Real> Checked<T> {
    /// The clipping of a step whose gradient norm is `norm`, scaled by `coef`.
    pub fn new(options: &Options, norm: f64, coef: f64) -> Self {
        Checked {
            norm,
            coef,
            scale: T::from_f64(coef),
            bound: super::clip::value_clip_bound(options),
        }
    }

    /// The clipping when no norm clipping applies (element clipping only), so that a
    /// gradient can be read before its norm is known.
    pub fn unclipped(options: &Options) -> Self {
        Self::new(options, f64::NAN, 1.0)
    }

    /// One tensor's gradient with this step's clipping (see [`Grad`]); `raw` must be exactly
    /// as long as the parameter chunk it goes with.
    pub fn grad<'a>(&self, raw: &'a [T]) -> Grad<'a, T> {
        Grad::new(raw, self.scale, self.bound)
    }

    /// What the step reports.
    pub fn outcome(&self) -> StepOutcome {
        StepOutcome {
            skipped: false,
            grad_norm: self.norm,
            clip_coef: self.coef,
        }
    }
}

/// Checks that there is one gradient per parameter tensor, each as long as its tensor (`name`
/// is the optimizer's, for messages).
pub(crate) fn check_shapes<T>(
    name: &str,
    layout: &Layout,
    grads: &[&[T]],
    params: usize,
) -> Result<()> {
    let n = layout.segments().len();
    for (got, unit) in [
        (grads.len(), "gradient tensors"),
        (params, "parameter tensors"),
    ] {
        if got != n {
            return Err(Error::Length {
                what: name.to_string(),
                got,
                unit,
                expected: n,
            });
        }
    }
    for (g, s) in grads.iter().zip(layout.segments()) {
        if g.len() != s.len {
            return Err(Error::Length {
                what: format!("{name}: gradient of '{}'", s.name),
                got: g.len(),
                unit: "elements",
                expected: s.len,
            });
        }
    }
    Ok(())
}

/// Σg² over every tensor, on the thread pool, in a fixed order (so the same for any thread
/// count); not finite when some gradient is not. `partials` is scratch of at least
/// [`chunk_count`] entries for the longest tensor.
pub(crate) fn squared_norm<T: Real>(grads: &[&[T]], partials: &mut [[f64; 1]]) -> f64 {
    grads
        .iter()
        .map(|g| {
            sum_chunks(g.len(), partials, |range| {
                let g = &g[range];
                super::simd::wide_call(
                    #[inline(always)]
                    || {
                        super::rule::paired_lane_sums(g.len(), |i| {
                            // SAFETY: lane_sums calls with i < g.len().
                            let x = unsafe { *g.get_unchecked(i) }.to_f64();
                            [x * x]
                        })
                    },
                )
            })[0]
        })
        .sum()
}

/// The gradients' check from their Σg² (`squared` as [`squared_norm`] sums it; this rank's
/// when the options are sharded, and then combined with the other ranks'): the clipping to
/// apply, or `None` when a non-finite gradient is skipped by the `skip` policy (`step` is
/// the step attempted, 1-based, for the error of the `error` policy).
pub(crate) fn verdict<T: Real>(
    layout: &Layout,
    options: &Options,
    step: u64,
    grads: &[&[T]],
    squared: f64,
) -> Result<Option<Checked<T>>> {
    // A non-finite sum means a non-finite gradient, or squares too large for f64: only the
    // first is an error. Sharded, the sum and the first bad value are the whole model's.
    let bad = match squared.is_finite() {
        true => None,
        false => super::first_non_finite(grads),
    };
    let (squared, bad) =
        crate::dist::combine_check(layout, options.distributed.as_ref(), squared, bad);
    if let Some((tensor, index, value)) = bad {
        return match options.nonfinite {
            NonFinitePolicy::Error => Err(Error::NonFiniteGradient {
                step,
                tensor,
                index,
                value,
                partly_updated: false,
            }),
            NonFinitePolicy::Skip => Ok(None),
        };
    }
    let norm = squared.sqrt();
    let coef = super::clip::norm_clip_factor(options, norm);
    Ok(Some(Checked::new(options, norm, coef)))
}

/// Checks a step's gradients (shapes, then values and norm in one threaded pass): see
/// [`verdict`].
pub(crate) fn check_gradients<T: Real>(
    name: &str,
    layout: &Layout,
    options: &Options,
    step: u64,
    grads: &[&[T]],
    params: usize,
    partials: &mut [[f64; 1]],
) -> Result<Option<Checked<T>>> {
    check_shapes(name, layout, grads, params)?;
    let squared = squared_norm(grads, partials);
    verdict(layout, options, step, grads, squared)
}

/// Number of chunks [`sum_chunks`] cuts `n` elements into.
pub(crate) fn chunk_count(n: usize) -> usize {
    n.div_ceil(CHUNK)
}

/// Runs `f` on every chunk range of `0..n` (of [`CHUNK`] elements; on the thread pool) and
/// sums its results in chunk order, so that the sum does not depend on the thread count.
/// `partials` holds at least [`chunk_count`]`(n)` entries (it is scratch, kept by the caller
/// so that steps do not allocate).
pub(crate) fn sum_chunks<const K: usize>(
    n: usize,
    partials: &mut [[f64; K]],
    f: impl Fn(std::ops::Range<usize>) -> [f64; K] + Sync,
) -> [f64; K] {
    let count = chunk_count(n);
    let partials = &mut partials[..count];
    crate::pool::for_each_chunk(partials, 1, |i, out| {
        let start = i * CHUNK;
        out[0] = f(start..(start + CHUNK).min(n));
    });
    let mut total = [0.0; K];
    for p in partials.iter() {
        for k in 0..K {
            total[k] += p[k];
        }
    }
    total
}
