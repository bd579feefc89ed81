//! Adafactor's passes over a tensor (or a rank's piece of one): the per-step constants, the
//! geometry of factored tensors, the first pass (which changes nothing), the new means, ΣU²
//! and the move. Sums are taken in a fixed order of chunks and bands, whatever the thread
//! count.

use super::AdafactorConfig;
use crate::optim::bf16::Bf16Slot;
use crate::optim::plan::{Shared, CHUNK};
use crate::optim::rule::{lane_sums, lerp, paired_for_each, paired_lane_sums, Buffer, Grad};
use crate::optim::simd::wide_call;
use crate::optim::standalone::sum_chunks;
use crate::Real;
use std::ops::Range;

/// The per-step constants of one tensor.
#[derive(Debug, Clone, Copy)]
pub(super) struct Coefs<T> {
    /// The averaging weight `t^beta2_decay` and 1 minus it.
    w: T,
    one_minus_w: T,
    /// ε1².
    floor: T,
    /// `1 − γλ`.
    decay: T,
}

impl<T: Real> Coefs<T> {
    pub(super) fn new(cfg: &AdafactorConfig, lr: f64, t: f64, eps1: f64) -> Self {
        let w = t.powf(cfg.beta2_decay);
        Coefs {
            w: T::from_f64(w),
            one_minus_w: T::from_f64(1.0 - w),
            floor: T::from_f64(eps1 * eps1),
            decay: T::from_f64(1.0 - lr * cfg.weight_decay),
        }
    }

    /// The vector path's new second moment `lerp(V, g², w)`.
    #[inline(always)]
    fn second_moment(&self, v: T, g: T) -> T {
        lerp(v, g * g, self.w, self.one_minus_w)
    }

    /// `max(V̂, ε1²)`.
    #[inline(always)]
    fn clamped(&self, v_hat: T) -> T {
        if v_hat > self.floor {
            v_hat
        } else {
            self.floor
        }
    }

    /// `U² = g² / max(V̂, ε1²)`, for RMS(U) (no square root: to within a rounding of `U`).
    #[inline(always)]
    fn update_sq(&self, g: T, v_hat: T) -> T {
        g * g / self.clamped(v_hat)
    }

    /// `U = g / √max(V̂, ε1²)` (torch's `clamp_(min=ε1²).rsqrt_()` times g).
    #[inline(always)]
    fn update(&self, g: T, v_hat: T) -> T {
        T::ONE / self.clamped(v_hat).sqrt() * g
    }
}

/// The step size `α / max(1, RMS(U)/d)` from Σθ² and ΣU² of a tensor of `n` elements.
pub(super) fn step_size(
    cfg: &AdafactorConfig,
    lr: f64,
    t: f64,
    n: usize,
    theta_sq: f64,
    update_sq: f64,
) -> f64 {
    let rho = lr.min(1.0 / t.sqrt());
    let root_n = (n as f64).sqrt();
    let alpha = cfg.eps2.max(theta_sq.sqrt() / root_n) * rho;
    alpha / (update_sq.sqrt() / (root_n * cfg.d)).max(1.0)
}

/// How a tensor of two or more dimensions is cut into work units: bands of rows of one
/// matrix (one leading index), each summing its own column partials, so that the sums do
/// not depend on the thread count. The optimizer may hold only a piece of the tensor (a
/// rank's shard): rows outside it are skipped, and the first and last rows may be partial.
#[derive(Debug, Clone, Copy)]
pub(super) struct Factored {
    pub batches: usize,
    pub rows: usize,
    pub cols: usize,
    /// Rows per band and bands per matrix.
    band: usize,
    bands: usize,
    /// The tensor's elements held here: `start..end` of its flat index.
    start: usize,
    end: usize,
}

/// At most this many bands per matrix (enough to keep every thread busy).
const MAX_BANDS: usize = 32;
/// At most this many column partials in all (8 MB), beyond which a matrix is one band.
const PARTIALS_BUDGET: usize = 1 << 20;

impl Factored {
    /// The geometry of a tensor of `shape` of which `piece` is held (`None` below 2-D).
    pub(super) fn new(shape: &[usize], piece: Range<usize>) -> Option<Self> {
        let d = shape.len();
        if d < 2 {
            return None;
        }
        let (rows, cols) = (shape[d - 2], shape[d - 1]);
        let batches: usize = shape[..d - 2].iter().product();
        let mut band = rows
            .div_ceil(MAX_BANDS)
            .max(CHUNK / cols.max(1))
            .clamp(1, rows.max(1));
        if batches * rows.div_ceil(band) * cols > PARTIALS_BUDGET {
            band = rows.max(1);
        }
        Some(Factored {
            batches,
            rows,
            cols,
            band,
            bands: rows.div_ceil(band),
            start: piece.start,
            end: piece.end,
        })
    }

