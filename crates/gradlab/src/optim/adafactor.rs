//! Adafactor (Shazeer & Stern 2018, arXiv:1804.04235), as `torch.optim.Adafactor` (torch
//! 2.15): no first moment, and for tensors of two or more dimensions a second moment stored
//! factored, as its row and column means over the last two dimensions.
//!
//! ```text
//! t ← t + 1;   w = t^beta2_decay;   ρ = min(γ, 1/√t);   α = max(ε2, RMS(θ))·ρ
//! θ ← θ(1 − γλ)
//! vectors:   V ← lerp(V, g², w);                  V̂ = V
//! matrices:  R ← lerp(R, mean_{−1} g², w);  C ← lerp(C, mean_{−2} g², w);
//!            V̂ = R Cᵀ / max(mean_{−2} R, ε1)      (per leading index of a ≥3-D tensor)
//! U = g / √max(V̂, ε1²);   θ ← θ − α/max(1, RMS(U)/d) · U
//! ```
//! RMS(θ) is taken before the decay; `eps = (ε1, ε2)` with `ε1 = none` meaning the machine
//! epsilon of the parameters' type, as torch's `eps=(None, 1e-3)`. Unlike the paper, ρ is capped
//! by γ, means replace sums and ε1 clamps V̂ rather than being added to g².
//!
//! A step reads each tensor three times (factored: the means, then RMS(U), then the move;
//! vectors: twice, V and RMS(U) computed in the first pass and V stored in the second), on the
//! thread pool, with sums in a fixed order. The first pass changes nothing and also sums the
//! raw g², so the gradient's check (non-finite values, the norm) costs no pass of its own;
//! with `clip_norm` the norm comes first, from a pass over the gradients alone.

