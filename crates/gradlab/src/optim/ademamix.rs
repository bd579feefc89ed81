//! AdEMAMix (Pagliardini, Ablin & Grangier 2024, arXiv:2409.03137, "The AdEMAMix Optimizer:
//! Better, Faster, Older"), as pytorch-optimizer 4.1.0's `AdEMAMix`: Adam plus a second,
//! slow momentum whose weight α and rate β3 warm up over `t_alpha_beta3` steps.
//!
//! ```text
//! θ ← θ·(1 − γλ)  or  g ← g + λθ           (weight_decouple, or L2: the default)
//! m1 ← lerp(m1, g, 1 − β1)
//! v  ← β2 v + (1 − β2) g²
//! m2 ← lerp(m2, g, 1 − β3(t))
//! θ  ← θ − γ (m1 / (1 − β1^t) + α(t) m2) / (√v / √(1 − β2^t) + ε)
//! α(t)  = min(tα/T, α)                                  (α without T)
//! β3(t) = min(exp(ln β1 ln β3 / ((1 − t/T) ln β3 + (t/T) ln β1)), β3)   (β3 without T)
//! ```
//! The slow momentum is not bias-corrected.

use super::rule::{
    check, lerp, pytorch_optimizer_decay, AdamMoments, Buffer, Grad, Hyper, Rule, Scalars, Slots,
    Sums,
};
use crate::spec::{Args, Domain, Spec};
use crate::{Real, Result};

/// Hyperparameters of `ademamix` besides the learning rate (default 1e-3) and β1, the fast
/// momentum (default 0.9), which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AdemamixConfig {
    /// β2, the second moment's (default 0.999).
    pub beta2: f64,
    /// β3, the slow momentum's (default 0.9999).
    pub beta3: f64,
    /// Weight α of the slow momentum (default 5).
    pub alpha: f64,
    /// Warm-up length T of α and β3 in steps (default none: no warm-up).
    pub t_alpha_beta3: Option<f64>,
    /// ε, added to the corrected √v (default 1e-8).
    pub eps: f64,
    /// Weight decay λ (default 0).
    pub weight_decay: f64,
    /// Decoupled decay `θ ← θ(1 − γλ)` instead of L2 (default false).
    pub weight_decouple: bool,
    /// With `weight_decouple`, decay by `1 − λ` whatever the learning rate (default false).
    pub fixed_decay: bool,
}

/// The AdEMAMix rule.
pub struct Ademamix;

/// AdEMAMix's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdemamixCoef {
    lr: f64,
    bc1: f64,
    bc2_sqrt: f64,
    b1: f64,
    b2: f64,
    b3: f64,
    alpha: f64,
    eps: f64,
    l2: f64,
    decay_factor: f64,
}

impl AdemamixConfig {
    /// α and β3 at step `t` (1-based) for β1 `b1`, after their warm-up schedules.
    pub fn alpha_beta3(&self, b1: f64, t: f64) -> (f64, f64) {
        let b3 = self.beta3;
        match self.t_alpha_beta3 {
            None => (self.alpha, b3),
            Some(horizon) => {
                let frac = t / horizon;
                let (ln1, ln3) = (b1.ln(), b3.ln());
                let beta3 = (ln1 * ln3 / ((1.0 - frac) * ln3 + frac * ln1)).exp();
                ((t * self.alpha / horizon).min(self.alpha), beta3.min(b3))
            }
        }
    }
}

impl Rule for Ademamix {
    type Config = AdemamixConfig;
    type Coef = AdemamixCoef;
    const NAME: &'static str = "ademamix";
    const COMPACT_STATE: bool = true;

