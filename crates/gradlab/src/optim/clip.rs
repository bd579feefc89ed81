//! Gradient clipping, PyTorch's `clip_grad_norm_` and `clip_grad_value_`: the factor
//! `min(1, max_norm / (‖g‖ + 1e-6))` of norm clipping, and the bound of value clipping,
//! applied on the fly as a kernel reads each gradient element ([`Grad`]), so the caller's
//! gradient is never copied.

use super::Options;
use crate::Real;

/// The factor by which norm clipping scales every gradient: `min(1, max_norm / (norm +
/// 1e-6))` (1 without `clip_norm`).
pub(crate) fn norm_clip_factor(options: &Options, norm: f64) -> f64 {
    match options.clip_norm {
        Some(max_norm) => (max_norm / (norm + 1e-6)).min(1.0),
        None => 1.0,
    }
}

/// The bound of value clipping in the elements' type (infinite without `clip_value`).
pub(crate) fn value_clip_bound<T: Real>(options: &Options) -> T {
    T::from_f64(options.clip_value.unwrap_or(f64::INFINITY))
}

/// The gradient as the kernel sees it: already scaled by global-norm clipping and clamped by
/// value clipping, both applied on the fly so the caller's gradient is never copied.
///
/// The engine builds it with exactly as many elements as the parameter chunk it goes with,
/// so kernels index it without bounds checks (which would stop vectorisation).
#[derive(Clone, Copy)]
pub struct Grad<'a, T> {
    raw: &'a [T],
    scale: T,
    bound: T,
}

impl<'a, T: Real> Grad<'a, T> {
    /// A gradient chunk with its clipping factors (the engine's invariant: `raw` is exactly as
    /// long as the parameter chunk).
    pub(crate) fn new(raw: &'a [T], scale: T, bound: T) -> Self {
        Grad { raw, scale, bound }
    }

    /// Elements `start..start + len` of the chunk, with the same clipping.
    pub(crate) fn offset(&self, start: usize, len: usize) -> Self {
        Grad {
            raw: &self.raw[start..start + len],
            ..*self
        }
    }

    /// The raw gradient chunk (apply [`Grad::process`] to each element).
    #[inline(always)]
    pub fn raw(&self) -> &'a [T] {
        self.raw
    }

    /// Clipping applied to one raw element (plain comparisons: cheaper than NaN-aware
    /// `max`/`min`, and the gradients are known to be finite by now).
    #[inline(always)]
    pub fn process(&self, x: T) -> T {
        let y = x * self.scale;
        let y = if y > self.bound { self.bound } else { y };
        if y < -self.bound {
            -self.bound
        } else {
            y
        }
    }

    /// Whether processing leaves every element as it is (no scaling, no bound): `x · 1` is
    /// `x` and no element compares above +∞ or below −∞, so [`Grad::raw_at`] may stand for
    /// [`Grad::at`].
    #[inline(always)]
    pub fn is_unclipped(&self) -> bool {
        self.scale == T::ONE && self.bound == T::from_f64(f64::INFINITY)
    }

    /// The raw gradient element `i` (`i` below the chunk length).
    #[inline(always)]
    pub fn raw_at(&self, i: usize) -> T {
        debug_assert!(i < self.raw.len());
        // SAFETY: kernels index below the parameter chunk's length, which equals raw's.
        unsafe { *self.raw.get_unchecked(i) }
    }

    /// The processed gradient element `i` (`i` below the chunk length).
    #[inline(always)]
    pub fn at(&self, i: usize) -> T {
        debug_assert!(i < self.raw.len());
        // SAFETY: kernels index below the parameter chunk's length, which equals raw's.
        self.process(unsafe { *self.raw.get_unchecked(i) })
    }
}
