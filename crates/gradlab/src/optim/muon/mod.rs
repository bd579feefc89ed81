//! Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks";
//! Liu et al. 2025, arXiv:2502.16982), as `torch.optim.Muon` (torch 2.15): the momentum of
//! each 2-D weight, orthogonalised by a Newton–Schulz iteration.
//!
//! ```text
//! B ← lerp(B, G, 1 − μ)                    (an EMA; torch's code, not its docstring's B = μB + G)
//! U = lerp(G, B, μ)  (nesterov)  or  B
//! X = U / max(‖U‖_F, ε);  ns_steps times:  X ← aX + (bXXᵀ + c(XXᵀ)²)X   (on the wide side)
//! θ ← θ(1 − γλ);   θ ← θ − γ·ratio(A, B)·X
//! ```
//! `ratio` is `adjust_lr_fn`: `original` √max(1, A/B), `match_rms_adamw` 0.2√max(A, B),
//! `spectral_unclamped` √(A/B). As torch does, Newton–Schulz runs in bfloat16 by default
//! (`ns_dtype=bf16`: every product takes bfloat16 inputs, accumulates in float32 and rounds
//! its result once, whatever the parameters' type); `ns_dtype=f32` keeps float32. Tensors
//! that are not 2-D go to the `fallback` optimizer (e.g. `fallback=adamw(lr=3e-4)`), as every
//! reference recommends for biases, norms and embeddings.
//!
//! Sharded (ZeRO-1), each rank keeps the momentum of its pieces of the matrices; the U of
//! every piece is all-gathered in f32 (what Newton–Schulz reads in one process too), each rank
//! orthogonalises the whole matrices it holds pieces of and moves its pieces, and the fallback
//! is sharded over the tensors that are not matrices: the same numbers as one process.

use super::hyper::{GroupHypers, Hyper};
use super::standalone::{check_gradients, Checked};
use super::state::{
    refuse_foreign, saved_extra, saved_tensor, state_error, StateDict, StateMeta, STATE_VERSION,
};
use super::{
    build_from_spec, rule::lerp, Layout, Optimizer, Options, ParamAccess, ParamGroup, StepOutcome,
};
use crate::spec::{Args, Spec};
use crate::{Error, Real, Result};
use std::collections::BTreeMap;

mod config;
mod fallback;
mod newton_schulz;
mod saved;

pub use config::{AdjustLr, MuonConfig};
use newton_schulz::{newton_schulz, Scratch};

/// The tensors of a layout that the fallback optimizer steps, lent through the whole
/// layout's access.
struct Subset<'a, T> {
    inner: &'a mut dyn ParamAccess<T>,
    segs: &'a [usize],
    /// Room for the whole layout's pointers.
    all: &'a mut [(usize, usize)],
}

// SAFETY: the addresses are the whole layout's, from the inner access that upholds the
// contract, restricted to the tensors of this subset.
unsafe impl<T> ParamAccess<T> for Subset<'_, T> {
    fn count(&self) -> usize {
        self.segs.len()
    }
    fn pointers(&mut self, out: &mut [(usize, usize)]) -> bool {
        if !self.inner.pointers(self.all) {
            return false;
        }
        for (o, &seg) in out.iter_mut().zip(self.segs) {
            *o = self.all[seg];
        }
        true
    }
    fn read(&mut self, seg: usize, f: &mut dyn FnMut(&[T])) -> Result<()> {
        self.inner.read(self.segs[seg], f)
    }
    fn update(&mut self, seg: usize, f: &mut dyn FnMut(&mut [T])) -> Result<()> {
        self.inner.update(self.segs[seg], f)
    }
}

/// One matrix Muon steps: a whole 2-D tensor, or (sharded) this rank's piece of one.
#[derive(Debug, Clone, Copy)]
struct Matrix {
    /// The local segment.
    seg: usize,
    rows: usize,
    cols: usize,
    /// Where the whole matrix's U lies in the buffer Newton–Schulz reads (the local flat
    /// space, or the gathered flat space of the whole model), and where the piece starts in it.
    source: usize,
    within: usize,
}

/// A sharded Muon's exchange: every rank's U of its matrix pieces, gathered so that each
/// rank has the whole matrices it holds pieces of ("whole matrices per rank").
struct Gather {
    collective: std::sync::Arc<dyn crate::dist::Collective>,
    /// This rank's piece of the flat space (U at its matrices' elements, 0 elsewhere), and
    /// every rank's.
    send: Vec<f32>,
    all: Vec<f32>,
}

