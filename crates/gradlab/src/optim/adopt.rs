//! ADOPT (Taniguchi et al. 2024, arXiv:2411.02853, "ADOPT: Modified Adam Can Converge with
//! Any β2 with the Optimal Rate"), as pytorch-optimizer 4.1.0's `ADOPT`:
//!
//! ```text
//! θ ← θ·(1 − γλ)  or  g ← g + λθ              (weight_decouple, or L2; on every step)
//! step 1:  v ← g²                              (no move)
//! step t:  n ← clamp(g / max(√v, ε), ±t^¼)     (ε is a floor; clip=false: no clamp)
//!          m ← lerp(m, n, 1 − β1)
//!          θ ← θ − γ m
//!          v ← β2 v + (1 − β2) g²              (after the move: v holds steps < t)
//! ```
//! No bias correction anywhere: the second moment is decorrelated from the current
//! gradient instead.

use super::rule::{
    check, pytorch_optimizer_decay, Betas, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums,
};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `adopt` besides the learning rate (default 1e-3) and β1 (default 0.9),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptConfig {
    /// β2 (default 0.9999).
    pub beta2: f64,
    /// Floor on √v (default 1e-6).
    pub eps: f64,
    /// Weight decay λ (default 0).
    pub weight_decay: f64,
    /// Decoupled decay `θ ← θ(1 − γλ)` instead of L2 (default false).
    pub weight_decouple: bool,
    /// With `weight_decouple`, decay by `1 − λ` whatever the learning rate (default false).
    pub fixed_decay: bool,
    /// Clamp the normalised gradient to `±step^0.25` (the reference's `clip_lambda`; false is
    /// its `clip_lambda=None`) (default true).
    pub clip: bool,
}

/// The ADOPT rule.
pub struct Adopt;

/// ADOPT's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdoptCoef {
    first: bool,
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    clip: f64,
    l2: f64,
    decay_factor: f64,
}

impl Rule for Adopt {
    type Config = AdoptConfig;
    type Coef = AdoptCoef;
    const NAME: &'static str = "adopt";
    const COMPACT_STATE: bool = true;

    fn parse(args: &Args) -> Result<(AdoptConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-3)?;
        let (beta1, beta2) = check::betas(args, (0.9, 0.9999))?;
        let cfg = AdoptConfig {
            beta2,
            eps: check::non_negative(args, "eps", 1e-6)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            weight_decouple: args.bool("weight_decouple", false)?,
            fixed_decay: args.bool("fixed_decay", false)?,
            clip: args.bool("clip", true)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn to_spec(c: &AdoptConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2))
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
            .with("weight_decouple", c.weight_decouple)
            .with("fixed_decay", c.fixed_decay)
            .with("clip", c.clip)
    }

    fn slots(_: &[AdoptConfig]) -> Vec<&'static str> {
        vec!["exp_avg", "exp_avg_sq"]
    }

    fn begin(c: &AdoptConfig, h: &Hyper, s: &mut Scalars) -> AdoptCoef {
        s[0] += 1.0;
        let t = s[0];
        let (l2, decay_factor) =
            pytorch_optimizer_decay(c.weight_decouple, c.fixed_decay, h.lr, c.weight_decay);
        AdoptCoef {
            first: t == 1.0,
            lr: h.lr,
            b1: h.momentum_or_zero(),
            b2: c.beta2,
            eps: c.eps,
            clip: if c.clip { t.powf(0.25) } else { f64::INFINITY },
            l2,
            decay_factor,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &AdoptCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        adopt_loop(c, p, g, s.a, s.b);
        [0.0; 4]
    }
}

/// The ADOPT update over a chunk, whatever its buffers are stored in.
#[inline(always)]
fn adopt_loop<T: Real, M: Buffer<T>, V: Buffer<T>>(
    c: &AdoptCoef,
    p: &mut [T],
    g: Grad<T>,
    mut m: M,
    mut v: V,
) {
    m.assert_len(p.len());
    v.assert_len(p.len());
    let l2 = T::from_f64(c.l2);
    let decay = T::from_f64(c.decay_factor);
    let betas = Betas::<T>::new(c.b1, c.b2);
    if c.first {
        for (i, param) in p.iter_mut().enumerate() {
            *param = *param * decay;
            let d = g.at(i) + l2 * *param;
            v.set(i, d * d);
        }
        return;
    }
    let neg_lr = T::from_f64(-c.lr);
    let eps = T::from_f64(c.eps);
    let clip = T::from_f64(c.clip);
    for (i, param) in p.iter_mut().enumerate() {
        let theta = *param * decay;
        let d = g.at(i) + l2 * theta;
        let vi = v.get(i);
        let normed = (d / vi.sqrt().max(eps)).max(-clip).min(clip);
        let m_new = betas.lerp_first(m.get(i), normed);
        m.set(i, m_new);
        *param = theta + neg_lr * m_new;
        v.set(i, betas.second(vi, d));
    }
}