    fn parse(args: &Args) -> Result<(AdemamixConfig, Hyper)> {
        let betas = args.triple_in("betas", (0.9, 0.999, 0.9999), Domain::DECAY)?;
        let t_alpha_beta3 = args.opt_number("t_alpha_beta3", Domain::POSITIVE)?;
        if t_alpha_beta3.is_some() && betas.0 == 0.0 {
            // The β3 warm-up interpolates in log space from β1: ln 0 has no value.
            return Err(args.invalid(
                "betas",
                "item at index 0 must be in (0, 1) with t_alpha_beta3 (β3 warms up from β1 in log space), got 0",
            ));
        }
        let lr = check::non_negative(args, "lr", 1e-3)?;
        let cfg = AdemamixConfig {
            beta2: betas.1,
            beta3: betas.2,
            alpha: check::non_negative(args, "alpha", 5.0)?,
            t_alpha_beta3,
            eps: check::non_negative(args, "eps", 1e-8)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            weight_decouple: args.bool("weight_decouple", false)?,
            fixed_decay: args.bool("fixed_decay", false)?,
        };
        Ok((cfg, Hyper::new(lr, Some(betas.0))))
    }

    fn to_spec(c: &AdemamixConfig, h: &Hyper) -> Spec {
        let spec = Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2, c.beta3))
            .with("alpha", c.alpha);
        let spec = match c.t_alpha_beta3 {
            Some(t) => spec.with("t_alpha_beta3", t),
            None => spec,
        };
        spec.with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
            .with("weight_decouple", c.weight_decouple)
            .with("fixed_decay", c.fixed_decay)
    }

    fn slots(_: &[AdemamixConfig]) -> Vec<&'static str> {
        vec!["exp_avg", "exp_avg_sq", "exp_avg_slow"]
    }

    fn begin(c: &AdemamixConfig, h: &Hyper, s: &mut Scalars) -> AdemamixCoef {
        s[0] += 1.0;
        let t = s[0];
        let (b1, b2) = (h.momentum_or_zero(), c.beta2);
        let (alpha, b3) = c.alpha_beta3(b1, t);
        let (l2, decay_factor) =
            pytorch_optimizer_decay(c.weight_decouple, c.fixed_decay, h.lr, c.weight_decay);
        AdemamixCoef {
            lr: h.lr,
            bc1: 1.0 - b1.powf(t),
            bc2_sqrt: (1.0 - b2.powf(t)).sqrt(),
            b1,
            b2,
            b3,
            alpha,
            eps: c.eps,
            l2,
            decay_factor,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(
        c: &AdemamixCoef,
        p: &mut [T],
        g: Grad<T>,
        s: Slots<B>,
    ) -> Sums {
        ademamix_loop(c, p, g, s.a, s.b, s.c);
        [0.0; 4]
    }
}

/// The AdEMAMix update over a chunk, whatever its buffers are stored in.
#[inline(always)]
fn ademamix_loop<T: Real, M: Buffer<T>, V: Buffer<T>, S: Buffer<T>>(
    c: &AdemamixCoef,
    p: &mut [T],
    g: Grad<T>,
    mut m1: M,
    mut v: V,
    mut m2: S,
) {
    m1.assert_len(p.len());
    v.assert_len(p.len());
    m2.assert_len(p.len());
    let neg_lr = T::from_f64(-c.lr);
    let k = AdamMoments::<T>::new(c.b1, c.b2, c.l2, c.decay_factor);
    let (w3, b3) = (T::from_f64(1.0 - c.b3), T::from_f64(c.b3));
    let bc1 = T::from_f64(c.bc1);
    // Exactly `√v / bc2_sqrt`, without a division per element.
    let bc2_sqrt = crate::real::Divisor::new(T::from_f64(c.bc2_sqrt));
    let (alpha, eps) = (T::from_f64(c.alpha), T::from_f64(c.eps));
    for (i, param) in p.iter_mut().enumerate() {
        // Decay, fast momentum and second moment exactly as Adam's.
        let (theta, d, fast, second) = k.step(i, *param, g.at(i), &mut m1, &mut v);
        let slow = lerp(m2.get(i), d, w3, b3);
        m2.set(i, slow);
        let denom = bc2_sqrt.divide(second.sqrt()) + eps;
        *param = theta + neg_lr * ((fast / bc1 + alpha * slow) / denom);
    }
}
