//! Prodigy (Mishchenko & Defazio 2024, arXiv:2306.06101), as `prodigyopt` 1.1.2's `Prodigy`:
//! Adam whose step is scaled by `d`, an estimate of the distance to the solution that grows
//! from `d0` as the run goes ("learning-rate free"; `lr` stays 1 unless scheduled).
//!
//! ```text
//! dlr = d·γ·(√(1 − β2^(k+1))/(1 − β1^(k+1)) with use_bias_correction, else 1)
//! g ← g + λθ                                         (decouple=false)
//! m ← β1 m + d(1 − β1) g;   v ← β2 v + d²(1 − β2) g²
//! s ← β3 s + (d/d0)·dlr·g                           ((d/d0)·d·g with safeguard_warmup)
//! r ← β3 r + Σ (d/d0)·dlr·⟨g, θ0 − θ⟩;   d̂ = d_coef · r / Σ‖s‖₁
//! d ← min(max(d_max, d̂), d·growth_rate)             (d_max ← max(d_max, d̂); d ≥ d̂ on the first move)
//! θ ← θ − λ·dlr·θ                                    (decouple=true)
//! θ ← θ − dlr·m/(√v + d·ε)                           (β1 = 0: dlr·d·g/(√v + d·ε))
//! ```
//! Sums run over every tensor (`d` is one number for the whole optimizer; sharded, over every
//! rank's pieces too); the denominator
//! takes the new `d`, the step the old `dlr`; θ0 is the point of the first step. A step whose
//! Σ‖s‖₁ is 0 moves nothing and leaves `d` and k (but not the moments) as they were, as
//! prodigyopt does. `betas`, `beta3`, `d0`, `d_coef`, `growth_rate`, `decouple` and
//! `use_bias_correction` are the optimizer's (prodigyopt reads them from its first group);
//! parameter groups may set `weight_decay`, `eps`, `safeguard_warmup` and `lr` (the base lr
//! or 0). [`Optimizer::estimates`] reports `d`.

use super::hyper::{GroupHypers, Hyper};
use super::plan::{Shared, CHUNK};
use super::rule::{Buffer, Grad};
use super::standalone::{check_gradients, chunk_count, sum_chunks, Checked};
use super::state::{refuse_foreign, saved_extra, saved_tensor};
use super::state::{state_error, StateDict, StateMeta, STATE_VERSION};
use super::{Layout, Optimizer, Options, ParamAccess, ParamGroup, StepOutcome};
use crate::spec::{Args, Spec};
use crate::{Error, Real, Result};
use std::collections::{BTreeMap, BTreeSet};

mod config;
mod saved;

pub use config::ProdigyConfig;
use config::{parse, GROUP_KEYS};

/// The optimizer-wide estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Estimate {
    d: f64,
    d_max: f64,
    d_numerator: f64,
    /// Moves taken (prodigyopt's `k`).
    k: u64,
    /// Whether θ0 has been taken (at the first step).
    started: bool,
}

/// The element buffers of all tensors, back to back in layout order.
struct Buffers<T> {
    s: Vec<T>,
    p0: Vec<T>,
    exp_avg: Vec<T>,
    exp_avg_sq: Vec<T>,
}

/// The constants of one tensor's first pass.
#[derive(Clone, Copy)]
struct Accumulate<T> {
    l2: T,
    b1: T,
    m_weight: T,
    b2: T,
    v_weight: T,
    b3: T,
    s_weight: T,
    /// Whether the group takes part (its lr is not 0).
    active: bool,
    /// Copy θ into θ0 first.
    start: bool,
}

/// The constants of one tensor's move.
#[derive(Clone, Copy)]
struct Move<T> {
    l2: T,
    decay: T,
    step: T,
    d_eps: T,
    /// β1 = 0: the step is along g, scaled by d.
    plain: bool,
}

/// Prodigy over the tensors of a layout.
pub struct Prodigy<T: Real> {
    layout: Layout,
    options: Options,
    configs: Vec<ProdigyConfig>,
    /// Each group's learning rate and β1 as they stand (β1 read from group 0).
    hypers: GroupHypers,
    seg_group: Vec<usize>,
    estimate: Estimate,
    buffers: Buffers<T>,
    /// Per chunk of the largest tensor: (⟨g, θ0 − θ⟩, Σ|s|).
    chunk_sums: Vec<[f64; 2]>,
    /// Per chunk of the largest tensor: Σg² (the gradients' check).
    norm_sums: Vec<[f64; 1]>,
}

