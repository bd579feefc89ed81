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
//!
//! Sharded (ZeRO-1), a rank holds pieces of tensors: V is cut with them, the factored means
//! are kept whole by every rank that holds a piece of their tensor (listed in the state's
//! [`StateMeta::whole`]), and the sums over whole tensors are added up over the ranks
//! (`adafactor/exchange.rs`), so that a sharded run takes the same steps as one process.

mod exchange;
mod kernels;

use super::bf16::{from_bf16, to_bf16_nearest};
use super::hyper::{GroupHypers, Hyper};
use super::rule::Grad;
use super::standalone::{check_shapes, chunk_count, squared_norm, verdict, Checked};
use super::state::{
    refuse_foreign, saved_tensor, state_error, StateDict, StateMeta, STATE_VERSION,
};
use super::{Layout, Optimizer, Options, ParamAccess, ParamGroup, StepOutcome};
use crate::spec::{Args, Spec};
use crate::{Real, Result};
use exchange::Exchange;
use kernels::{
    commit_means, compact_vector_move, factored_move, factored_sums, factored_update_sq, step_size,
    vector_move, vector_sums, Coefs, Factored, Measured, Moment,
};
use std::collections::{BTreeMap, BTreeSet};

mod config;
mod saved;

use config::parse;
pub use config::AdafactorConfig;

