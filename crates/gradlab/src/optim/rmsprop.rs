//! RMSProp (Hinton's lecture 6e), as PyTorch's `RMSprop`.
//!
//! ```text
//! g ← g + λθ
//! v ← αv + (1 − α)g²
//! centered: ḡ ← lerp(ḡ, g, 1 − α);  a = √(v − ḡ²) + ε,  else a = √v + ε
//! momentum μ > 0: b ← μb + g/a;  θ ← θ − γb,   else θ ← θ − γ g/a
//! ```

use super::rule::{check, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `rmsprop` besides the learning rate (default 1e-2) and the momentum (default 0),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RmsPropConfig {
    /// Smoothing constant α (default 0.99).
    pub alpha: f64,
    /// ε outside the square root (default 1e-8).
    pub eps: f64,
    /// L2 weight decay (default 0).
    pub weight_decay: f64,
    /// Divide by the estimated variance instead of the second moment.
    pub centered: bool,
}

/// The RMSProp rule.
pub struct RmsProp;

/// RMSProp's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct RmsPropCoef {
    cfg_lr: f64,
    alpha: f64,
    eps: f64,
    weight_decay: f64,
    momentum: f64,
    centered: bool,
}

impl Rule for RmsProp {
    type Config = RmsPropConfig;
    type Coef = RmsPropCoef;
    const NAME: &'static str = "rmsprop";

    fn parse(args: &Args) -> Result<(RmsPropConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-2)?;
        let momentum = check::decay(args, "momentum", 0.0)?;
        let cfg = RmsPropConfig {
            alpha: check::decay(args, "alpha", 0.99)?,
            eps: check::non_negative(args, "eps", 1e-8)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            centered: args.bool("centered", false)?,
        };
        Ok((cfg, Hyper::new(lr, Some(momentum))))
    }

    fn to_spec(c: &RmsPropConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("alpha", c.alpha)
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
            .with("momentum", h.momentum_or_zero())
            .with("centered", c.centered)
    }

    /// p, g, square_avg, and the momentum buffer and grad_avg when used.
    fn traffic(c: &RmsPropConfig, h: &Hyper) -> usize {
        5 + if h.momentum_or_zero() > 0.0 { 2 } else { 0 } + if c.centered { 2 } else { 0 }
    }
    fn slots(cfgs: &[RmsPropConfig]) -> Vec<&'static str> {
        if cfgs.iter().any(|c| c.centered) {
            vec!["square_avg", "momentum_buffer", "grad_avg"]
        } else {
            vec!["square_avg", "momentum_buffer"]
        }
    }

    fn begin(c: &RmsPropConfig, h: &Hyper, s: &mut Scalars) -> RmsPropCoef {
        s[0] += 1.0;
        RmsPropCoef {
            cfg_lr: h.lr,
            alpha: c.alpha,
            eps: c.eps,
            weight_decay: c.weight_decay,
            momentum: h.momentum_or_zero(),
            centered: c.centered,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(
        c: &RmsPropCoef,
        p: &mut [T],
        g: Grad<T>,
        s: Slots<B>,
    ) -> Sums {
        // One branch-free loop per variant, so that each vectorises.
        match (c.centered, c.momentum > 0.0) {
            (false, false) => rmsprop_loop::<T, B, false, false>(c, p, g, s),
            (false, true) => rmsprop_loop::<T, B, false, true>(c, p, g, s),
            (true, false) => rmsprop_loop::<T, B, true, false>(c, p, g, s),
            (true, true) => rmsprop_loop::<T, B, true, true>(c, p, g, s),
        }
        [0.0; 4]
    }
}

/// The RMSProp update over a chunk (L2 decay adds exactly 0 without decay).
#[inline(always)]
fn rmsprop_loop<T: Real, B: Buffer<T>, const CENTERED: bool, const MOMENTUM: bool>(
    c: &RmsPropCoef,
    p: &mut [T],
    g: Grad<T>,
    s: Slots<B>,
) {
    let n = p.len();
    let lr = T::from_f64(c.cfg_lr);
    let alpha = T::from_f64(c.alpha);
    let one_minus_alpha = T::from_f64(1.0 - c.alpha);
    let eps = T::from_f64(c.eps);
    let wd = T::from_f64(c.weight_decay);
    let mu = T::from_f64(c.momentum);
    let small_weight = (1.0 - c.alpha).abs() < 0.5;
    let (mut sq, mut buf, mut grad_avg) = (s.a, s.b, s.c);
    sq.assert_len(n);
    if MOMENTUM {
        buf.assert_len(n);
    }
    if CENTERED {
        grad_avg.assert_len(n);
    }
    for (i, param) in p.iter_mut().enumerate() {
        let d = g.at(i) + wd * *param;
        let sq_new = sq.get(i) * alpha + one_minus_alpha * d * d;
        sq.set(i, sq_new);
        let avg = if CENTERED {
            let m = grad_avg.get(i);
            let ga = if small_weight {
                m + one_minus_alpha * (d - m)
            } else {
                d - (d - m) * alpha
            };
            grad_avg.set(i, ga);
            (sq_new - ga * ga).sqrt() + eps
        } else {
            sq_new.sqrt() + eps
        };
        if MOMENTUM {
            let b = buf.get(i) * mu + d / avg;
            buf.set(i, b);
            *param = *param + (-lr) * b;
        } else {
            *param = *param + (-lr) * d / avg;
        }
    }
}
