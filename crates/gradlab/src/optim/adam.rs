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

use super::rule::{check, decay_terms, Betas, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
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
    m: M,
    v: V,
    vmax: X,
) where
    T: Real,
    M: Buffer<T>,
    V: Buffer<T>,
    X: Buffer<T>,
{
    if (1.0 - c.b1).abs() < 0.5 {
        adam_loop::<T, M, V, X, AMSGRAD, PLAIN, true>(c, p, g, m, v, vmax)
    } else {
        adam_loop::<T, M, V, X, AMSGRAD, PLAIN, false>(c, p, g, m, v, vmax)
    }
}

/// The Adam update over a chunk, whatever its moments are stored in. Decoupled decay
/// multiplies by `1 − γλ` (exactly 1 without decay), so it needs no branch. `PLAIN`: no L2
/// decay (PyTorch adds `λθ` only when λ ≠ 0) and no clipping (see [`Grad::is_unclipped`]),
/// so the raw gradient is `d`.
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
    for (i, param) in p.iter_mut().enumerate() {
        let theta = *param * decay;
        let d = if PLAIN {
            g.raw_at(i)
        } else {
            g.at(i) + l2 * theta
        };
        let m_new = betas.lerp_first_in::<SMALL_WEIGHT>(m.get(i), d);
        m.set(i, m_new);
        let v_new = betas.second(v.get(i), d);
        v.set(i, v_new);
        let second = if AMSGRAD {
            let top = vmax.get(i).max(v_new);
            vmax.set(i, top);
            top
        } else {
            v_new
        };
        let denom = second.sqrt() / bc2_sqrt + eps;
        *param = theta + neg_step * m_new / denom;
    }
}
