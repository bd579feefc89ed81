//! Optimizer state stored in bfloat16 (`state_dtype=bf16`): the element buffers take 2 bytes
//! instead of 4 (or 8), so Adam moves 20 instead of 28 bytes per f32 parameter and holds half
//! the state memory.
//!
//! The rules that allow it run their update loop over [`Bf16Slot`]s, which convert on load
//! and store (in registers), instead of over `f32` slices. Stores round *stochastically*
//! (Gupta et al. 2015; the bf16 trick of adding 16 random bits before truncating): with
//! round-to-nearest, Adam's `v ← 0.999 v + 0.001 g²` changes v by less than half a bf16 step
//! (2⁻⁹) whenever g² < 3v, so v would freeze. Stochastic rounding is unbiased, and its
//! rounding bits are a function of (element, step, buffer), so results do not depend on the
//! thread count or the rank count.

use crate::Real;

/// bfloat16 bits of `x` rounded to nearest even (NaN stays NaN).
#[inline(always)]
pub fn to_bf16_nearest(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 value of bfloat16 bits (exact).
#[inline(always)]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// The rounding bits of element `index` of buffer `slot` at step `step` are the high half
/// of `index·α + step·β + slot·γ (mod 2³²)`, with (β, α) the constants of Roberts' R2
/// sequence (0.7548776662, 0.5698402910; the most evenly spread additive recurrence in two
/// dimensions) and γ the golden ratio's. For one element over the steps, and for one step
/// over the elements, the bits are equidistributed, which makes the rounding unbiased on
/// average; and `index·α` vectorises as one addition per element.
pub(crate) const ALPHA: u32 = 0x91E1_0DA5;
const BETA: u32 = 0xC13F_A9A9;
const GAMMA: u32 = 0x9E37_79B9;

/// One chunk of a bfloat16 element buffer as a kernel reads and writes it: values come out as
/// `T` and go in rounded stochastically.
pub struct Bf16Slot<'a> {
    bits: &'a mut [u16],
    base: u32,
}

impl<'a> Bf16Slot<'a> {
    /// The chunk `bits`, whose first element has flat index `first`, of buffer `slot` at step
    /// `step`.
    pub fn new(bits: &'a mut [u16], first: u64, step: u64, slot: u32) -> Self {
        let base = (first as u32)
            .wrapping_mul(ALPHA)
            .wrapping_add((step as u32).wrapping_mul(BETA))
            .wrapping_add(slot.wrapping_mul(GAMMA));
        Bf16Slot { bits, base }
    }

    /// The bits and the rounding base (element `i` is rounded with the high half of
    /// `base + i·α`), for hand-vectorised loops.
    pub(crate) fn parts(&mut self) -> (&mut [u16], u32) {
        (self.bits, self.base)
    }

    /// The chunk from element `start` on.
    pub(crate) fn from(bits: &'a mut [u16], base: u32, start: usize) -> Self {
        Bf16Slot {
            bits: &mut bits[start..],
            base: base.wrapping_add((start as u32).wrapping_mul(ALPHA)),
        }
    }

    /// Requests the cache line of element `i` (see [`super::prefetch::line`]).
    #[inline(always)]
    pub(crate) fn prefetch(&self, i: usize) {
        super::prefetch::line(self.bits.as_ptr(), i);
    }

    /// Number of elements.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    /// Whether the chunk is empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    /// Element `i` (panics at or past [`Bf16Slot::len`]).
    #[inline(always)]
    pub fn get<T: Real>(&self, i: usize) -> T {
        T::from_f32(from_bf16(self.bits[i]))
    }

    /// Stores `x` as element `i`, rounded stochastically.
    #[inline(always)]
    pub fn set<T: Real>(&mut self, i: usize, x: T) {
        self.bits[i] = self.rounded(i, x);
    }

    /// Element `i` without a bounds check.
    ///
    /// # Safety
    /// `i` is below [`Bf16Slot::len`].
    #[inline(always)]
    pub unsafe fn get_unchecked<T: Real>(&self, i: usize) -> T {
        // SAFETY: the caller keeps `i` below the length.
        T::from_f32(from_bf16(unsafe { *self.bits.get_unchecked(i) }))
    }

