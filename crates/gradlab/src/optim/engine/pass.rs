//! One fused pass of a rule's kernel over the chunks of the layout on the thread pool, with
//! the gradient check folded in, over f32/f64 or bfloat16 state.

use super::gradient_check::{checked_update, PIECE};
use super::Engine;
use crate::optim::bf16;
use crate::optim::plan::Shared;
use crate::optim::rule::{Buffer, Grad, Rule, Slots, Sums};
use crate::Real;
use std::ops::Range;

impl<T: Real, R: Rule> Engine<T, R> {
    /// Runs one pass of the rule's pre-kernel (`PRE`) or update kernel over the chunks of every segment (`only == None`) or of one
    /// segment, with parameters at `self.param_ptrs`, and sums its results per segment.
    ///
    /// With `CHECK`, each chunk's gradients are first summed (squares) and checked while they
    /// come into the cache, so the step reads them from memory once; a chunk with a
    /// non-finite gradient is not updated, the chunks not yet started are left alone, and
    /// `true` is returned.
    pub(super) fn pass<const PRE: bool, const CHECK: bool>(
        &mut self,
        only: Option<usize>,
        grads: &[&[T]],
        scale: T,
        bound: T,
    ) -> bool {
        let chunks = &self.plan.chunks;
        let segs = self.layout.segments();
        let coefs = &self.coefs;
        let params = &self.param_ptrs;
        let partials = Shared::new(&mut self.partials);
        let squares = Shared::new(&mut self.squares);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stop = &stop;
        let slot_views = &views(&mut self.slots);
        let compact_views = &views(&mut self.compact);
        let compact_slots = self.compact.len();
        let first_index = self.sync.as_ref().map_or(0, |s| s.dist.start) as u64;
        let step = self.step;
        let body = |ci: usize| {
            let c = chunks[ci];
            let seg = &segs[c.seg];
            let (ptr, _) = params[c.seg];
            let global = seg.offset + c.start..seg.offset + c.end;
            // SAFETY: chunks are disjoint ranges of their segment and of the flat state; each
            // is visited by exactly one thread, and the parameter borrow outlives the pass.
            unsafe {
                let raw = &grads[c.seg][c.start..c.end];
                let p = (ptr as *mut T).add(c.start);
                let coef = &coefs[c.seg];
                // Sums over pieces would be added in another order than over the chunk:
                // rules whose sums count check the chunk as one piece.
                let piece = if PRE || R::KERNEL_SUMS {
                    raw.len()
                } else {
                    PIECE
                };
                // Inlined, so that the kernel is compiled for the wide instructions.
                let (sum, sums) = crate::optim::simd::wide_call(
                    #[inline(always)]
                    || {
                        checked_update::<CHECK, T>(
                            raw,
                            piece,
                            stop,
                            // The kernel over elements `r` of the chunk.
                            #[inline(always)]
                            |r: Range<usize>| -> Sums {
                                let grad = Grad::new(&raw[r.clone()], scale, bound);
                                let (p, n) = (p.add(r.start), r.len());
                                let global = global.start + r.start..global.start + r.end;
                                if !R::COMPACT_STATE || compact_slots == 0 {
                                    let [a, b, c] = std::array::from_fn(|k| {
                                        slot_views[k].slice(global.clone())
                                    });
                                    run::<PRE, R, T, _>(coef, p, n, grad, Slots { a, b, c })
                                } else {
                                    // bf16 buffers read and written by the kernel itself.
                                    let first = first_index + global.start as u64;
                                    let [a, b, c] = std::array::from_fn(|k| {
                                        let bits = compact_views[k].slice(global.clone());
                                        bf16::Bf16Slot::new(bits, first, step, k as u32)
                                    });
                                    run::<PRE, R, T, _>(coef, p, n, grad, Slots { a, b, c })
                                }
                            },
                        )
                    },
                );
                if CHECK {
                    squares.slice(ci..ci + 1)[0] = sum;
                }
                partials.slice(ci..ci + 1)[0] = sums.unwrap_or([0.0; 4]);
            }
        };
        match only {
            None => self.plan.for_each(body),
            Some(seg) => self
                .plan
                .for_each_in(self.plan.seg_chunks[seg].clone(), body),
        }
        let segments = match only {
            None => 0..self.plan.seg_chunks.len(),
            Some(seg) => seg..seg + 1,
        };
        for seg in segments {
            let mut sums = [0.0; 4];
            for part in &self.partials[self.plan.seg_chunks[seg].clone()] {
                for k in 0..4 {
                    sums[k] += part[k];
                }
            }
            self.seg_sums[seg] = sums;
        }
        stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Combines the per-tensor sums of the last pass with the other ranks' (sharded engines).
    pub(super) fn combine_sums(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.combine(&mut self.seg_sums);
        }
    }
}

/// Shared views of up to three element buffers (the missing ones empty).
fn views<S>(buffers: &mut [Vec<S>]) -> [Shared<S>; 3] {
    let mut each = buffers.iter_mut();
    std::array::from_fn(|_| each.next().map_or_else(Shared::empty, |b| Shared::new(b)))
}

/// The rule's pre-pass (`PRE`: reads the parameters) or update (writes them) over one chunk,
/// whatever its element buffers are stored in.
///
/// # Safety
/// `p` points to `n` parameters that only this chunk's kernel touches during the pass.
#[inline(always)]
unsafe fn run<const PRE: bool, R: Rule, T: Real, B: Buffer<T>>(
    c: &R::Coef,
    p: *mut T,
    n: usize,
    g: Grad<T>,
    s: Slots<B>,
) -> Sums {
    if PRE {
        // SAFETY: the caller's guarantee; nobody writes the parameters during a pre-pass.
        R::pre_kernel(c, unsafe { std::slice::from_raw_parts(p, n) }, g, s)
    } else {
        // SAFETY: the caller's guarantee: this chunk alone writes these parameters.
        R::kernel(c, unsafe { std::slice::from_raw_parts_mut(p, n) }, g, s)
    }
}
