//! Adam (Kingma & Ba 2015), AMSGrad (Reddi et al. 2018) and AdamW (Loshchilov & Hutter
//! 2019: Adam plus decoupled weight decay), as PyTorch's `Adam` / `AdamW`.
//!
//! ```text
//! θ ← θ(1 − γλ)            (decoupled: adamw, or adam with decoupled_weight_decay=true)
//! g ← g + λθ               (otherwise: L2 decay)
//! m ← lerp(m, g, 1 − β1)
//! v ← β2 v + (1 − β2) g²
//! v̄ ← max(v̄, v)            (amsgrad, on the raw v)
//! θ ← θ − (γ / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)      (v̄ in place of v with amsgrad)
//! ```
//! ε is added after the bias correction of √v, exactly as PyTorch does.

use super::prefetch;
use super::rule::{check, decay_terms, Betas, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
#[cfg(target_arch = "x86_64")]
use super::{adam_bf16, bf16::Bf16Slot};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `adam` / `adamw` besides the learning rate γ (default 1e-3) and β1
/// (default 0.9), which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AdamConfig {
    /// Built as `adamw` (weight decay default 1e-2, always decoupled).
    pub adamw: bool,
    /// β2 (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// Weight decay λ (adam: 0, adamw: 1e-2).
    pub weight_decay: f64,
    /// AMSGrad.
    pub amsgrad: bool,
    /// Decoupled weight decay (adamw always).
    pub decoupled_weight_decay: bool,
}

/// The Adam rule.
pub struct Adam;

/// Adam's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdamCoef {
    step_size: f64,
    bc2_sqrt: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    l2: f64,
    decay_factor: f64,
    amsgrad: bool,
}

impl Rule for Adam {
    type Config = AdamConfig;
    type Coef = AdamCoef;
    const NAME: &'static str = "adam";
    const COMPACT_STATE: bool = true;

    fn parse(args: &Args) -> Result<(AdamConfig, Hyper)> {
        let adamw = args.spec().name == "adamw";
        let lr = check::non_negative(args, "lr", 1e-3)?;
        let (beta1, beta2) = check::betas(args, (0.9, 0.999))?;
        let cfg = AdamConfig {
            adamw,
            beta2,
            eps: check::non_negative(args, "eps", 1e-8)?,
            weight_decay: check::non_negative(
                args,
                "weight_decay",
                if adamw { 1e-2 } else { 0.0 },
            )?,
            amsgrad: args.bool("amsgrad", false)?,
            decoupled_weight_decay: adamw || args.bool("decoupled_weight_decay", false)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn name(c: &AdamConfig) -> &'static str {
        if c.adamw {
            "adamw"
        } else {
            "adam"
        }
    }

    fn to_spec(c: &AdamConfig, h: &Hyper) -> Spec {
        let spec = Spec::new(Self::name(c))
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2))
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
            .with("amsgrad", c.amsgrad);
        if c.adamw {
            spec
        } else {
            spec.with("decoupled_weight_decay", c.decoupled_weight_decay)
        }
    }

    fn slots(cfgs: &[AdamConfig]) -> Vec<&'static str> {
        if cfgs.iter().any(|c| c.amsgrad) {
            vec!["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        } else {
            vec!["exp_avg", "exp_avg_sq"]
        }
    }

    fn begin(c: &AdamConfig, h: &Hyper, s: &mut Scalars) -> AdamCoef {
        s[0] += 1.0;
        let t = s[0];
        let (b1, b2) = (h.momentum_or_zero(), c.beta2);
        let (l2, decay_factor) = decay_terms(c.decoupled_weight_decay, h.lr, c.weight_decay);
        AdamCoef {
            step_size: h.lr / (1.0 - b1.powf(t)),
            bc2_sqrt: (1.0 - b2.powf(t)).sqrt(),
            b1,
            b2,
            eps: c.eps,
            l2,
            decay_factor,
            amsgrad: c.amsgrad,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &AdamCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        // One loop per variant, free of branches, so that it vectorises (without AMSGrad
        // the third buffer is not touched; without clipping and L2 decay the gradient is
        // used as it is).
        let plain = c.l2 == 0.0 && g.is_unclipped();
        match (c.amsgrad, plain) {
            (true, true) => adam_lerp::<T, _, _, _, true, true>(c, p, g, s.a, s.b, s.c),
            (true, false) => adam_lerp::<T, _, _, _, true, false>(c, p, g, s.a, s.b, s.c),
            (false, true) => adam_lerp::<T, _, _, _, false, true>(c, p, g, s.a, s.b, s.c),
            (false, false) => adam_lerp::<T, _, _, _, false, false>(c, p, g, s.a, s.b, s.c),
        }
        [0.0; 4]
    }
}