/// Muon over the 2-D tensors of a layout, the fallback over the others.
pub struct Muon<T: Real> {
    layout: Layout,
    options: Options,
    config: MuonConfig,
    /// Muon's group, then the fallback's beyond its base group: their one owner. The
    /// fallback's are handed to it before each of its steps ([`Muon::hand_over`]).
    hypers: GroupHypers,
    /// The learning rates as built of Muon's group and of the fallback's base group: Muon's
    /// lr, scheduled, scales the fallback's base group by the same factor.
    built_lr: (f64, f64),
    /// The matrices (or pieces) updated by Muon.
    matrices: Vec<Matrix>,
    /// Segments of the fallback, with it.
    fallback: Option<(Vec<usize>, Box<dyn Optimizer<T>>)>,
    /// The momentum buffers (flat; the matrices' ranges are used).
    momentum: Vec<T>,
    steps: u64,
    scratch: Scratch,
    /// Per step: U of the local matrices in f32 (the whole of `layout`'s flat space, or
    /// the sharded exchange), O of one whole matrix, and the fallback's processed gradients.
    u: Vec<f32>,
    gather: Option<Gather>,
    o: Vec<f32>,
    fallback_grads: Vec<Vec<T>>,
    /// Per chunk of the longest tensor: Σg² (the gradients' check).
    norm_sums: Vec<[f64; 1]>,
    /// Room for every tensor's address, lent to the fallback.
    pointers: Vec<(usize, usize)>,
}

impl<T: Real> Muon<T> {
    /// Parses `muon(lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps,
    /// adjust_lr_fn, ns_dtype, fallback)`.
    pub fn from_spec(
        spec: &Spec,
        layout: Layout,
        groups: &[ParamGroup],
        options: Options,
    ) -> Result<Self> {
        let args = Args::new(spec, 0);
        let (config, hyper) = MuonConfig::parse(&args)?;
        args.finish()?;
        // Sharded, the layout holds flat pieces: shapes and names come from the whole model.
        let dist = options.distributed.clone();
        let model: &Layout = dist.as_ref().map_or(&layout, |d| &d.full);
        for group in groups {
            for pattern in &group.params {
                if let Some(s) = model
                    .segments()
                    .iter()
                    .find(|s| s.shape.len() == 2 && super::layout::glob_match(pattern, &s.name))
                {
                    return Err(Error::Name {
                        name: pattern.clone(),
                        problem: format!(
                            "muon: parameter group '{pattern}' matches the matrix '{}'; groups \
                             apply to the fallback's tensors (those that are not 2-D), with the \
                             fallback's keys",
                            s.name
                        ),
                    });
                }
            }
        }
        let whole = |i: usize| match &dist {
            Some(d) => {
                let (t, within) = d.tensor_of(&layout, i);
                (&d.full.segments()[t], within)
            }
            None => (&layout.segments()[i], 0),
        };
        let (matrices, others): (Vec<usize>, Vec<usize>) =
            (0..layout.segments().len()).partition(|&i| whole(i).0.shape.len() == 2);
        let matrices: Vec<Matrix> = matrices
            .into_iter()
            .map(|i| {
                let (t, within) = whole(i);
                Matrix {
                    seg: i,
                    rows: t.shape[0],
                    cols: t.shape[1],
                    source: if dist.is_some() {
                        t.offset
                    } else {
                        layout.segments()[i].offset
                    },
                    within,
                }
            })
            .collect();
        let model_others: Vec<&super::Segment> = model
            .segments()
            .iter()
            .filter(|s| s.shape.len() != 2)
            .collect();
        let fallback = match (&config.fallback, model_others.first()) {
            (_, None) if groups.is_empty() => None,
            (_, None) => {
                return Err(Error::Unsupported {
                    what: "muon".into(),
                    reason: "every tensor is a matrix, so there is no fallback for the parameter \
                             groups to apply to"
                        .into(),
                })
            }
            (None, Some(seg)) => {
                return Err(Error::Unsupported {
                    what: "muon".into(),
                    reason: format!(
                        "it orthogonalises 2-D weights; tensor '{}' has shape {:?}: give its \
                         optimizer as fallback, e.g. muon(lr=0.02, fallback=adamw(lr=3e-4))",
                        seg.name, seg.shape
                    ),
                });
            }
            (Some(f), Some(_)) => {
                let sub = Layout::new(others.iter().map(|&i| {
                    let s = &layout.segments()[i];
                    (s.name.clone(), s.shape.clone())
                }))?;
                let fallback_options = Options {
                    clip_norm: None,
                    clip_value: None,
                    nonfinite: options.nonfinite,
                    distributed: dist.as_ref().map(|d| fallback::shard(d, &model_others)),
                };
                let opt = build_from_spec(f, sub, groups, fallback_options)?;
                Some((others, opt))
            }
        };
        let fallback_grads = match &fallback {
            Some((segs, _)) => segs
                .iter()
                .map(|&i| vec![T::ZERO; layout.segments()[i].len])
                .collect(),
            None => Vec::new(),
        };
        let largest = matrices.iter().map(|m| m.rows * m.cols).max().unwrap_or(0);
        let tensors = layout.segments().len();
        let longest = super::standalone::chunk_count(
            layout.segments().iter().map(|s| s.len).max().unwrap_or(0),
        );
        // Every rank exchanges when the model has a matrix, whether or not it holds a piece.
        let gather = match &dist {
            Some(d) if model.segments().iter().any(|s| s.shape.len() == 2) => Some(Gather {
                collective: d.collective.clone(),
                send: vec![0.0; d.shard_len()],
                all: vec![0.0; d.shard_len() * d.collective.size()],
            }),
            _ => None,
        };
        let mut hypers = vec![hyper];
        let mut built_lr = (hyper.lr, 0.0);
        if let Some((_, f)) = &fallback {
            hypers.extend_from_slice(&f.hypers()[1..]);
            built_lr.1 = f.lr(0);
        }
        Ok(Muon {
            hypers: GroupHypers::new(hypers),
            built_lr,
            momentum: vec![T::ZERO; layout.total()],
            u: if gather.is_some() {
                Vec::new()
            } else {
                vec![0.0; layout.total()]
            },
            layout,
            options,
            config,
            matrices,
            fallback,
            steps: 0,
            scratch: Scratch::default(),
            gather,
            o: vec![0.0; largest],
            fallback_grads,
            norm_sums: vec![[0.0]; longest],
            pointers: vec![(0, 0); tensors],
        })
    }

