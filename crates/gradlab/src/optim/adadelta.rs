//! Adadelta (Zeiler 2012), as PyTorch's `Adadelta`.
//!
//! ```text
//! g ← g + λθ
//! v ← ρv + (1 − ρ)g²
//! Δ = √(u + ε) / √(v + ε) · g
//! u ← ρu + (1 − ρ)Δ²
//! θ ← θ − γΔ
//! ```

use super::rule::{check, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `adadelta` besides the learning rate (default 1.0),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AdadeltaConfig {
    /// Decay ρ (default 0.9).
    pub rho: f64,
    /// ε inside both square roots (default 1e-6).
    pub eps: f64,
    /// L2 weight decay (default 0).
    pub weight_decay: f64,
}

/// The Adadelta rule.
pub struct Adadelta;

/// Adadelta's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdadeltaCoef {
    lr: f64,
    rho: f64,
    eps: f64,
    weight_decay: f64,
}

impl Rule for Adadelta {
    type Config = AdadeltaConfig;
    type Coef = AdadeltaCoef;
    const NAME: &'static str = "adadelta";

    fn parse(args: &Args) -> Result<(AdadeltaConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1.0)?;
        let cfg = AdadeltaConfig {
            rho: check::decay(args, "rho", 0.9)?,
            eps: check::non_negative(args, "eps", 1e-6)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
        };
        Ok((cfg, Hyper::new(lr, None)))
    }

    fn to_spec(c: &AdadeltaConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("rho", c.rho)
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
    }

    fn slots(_: &[AdadeltaConfig]) -> Vec<&'static str> {
        vec!["square_avg", "acc_delta"]
    }

    fn begin(c: &AdadeltaConfig, h: &Hyper, s: &mut Scalars) -> AdadeltaCoef {
        s[0] += 1.0;
        AdadeltaCoef {
            lr: h.lr,
            rho: c.rho,
            eps: c.eps,
            weight_decay: c.weight_decay,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(
        c: &AdadeltaCoef,
        p: &mut [T],
        g: Grad<T>,
        s: Slots<B>,
    ) -> Sums {
        let n = p.len();
        let neg_lr = T::from_f64(-c.lr);
        let (rho, w) = (T::from_f64(c.rho), T::from_f64(1.0 - c.rho));
        let eps = T::from_f64(c.eps);
        let wd = T::from_f64(c.weight_decay);
        let (mut sq, mut acc) = (s.a, s.b);
        sq.assert_len(n);
        acc.assert_len(n);
        for (i, param) in p.iter_mut().enumerate() {
            let mut d = g.at(i);
            if c.weight_decay != 0.0 {
                d = d + wd * *param;
            }
            let sq_new = sq.get(i) * rho + w * d * d;
            sq.set(i, sq_new);
            let std = (sq_new + eps).sqrt();
            let a = acc.get(i);
            let delta = (a + eps).sqrt() / std * d;
            acc.set(i, a * rho + w * delta * delta);
            *param = *param + neg_lr * delta;
        }
        [0.0; 4]
    }
}