    /// Stores `x` as element `i` without a bounds check.
    ///
    /// # Safety
    /// `i` is below [`Bf16Slot::len`].
    #[inline(always)]
    pub unsafe fn set_unchecked<T: Real>(&mut self, i: usize, x: T) {
        let bits = self.rounded(i, x);
        // SAFETY: the caller keeps `i` below the length.
        unsafe { *self.bits.get_unchecked_mut(i) = bits }
    }

    /// `x` rounded stochastically with element `i`'s bits.
    #[inline(always)]
    fn rounded<T: Real>(&self, i: usize, x: T) -> u16 {
        let random = self.base.wrapping_add((i as u32).wrapping_mul(ALPHA)) >> 16;
        to_bf16_stochastic(x.to_f32(), random)
    }
}

/// bfloat16 bits of `x` rounded stochastically: up with probability equal to the fraction of
/// a bf16 step that truncation would drop. Infinities are kept (their low half is zero, so the
/// random bits carry nowhere) and NaN stays NaN (truncated, quiet bit set).
#[inline(always)]
fn to_bf16_stochastic(x: f32, random: u32) -> u16 {
    let bits = x.to_bits();
    let bits = if x.is_nan() {
        bits | 0x0040_0000
    } else {
        bits.wrapping_add(random)
    };
    (bits >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_nearest_and_back() {
        assert_eq!(from_bf16(to_bf16_nearest(f32::INFINITY)), f32::INFINITY);
        for x in [0.0f32, -0.0, 1.0, -2.5, 3.140625, 1e-30, 6e37] {
            let y = from_bf16(to_bf16_nearest(x));
            assert!((y - x).abs() <= x.abs() / 256.0, "{x} -> {y}");
        }
        assert!(from_bf16(to_bf16_nearest(f32::NAN)).is_nan());
        // Ties go to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
        assert_eq!(from_bf16(to_bf16_nearest(1.0 + 1.0 / 256.0)), 1.0);
    }

    /// Stores `src` through a [`Bf16Slot`] at step `step` of buffer `slot`.
    fn store(src: &[f32], step: u64, slot: u32) -> Vec<u16> {
        let mut bits = vec![0u16; src.len()];
        let mut buf = Bf16Slot::new(&mut bits, 0, step, slot);
        for (i, &x) in src.iter().enumerate() {
            buf.set(i, x);
        }
        bits
    }

    #[test]
    fn stochastic_rounding_is_unbiased_and_keeps_specials() {
        // 1 + 0.3 bf16 steps: rounds up about 30% of the time; the mean stays at x.
        let step = 1.0f32 / 128.0;
        let x = 1.0 + 0.3 * step;
        let src = vec![x; 100_000];
        let dst = store(&src, 7, 1);
        let mean: f64 = dst.iter().map(|&b| from_bf16(b) as f64).sum::<f64>() / src.len() as f64;
        assert!(
            (mean - x as f64).abs() < 0.02 * step as f64,
            "{mean} vs {x}"
        );
        let ups = dst.iter().filter(|&&b| from_bf16(b) > 1.0).count() as f64 / src.len() as f64;
        assert!((ups - 0.3).abs() < 0.01, "{ups}");
        let out = store(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN], 0, 0);
        assert_eq!(from_bf16(out[0]), f32::INFINITY);
        assert_eq!(from_bf16(out[1]), f32::NEG_INFINITY);
        assert!(from_bf16(out[2]).is_nan());
        // The same element, step and buffer always draw the same bits.
        assert_eq!(dst, store(&src, 7, 1));
        // Over the steps, one element is rounded up the right share of the time too.
        let mut bits = [0u16; 1];
        let ups = (0..10_000u64)
            .filter(|&t| {
                Bf16Slot::new(&mut bits, 12_345, t, 0).set(0, x);
                from_bf16(bits[0]) > 1.0
            })
            .count();
        assert!((ups as f64 / 10_000.0 - 0.3).abs() < 0.01, "{ups}");
    }
}