const S: &str = "s";
const P0: &str = "p0";
const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";

impl<T: Real> Prodigy<T> {
    /// Parses `prodigy(lr, betas, beta3, eps, weight_decay, decouple, use_bias_correction,
    /// safeguard_warmup, d0, d_coef, growth_rate)` and its groups' overrides.
    pub fn from_spec(
        spec: &Spec,
        layout: Layout,
        groups: &[ParamGroup],
        options: Options,
    ) -> Result<Self> {
        let (base, base_hyper) = parse(spec)?;
        if base_hyper.lr == 0.0 {
            return Err(Args::new(spec, 0).invalid(
                "lr",
                "must be positive (it multiplies the estimated step d), got 0",
            ));
        }
        let (mut configs, mut hypers) = (vec![base], vec![base_hyper]);
        for group in groups {
            if let Some((key, _)) = group
                .overrides
                .iter()
                .find(|(k, _)| !GROUP_KEYS.contains(&k.as_str()))
            {
                return Err(Error::InvalidArgument {
                    spec: spec.to_string(),
                    key: key.clone(),
                    message: format!(
                        "is set for the whole optimizer (prodigy estimates one d); a parameter group may set {}",
                        GROUP_KEYS.join(", ")
                    ),
                });
            }
            let (cfg, hyper) = parse(&group.apply(spec))?;
            if hyper.lr != 0.0 && hyper.lr != base_hyper.lr {
                return Err(Error::InvalidArgument {
                    spec: spec.to_string(),
                    key: "lr".into(),
                    message: format!(
                        "of a parameter group must be the base lr ({}) or 0 (frozen), got {}",
                        base_hyper.lr, hyper.lr
                    ),
                });
            }
            configs.push(cfg);
            hypers.push(hyper);
        }
        let seg_group = super::assign_groups(&layout, groups, &options)?;
        let n = layout.total();
        let largest = layout.segments().iter().map(|s| s.len).max().unwrap_or(0);
        Ok(Prodigy {
            estimate: Estimate {
                d: base.d0,
                d_max: base.d0,
                d_numerator: 0.0,
                k: 0,
                started: false,
            },
            buffers: Buffers {
                s: vec![T::ZERO; n],
                p0: vec![T::ZERO; n],
                exp_avg: vec![T::ZERO; n],
                exp_avg_sq: vec![T::ZERO; n],
            },
            chunk_sums: vec![[0.0; 2]; chunk_count(largest)],
            norm_sums: vec![[0.0; 1]; chunk_count(largest)],
            layout,
            options,
            configs,
            hypers: GroupHypers::new(hypers),
            seg_group,
        })
    }

    /// prodigyopt's `dlr` for the current estimate.
    fn dlr(&self) -> f64 {
        let cfg = &self.configs[0];
        let (b1, b2) = (self.beta1(), cfg.beta2);
        let k = self.estimate.k as f64;
        let correction = if cfg.use_bias_correction {
            (1.0 - b2.powf(k + 1.0)).sqrt() / (1.0 - b1.powf(k + 1.0))
        } else {
            1.0
        };
        self.estimate.d * self.lr_max() * correction
    }

    /// The largest group lr (prodigyopt's `lr`).
    fn lr_max(&self) -> f64 {
        self.hypers
            .values()
            .iter()
            .map(|h| h.lr)
            .fold(0.0, f64::max)
    }

    /// β1, optimizer-wide (prodigyopt reads it from its first group).
    fn beta1(&self) -> f64 {
        self.hypers.group(0).momentum_or_zero()
    }

