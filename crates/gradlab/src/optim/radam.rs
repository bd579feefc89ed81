//! RAdam (Liu et al. 2020: Adam with a rectified adaptive learning rate), as PyTorch's
//! `RAdam`.
//!
//! ```text
//! θ ← θ(1 − γλ) (decoupled) or g ← g + λθ (L2)
//! m ← lerp(m, g, 1 − β1);  v ← β2 v + (1 − β2) g²;  m̂ = m / (1 − β1^t)
//! ρ∞ = 2/(1 − β2) − 1,  ρ_t = ρ∞ − 2tβ2^t/(1 − β2^t)
//! ρ_t > 5:  r = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t)),
//!           θ ← θ − γ m̂ · √(1 − β2^t)/(√v + ε) · r
//! else:     θ ← θ − γ m̂
//! ```

use super::rule::{
    check, decay_terms, AdamMoments, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums,
};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `radam` besides the learning rate (default 1e-3) and β1 (default 0.9),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RAdamConfig {
    /// β2 (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// Decoupled weight decay (default false).
    pub decoupled_weight_decay: bool,
}

/// The RAdam rule.
pub struct RAdam;

/// RAdam's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct RAdamCoef {
    lr: f64,
    bc1: f64,
    bc2_sqrt: f64,
    rect: Option<f64>,
    b1: f64,
    b2: f64,
    eps: f64,
    l2: f64,
    decay_factor: f64,
}

impl Rule for RAdam {
    type Config = RAdamConfig;
    type Coef = RAdamCoef;
    const NAME: &'static str = "radam";
    const COMPACT_STATE: bool = true;

    fn parse(args: &Args) -> Result<(RAdamConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-3)?;
        let (beta1, beta2) = check::betas(args, (0.9, 0.999))?;
        let cfg = RAdamConfig {
            beta2,
            eps: check::non_negative(args, "eps", 1e-8)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            decoupled_weight_decay: args.bool("decoupled_weight_decay", false)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn to_spec(c: &RAdamConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2))
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
            .with("decoupled_weight_decay", c.decoupled_weight_decay)
    }

    fn slots(_: &[RAdamConfig]) -> Vec<&'static str> {
        vec!["exp_avg", "exp_avg_sq"]
    }

    fn begin(c: &RAdamConfig, h: &Hyper, s: &mut Scalars) -> RAdamCoef {
        s[0] += 1.0;
        let t = s[0];
        let (b1, b2) = (h.momentum_or_zero(), c.beta2);
        let bc2 = 1.0 - b2.powf(t);
        let rho_inf = 2.0 / (1.0 - b2) - 1.0;
        let rho_t = rho_inf - 2.0 * t * b2.powf(t) / bc2;
        let rect = (rho_t > 5.0).then(|| {
            ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .sqrt()
        });
        let (l2, decay_factor) = decay_terms(c.decoupled_weight_decay, h.lr, c.weight_decay);
        RAdamCoef {
            lr: h.lr,
            bc1: 1.0 - b1.powf(t),
            bc2_sqrt: bc2.sqrt(),
            rect,
            b1,
            b2,
            eps: c.eps,
            l2,
            decay_factor,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &RAdamCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        radam_loop(c, p, g, s.a, s.b);
        [0.0; 4]
    }
}

/// The RAdam update over a chunk, whatever its moments are stored in.
#[inline(always)]
fn radam_loop<T: Real, M: Buffer<T>, V: Buffer<T>>(
    c: &RAdamCoef,
    p: &mut [T],
    g: Grad<T>,
    mut m: M,
    mut v: V,
) {
    m.assert_len(p.len());
    v.assert_len(p.len());
    let lr = T::from_f64(c.lr);
    let bc1 = T::from_f64(c.bc1);
    let bc2_sqrt = T::from_f64(c.bc2_sqrt);
    let eps = T::from_f64(c.eps);
    let r = T::from_f64(c.rect.unwrap_or(1.0));
    let k = AdamMoments::new(c.b1, c.b2, c.l2, c.decay_factor);
    for (i, param) in p.iter_mut().enumerate() {
        let (theta, _, m_new, v_new) = k.step(i, *param, g.at(i), &mut m, &mut v);
        let m_hat = m_new / bc1;
        let update = if c.rect.is_some() {
            m_hat * lr * (bc2_sqrt / (v_new.sqrt() + eps)) * r
        } else {
            m_hat * lr
        };
        *param = theta - update;
    }
}
