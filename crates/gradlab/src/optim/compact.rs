//! Optimizer state stored in bfloat16 (`state_dtype=bf16`): the element buffers take 2 bytes
//! instead of 4 (or 8), so Adam moves 20 instead of 28 bytes per f32 parameter and holds half
//! the state memory.
//!
//! Kernels stay as they are: the engine decodes a chunk's buffers into a per-thread scratch
//! (in the cache), runs the kernel on it, and encodes the results back. Encoding rounds
//! *stochastically* (Gupta et al. 2015; the bf16 trick of adding 16 random bits before
//! truncating): with round-to-nearest, Adam's `v ← 0.999 v + 0.001 g²` changes v by less than
//! half a bf16 step (2⁻⁹) whenever g² < 3v, so v would freeze. Stochastic rounding is
//! unbiased, and its rounding bits are a function of (element, step, buffer), so results do
//! not depend on the thread count or the rank count.

use crate::Real;
use std::cell::RefCell;

/// Elements decoded at a time: a block of each buffer (8 KiB in f32) stays in the L1 cache
/// between decoding, the update and encoding.
pub const BLOCK: usize = 2048;

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

/// 16 rounding bits for element `index` of buffer `slot` at step `step`: the high half of
/// `index·α + step·β + slot·γ (mod 2³²)`, with (β, α) the constants of Roberts' R2 sequence
/// (0.7548776662, 0.5698402910; the most evenly spread additive recurrence in two
/// dimensions) and γ the golden ratio's. For one element over the steps, and for one step
/// over the elements, the bits are equidistributed, which makes the rounding unbiased on
/// average; and `index·α` vectorises as one addition per element.
#[inline(always)]
fn noise(index: u64, step: u64, slot: u32) -> u32 {
    let r = (index as u32)
        .wrapping_mul(ALPHA)
        .wrapping_add((step as u32).wrapping_mul(BETA))
        .wrapping_add(slot.wrapping_mul(GAMMA));
    r >> 16
}

/// The weights of the rounding sequence: (index, step, slot).
const ALPHA: u32 = 0x91E1_0DA5;
const BETA: u32 = 0xC13F_A9A9;
const GAMMA: u32 = 0x9E37_79B9;

/// One chunk of a bfloat16 element buffer as a kernel reads and writes it directly (no
/// scratch): values come out as `T`, go in with the same stochastic rounding as [`encode`].
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

    /// The same chunk, borrowed for a shorter time (to hand a loop by value).
    pub fn reborrow(&mut self) -> Bf16Slot<'_> {
        Bf16Slot {
            bits: &mut *self.bits,
            base: self.base,
        }
    }

    /// Element `i` (below the chunk's length: checked only in debug builds).
    #[inline(always)]
    pub fn get<T: Real>(&self, i: usize) -> T {
        debug_assert!(i < self.bits.len());
        // SAFETY: kernels index below the chunk's length, which equals the buffer's.
        T::from_f32(from_bf16(unsafe { *self.bits.get_unchecked(i) }))
    }

    /// Stores `x` as element `i`, rounded stochastically.
    #[inline(always)]
    pub fn set<T: Real>(&mut self, i: usize, x: T) {
        debug_assert!(i < self.bits.len());
        let random = self.base.wrapping_add((i as u32).wrapping_mul(ALPHA)) >> 16;
        // SAFETY: as in `get`.
        unsafe { *self.bits.get_unchecked_mut(i) = to_bf16_stochastic(x.to_f32(), random) };
    }
}

/// bfloat16 bits of `x` rounded stochastically: up with probability equal to the fraction of
/// a bf16 step that truncation would drop. Infinities and NaN are kept.
#[inline(always)]
fn to_bf16_stochastic(x: f32, random: u32) -> u16 {
    let bits = x.to_bits();
    // Exponent all ones: infinity or NaN, truncated (NaN kept quiet).
    let special = (bits & 0x7F80_0000) == 0x7F80_0000;
    let rounded = (bits.wrapping_add(random) >> 16) as u16;
    let kept = ((bits >> 16) | if x.is_nan() { 0x40 } else { 0 }) as u16;
    if special {
        kept
    } else {
        rounded
    }
}

/// Decodes bf16 buffer `src` into `dst`.
#[inline(always)]
pub fn decode<T: Real>(src: &[u16], dst: &mut [T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = T::from_f32(from_bf16(s));
    }
}

/// Encodes `src` into bf16 buffer `dst` with stochastic rounding; `first` is the flat index
/// of `src[0]` (in the whole model's parameter space), `slot` the buffer's number.
#[inline(always)]
pub fn encode<T: Real>(src: &[T], dst: &mut [u16], first: u64, step: u64, slot: u32) {
    for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
        *d = to_bf16_stochastic(s.to_f32(), noise(first + i as u64, step, slot));
    }
}

/// Up to three element buffers of [`BLOCK`] f64 values.
const SCRATCH_WORDS: usize = 3 * BLOCK;

thread_local! {
    /// Per-thread scratch for decoded buffers, in static thread-local storage (48 KiB): no
    /// allocation, ever.
    static SCRATCH: RefCell<[u64; SCRATCH_WORDS]> = const { RefCell::new([0; SCRATCH_WORDS]) };
}

/// Runs `f` with `count` (at most 3) scratch buffers of `len` (at most [`BLOCK`]) elements of
/// `T` each, back to back.
pub fn with_scratch<T: Real, R>(count: usize, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    assert!(
        std::mem::size_of::<T>() <= 8 && std::mem::align_of::<T>() <= 8,
        "scratch holds f32 or f64"
    );
    assert!(count <= 3 && len <= BLOCK, "scratch holds three blocks");
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        // SAFETY: the buffer holds at least count·len values of T (f32 or f64: any bit pattern
        // is a valid value), is aligned to 8 bytes, and is borrowed exclusively here.
        let values =
            unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut T, count * len) };
        f(values)
    })
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

    #[test]
    fn stochastic_rounding_is_unbiased_and_keeps_specials() {
        // 1 + 0.3 bf16 steps: rounds up about 30% of the time; the mean stays at x.
        let step = 1.0f32 / 128.0;
        let x = 1.0 + 0.3 * step;
        let src = vec![x; 100_000];
        let mut dst = vec![0u16; src.len()];
        encode(&src, &mut dst, 0, 7, 1);
        let mean: f64 = dst.iter().map(|&b| from_bf16(b) as f64).sum::<f64>() / src.len() as f64;
        assert!(
            (mean - x as f64).abs() < 2e-4 * step as f64 * 100.0,
            "{mean} vs {x}"
        );
        let ups = dst.iter().filter(|&&b| from_bf16(b) > 1.0).count() as f64 / src.len() as f64;
        assert!((ups - 0.3).abs() < 0.01, "{ups}");
        let mut out = [0u16; 3];
        encode(
            &[f32::INFINITY, f32::NEG_INFINITY, f32::NAN],
            &mut out,
            0,
            0,
            0,
        );
        assert_eq!(from_bf16(out[0]), f32::INFINITY);
        assert_eq!(from_bf16(out[1]), f32::NEG_INFINITY);
        assert!(from_bf16(out[2]).is_nan());
        // The same element, step and buffer always draw the same bits.
        let mut again = vec![0u16; src.len()];
        encode(&src, &mut again, 0, 7, 1);
        assert_eq!(dst, again);
    }
}