/// [`adam_loop`] with PyTorch's lerp form (which depends on whether `1 − β₁` is below one
/// half) chosen once per chunk, outside the loop, so the loop has no branch left.
#[inline(always)]
fn adam_lerp<T, M, V, X, const AMSGRAD: bool, const PLAIN: bool>(
    c: &AdamCoef,
    p: &mut [T],
    g: Grad<T>,
    mut m: M,
    mut v: V,
    vmax: X,
) where
    T: Real,
    M: Buffer<T>,
    V: Buffer<T>,
    X: Buffer<T>,
{
    let small_weight = (1.0 - c.b1).abs() < 0.5;
    #[cfg(target_arch = "x86_64")]
    if !AMSGRAD && PLAIN && plain_bf16(c, p, &g, &mut m, &mut v, small_weight) {
        return;
    }
    if small_weight {
        adam_loop::<T, M, V, X, AMSGRAD, PLAIN, true>(c, p, g, m, v, vmax)
    } else {
        adam_loop::<T, M, V, X, AMSGRAD, PLAIN, false>(c, p, g, m, v, vmax)
    }
}

/// The plain step (no AMSGrad, clipping or L2) of f32 parameters with bf16 moments through
/// the hand-vectorised loop of [`adam_bf16`] where the processor has AVX-512 BW, the last
/// elements (under one block) through [`adam_loop`]; false (nothing done) otherwise.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn plain_bf16<T: Real, M: Buffer<T>, V: Buffer<T>>(
    c: &AdamCoef,
    p: &mut [T],
    g: &Grad<T>,
    m: &mut M,
    v: &mut V,
    small_weight: bool,
) -> bool {
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>()
        || p.len() < adam_bf16::BLOCK
        || !adam_bf16::available()
    {
        return false;
    }
    let (Some((m_bits, m_base)), Some((v_bits, v_base))) = (m.bf16_parts(), v.bf16_parts()) else {
        return false;
    };
    // SAFETY: T is f32 (checked by its TypeId above): the same slice, retyped.
    let p = unsafe { &mut *(p as *mut [T] as *mut [f32]) };
    // SAFETY: as above.
    let raw = unsafe { &*(g.raw() as *const [T] as *const [f32]) };
    let k = adam_bf16::PlainAdam {
        decay: c.decay_factor as f32,
        betas: Betas::new(c.b1, c.b2),
        bc2_sqrt: c.bc2_sqrt as f32,
        eps: c.eps as f32,
        neg_step: (-c.step_size) as f32,
        small_weight,
    };
    // SAFETY: the processor has the instructions (available() above).
    let done = unsafe { adam_bf16::step(&k, p, raw, m_bits, m_base, v_bits, v_base) };
    let (p, raw) = (&mut p[done..], &raw[done..]);
    let g = Grad::new(raw, 1.0, f32::INFINITY);
    let m = Bf16Slot::from(m_bits, m_base, done);
    let v = Bf16Slot::from(v_bits, v_base, done);
    let none = Bf16Slot::from(&mut [], 0, 0);
    if small_weight {
        adam_loop::<f32, _, _, _, false, true, true>(c, p, g, m, v, none)
    } else {
        adam_loop::<f32, _, _, _, false, true, false>(c, p, g, m, v, none)
    }
    true
}

