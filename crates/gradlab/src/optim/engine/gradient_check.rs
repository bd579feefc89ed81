//! The gradients checked before they are used: non-finite elements found (and named) and the
//! global norm summed, either in a pass of its own or chunk by chunk inside the update.

use super::{Engine, SQUARE_GROUP};
use crate::optim::plan::Shared;
use crate::optim::rule::{Rule, Sums, LANES};
use crate::{Error, Real};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

impl<T: Real, R: Rule> Engine<T, R> {
    /// Sum of squares of every gradient chunk and its first non-finite element (the
    /// separate pass before the update; see [`square_sum`]).
    pub(super) fn gradient_pass(&mut self, grads: &[&[T]]) -> (f64, Option<(usize, usize, f64)>) {
        let chunks = &self.plan.chunks;
        let squares = Shared::new(&mut self.squares);
        let absent = &self.absent;
        self.plan.for_each(|ci| {
            let c = chunks[ci];
            let sum = if absent[c.seg] {
                0.0
            } else {
                let g = &grads[c.seg][c.start..c.end];
                crate::optim::simd::wide_call(
                    #[inline(always)]
                    || square_sum(g),
                )
            };
            // SAFETY: chunk `ci` is written by this call only.
            unsafe { squares.slice(ci..ci + 1)[0] = sum };
        });
        let total = self.squares.iter().sum::<f64>();
        if total.is_finite() {
            return (total, None);
        }
        match self.first_non_finite(grads) {
            Some(bad) => (f64::NAN, Some(bad)),
            // Every element is finite: some squares overflowed the narrow type.
            None => (
                exact_square_sum(
                    chunks
                        .iter()
                        .filter(|c| !self.absent[c.seg])
                        .flat_map(|c| &grads[c.seg][c.start..c.end]),
                ),
                None,
            ),
        }
    }

    /// The first non-finite gradient element, as (segment, index, value).
    pub(super) fn first_non_finite(&self, grads: &[&[T]]) -> Option<(usize, usize, f64)> {
        self.plan
            .chunks
            .iter()
            .filter(|c| !self.absent[c.seg])
            .find_map(|c| {
                let g = &grads[c.seg][c.start..c.end];
                g.iter()
                    .position(|x| !x.is_finite())
                    .map(|i| (c.seg, c.start + i, g[i].to_f64()))
            })
    }

    /// The error of a fused pass that met a non-finite gradient; the optimizer refuses
    /// further steps until a state is loaded, since the chunks before it were updated.
    pub(super) fn stop_on_non_finite(&mut self, grads: &[&[T]]) -> Error {
        let (seg, index, value) = self
            .first_non_finite(grads)
            .expect("a fused pass stops only on a non-finite gradient");
        let tensor = self.layout.segments()[seg].name.clone();
        let step = self.step + 1;
        self.failed = Some(format!(
            "the optimizer stopped at step {step} on a non-finite gradient in tensor '{tensor}' \
             and is partly updated; load a saved state to continue"
        ));
        Error::NonFiniteGradient {
            step,
            tensor,
            index,
            value,
            partly_updated: true,
        }
    }
}

/// Sum of squares of a gradient chunk. A NaN or infinite element makes it NaN or infinite, so
/// it doubles as the non-finite check. Squares are summed in the gradients' own type over
/// groups of [`SQUARE_GROUP`] per lane (16 f32 lanes per AVX-512 instruction instead of 8
/// f64), then in f64: a group's relative error is below `SQUARE_GROUP · ε` (4e-6 in f32, the
/// accuracy of PyTorch's f32 norms). Fixed lanes and groups: vectorisable, and the same sum
/// whatever the thread count. Finite f32 elements above 1.8e19 overflow a square: callers
/// then fall back to [`exact_square_sum`].
#[inline(always)]
pub(super) fn square_sum<T: Real>(g: &[T]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    add_squares(g, &mut lanes);
    lanes.iter().sum()
}