/// Scratch sized at construction, so that steps do not allocate.
#[derive(Default)]
struct Scratch {
    /// Per unit of the largest factored tensor: column sums of g², and (Σθ², ΣU², Σraw g²).
    col_partials: Vec<f64>,
    unit_sums: Vec<[f64; 3]>,
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
    /// Each group's learning rate as it stands.
    hypers: GroupHypers,
    seg_group: Vec<usize>,
    moments: Vec<Moment<T>>,
    /// Per tensor: the whole tensor's shape (sharded, the layout holds flat pieces).
    shapes: Vec<Vec<usize>>,
    steps: u64,
    scratch: Scratch,
    /// Sharded: the whole-tensor sums every rank adds up.
    exchange: Option<Exchange>,
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
        let (configs, hypers): (Vec<_>, Vec<_>) = std::iter::once(spec.clone())
            .chain(groups.iter().map(|g| g.apply(spec)))
            .map(|s| parse(&s))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        if configs
            .iter()
            .any(|c| c.bf16_state != configs[0].bf16_state)
        {
            return Err(Args::new(spec, 0).invalid(
                "state_dtype",
                "is set for the whole optimizer, not per parameter group",
            ));
        }
        let bf16 = configs[0].bf16_state;
        let seg_group = super::assign_groups(&layout, groups, &options)?;
        // Each local tensor's whole shape, and which of its elements are held here.
        let (shapes, pieces): (Vec<Vec<usize>>, Vec<std::ops::Range<usize>>) =
            (0..layout.segments().len())
                .map(|i| {
                    let s = &layout.segments()[i];
                    match &options.distributed {
                        Some(d) => {
                            let (t, within) = d.tensor_of(&layout, i);
                            (d.full.segments()[t].shape.clone(), within..within + s.len)
                        }
                        None => (s.shape.clone(), 0..s.len),
                    }
                })
                .unzip();
        // Where each tensor's held elements start in the model's flat space (the stochastic
        // rounding of bf16 state draws its bits by that index, as the engine does).
        let first = |i: usize| {
            let start = options.distributed.as_ref().map_or(0, |d| d.start);
            (start + layout.segments()[i].offset) as u64
        };
        let moments: Vec<Moment<T>> = shapes
            .iter()
            .zip(&pieces)
            .enumerate()
            .map(
                |(i, (shape, piece))| match Factored::new(shape, piece.clone()) {
                    Some(geometry) => Moment::Factored {
                        geometry,
                        row_var: vec![T::ZERO; geometry.batches * geometry.rows],
                        col_var: vec![T::ZERO; geometry.batches * geometry.cols],
                        row_scale: vec![T::ZERO; geometry.batches],
                    },
                    None if bf16 => Moment::Compact {
                        bits: vec![0; piece.len()],
                        first: first(i),
                    },
                    None => Moment::Full {
                        variance: vec![T::ZERO; piece.len()],
                    },
                },
            )
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
                measured.row_sq = vec![0.0; g.batches * g.rows];
                measured.col_sq = vec![0.0; g.batches * g.cols];
            }
            scratch.measured.push(measured);
        }
        let exchange = options
            .distributed
            .as_ref()
            .map(|d| Exchange::new(d, &layout));
        Ok(Adafactor {
            layout,
            options,
            configs,
            hypers: GroupHypers::new(hypers),
            seg_group,
            moments,
            shapes,
            steps: 0,
            scratch,
            exchange,
        })
    }

    /// ε1 for this group and parameter type.
    fn eps1(cfg: &AdafactorConfig) -> f64 {
        cfg.eps1.unwrap_or(T::EPSILON.to_f64())
    }

    /// Tensor `seg`'s constants at step `t`.
    fn coefs(&self, seg: usize, t: f64) -> (AdafactorConfig, f64, Coefs<T>) {
        let g = self.seg_group[seg];
        let (cfg, lr) = (self.configs[g], self.hypers.group(g).lr);
        (cfg, lr, Coefs::new(&cfg, lr, t, Self::eps1(&cfg)))
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
        let (_, _, c) = self.coefs(seg, t);
        let scratch = &mut self.scratch;
        let measured = &mut scratch.measured[seg];
        match &self.moments[seg] {
            Moment::Full { variance } => params.read(seg, &mut |p| {
                measured.sums = vector_sums(&c, p, g, variance, |v| v, &mut scratch.chunk_sums);
            })?,
            Moment::Compact { bits, .. } => params.read(seg, &mut |p| {
                let load = |b: u16| T::from_f32(from_bf16(b));
                measured.sums = vector_sums(&c, p, g, bits, load, &mut scratch.chunk_sums);
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

    /// After the check (and, sharded, the whole tensors' sums): a factored tensor's new
    /// means, and ΣU² of its held elements (into `measured.sums[1]`).
    fn commit(&mut self, seg: usize, t: f64, g: Grad<'_, T>) {
        let (cfg, _, c) = self.coefs(seg, t);
        let scratch = &mut self.scratch;
        let measured = &mut scratch.measured[seg];
        if let Moment::Factored {
            geometry,
            row_var,
            col_var,
            row_scale,
        } = &mut self.moments[seg]
        {
            let eps1 = Self::eps1(&cfg);
            commit_means(geometry, &c, measured, row_var, col_var, eps1, row_scale);
            measured.sums[1] = factored_update_sq(
                geometry,
                &c,
                g,
                row_var,
                col_var,
                row_scale,
                &mut scratch.unit_sums,
            );
        }
    }

    /// The move of tensor `seg`'s held elements (a vector's V is stored on the way).
    fn apply(
        &mut self,
        seg: usize,
        t: f64,
        g: Grad<'_, T>,
        params: &mut dyn ParamAccess<T>,
    ) -> Result<()> {
        let (cfg, lr, c) = self.coefs(seg, t);
        let n: usize = self.shapes[seg].iter().product();
        let [theta_sq, update_sq, _] = self.scratch.measured[seg].sums;
        let step = T::from_f64(-step_size(&cfg, lr, t, n, theta_sq, update_sq));
        match &mut self.moments[seg] {
            Moment::Full { variance } => {
                params.update(seg, &mut |p| vector_move(&c, step, p, g, variance))
            }
            Moment::Compact { bits, first } => params.update(seg, &mut |p| {
                compact_vector_move(&c, step, p, g, bits, *first, self.steps + 1)
            }),
            Moment::Factored {
                geometry,
                row_var,
                col_var,
                row_scale,
            } => params.update(seg, &mut |p| {
                factored_move(geometry, &c, step, p, g, row_var, col_var, row_scale)
            }),
        }
    }
}

/// Extends `v` to at least `n` entries.
fn grow<X: Clone>(v: &mut Vec<X>, n: usize, x: X) {
    if v.len() < n {
        v.resize(n, x);
    }
}

impl<T: Real> Optimizer<T> for Adafactor<T> {
    fn name(&self) -> &'static str {
        "adafactor"
    }
    fn spec(&self) -> Spec {
        self.configs[0].to_spec(self.hypers.group(0))
    }
    fn group_specs(&self) -> Vec<Spec> {
        self.configs
            .iter()
            .zip(self.hypers.values())
            .map(|(c, h)| c.to_spec(h))
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
    fn hypers(&self) -> &[Hyper] {
        self.hypers.values()
    }
    fn hypers_mut(&mut self) -> &mut [Hyper] {
        self.hypers.values_mut()
    }

    fn step_with(
        &mut self,
        grads: &[&[T]],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        check_shapes("adafactor", &self.layout, grads, params.count())?;
        self.hypers.check("adafactor")?;
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
        if let Some(x) = &mut self.exchange {
            x.combine_measured(&mut self.scratch.measured);
        }
        for (seg, raw) in grads.iter().enumerate() {
            self.commit(seg, t, checked.grad(raw));
        }
        if let Some(x) = &mut self.exchange {
            x.combine_updates(&mut self.scratch.measured);
        }
        for (seg, raw) in grads.iter().enumerate() {
            self.apply(seg, t, checked.grad(raw), params)?;
        }
        self.steps += 1;
        Ok(checked.outcome())
    }

    /// Factored: θ and g read for the means, g for RMS(U), θ read and written and g read for
    /// the move (6 arrays). Vectors: θ, g, V read, then θ, g, V read and θ, V written (5
    /// arrays and V three times, in bf16 with `state_dtype=bf16`). The vectors' count when the
    /// layout has both.
    fn bytes_per_param(&self) -> f64 {
        let t = std::mem::size_of::<T>() as f64;
        let vector = |v: f64| 5.0 * t + 3.0 * v;
        match self
            .moments
            .iter()
            .find(|m| !matches!(m, Moment::Factored { .. }))
        {
            Some(Moment::Compact { .. }) => vector(2.0),
            Some(_) => vector(t),
            None => 6.0 * t,
        }
    }

    fn state_bytes(&self) -> usize {
        let t = std::mem::size_of::<T>();
        self.moments
            .iter()
            .map(|m| match m {
                Moment::Factored {
                    row_var, col_var, ..
                } => (row_var.len() + col_var.len()) * t,
                Moment::Full { variance } => variance.len() * t,
                Moment::Compact { bits, .. } => bits.len() * 2,
            })
            .sum()
    }

    fn scalar_state(&self) -> Vec<(String, Vec<(&'static str, f64)>)> {
        self.layout
            .segments()
            .iter()
            .map(|s| (s.name.clone(), vec![("step", self.steps as f64)]))
            .collect()
    }

    fn state_dict(&self) -> StateDict<T> {
        self.saved_state()
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        self.restore_state(state)
    }
}

impl<T: Real> std::fmt::Debug for Adafactor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Optimizer::spec(self))
    }
}