    /// The first pass over every tensor: moments, s, and the sums (Σ⟨g, θ0 − θ⟩ weighted,
    /// Σ‖s‖₁) that update d.
    fn accumulate(
        &mut self,
        checked: &Checked<T>,
        grads: &[&[T]],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<(f64, f64)> {
        let base = self.configs[0];
        let (d, d0) = (self.estimate.d, base.d0);
        let dlr = self.dlr();
        let (b1, b2) = (self.beta1(), base.beta2);
        let (mut delta, mut denom) = (0.0, 0.0);
        for (seg, raw) in grads.iter().enumerate() {
            let group = self.seg_group[seg];
            let cfg = self.configs[group];
            let a = Accumulate {
                l2: T::from_f64(if base.decouple { 0.0 } else { cfg.weight_decay }),
                b1: T::from_f64(b1),
                m_weight: T::from_f64(d * (1.0 - b1)),
                b2: T::from_f64(b2),
                v_weight: T::from_f64(d * d * (1.0 - b2)),
                b3: T::from_f64(base.beta3()),
                s_weight: T::from_f64(if cfg.safeguard_warmup {
                    (d / d0) * d
                } else {
                    (d / d0) * dlr
                }),
                active: self.hypers.group(group).lr > 0.0,
                start: !self.estimate.started,
            };
            let s = &self.layout.segments()[seg];
            let range = s.offset..s.offset + s.len;
            let g = checked.grad(raw);
            let b = &mut self.buffers;
            let views = [
                Shared::new(&mut b.s[range.clone()]),
                Shared::new(&mut b.p0[range.clone()]),
                Shared::new(&mut b.exp_avg[range.clone()]),
                Shared::new(&mut b.exp_avg_sq[range]),
            ];
            let partials = &mut self.chunk_sums;
            let mut sums = [0.0; 2];
            params.read(seg, &mut |p| {
                sums = sum_chunks(p.len(), partials, |r| {
                    // SAFETY: chunks are disjoint; the buffers outlive `sum_chunks`.
                    let [s, p0, m, v] = views.each_ref().map(|v| unsafe { v.slice(r.clone()) });
                    accumulate_chunk(&a, &p[r.clone()], g.offset(r.start, r.len()), s, p0, m, v)
                });
            })?;
            if a.active {
                delta += (d / d0) * dlr * sums[0];
                denom += sums[1];
            }
        }
        self.estimate.started = true;
        Ok((delta, denom))
    }

    /// The second pass: every tensor moves with the new d and the old dlr.
    fn apply(
        &mut self,
        checked: &Checked<T>,
        grads: &[&[T]],
        params: &mut dyn ParamAccess<T>,
        dlr: f64,
    ) -> Result<()> {
        let base = self.configs[0];
        let d = self.estimate.d;
        for (seg, raw) in grads.iter().enumerate() {
            let cfg = self.configs[self.seg_group[seg]];
            let decay = if base.decouple { cfg.weight_decay } else { 0.0 };
            let plain = self.beta1() == 0.0;
            let mv = Move {
                l2: T::from_f64(if base.decouple { 0.0 } else { cfg.weight_decay }),
                decay: T::from_f64(-decay * dlr),
                step: T::from_f64(if plain { -dlr * d } else { -dlr }),
                d_eps: T::from_f64(d * cfg.eps),
                plain,
            };
            let s = &self.layout.segments()[seg];
            let g = checked.grad(raw);
            let m = &self.buffers.exp_avg[s.offset..s.offset + s.len];
            let v = &self.buffers.exp_avg_sq[s.offset..s.offset + s.len];
            params.update(seg, &mut |p| {
                crate::pool::for_each_chunk(p, CHUNK, |i, p| {
                    let start = i * CHUNK;
                    let end = start + p.len();
                    move_chunk(
                        &mv,
                        p,
                        g.offset(start, p.len()),
                        &m[start..end],
                        &v[start..end],
                    );
                })
            })?;
        }
        Ok(())
    }
}

/// The first pass over one chunk; returns (⟨g, θ0 − θ⟩, Σ|s| after the update).
#[allow(clippy::too_many_arguments)]
fn accumulate_chunk<T: Real>(
    a: &Accumulate<T>,
    p: &[T],
    g: Grad<'_, T>,
    mut s: &mut [T],
    p0: &mut [T],
    mut m: &mut [T],
    mut v: &mut [T],
) -> [f64; 2] {
    if a.start {
        p0.copy_from_slice(p);
    }
    if !a.active {
        return [0.0; 2];
    }
    super::simd::wide_call(
        #[inline(always)]
        || {
            // `move`: the closure owns the buffers, so their pointers stay in registers.
            super::rule::lane_sums(p.len(), move |i| {
                // SAFETY: lane_sums calls with i < p.len(), the length of every buffer here.
                let pi = unsafe { *p.get_unchecked(i) };
                let gi = g.at(i) + a.l2 * pi;
                let dot = gi.to_f64() * (p0.get(i) - pi).to_f64();
                m.set(i, m.get(i) * a.b1 + a.m_weight * gi);
                v.set(i, v.get(i) * a.b2 + a.v_weight * (gi * gi));
                let si = s.get(i) * a.b3 + a.s_weight * gi;
                s.set(i, si);
                [dot, si.abs().to_f64()]
            })
        },
    )
}

/// The move of one chunk.
#[inline(always)]
fn move_chunk<T: Real>(c: &Move<T>, p: &mut [T], g: Grad<'_, T>, m: &[T], v: &[T]) {
    super::simd::wide_call(
        #[inline(always)]
        || {
            for (((p, raw), m), v) in p.iter_mut().zip(g.raw()).zip(m).zip(v) {
                let denom = v.sqrt() + c.d_eps;
                *p = *p + c.decay * *p;
                let direction = if c.plain {
                    g.process(*raw) + c.l2 * *p
                } else {
                    *m
                };
                *p = *p + c.step * (direction / denom);
            }
        },
    )
}

const D: &str = "prodigy_d";
const D_MAX: &str = "prodigy_d_max";
const D_NUMERATOR: &str = "prodigy_d_numerator";
const K: &str = "prodigy_k";
const STARTED: &str = "prodigy_started";

impl<T: Real> Optimizer<T> for Prodigy<T> {
    fn name(&self) -> &'static str {
        "prodigy"
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
        self.estimate.k
    }
    fn hypers(&self) -> &[Hyper] {
        self.hypers.values()
    }
    /// β1 is read from group 0 (prodigyopt reads it from its first group).
    fn hypers_mut(&mut self) -> &mut [Hyper] {
        self.hypers.values_mut()
    }

