//! The floating-point element types optimizers run on (`f32`, `f64`).

use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// A floating-point element type for parameters, gradients and optimizer state.
///
/// Hyperparameters and per-step scalars are computed in `f64` and converted with
/// [`Real::from_f64`] where they meet the elements, as PyTorch does.
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Debug
    + Display
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// The type's name, as in `f32`.
    const NAME: &'static str;
    /// The machine epsilon (`torch.finfo(dtype).eps`).
    const EPSILON: Self;
    /// Converts (rounding to nearest) from `f32`.
    fn from_f32(x: f32) -> Self;
    /// Converts (rounding to nearest) to `f32`.
    fn to_f32(self) -> f32;
    /// Converts (rounding to nearest) from `f64`.
    fn from_f64(x: f64) -> Self;
    /// Converts exactly to `f64`.
    fn to_f64(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
    /// `self * a + b` with one rounding (the processor's FMA where the kernel is compiled for
    /// it, a correctly rounded library call otherwise: the same result either way).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// The larger value (NaN-ignoring as `f32::max`).
    fn max(self, other: Self) -> Self;
    /// The smaller value.
    fn min(self, other: Self) -> Self;
    /// Sign with `sign(0) = 0` (as `torch.sign`).
    fn sign(self) -> Self;
    /// Whether the value is neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// The safetensors element type.
    fn safetensors_dtype() -> safetensors::Dtype;
    /// Appends the little-endian bytes of `values` to `out`.
    fn extend_le_bytes(values: &[Self], out: &mut Vec<u8>);
    /// Reads little-endian values.
    fn from_le_bytes(bytes: &[u8]) -> Vec<Self>;
}

macro_rules! impl_real {
    ($t:ty, $name:literal, $dtype:ident) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NAME: &'static str = $name;
            const EPSILON: Self = <$t>::EPSILON;
            #[inline(always)]
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            #[inline(always)]
            fn sign(self) -> Self {
                if self > 0.0 {
                    1.0
                } else if self < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn safetensors_dtype() -> safetensors::Dtype {
                safetensors::Dtype::$dtype
            }
            fn extend_le_bytes(values: &[Self], out: &mut Vec<u8>) {
                out.reserve(values.len() * std::mem::size_of::<$t>());
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            fn from_le_bytes(bytes: &[u8]) -> Vec<Self> {
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                    .collect()
            }
        }
    };
}

/// A divisor fixed for a whole loop (a bias correction, say), dividing without the processor's
/// divide instruction: `q = x·y` with `y = 1/c` rounded, the remainder `r = x − q·c` exact by
/// an FMA, and `q + r·y` in one more FMA is the correctly rounded `x / c` (Markstein 1990:
/// with `y` the rounded reciprocal and `q` within an ulp of the quotient, the corrected
/// quotient is the rounded one). So results are bit for bit those of `x / c`, at the cost of
/// three multiply-adds instead of a division that blocks the divider for about ten cycles.
///
/// Valid for `0 < c ≤ 1` and `x` from 0 up to `√MAX` (square roots of finite numbers) or `+∞`:
/// the remainder then neither overflows nor underflows. Checked against the division for
/// every such f32 `x` at 35 divisors (`every_f32_quotient_is_the_division`, run with
/// `--ignored`: about 4 minutes) and on random f32 and f64 samples in the tests.
#[derive(Debug, Clone, Copy)]
pub struct Divisor<T> {
    c: T,
    reciprocal: T,
}

impl<T: Real> Divisor<T> {
    /// Division by `c` (in `(0, 1]`).
    #[inline(always)]
    pub fn new(c: T) -> Self {
        Divisor {
            c,
            reciprocal: T::ONE / c,
        }
    }

    /// `x / c`, correctly rounded (see the type's validity range).
    #[inline(always)]
    pub fn divide(&self, x: T) -> T {
        let q = x * self.reciprocal;
        let r = (-q).mul_add(self.c, x);
        let corrected = r.mul_add(self.reciprocal, q);
        // x = +∞: q is +∞ and the remainder NaN.
        if r.is_finite() {
            corrected
        } else {
            q
        }
    }
}

impl_real!(f32, "f32", F32);
impl_real!(f64, "f64", F64);

#[cfg(test)]
mod tests {
    use super::*;

    /// Divisors in `(0, 1]`: round ones, ones whose significands are all ones, and Adam's
    /// bias corrections `√(1 − β₂ᵗ)` for several β₂ and steps.
    fn divisors() -> Vec<f64> {
        let mut cs = vec![1.0, 0.5, 0.7, 1e-8, 3.3e-5, 1.0 - 1e-7, 0.5 + 1e-7];
        for b2 in [0.9, 0.98, 0.999, 0.99999] {
            for t in [1, 2, 3, 10, 100, 1000, 5000] {
                cs.push((1.0 - f64::powi(b2, t)).sqrt());
            }
        }
        cs
    }

    /// A reproducible stream of bit patterns.
    fn bits(seed: u64) -> impl Iterator<Item = u64> {
        let mut s = seed | 1;
        std::iter::repeat_with(move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        })
    }

    #[test]
    fn quotients_are_the_division_f32() {
        let (lo, hi) = (1.4e-45f32.sqrt().to_bits(), f32::MAX.sqrt().to_bits());
        for c in divisors() {
            let c = c as f32;
            let d = Divisor::new(c);
            for b in bits(c.to_bits() as u64).take(200_000) {
                let x = f32::from_bits(lo + (b % (hi - lo) as u64) as u32);
                assert_eq!(d.divide(x).to_bits(), (x / c).to_bits(), "{x:e} / {c:e}");
            }
            for x in [0.0, f32::MAX.sqrt(), f32::INFINITY] {
                assert_eq!(d.divide(x).to_bits(), (x / c).to_bits(), "{x:e} / {c:e}");
            }
            assert!(d.divide(f32::NAN).is_nan());
        }
    }

    #[test]
    fn quotients_are_the_division_f64() {
        let (lo, hi) = (4.9e-324f64.sqrt().to_bits(), f64::MAX.sqrt().to_bits());
        for c in divisors() {
            let d = Divisor::new(c);
            for b in bits(c.to_bits()).take(200_000) {
                let x = f64::from_bits(lo + b % (hi - lo));
                assert_eq!(d.divide(x).to_bits(), (x / c).to_bits(), "{x:e} / {c:e}");
            }
            assert_eq!(d.divide(f64::INFINITY), f64::INFINITY);
        }
    }

    /// Every f32 from the square root of the smallest subnormal to `√MAX` (about 1.1e9
    /// numbers per divisor; minutes in release mode).
    #[test]
    #[ignore]
    fn every_f32_quotient_is_the_division() {
        let (lo, hi) = (1.4e-45f32.sqrt().to_bits(), f32::MAX.sqrt().to_bits());
        for c in divisors() {
            let c = c as f32;
            let d = Divisor::new(c);
            let bad = (lo..=hi)
                .filter(|&b| {
                    let x = f32::from_bits(b);
                    d.divide(x).to_bits() != (x / c).to_bits()
                })
                .count();
            assert_eq!(bad, 0, "{c:e}");
        }
    }
}
