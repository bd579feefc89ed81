//! NAdam (Dozat 2016: Adam with Nesterov momentum and momentum decay), as PyTorch's `NAdam`.
//!
//! ```text
//! θ ← θ(1 − γλ) (decoupled) or g ← g + λθ (L2)
//! μ_t = β1 (1 − ½·0.96^(tψ)),  μ_{t+1} = β1 (1 − ½·0.96^((t+1)ψ)),  Π_t = Π_{t−1} μ_t
//! m ← lerp(m, g, 1 − β1);  v ← β2 v + (1 − β2) g²
//! d = √(v / (1 − β2^t)) + ε
//! θ ← θ − γ(1 − μ_t)/(1 − Π_t) · g/d − γ μ_{t+1}/(1 − Π_t μ_{t+1}) · m/d
//! ```
//! ψ is `momentum_decay`. Π_t is kept per tensor in `f64` (PyTorch keeps it in the default
//! float type).

use super::rule::{
    check, decay_terms, AdamMoments, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums,
};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `nadam` besides the learning rate (default 2e-3) and β1 (default 0.9),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NAdamConfig {
    /// β2 (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// ψ (default 4e-3).
    pub momentum_decay: f64,
    /// Decoupled weight decay (default false).
    pub decoupled_weight_decay: bool,
}

/// The NAdam rule.
pub struct NAdam;

/// NAdam's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct NAdamCoef {
    grad_coef: f64,
    avg_coef: f64,
    bc2: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    l2: f64,
    decay_factor: f64,
}

impl Rule for NAdam {
    type Config = NAdamConfig;
    type Coef = NAdamCoef;
    const NAME: &'static str = "nadam";
    const COMPACT_STATE: bool = true;
    const SCALARS: &'static [&'static str] = &["step", "mu_product"];

    fn parse(args: &Args) -> Result<(NAdamConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 2e-3)?;
        let (beta1, beta2) = check::betas(args, (0.9, 0.999))?;
        let cfg = NAdamConfig {
            beta2,
            eps: check::non_negative(args, "eps", 1e-8)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            momentum_decay: check::non_negative(args, "momentum_decay", 4e-3)?,
            decoupled_weight_decay: args.bool("decoupled_weight_decay", false)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn to_spec(c: &NAdamConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2))
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
            .with("momentum_decay", c.momentum_decay)
            .with("decoupled_weight_decay", c.decoupled_weight_decay)
    }

    fn slots(_: &[NAdamConfig]) -> Vec<&'static str> {
        vec!["exp_avg", "exp_avg_sq"]
    }
    fn scalars_init(_: &NAdamConfig, _: &Hyper) -> Scalars {
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    }

    fn begin(c: &NAdamConfig, h: &Hyper, s: &mut Scalars) -> NAdamCoef {
        s[0] += 1.0;
        let t = s[0];
        let (b1, b2) = (h.momentum_or_zero(), c.beta2);
        let mu = b1 * (1.0 - 0.5 * 0.96f64.powf(t * c.momentum_decay));
        let mu_next = b1 * (1.0 - 0.5 * 0.96f64.powf((t + 1.0) * c.momentum_decay));
        s[1] *= mu;
        let mu_product = s[1];
        let (l2, decay_factor) = decay_terms(c.decoupled_weight_decay, h.lr, c.weight_decay);
        NAdamCoef {
            grad_coef: -h.lr * (1.0 - mu) / (1.0 - mu_product),
            avg_coef: (-h.lr * mu_next) / (1.0 - mu_product * mu_next),
            bc2: 1.0 - b2.powf(t),
            b1,
            b2,
            eps: c.eps,
            l2,
            decay_factor,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &NAdamCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        nadam_loop(c, p, g, s.a, s.b);
        [0.0; 4]
    }
}

/// The NAdam update over a chunk, whatever its moments are stored in.
#[inline(always)]
fn nadam_loop<T: Real, M: Buffer<T>, V: Buffer<T>>(
    c: &NAdamCoef,
    p: &mut [T],
    g: Grad<T>,
    mut m: M,
    mut v: V,
) {
    m.assert_len(p.len());
    v.assert_len(p.len());
    let (gc, ac) = (T::from_f64(c.grad_coef), T::from_f64(c.avg_coef));
    let bc2 = T::from_f64(c.bc2);
    let eps = T::from_f64(c.eps);
    let k = AdamMoments::new(c.b1, c.b2, c.l2, c.decay_factor);
    for (i, param) in p.iter_mut().enumerate() {
        let (theta, d, m_new, v_new) = k.step(i, *param, g.at(i), &mut m, &mut v);
        let denom = (v_new / bc2).sqrt() + eps;
        let theta = theta + gc * d / denom;
        *param = theta + ac * m_new / denom;
    }
}