    pub(super) fn units(&self) -> usize {
        self.batches * self.bands
    }

    /// Unit `u`'s matrix and its rows.
    fn unit(&self, u: usize) -> (usize, Range<usize>) {
        let (b, k) = (u / self.bands, u % self.bands);
        (b, k * self.band..((k + 1) * self.band).min(self.rows))
    }

    /// The columns of matrix `b`'s row `r` that are held, and where the first of them lies
    /// among the held elements; `None` when the row lies outside the piece.
    #[inline]
    fn row_part(&self, b: usize, r: usize) -> Option<(Range<usize>, usize)> {
        let first = (b * self.rows + r) * self.cols;
        let (lo, hi) = (first.max(self.start), (first + self.cols).min(self.end));
        (lo < hi).then(|| (lo - first..hi - first, lo - self.start))
    }

    /// Runs `f(u)` for every unit on the thread pool, a few units per task when they are small.
    fn for_units(&self, f: impl Fn(usize) + Sync) {
        let per_task = (CHUNK / (self.band * self.cols).max(1)).max(1);
        let units = self.units();
        crate::pool::run(units.div_ceil(per_task), &|task| {
            for u in task * per_task..((task + 1) * per_task).min(units) {
                f(u);
            }
        });
    }
}

/// One tensor's second-moment state.
#[derive(Debug, Clone)]
pub(super) enum Moment<T> {
    /// Row and column means of the whole tensor (`[batches·rows]`, `[batches·cols]`), and
    /// the step's `max(mean R, ε1)` per matrix.
    Factored {
        geometry: Factored,
        row_var: Vec<T>,
        col_var: Vec<T>,
        row_scale: Vec<T>,
    },
    /// The full second moment of a vector (or scalar), for the elements held.
    Full { variance: Vec<T> },
    /// The same in bfloat16 (`state_dtype=bf16`); `first` is the flat index of the first
    /// held element in the whole model, which the stochastic rounding draws its bits by.
    Compact { bits: Vec<u16>, first: u64 },
}

/// What a step's first pass measures of one tensor, before any state changes (so that a
/// non-finite gradient found by it leaves everything as it was); sharded, the sums are then
/// replaced by the whole tensor's.
#[derive(Debug, Clone, Default)]
pub(super) struct Measured {
    /// Σθ², ΣU² (vectors: from the first pass; factored: from the second, which needs the
    /// new means) and Σ of the raw g².
    pub sums: [f64; 3],
    /// Factored tensors: Σg² of each row and of each column of the whole tensor (0 for the
    /// rows and columns of elements not held).
    pub row_sq: Vec<f64>,
    pub col_sq: Vec<f64>,
}

/// The vector path's first pass: (Σθ², ΣU², Σraw g²) with U from the new V, which it does
/// not store.
pub(super) fn vector_sums<T: Real, S: Copy + Sync>(
    c: &Coefs<T>,
    p: &[T],
    g: Grad<'_, T>,
    v: &[S],
    load: impl Fn(S) -> T + Copy + Sync,
    partials: &mut [[f64; 3]],
) -> [f64; 3] {
    sum_chunks(p.len(), partials, |range| {
        let (p, v) = (&p[range.clone()], &v[range.clone()]);
        let g = g.offset(range.start, range.len());
        wide_call(
            #[inline(always)]
            || {
                paired_lane_sums(p.len(), |i| {
                    // SAFETY: called with i < p.len(), the length of every slice here.
                    let (pi, vi, raw) = unsafe {
                        (
                            *p.get_unchecked(i),
                            load(*v.get_unchecked(i)),
                            *g.raw().get_unchecked(i),
                        )
                    };
                    let gi = g.process(raw);
                    let u_sq = c.update_sq(gi, c.second_moment(vi, gi)).to_f64();
                    let (pi, raw) = (pi.to_f64(), raw.to_f64());
                    [pi * pi, u_sq, raw * raw]
                })
            },
        )
    })
}

/// The vector path's second pass over the held elements: `V ← lerp(V, g², w)` (as the
/// first pass computed it), then `θ ← θ(1 − γλ) + step·U`, chunk by chunk on the pool.
pub(super) fn vector_move<T: Real>(
    c: &Coefs<T>,
    step: T,
    p: &mut [T],
    g: Grad<'_, T>,
    variance: &mut [T],
) {
    let v = Shared::new(variance);
    crate::pool::for_each_chunk(p, CHUNK, |i, p| {
        let start = i * CHUNK;
        // SAFETY: chunks are disjoint; `variance` outlives `for_each_chunk`.
        let v = unsafe { v.slice(start..start + p.len()) };
        vector_move_chunk(c, step, p, g.offset(start, p.len()), v);
    })
}