use super::plan::{Shared, CHUNK};
use super::rule::{lerp, Buffer, Grad};
use super::standalone::{
    check_shapes, chunk_count, refuse_foreign, saved_tensor, squared_norm, sum_chunks, verdict,
    Checked,
};
use super::state::{state_error, StateDict, StateMeta, STATE_VERSION};
use super::{Layout, Optimizer, Options, ParamAccess, ParamGroup, StepOutcome};
use crate::spec::{Args, Domain, Spec, Value};
use crate::{Error, Real, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Hyperparameters of `adafactor` (one parameter group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdafactorConfig {
    /// Learning rate γ, the cap of the relative step size ρ (default 1e-2).
    pub lr: f64,
    /// The exponent of the second moment's averaging weight `t^beta2_decay` (default −0.8,
    /// at most 0).
    pub beta2_decay: f64,
    /// ε1, the floor of V̂ (squared) and of the row means; `None` is the machine epsilon of
    /// the parameters' type (the default).
    pub eps1: Option<f64>,
    /// ε2, the floor of RMS(θ) in the step size (default 1e-3).
    pub eps2: f64,
    /// The clipping threshold d of RMS(U) (default 1, at least 1).
    pub d: f64,
    /// Decoupled weight decay λ, by γ (default 0).
    pub weight_decay: f64,
}

impl AdafactorConfig {
    fn parse(args: &Args) -> Result<Self> {
        let (eps1, eps2) = parse_eps(args)?;
        Ok(AdafactorConfig {
            lr: args.number("lr", 1e-2, Domain::NON_NEGATIVE)?,
            beta2_decay: args.number(
                "beta2_decay",
                -0.8,
                Domain::new(f64::NEG_INFINITY, true, 0.0, false),
            )?,
            eps1,
            eps2,
            d: args.number("d", 1.0, Domain::new(1.0, false, f64::INFINITY, true))?,
            weight_decay: args.number("weight_decay", 0.0, Domain::NON_NEGATIVE)?,
        })
    }

    fn to_spec(self) -> Spec {
        let eps1 = match self.eps1 {
            Some(e) => Value::Num(e),
            None => Value::Word("none".into()),
        };
        Spec::new("adafactor")
            .with("lr", self.lr)
            .with("beta2_decay", self.beta2_decay)
            .with("eps", Value::Tuple(vec![eps1, Value::Num(self.eps2)]))
            .with("d", self.d)
            .with("weight_decay", self.weight_decay)
    }
}

/// `eps=(ε1, ε2)`, ε1 a number or `none`.
fn parse_eps(args: &Args) -> Result<(Option<f64>, f64)> {
    const FORM: &str = "must be a pair (eps1, eps2) of non-negative numbers, eps1 possibly none, such as (none, 1e-3)";
    let items = match args.value("eps") {
        None => return Ok((None, 1e-3)),
        Some(Value::Tuple(items)) | Some(Value::List(items)) if items.len() == 2 => items,
        Some(v) => return Err(args.invalid("eps", format!("{FORM}, got {v}"))),
    };
    let number = |v: &Value| match v {
        Value::Num(x) => Domain::NON_NEGATIVE
            .check(*x)
            .map_err(|m| args.invalid("eps", m)),
        other => Err(args.invalid("eps", format!("{FORM}, got {other}"))),
    };
    let eps1 = match &items[0] {
        Value::Word(w) if w == "none" => None,
        v => Some(number(v)?),
    };
    Ok((eps1, number(&items[1])?))
}

/// The per-step constants of one tensor.
#[derive(Debug, Clone, Copy)]
struct Coefs<T> {
    /// The averaging weight `t^beta2_decay` and 1 minus it.
    w: T,
    one_minus_w: T,
    /// ε1².
    floor: T,
    /// `1 − γλ`.
    decay: T,
}

impl<T: Real> Coefs<T> {
    fn new(cfg: &AdafactorConfig, t: f64, eps1: f64) -> Self {
        let w = t.powf(cfg.beta2_decay);
        Coefs {
            w: T::from_f64(w),
            one_minus_w: T::from_f64(1.0 - w),
            floor: T::from_f64(eps1 * eps1),
            decay: T::from_f64(1.0 - cfg.lr * cfg.weight_decay),
        }
    }

    /// The vector path's new second moment `lerp(V, g², w)`.
    #[inline(always)]
    fn second_moment(&self, v: T, g: T) -> T {
        lerp(v, g * g, self.w, self.one_minus_w)
    }

    /// `U² = g² / max(V̂, ε1²)`, for RMS(U) (no square root: to within a rounding of `U`).
    #[inline(always)]
    fn update_sq(&self, g: T, v_hat: T) -> T {
        let v = if v_hat > self.floor {
            v_hat
        } else {
            self.floor
        };
        g * g / v
    }

    /// `U = g / √max(V̂, ε1²)` (torch's `clamp_(min=ε1²).rsqrt_()` times g).
    #[inline(always)]
    fn update(&self, g: T, v_hat: T) -> T {
        let v = if v_hat > self.floor {
            v_hat
        } else {
            self.floor
        };
        T::ONE / v.sqrt() * g
    }
}

/// The step size `α / max(1, RMS(U)/d)` from Σθ² and ΣU² of a tensor of `n` elements.
fn step_size(cfg: &AdafactorConfig, t: f64, n: usize, theta_sq: f64, update_sq: f64) -> f64 {
    let rho = cfg.lr.min(1.0 / t.sqrt());
    let root_n = (n as f64).sqrt();
    let alpha = cfg.eps2.max(theta_sq.sqrt() / root_n) * rho;
    alpha / (update_sq.sqrt() / (root_n * cfg.d)).max(1.0)
}

/// How a tensor of two or more dimensions is cut into work units: bands of rows of one
/// matrix (one leading index), each summing its own column partials, so that the sums do
/// not depend on the thread count.
#[derive(Debug, Clone, Copy)]
struct Factored {
    batches: usize,
    rows: usize,
    cols: usize,
    /// Rows per band and bands per matrix.
    band: usize,
    bands: usize,
}

/// At most this many bands per matrix (enough to keep every thread busy).
const MAX_BANDS: usize = 32;
/// At most this many column partials in all (8 MB), beyond which a matrix is one band.
const PARTIALS_BUDGET: usize = 1 << 20;

impl Factored {
    fn new(shape: &[usize]) -> Option<Self> {
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
        })
    }

    fn units(&self) -> usize {
        self.batches * self.bands
    }

    /// Unit `u`'s matrix and its rows.
    fn unit(&self, u: usize) -> (usize, std::ops::Range<usize>) {
        let (b, k) = (u / self.bands, u % self.bands);
        (b, k * self.band..((k + 1) * self.band).min(self.rows))
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
enum Moment<T> {
    /// Row and column means (`[batches·rows]`, `[batches·cols]`).
    Factored {
        geometry: Factored,
        row_var: Vec<T>,
        col_var: Vec<T>,
    },
    /// The full second moment of a vector (or scalar).
    Full { variance: Vec<T> },
}

/// What a step's first pass measures of one tensor, before any state changes (so that a
/// non-finite gradient found by it leaves everything as it was).
#[derive(Debug, Clone, Default)]
struct Measured {
    /// Σθ², ΣU² (vectors only: the factored ΣU² needs the new means) and Σ of the raw g².
    sums: [f64; 3],
    /// Factored tensors: Σg² of each row and of each column, per matrix.
    row_sq: Vec<f64>,
    col_sq: Vec<f64>,
}

/// Scratch sized at construction, so that steps do not allocate.
#[derive(Default)]
struct Scratch<T> {
    /// Per unit of the largest factored tensor: column sums of g², and (Σθ², ΣU², Σraw g²).
    col_partials: Vec<f64>,
    unit_sums: Vec<[f64; 3]>,
    /// Per matrix: `max(mean R, ε1)`.
    row_scale: Vec<T>,
    /// Per chunk of the longest tensor: the first pass's sums, the gradient's norm.
    chunk_sums: Vec<[f64; 3]>,
    norm_sums: Vec<[f64; 1]>,
    /// Per tensor.
    measured: Vec<Measured>,
}

/// Adafactor over the tensors of a layout.
pub struct Adafactor<T: Real> {
    layout: Layout,
    options: Options,
    /// Group 0 (the base spec), then one per [`ParamGroup`].
    configs: Vec<AdafactorConfig>,
    seg_group: Vec<usize>,
    moments: Vec<Moment<T>>,
    steps: u64,
    scratch: Scratch<T>,
}

const ROW: &str = "row_var";
const COL: &str = "col_var";
const VARIANCE: &str = "variance";

impl<T: Real> Adafactor<T> {
    /// Parses `adafactor(lr, beta2_decay, eps, d, weight_decay)` and its groups' overrides.
    pub fn from_spec(
        spec: &Spec,
        layout: Layout,
        groups: &[ParamGroup],
        options: Options,
    ) -> Result<Self> {
        if options.distributed.is_some() {
            return Err(Error::Layout(
                "adafactor: a sharded (ZeRO-1) run is not supported; the factored second moment needs whole tensors"
                    .into(),
            ));
        }
        let configs = std::iter::once(spec.clone())
            .chain(groups.iter().map(|g| g.apply(spec)))
            .map(|s| parse(&s))
            .collect::<Result<Vec<_>>>()?;
        let seg_group = super::assign_groups(&layout, groups, &options)?;
        let moments: Vec<Moment<T>> = layout
            .segments()
            .iter()
            .map(|s| match Factored::new(&s.shape) {
                Some(geometry) => Moment::Factored {
                    geometry,
                    row_var: vec![T::ZERO; geometry.batches * geometry.rows],
                    col_var: vec![T::ZERO; geometry.batches * geometry.cols],
                },
                None => Moment::Full {
                    variance: vec![T::ZERO; s.len],
                },
            })
            .collect();
        let mut scratch = Scratch::default();
        for (m, s) in moments.iter().zip(layout.segments()) {
            let chunks = chunk_count(s.len);
            grow(&mut scratch.chunk_sums, chunks, [0.0; 3]);
            grow(&mut scratch.norm_sums, chunks, [0.0; 1]);
            let mut measured = Measured::default();
            if let Moment::Factored { geometry: g, .. } = m {
                let units = g.units();
                grow(&mut scratch.col_partials, units * g.cols, 0.0);
                grow(&mut scratch.unit_sums, units, [0.0; 3]);
                grow(&mut scratch.row_scale, g.batches, T::ZERO);
                measured.row_sq = vec![0.0; g.batches * g.rows];
                measured.col_sq = vec![0.0; g.batches * g.cols];
            }
            scratch.measured.push(measured);
        }
        Ok(Adafactor {
            layout,
            options,
            configs,
            seg_group,
            moments,
            steps: 0,
            scratch,
        })
    }

    /// ε1 for this group and parameter type.
    fn eps1(cfg: &AdafactorConfig) -> f64 {
        cfg.eps1.unwrap_or(T::EPSILON.to_f64())
    }

    /// Tensor `seg`'s constants at step `t`.
    fn coefs(&self, seg: usize, t: f64) -> (AdafactorConfig, Coefs<T>) {
        let cfg = self.configs[self.seg_group[seg]];
        (cfg, Coefs::new(&cfg, t, Self::eps1(&cfg)))
    }

    /// The first pass over tensor `seg` (step `t`), which reads θ and g and changes nothing:
    /// its sums go to `scratch.measured[seg]`; returns Σ of the raw g².
    fn measure(
        &mut self,
        seg: usize,
        t: f64,
        g: Grad<'_, T>,
        params: &mut dyn ParamAccess<T>,
    ) -> Result<f64> {
        let (_, c) = self.coefs(seg, t);
        let scratch = &mut self.scratch;
        let measured = &mut scratch.measured[seg];
        match &self.moments[seg] {
            Moment::Full { variance } => params.read(seg, &mut |p| {
                measured.sums = vector_sums(&c, p, g, variance, &mut scratch.chunk_sums);
            })?,
            Moment::Factored { geometry, .. } => params.read(seg, &mut |p| {
                measured.sums = factored_sums(
                    geometry,
                    p,
                    g,
                    measured,
                    &mut scratch.col_partials,
                    &mut scratch.unit_sums,
                );
            })?,
        }
        Ok(scratch.measured[seg].sums[2])
    }

    /// The rest of tensor `seg`'s step, after [`Adafactor::measure`] and the check: the new
    /// second moment, then the move.
    fn apply(
        &mut self,
        seg: usize,
        t: f64,
        g: Grad<'_, T>,
        params: &mut dyn ParamAccess<T>,
    ) -> Result<()> {
        let (cfg, c) = self.coefs(seg, t);
        let n = self.layout.segments()[seg].len;
        let scratch = &mut self.scratch;
        let measured = &scratch.measured[seg];
        match &mut self.moments[seg] {
            Moment::Full { variance } => {
                let [theta_sq, update_sq, _] = measured.sums;
                let step = T::from_f64(-step_size(&cfg, t, n, theta_sq, update_sq));
                let v = Shared::new(variance);
                params.update(seg, &mut |p| {
                    crate::pool::for_each_chunk(p, CHUNK, |i, p| {
                        let start = i * CHUNK;
                        // SAFETY: chunks are disjoint; `variance` outlives `for_each_chunk`.
                        let v = unsafe { v.slice(start..start + p.len()) };
                        vector_move(&c, step, p, g.offset(start, p.len()), v);
                    })
                })
            }
            Moment::Factored {
                geometry,
                row_var,
                col_var,
            } => {
                let geo = *geometry;
                let eps1 = Self::eps1(&cfg);
                commit_means(
                    &geo,
                    &c,
                    measured,
                    row_var,
                    col_var,
                    eps1,
                    &mut scratch.row_scale,
                );
                let (row_var, col_var): (&[T], &[T]) = (row_var, col_var);
                let update_sq = factored_update_sq(
                    &geo,
                    &c,
                    g,
                    row_var,
                    col_var,
                    &scratch.row_scale,
                    &mut scratch.unit_sums,
                );
                let theta_sq = measured.sums[0];
                let step = T::from_f64(-step_size(&cfg, t, n, theta_sq, update_sq));
                let row_scale: &[T] = &scratch.row_scale;
                params.update(seg, &mut |p| {
                    let view = Shared::new(p);
                    geo.for_units(|u| {
                        let (b, rows) = geo.unit(u);
                        let cols = &col_var[b * geo.cols..(b + 1) * geo.cols];
                        for r in rows {
                            let off = (b * geo.rows + r) * geo.cols;
                            // SAFETY: units cover disjoint rows; `p` outlives `for_units`.
                            let p = unsafe { view.slice(off..off + geo.cols) };
                            let g = g.offset(off, geo.cols);
                            let rv = row_var[b * geo.rows + r];
                            factored_move(&c, step, p, g, cols, rv, row_scale[b]);
                        }
                    });
                })
            }
        }
    }
}

/// Extends `v` to at least `n` entries.
fn grow<X: Clone>(v: &mut Vec<X>, n: usize, x: X) {
    if v.len() < n {
        v.resize(n, x);
    }
}

fn parse(spec: &Spec) -> Result<AdafactorConfig> {
    let args = Args::new(spec, 0);
    let cfg = AdafactorConfig::parse(&args)?;
    args.finish()?;
    Ok(cfg)
}

/// `θ ← θ(1 − γλ) + step·U` over a run of one matrix row, with `V̂ = r·cols / scale`.
#[inline(always)]
fn factored_move<T: Real>(
    c: &Coefs<T>,
    step: T,
    p: &mut [T],
    grad: Grad<'_, T>,
    cols: &[T],
    r: T,
    scale: T,
) {
    super::simd::wide_call(
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

/// The vector path's second pass over a chunk: `V ← lerp(V, g², w)` (as the first pass
/// computed it), then `θ ← θ(1 − γλ) + step·U`.
#[inline(always)]
fn vector_move<T: Real>(c: &Coefs<T>, step: T, p: &mut [T], grad: Grad<'_, T>, v: &mut [T]) {
    super::simd::wide_call(
        #[inline(always)]
        || {
            let (n, raw) = (p.len(), grad.raw());
            assert!(raw.len() == n && v.len() == n);
            // `move`: the closure owns the slices, so that their pointers stay in registers.
            super::rule::paired_for_each(n, move |i| {
                // SAFETY: paired_for_each calls with i < n, the length of every slice here.
                unsafe {
                    let g = grad.process(*raw.get_unchecked(i));
                    let vn = c.second_moment(*v.get_unchecked(i), g);
                    *v.get_unchecked_mut(i) = vn;
                    let u = c.update(g, vn);
                    let p = p.get_unchecked_mut(i);
                    *p = *p * c.decay;
                    *p = *p + step * u;
                }
            })
        },
    )
}

/// The vector path's first pass: (Σθ², ΣU², Σraw g²) with U from the new V, which it does
/// not store.
fn vector_sums<T: Real>(
    c: &Coefs<T>,
    p: &[T],
    g: Grad<'_, T>,
    v: &[T],
    partials: &mut [[f64; 3]],
) -> [f64; 3] {
    sum_chunks(p.len(), partials, |range| {
        let (p, v) = (&p[range.clone()], &v[range.clone()]);
        let g = g.offset(range.start, range.len());
        super::simd::wide_call(
            #[inline(always)]
            || {
                super::rule::paired_lane_sums(p.len(), |i| {
                    // SAFETY: called with i < p.len(), the length of every slice here.
                    let (pi, vi, raw) = unsafe {
                        (
                            *p.get_unchecked(i),
                            *v.get_unchecked(i),
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

/// The factored path's first pass: each row's and column's Σg² (into `measured`), and
/// (Σθ², 0, Σraw g²).
fn factored_sums<T: Real>(
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
                let off = (b * geo.rows + r) * cols;
                let (p, g) = (&p[off..off + cols], g.offset(off, cols));
                let mut col_sums = &mut col_sums[..];
                let [row, pp, rr] = super::simd::wide_call(
                    #[inline(always)]
                    || {
                        // `move`: the closure owns the column sums, so that their pointer
                        // stays in a register.
                        super::rule::lane_sums(cols, move |j| {
                            // SAFETY: lane_sums calls with j < cols, the length of `p` and g.
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

/// The factored path's new row and column means from the first pass's sums, and the clamped
/// mean of the rows per matrix (into `row_scale`).
fn commit_means<T: Real>(
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

/// The factored path's second pass: ΣU².
fn factored_update_sq<T: Real>(
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
        let cols = &col_var[b * geo.cols..(b + 1) * geo.cols];
        let scale = row_scale[b];
        let mut total = 0.0;
        for r in rows {
            let rv = row_var[b * geo.rows + r];
            let g = g.offset((b * geo.rows + r) * geo.cols, geo.cols);
            let [sq] = super::simd::wide_call(
                #[inline(always)]
                || {
                    super::rule::lane_sums(geo.cols, |j| {
                        // SAFETY: lane_sums calls with j < geo.cols, the length of `cols`.
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

impl<T: Real> Optimizer<T> for Adafactor<T> {
    fn name(&self) -> &'static str {
        "adafactor"
    }
    fn spec(&self) -> Spec {
        self.configs[0].to_spec()
    }
    fn group_specs(&self) -> Vec<Spec> {
        self.configs
            .iter()
            .copied()
            .map(AdafactorConfig::to_spec)
            .collect()
    }
    fn layout(&self) -> &Layout {
        &self.layout
    }
    fn options(&self) -> &Options {
        &self.options
    }
    fn steps(&self) -> u64 {
        self.steps
    }
    fn num_groups(&self) -> usize {
        self.configs.len()
    }
    fn lr(&self, group: usize) -> f64 {
        self.configs[group].lr
    }
    fn set_lr(&mut self, group: usize, lr: f64) {
        self.configs[group].lr = lr;
    }
    fn momentum(&self, _group: usize) -> Option<f64> {
        None
    }
    fn set_momentum(&mut self, _group: usize, _m: f64) -> Result<()> {
        Err(Error::Layout(
            "optimizer 'adafactor' has no momentum or beta1 to set".into(),
        ))
    }

    fn step_with(
        &mut self,
        grads: &[&[T]],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        check_shapes("adafactor", &self.layout, grads, params.count())?;
        let step = self.steps + 1;
        let t = step as f64;
        // Norm clipping needs the norm before the first pass; otherwise the first pass
        // measures it, and the check runs before anything changes.
        let clipped = match self.options.clip_norm {
            Some(_) => {
                let squared = squared_norm(grads, &mut self.scratch.norm_sums);
                match verdict(&self.layout, &self.options, step, grads, squared)? {
                    Some(c) => Some(c),
                    None => return Ok(StepOutcome::SKIPPED),
                }
            }
            None => None,
        };
        let reading = clipped.unwrap_or_else(|| Checked::unclipped(&self.options));
        let mut squared = 0.0;
        for (seg, raw) in grads.iter().enumerate() {
            squared += self.measure(seg, t, reading.grad(raw), params)?;
        }
        let checked: Checked<T> = match clipped {
            Some(c) => c,
            None => match verdict(&self.layout, &self.options, step, grads, squared)? {
                Some(c) => c,
                None => return Ok(StepOutcome::SKIPPED),
            },
        };
        for (seg, raw) in grads.iter().enumerate() {
            self.apply(seg, t, checked.grad(raw), params)?;
        }
        self.steps += 1;
        Ok(checked.outcome())
    }

    /// Factored: θ and g read for the means, g for RMS(U), θ read and written and g read for
    /// the move (6). Vectors: θ, g, V read and V written, then θ, g, V read and θ written (8).
    /// The larger count when the layout has both.
    fn bytes_per_param(&self) -> f64 {
        let arrays = if self
            .moments
            .iter()
            .any(|m| matches!(m, Moment::Full { .. }))
        {
            8
        } else {
            6
        };
        (arrays * std::mem::size_of::<T>()) as f64
    }

    fn scalar_state(&self) -> Vec<(String, Vec<(&'static str, f64)>)> {
        self.layout
            .segments()
            .iter()
            .map(|s| (s.name.clone(), vec![("step", self.steps as f64)]))
            .collect()
    }

    fn state_dict(&self) -> StateDict<T> {
        let mut tensors = BTreeMap::new();
        let mut scalars = BTreeMap::new();
        for (s, m) in self.layout.segments().iter().zip(&self.moments) {
            for (key, shape, values) in saved_buffers(&s.shape, m) {
                tensors.insert(format!("{}/{key}", s.name), (shape, values.to_vec()));
            }
            scalars.insert(
                s.name.clone(),
                BTreeMap::from([("step".to_string(), self.steps as f64)]),
            );
        }
        StateDict {
            meta: StateMeta {
                version: STATE_VERSION,
                optimizer: "adafactor".into(),
                groups: self.group_specs().iter().map(|s| s.to_string()).collect(),
                step: self.steps,
                scalars,
                extra: BTreeMap::new(),
            },
            tensors,
        }
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        super::state::check_optimizer(&state.meta.optimizer, "adafactor")?;
        let configs = load_configs(&state.meta.groups, self.configs.len())?;
        let mut moments = self.moments.clone();
        let mut own = BTreeSet::new();
        for (s, m) in self.layout.segments().iter().zip(moments.iter_mut()) {
            let buffers: Vec<(&str, Vec<usize>)> = saved_buffers(&s.shape, m)
                .into_iter()
                .map(|(k, shape, _)| (k, shape))
                .collect();
            let mut targets: Vec<&mut Vec<T>> = match m {
                Moment::Factored {
                    row_var, col_var, ..
                } => vec![row_var, col_var],
                Moment::Full { variance } => vec![variance],
            };
            for ((key, shape), target) in buffers.iter().zip(targets.iter_mut()) {
                let key = format!("{}/{key}", s.name);
                target.copy_from_slice(saved_tensor(state, &key, shape)?);
                own.insert(key);
            }
        }
        refuse_foreign(state, &own)?;
        self.moments = moments;
        self.configs = configs;
        self.steps = state.meta.step;
        Ok(())
    }
}

/// A tensor's saved buffers: name, shape as torch keeps it (`[..., n, 1]` and `[..., 1, m]`
/// for the factored means) and values.
fn saved_buffers<'a, T>(
    shape: &[usize],
    m: &'a Moment<T>,
) -> Vec<(&'static str, Vec<usize>, &'a [T])> {
    match m {
        Moment::Factored {
            row_var, col_var, ..
        } => {
            let d = shape.len();
            let mut rows = shape.to_vec();
            rows[d - 1] = 1;
            let mut cols = shape.to_vec();
            cols[d - 2] = 1;
            vec![(ROW, rows, row_var), (COL, cols, col_var)]
        }
        Moment::Full { variance } => vec![(VARIANCE, shape.to_vec(), variance)],
    }
}

/// The groups' hyperparameters as they stood when a state was saved.
fn load_configs(groups: &[String], expected: usize) -> Result<Vec<AdafactorConfig>> {
    if groups.len() != expected {
        return Err(state_error(
            None,
            format!(
                "has {} parameter groups, the optimizer has {expected}",
                groups.len()
            ),
        ));
    }
    groups
        .iter()
        .map(|text| parse(&crate::spec::parse(text)?))
        .collect()
}

impl<T: Real> std::fmt::Debug for Adafactor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Optimizer::spec(self))
    }
}
