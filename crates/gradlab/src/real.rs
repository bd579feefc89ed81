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

impl_real!(f32, "f32", F32);
impl_real!(f64, "f64", F64);