    /// Every matrix's momentum and U, then (sharded: after every rank's U is gathered)
    /// Newton–Schulz on each whole matrix and the move of the local piece.
    fn step_matrices(
        &mut self,
        grads: &[&[T]],
        process: &dyn Fn(T) -> T,
        params: &mut dyn ParamAccess<T>,
    ) -> Result<()> {
        let u = match &mut self.gather {
            Some(g) => &mut g.send,
            None => &mut self.u,
        };
        for m in &self.matrices {
            let s = &self.layout.segments()[m.seg];
            let range = s.offset..s.offset + s.len;
            momentum_step(
                &self.config,
                self.hypers.group(0).momentum_or_zero(),
                &mut self.momentum[range.clone()],
                grads[m.seg],
                process,
                &mut u[range],
            );
        }
        let u: &[f32] = match &mut self.gather {
            Some(g) => {
                g.collective.all_gather(&g.send, &mut g.all);
                &g.all
            }
            None => &self.u,
        };
        for m in &self.matrices {
            let o = &mut self.o[..m.rows * m.cols];
            let whole = &u[m.source..m.source + m.rows * m.cols];
            newton_schulz(whole, m.rows, m.cols, &self.config, &mut self.scratch, o);
            let (cfg, lr) = (&self.config, self.hypers.group(0).lr);
            let decay = T::from_f64(1.0 - lr * cfg.weight_decay);
            let step = T::from_f64(lr * cfg.adjust_lr.ratio(m.rows, m.cols));
            let piece = &o[m.within..];
            params.update(m.seg, &mut |p: &mut [T]| {
                for (p, o) in p.iter_mut().zip(piece) {
                    *p = *p * decay - step * T::from_f32(*o);
                }
            })?;
        }
        Ok(())
    }