/// [`vector_move`] with V in bfloat16, rounded stochastically at step `step` (`first` is
/// the flat index of `p`'s first element in the whole model).
pub(super) fn compact_vector_move<T: Real>(
    c: &Coefs<T>,
    step: T,
    p: &mut [T],
    g: Grad<'_, T>,
    bits: &mut [u16],
    first: u64,
    t: u64,
) {
    let v = Shared::new(bits);
    crate::pool::for_each_chunk(p, CHUNK, |i, p| {
        let start = i * CHUNK;
        // SAFETY: chunks are disjoint; `bits` outlives `for_each_chunk`.
        let bits = unsafe { v.slice(start..start + p.len()) };
        let v = Bf16Slot::new(bits, first + start as u64, t, 0);
        vector_move_chunk(c, step, p, g.offset(start, p.len()), v);
    })
}

#[inline(always)]
fn vector_move_chunk<T: Real, B: Buffer<T>>(
    c: &Coefs<T>,
    step: T,
    p: &mut [T],
    grad: Grad<'_, T>,
    mut v: B,
) {
    wide_call(
        #[inline(always)]
        || {
            let (n, raw) = (p.len(), grad.raw());
            assert!(raw.len() == n);
            // `move`: the closure owns the slices, so that their pointers stay in registers.
            paired_for_each(n, move |i| {
                // SAFETY: paired_for_each calls with i < n, the length of every slice here
                // (and of `v`, a chunk of the same length).
                unsafe {
                    let g = grad.process(*raw.get_unchecked(i));
                    let vn = c.second_moment(v.get(i), g);
                    v.set(i, vn);
                    let u = c.update(g, vn);
                    let p = p.get_unchecked_mut(i);
                    *p = *p * c.decay;
                    *p = *p + step * u;
                }
            })
        },
    )
}

/// The factored path's first pass: each held row's and column's Σg² (into `measured`), and
/// (Σθ², 0, Σraw g²).
pub(super) fn factored_sums<T: Real>(
    geo: &Factored,
    p: &[T],
    g: Grad<'_, T>,
    measured: &mut Measured,
    col_partials: &mut [f64],
    unit_sums: &mut [[f64; 3]],
) -> [f64; 3] {
    let cols = geo.cols;
    let units = geo.units();
    {
        let rows_view = Shared::new(&mut measured.row_sq);
        let partials = Shared::new(&mut col_partials[..units * cols]);
        let sums = Shared::new(&mut unit_sums[..units]);
        geo.for_units(|u| {
            let (b, rows) = geo.unit(u);
            // SAFETY: unit `u` alone writes its rows' sums, its column partials and its sums;
            // the buffers outlive `for_units`.
            let (row_sq, col_sums, sums) = unsafe {
                (
                    rows_view.slice(b * geo.rows + rows.start..b * geo.rows + rows.end),
                    partials.slice(u * cols..(u + 1) * cols),
                    sums.slice(u..u + 1),
                )
            };
            col_sums.iter_mut().for_each(|x| *x = 0.0);
            let (mut theta_sq, mut raw_sq) = (0.0, 0.0);
            for (k, r) in rows.enumerate() {
                let Some((held, off)) = geo.row_part(b, r) else {
                    row_sq[k] = 0.0;
                    continue;
                };
                let n = held.len();
                let (p, g) = (&p[off..off + n], g.offset(off, n));
                let mut col_sums = &mut col_sums[held];
                let [row, pp, rr] = wide_call(
                    #[inline(always)]
                    || {
                        // `move`: the closure owns the column sums, so that their pointer
                        // stays in a register.
                        lane_sums(n, move |j| {
                            // SAFETY: lane_sums calls with j < n, the length of `p` and g.
                            let (pj, raw) =
                                unsafe { (*p.get_unchecked(j), *g.raw().get_unchecked(j)) };
                            let gj = g.process(raw).to_f64();
                            col_sums.set(j, col_sums.get(j) + gj * gj);
                            let (pj, raw) = (pj.to_f64(), raw.to_f64());
                            [gj * gj, pj * pj, raw * raw]
                        })
                    },
                );
                theta_sq += pp;
                raw_sq += rr;
                row_sq[k] = row;
            }
            sums[0] = [theta_sq, 0.0, raw_sq];
        });
    }
    for b in 0..geo.batches {
        for j in 0..cols {
            measured.col_sq[b * cols + j] = (0..geo.bands)
                .map(|k| col_partials[(b * geo.bands + k) * cols + j])
                .sum();
        }
    }
    let mut total = [0.0; 3];
    for s in &unit_sums[..units] {
        total[0] += s[0];
        total[2] += s[2];
    }
    total
}

