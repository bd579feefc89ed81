//! The gradients checked before they are used: non-finite elements found (and named) and the
//! global norm summed, either in a pass of its own or chunk by chunk inside the update.

use super::{Engine, SQUARE_GROUP};
use crate::optim::plan::Shared;
use crate::optim::rule::{Rule, LANES};
use crate::{Error, Real};

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
    lanes.iter().sum()
}

/// Sum of squares in f64 (infinite only where f64 overflows, as PyTorch's norm would be).
pub(super) fn exact_square_sum<'a, T: Real>(g: impl IntoIterator<Item = &'a T>) -> f64 {
    g.into_iter().map(|x| x.to_f64() * x.to_f64()).sum()
}