    fn step_with(
        &mut self,
        grads: &[&[T]],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        self.hypers.check("prodigy")?;
        let checked: Checked<T> = match check_gradients(
            "prodigy",
            &self.layout,
            &self.options,
            self.estimate.k + 1,
            grads,
            params.count(),
            &mut self.norm_sums,
        )? {
            Some(c) => c,
            None => return Ok(StepOutcome::SKIPPED),
        };
        let dlr = self.dlr();
        let (mut delta, mut denom) = self.accumulate(&checked, grads, params)?;
        if let Some(dist) = &self.options.distributed {
            // d is one number for the whole model: its sums run over every rank's pieces.
            let mut sums = [delta, denom];
            dist.collective.all_sum(&mut sums);
            [delta, denom] = sums;
        }
        if denom == 0.0 {
            return Ok(checked.outcome());
        }
        let base = self.configs[0];
        let e = &mut self.estimate;
        let numerator = e.d_numerator * base.beta3() + delta;
        let d_hat = base.d_coef * numerator / denom;
        if e.d == base.d0 {
            e.d = e.d.max(d_hat);
        }
        e.d_max = e.d_max.max(d_hat);
        e.d = e.d_max.min(e.d * base.growth_rate);
        e.d_numerator = numerator;
        self.apply(&checked, grads, params, dlr)?;
        self.estimate.k += 1;
        Ok(checked.outcome())
    }

    fn estimates(&self) -> Vec<(&'static str, f64)> {
        vec![("d", self.estimate.d)]
    }

    /// First pass: θ, g read, s, m, v read and written (8); move: θ read and written, g, m,
    /// v read (5). θ0 is read in the first pass (1).
    fn bytes_per_param(&self) -> f64 {
        (14 * std::mem::size_of::<T>()) as f64
    }

    fn scalar_state(&self) -> Vec<(String, Vec<(&'static str, f64)>)> {
        self.layout
            .segments()
            .iter()
            .map(|s| (s.name.clone(), vec![("step", self.estimate.k as f64)]))
            .collect()
    }

    fn state_dict(&self) -> StateDict<T> {
        self.saved_state()
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        self.restore_state(state)
    }
}

impl<T: Real> std::fmt::Debug for Prodigy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Optimizer::spec(self))
    }
}