/// The factored path's new row and column means from the whole tensor's sums, and the
/// clamped mean of the rows per matrix.
pub(super) fn commit_means<T: Real>(
    geo: &Factored,
    c: &Coefs<T>,
    measured: &Measured,
    row_var: &mut [T],
    col_var: &mut [T],
    eps1: f64,
    row_scale: &mut [T],
) {
    let mean = |sum: f64, count: usize| T::from_f64(mean_of_squares(sum, count));
    for (r, &sum) in row_var.iter_mut().zip(&measured.row_sq) {
        *r = lerp(*r, mean(sum, geo.cols), c.w, c.one_minus_w);
    }
    for (col, &sum) in col_var.iter_mut().zip(&measured.col_sq) {
        *col = lerp(*col, mean(sum, geo.rows), c.w, c.one_minus_w);
    }
    for b in 0..geo.batches {
        let rows = &row_var[b * geo.rows..(b + 1) * geo.rows];
        let mean = rows.iter().map(|r| r.to_f64()).sum::<f64>() / geo.rows as f64;
        let mean = T::from_f64(mean);
        let floor = T::from_f64(eps1);
        row_scale[b] = if mean > floor { mean } else { floor };
    }
}

/// The mean of `count` squares summing to `sum`, as torch computes it: the norm squared,
/// divided by the count.
fn mean_of_squares(sum: f64, count: usize) -> f64 {
    let norm = sum.sqrt();
    norm * norm / count as f64
}

/// The factored path's second pass: ΣU² over the held elements.
pub(super) fn factored_update_sq<T: Real>(
    geo: &Factored,
    c: &Coefs<T>,
    g: Grad<'_, T>,
    row_var: &[T],
    col_var: &[T],
    row_scale: &[T],
    unit_sums: &mut [[f64; 3]],
) -> f64 {
    let units = geo.units();
    let sums = Shared::new(&mut unit_sums[..units]);
    geo.for_units(|u| {
        let (b, rows) = geo.unit(u);
        let scale = row_scale[b];
        let mut total = 0.0;
        for r in rows {
            let Some((held, off)) = geo.row_part(b, r) else {
                continue;
            };
            let rv = row_var[b * geo.rows + r];
            let cols = &col_var[b * geo.cols + held.start..b * geo.cols + held.end];
            let g = g.offset(off, cols.len());
            let [sq] = wide_call(
                #[inline(always)]
                || {
                    lane_sums(cols.len(), |j| {
                        // SAFETY: lane_sums calls with j < cols.len().
                        let col = unsafe { *cols.get_unchecked(j) };
                        [c.update_sq(g.at(j), rv * col / scale).to_f64()]
                    })
                },
            );
            total += sq;
        }
        // SAFETY: unit `u` alone writes entry `u`; the buffer outlives `for_units`.
        let entry = unsafe { sums.slice(u..u + 1) };
        entry[0][1] = total;
    });
    unit_sums[..units].iter().map(|s| s[1]).sum()
}

/// The factored path's move of the held elements: `θ ← θ(1 − γλ) + step·U`.
#[allow(clippy::too_many_arguments)]
pub(super) fn factored_move<T: Real>(
    geo: &Factored,
    c: &Coefs<T>,
    step: T,
    p: &mut [T],
    g: Grad<'_, T>,
    row_var: &[T],
    col_var: &[T],
    row_scale: &[T],
) {
    let view = Shared::new(p);
    geo.for_units(|u| {
        let (b, rows) = geo.unit(u);
        for r in rows {
            let Some((held, off)) = geo.row_part(b, r) else {
                continue;
            };
            let cols = &col_var[b * geo.cols + held.start..b * geo.cols + held.end];
            // SAFETY: units cover disjoint rows; `p` outlives `for_units`.
            let p = unsafe { view.slice(off..off + cols.len()) };
            let g = g.offset(off, cols.len());
            let rv = row_var[b * geo.rows + r];
            move_row(c, step, p, g, cols, rv, row_scale[b]);
        }
    });
}

/// `θ ← θ(1 − γλ) + step·U` over a run of one matrix row, with `V̂ = r·cols / scale`.
#[inline(always)]
fn move_row<T: Real>(
    c: &Coefs<T>,
    step: T,
    p: &mut [T],
    grad: Grad<'_, T>,
    cols: &[T],
    r: T,
    scale: T,
) {
    wide_call(
        #[inline(always)]
        || {
            for ((p, raw), col) in p.iter_mut().zip(grad.raw()).zip(cols) {
                let u = c.update(grad.process(*raw), r * *col / scale);
                *p = *p * c.decay;
                *p = *p + step * u;
            }
        },
    )
}
