//! Adadelta (Zeiler 2012), as PyTorch's `Adadelta`.
//!
//! ```text
//! g ← g + λθ
//! v ← ρv + (1 − ρ)g²
//! Δ = √(u + ε) / √(v + ε) · g
//! u ← ρu + (1 − ρ)Δ²
//! θ ← θ − γΔ
//! ```

use super::rule::{check, Grad, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `adadelta`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdadeltaConfig {
    /// Learning rate (default 1.0).
    pub lr: f64,
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

    fn parse(args: &Args) -> Result<AdadeltaConfig> {
        Ok(AdadeltaConfig {
            lr: check::non_negative(args, "lr", 1.0)?,
            rho: check::decay(args, "rho", 0.9)?,
            eps: check::non_negative(args, "eps", 1e-6)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
        })
    }

    fn to_spec(c: &AdadeltaConfig) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", c.lr)
            .with("rho", c.rho)
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
    }

    fn lr(c: &AdadeltaConfig) -> f64 {
        c.lr
    }
    fn set_lr(c: &mut AdadeltaConfig, lr: f64) {
        c.lr = lr;
    }
    fn slots(_: &[AdadeltaConfig]) -> Vec<&'static str> {
        vec!["square_avg", "acc_delta"]
    }

    fn begin(c: &AdadeltaConfig, s: &mut Scalars) -> AdadeltaCoef {
        s[0] += 1.0;
        AdadeltaCoef {
            lr: c.lr,
            rho: c.rho,
            eps: c.eps,
            weight_decay: c.weight_decay,
        }
    }

    #[inline(always)]
    fn kernel<T: Real>(c: &AdadeltaCoef, p: &mut [T], g: Grad<T>, s: &mut Slots<T>) -> Sums {
        let n = p.len();
        let neg_lr = T::from_f64(-c.lr);
        let (rho, w) = (T::from_f64(c.rho), T::from_f64(1.0 - c.rho));
        let eps = T::from_f64(c.eps);
        let wd = T::from_f64(c.weight_decay);
        let (sq, acc) = (&mut s.a[..n], &mut s.b[..n]);
        for i in 0..n {
            let mut d = g.at(i);
            if c.weight_decay != 0.0 {
                d = d + wd * p[i];
            }
            sq[i] = sq[i] * rho + w * d * d;
            let std = (sq[i] + eps).sqrt();
            let delta = (acc[i] + eps).sqrt() / std * d;
            acc[i] = acc[i] * rho + w * delta * delta;
            p[i] = p[i] + neg_lr * delta;
        }
        [0.0; 4]
    }
}