/// Adds the squares of `g` into `lanes` as [`square_sum`] does. Called on consecutive pieces
/// of a slice that are whole [`PIECE`]s (all but the last), it leaves the lanes exactly as one
/// call on the whole slice would.
#[inline(always)]
pub(super) fn add_squares<T: Real>(g: &[T], lanes: &mut [f64; LANES]) {
    let (blocks, tail) = g.as_chunks::<LANES>();
    for group in blocks.chunks(SQUARE_GROUP) {
        let mut inner = [T::ZERO; LANES];
        for block in group {
            for (acc, &x) in inner.iter_mut().zip(block) {
                *acc = *acc + x * x;
            }
        }
        for (lane, acc) in lanes.iter_mut().zip(inner) {
            *lane += acc.to_f64();
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(tail) {
        let x = x.to_f64();
        *lane += x * x;
    }
}

/// Elements per piece of a chunk that the fused pass checks and then updates: whole groups
/// of [`SQUARE_GROUP`] blocks, so that the lanes are summed exactly as over the whole chunk.
pub(super) const PIECE: usize = LANES * SQUARE_GROUP;

/// Checks a chunk's gradients `raw` and updates it (`CHECK`; without, only updates it), piece
/// by piece (pieces of `piece` elements, a multiple of [`PIECE`], or the whole chunk): each
/// piece's squares are summed while it comes into the cache, then `update` runs over it, so
/// that the gradients are read from memory once, right before the kernel reads them again
/// from the first-level cache. (Checking the whole chunk first, 64 KiB of f32 gradients, made
/// the kernel read them back from the second level and left the other streams idle during
/// the check, which cost the light bf16-state steps most.) A piece with a non-finite gradient, and every
/// piece after `stop` was raised (by this chunk or another), is not updated. Returns the
/// chunk's sum of squares (the same as [`square_sum`]'s, or [`exact_square_sum`]'s where
/// squares overflow), and the update's sums unless it stopped.
#[inline(always)]
pub(super) fn checked_update<const CHECK: bool, T: Real>(
    raw: &[T],
    piece: usize,
    stop: &AtomicBool,
    mut update: impl FnMut(Range<usize>) -> Sums,
) -> (f64, Option<Sums>) {
    if !CHECK {
        return (0.0, Some(update(0..raw.len())));
    }
    let mut lanes = [0.0f64; LANES];
    let mut overflowed = false;
    let mut sums = [0.0; 4];
    let mut start = 0;
    while start < raw.len() {
        let end = raw.len().min(start + piece);
        let g = &raw[start..end];
        add_squares(g, &mut lanes);
        if overflowed || !lanes.iter().sum::<f64>().is_finite() {
            if g.iter().all(|x| x.is_finite()) {
                // Finite squares above the narrow type's range: summed exactly at the end.
                overflowed = true;
            } else {
                stop.store(true, Ordering::Relaxed);
            }
        }
        if stop.load(Ordering::Relaxed) {
            return (lanes.iter().sum(), None);
        }
        let part = update(start..end);
        for (total, x) in sums.iter_mut().zip(part) {
            *total += x;
        }
        start = end;
    }
    let sum = if overflowed {
        exact_square_sum(raw)
    } else {
        lanes.iter().sum()
    };
    (sum, Some(sums))
}

/// Sum of squares in f64 (infinite only where f64 overflows, as PyTorch's norm would be).
pub(super) fn exact_square_sum<'a, T: Real>(g: impl IntoIterator<Item = &'a T>) -> f64 {
    g.into_iter().map(|x| x.to_f64() * x.to_f64()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gradients over many magnitudes, reproducibly.
    fn gradients(n: usize) -> Vec<f32> {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let unit = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                unit * 10f32.powi(i as i32 % 9 - 4)
            })
            .collect()
    }

    /// Runs [`checked_update`] and records the ranges it updated.
    fn updated(
        raw: &[f32],
        piece: usize,
        stop: &AtomicBool,
    ) -> (f64, Option<Sums>, Vec<Range<usize>>) {
        let mut ranges = Vec::new();
        let (sum, sums) = checked_update::<true, f32>(raw, piece, stop, |r| {
            ranges.push(r.clone());
            [r.len() as f64, 0.0, 0.0, 0.0]
        });
        (sum, sums, ranges)
    }

    #[test]
    fn pieces_sum_the_squares_as_the_whole_chunk() {
        for n in [
            0,
            1,
            31,
            PIECE - 1,
            PIECE,
            PIECE + 1,
            2 * PIECE + 77,
            8 * PIECE,
        ] {
            let g = gradients(n);
            for piece in [PIECE, n.max(1)] {
                let (sum, sums, ranges) = updated(&g, piece, &AtomicBool::new(false));
                assert_eq!(
                    sum.to_bits(),
                    square_sum(&g).to_bits(),
                    "n {n}, piece {piece}"
                );
                assert_eq!(sums, Some([n as f64, 0.0, 0.0, 0.0]));
                // Consecutive pieces of `piece` elements cover the chunk once.
                let mut next = 0;
                for r in &ranges {
                    assert_eq!(r.start, next);
                    assert!(r.len() == piece || r.end == n, "{r:?} of {n}");
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
        let (sum, ..) = updated(&[], PIECE, &AtomicBool::new(false));
        assert_eq!(sum, 0.0);
    }

    #[test]
    fn a_piece_with_a_non_finite_gradient_is_not_updated() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut g = gradients(3 * PIECE);
            g[PIECE + 5] = bad;
            let stop = AtomicBool::new(false);
            let (sum, sums, ranges) = updated(&g, PIECE, &stop);
            assert_eq!(ranges, vec![0..PIECE], "{bad}");
            assert!(sums.is_none() && !sum.is_finite() && stop.load(Ordering::Relaxed));
        }
        // Raised by another chunk: nothing more is updated.
        let (_, sums, ranges) = updated(&gradients(100), PIECE, &AtomicBool::new(true));
        assert!(sums.is_none() && ranges.is_empty());
    }

    #[test]
    fn overflowing_squares_are_summed_exactly() {
        let mut g = gradients(2 * PIECE + 3);
        g[7] = 3e19;
        g[PIECE + 1] = -2e30;
        let stop = AtomicBool::new(false);
        let (sum, sums, ranges) = updated(&g, PIECE, &stop);
        assert_eq!(sum, exact_square_sum(&g));
        assert!(sum.is_finite() && sum > 4e60);
        assert_eq!(ranges.len(), 3);
        assert!(sums.is_some() && !stop.load(Ordering::Relaxed));
    }
}