/// The Adam update over a chunk, whatever its moments are stored in. Decoupled decay
/// multiplies by `1 − γλ` (exactly 1 without decay), so it needs no branch. `PLAIN`: no L2
/// decay (PyTorch adds `λθ` only when λ ≠ 0) and no clipping (see [`Grad::is_unclipped`]),
/// so the raw gradient is `d`. It runs in blocks, requesting the parameters' and moments'
/// cache lines [`prefetch::AHEAD`] elements on, the gradients' [`prefetch::GRADIENTS_AHEAD`],
/// before each.
#[inline(always)]
fn adam_loop<T, M, V, X, const AMSGRAD: bool, const PLAIN: bool, const SMALL_WEIGHT: bool>(
    c: &AdamCoef,
    p: &mut [T],
    g: Grad<T>,
    mut m: M,
    mut v: V,
    mut vmax: X,
) where
    T: Real,
    M: Buffer<T>,
    V: Buffer<T>,
    X: Buffer<T>,
{
    let neg_step = T::from_f64(-c.step_size);
    // A true division: the divider has room for it beside the square root and the
    // update's division, where `real::Divisor`'s five vector operations (the same quotient)
    // slowed the bf16-state loop, which has little arithmetic to spare.
    let bc2_sqrt = T::from_f64(c.bc2_sqrt);
    let betas = Betas::<T>::new(c.b1, c.b2);
    let eps = T::from_f64(c.eps);
    let l2 = T::from_f64(c.l2);
    let decay = T::from_f64(c.decay_factor);
    m.assert_len(p.len());
    v.assert_len(p.len());
    if AMSGRAD {
        vmax.assert_len(p.len());
    }
    // The update of element `i` (`param` = p[i]), written once for the whole blocks and the
    // tail (a macro: a closure would not be inlined into the wide-instruction build of the
    // caller). Unchecked access: the compiler does not see the blocks' indices bounded.
    macro_rules! update {
        ($i:expr, $param:expr) => {{
            let (i, param): (usize, &mut T) = ($i, $param);
            // SAFETY: `param` is p[i], so i < p.len(), and every buffer holds at least
            // p.len() elements (asserted above).
            unsafe {
                let theta = *param * decay;
                let d = if PLAIN {
                    g.raw_at(i)
                } else {
                    g.at(i) + l2 * theta
                };
                let m_new = betas.lerp_first_in::<SMALL_WEIGHT>(m.get_unchecked(i), d);
                m.set_unchecked(i, m_new);
                let v_new = betas.second(v.get_unchecked(i), d);
                v.set_unchecked(i, v_new);
                let second = if AMSGRAD {
                    let top = vmax.get_unchecked(i).max(v_new);
                    vmax.set_unchecked(i, top);
                    top
                } else {
                    v_new
                };
                let denom = second.sqrt() / bc2_sqrt + eps;
                *param = theta + neg_step * m_new / denom;
            }
        }};
    }
    let whole = prefetch::whole_blocks(p.len());
    for start in (0..whole).step_by(prefetch::BLOCK) {
        for at in prefetch::ahead::<T>(start) {
            let gradient_at = at + (prefetch::GRADIENTS_AHEAD - prefetch::AHEAD);
            prefetch::line(g.raw().as_ptr(), gradient_at);
            prefetch::line(p.as_ptr(), at);
            m.prefetch(at);
            v.prefetch(at);
            if AMSGRAD {
                vmax.prefetch(at);
            }
        }
        for (j, param) in p[start..start + prefetch::BLOCK].iter_mut().enumerate() {
            update!(start + j, param);
        }
    }
    for (j, param) in p[whole..].iter_mut().enumerate() {
        update!(whole + j, param);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Moments and gradients over many magnitudes, with NaN, ±∞ and zeros among the moments.
    fn data(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<u16>, Vec<u16>) {
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let mut values = |n: usize, scale: i32| -> Vec<f32> {
            (0..n)
                .map(|i| next() * 10f32.powi(i as i32 % 9 - scale))
                .collect()
        };
        let (p, g) = (values(n, 4), values(n, 6));
        let mut m: Vec<u16> = values(n, 6)
            .iter()
            .map(|&x| crate::optim::bf16::to_bf16_nearest(x))
            .collect();
        let mut v: Vec<u16> = values(n, 8)
            .iter()
            .map(|&x| crate::optim::bf16::to_bf16_nearest(x * x))
            .collect();
        for (i, special) in [
            (3, f32::NAN),
            (40, f32::INFINITY),
            (41, f32::NEG_INFINITY),
            (7, 0.0),
        ] {
            if i < n {
                m[i] = crate::optim::bf16::to_bf16_nearest(special);
                v[(i + 5) % n] = crate::optim::bf16::to_bf16_nearest(special.abs());
            }
        }
        (p, g, m, v)
    }

    /// The hand-vectorised bf16 loop computes what the generic one does, bit for bit, for both
    /// lerp forms, with and without decay, at lengths around its block.
    #[test]
    fn the_vectorised_bf16_loop_is_the_generic_one() {
        if !adam_bf16::available() {
            return;
        }
        for (b1, decay) in [(0.9, 1.0), (0.3, 1.0 - 1e-3), (0.9, 1.0 - 1e-4)] {
            let c = AdamCoef {
                step_size: 1e-3 / (1.0 - f64::powi(b1, 3)),
                bc2_sqrt: (1.0 - 0.999f64.powi(3)).sqrt(),
                b1,
                b2: 0.999,
                eps: 1e-8,
                l2: 0.0,
                decay_factor: decay,
                amsgrad: false,
            };
            for n in [32, 33, 63, 64, 100, 1000] {
                let (p, g, m, v) = data(n, n as u64 * 31 + (b1 * 10.0) as u64);
                let (mut p1, mut m1, mut v1) = (p.clone(), m.clone(), v.clone());
                let grad = Grad::new(&g, 1.0, f32::INFINITY);
                let first = 12_345;
                let (mut ms, mut vs) = (
                    Bf16Slot::new(&mut m1, first, 7, 0),
                    Bf16Slot::new(&mut v1, first, 7, 1),
                );
                assert!(plain_bf16(&c, &mut p1, &grad, &mut ms, &mut vs, b1 == 0.9));
                let (mut p2, mut m2, mut v2) = (p, m, v);
                let none = Bf16Slot::new(&mut [], 0, 0, 2);
                let (ms, vs) = (
                    Bf16Slot::new(&mut m2, first, 7, 0),
                    Bf16Slot::new(&mut v2, first, 7, 1),
                );
                if b1 == 0.9 {
                    adam_loop::<f32, _, _, _, false, true, true>(&c, &mut p2, grad, ms, vs, none);
                } else {
                    adam_loop::<f32, _, _, _, false, true, false>(&c, &mut p2, grad, ms, vs, none);
                }
                let bits = |x: &[f32]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&p1), bits(&p2), "parameters, n {n}, b1 {b1}");
                assert_eq!(m1, m2, "first moment, n {n}, b1 {b1}");
                assert_eq!(v1, v2, "second moment, n {n}, b1 {b1}");
            }
        }
    }
}