    /// The values of the fallback's groups as they stand: its base group's lr scaled as
    /// Muon's is (from the values as built), the others as written.
    fn fallback_hypers(&self) -> Vec<Hyper> {
        let now = self.hypers.values();
        let Some((_, f)) = &self.fallback else {
            return Vec::new();
        };
        let mut out = f.hypers().to_vec();
        let (muon, base) = self.built_lr;
        if muon > 0.0 {
            out[0].lr = base * (now[0].lr / muon);
        }
        out[1..].copy_from_slice(&now[1..]);
        out
    }

    /// Hands the fallback its groups' values before it steps.
    fn hand_over(&mut self) {
        let values = self.fallback_hypers();
        if let Some((_, f)) = &mut self.fallback {
            f.hypers_mut().copy_from_slice(&values);
        }
    }
}

/// Muon's momentum of one matrix (or piece) and the U it hands to Newton–Schulz, in f32.
fn momentum_step<T: Real>(
    cfg: &MuonConfig,
    momentum: f64,
    buf: &mut [T],
    g: &[T],
    process: &dyn Fn(T) -> T,
    u: &mut [f32],
) {
    let (mu, w) = (T::from_f64(momentum), T::from_f64(1.0 - momentum));
    for ((b, u), g) in buf.iter_mut().zip(u.iter_mut()).zip(g) {
        let g = process(*g);
        *b = lerp(*b, g, w, mu);
        let v = if cfg.nesterov { lerp(g, *b, mu, w) } else { *b };
        *u = v.to_f32();
    }
}

const BUFFER: &str = "momentum_buffer";

impl<T: Real> Optimizer<T> for Muon<T> {
    fn name(&self) -> &'static str {
        "muon"
    }
    fn spec(&self) -> Spec {
        self.config.to_spec(self.hypers.group(0))
    }
    fn group_specs(&self) -> Vec<Spec> {
        let mut specs = vec![self.spec()];
        if let Some((_, f)) = &self.fallback {
            let values = self.fallback_hypers();
            specs.extend(
                f.group_specs()
                    .into_iter()
                    .zip(values)
                    .skip(1)
                    .map(|(s, h)| h.written_into(s)),
            );
        }
        specs
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
    /// Muon's group, then the fallback's beyond its base group. Muon's lr also scales the
    /// fallback's base group, so that a schedule shapes both.
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
        self.hypers.check("muon")?;
        let checked: Checked<T> = match check_gradients(
            "muon",
            &self.layout,
            &self.options,
            self.steps + 1,
            grads,
            params.count(),
            &mut self.norm_sums,
        )? {
            Some(c) => c,
            None => return Ok(StepOutcome::SKIPPED),
        };
        let clip = checked.grad(&[]);
        let process = move |x: T| clip.process(x);
        self.step_matrices(grads, &process, params)?;
        self.hand_over();
        if let Some((segs, f)) = &mut self.fallback {
            for (out, &seg) in self.fallback_grads.iter_mut().zip(segs.iter()) {
                for (o, g) in out.iter_mut().zip(grads[seg]) {
                    *o = process(*g);
                }
            }
            let views: Vec<&[T]> = self.fallback_grads.iter().map(Vec::as_slice).collect();
            f.step_with(
                &views,
                &mut Subset {
                    inner: params,
                    segs,
                    all: &mut self.pointers,
                },
            )?;
        }
        self.steps += 1;
        Ok(checked.outcome())
    }

    /// Per matrix: gradient, momentum read and written, parameters read and written (the
    /// Newton–Schulz products are compute, not traffic); the fallback's for its tensors.
    fn bytes_per_param(&self) -> f64 {
        5.0 * std::mem::size_of::<T>() as f64
    }

    fn scalar_state(&self) -> Vec<(String, Vec<(&'static str, f64)>)> {
        let mut out: Vec<(String, Vec<(&'static str, f64)>)> = self
            .matrices
            .iter()
            .map(|m| {
                (
                    self.layout.segments()[m.seg].name.clone(),
                    vec![("step", self.steps as f64)],
                )
            })
            .collect();
        if let Some((_, f)) = &self.fallback {
            out.extend(f.scalar_state());
        }
        out
    }

    fn state_dict(&self) -> StateDict<T> {
        self.saved_state()
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        self.restore_state(state)
    }
}

impl<T: Real> std::fmt::Debug for Muon<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Optimizer::spec(self))
    }
}
