//! Averaged SGD (Polyak & Juditsky 1992, "Acceleration of Stochastic Approximation by
//! Averaging"; Bottou 2012's decaying step), as PyTorch's `ASGD`:
//!
//! ```text
//! g ← g + λ_wd θ
//! θ ← θ(1 − λη) − η g                  (η of the previous step; η = γ at step 1)
//! θ̄ ← θ if μ = 1, else θ̄ + μ(θ − θ̄)   (the average, kept in state as `ax`)
//! η ← γ / (1 + λγt)^α,  μ ← 1 / max(1, t − t0)   (for the next step)
//! ```
//! The parameters hold the plain iterate; averaging starts once `t > t0 + 1`.

use super::rule::{check, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `asgd` besides the learning rate (default 1e-2),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AsgdConfig {
    /// Decay term λ (default 1e-4).
    pub lambd: f64,
    /// Power α of the step-size decay (default 0.75).
    pub alpha: f64,
    /// Step after which averaging starts (default 1e6).
    pub t0: f64,
    /// L2 weight decay (default 0).
    pub weight_decay: f64,
}

/// The ASGD rule.
pub struct Asgd;

/// ASGD's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct AsgdCoef {
    eta: f64,
    lambd: f64,
    mu: f64,
    weight_decay: f64,
}

/// Scalar slots: `step`, then the step size and averaging weight of the next step.
const ETA: usize = 1;
const MU: usize = 2;

impl Rule for Asgd {
    type Config = AsgdConfig;
    type Coef = AsgdCoef;
    const NAME: &'static str = "asgd";
    const SCALARS: &'static [&'static str] = &["step", "eta", "mu"];

    fn parse(args: &Args) -> Result<(AsgdConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-2)?;
        let cfg = AsgdConfig {
            lambd: check::non_negative(args, "lambd", 1e-4)?,
            alpha: check::non_negative(args, "alpha", 0.75)?,
            t0: check::non_negative(args, "t0", 1e6)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
        };
        Ok((cfg, Hyper::new(lr, None)))
    }

    fn to_spec(c: &AsgdConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("lambd", c.lambd)
            .with("alpha", c.alpha)
            .with("t0", c.t0)
            .with("weight_decay", c.weight_decay)
    }

    fn slots(_: &[AsgdConfig]) -> Vec<&'static str> {
        vec!["ax"]
    }
    fn traffic(_: &AsgdConfig, _: &Hyper) -> usize {
        // parameters read and written, gradient, the average read and written
        5
    }

    fn begin(c: &AsgdConfig, h: &Hyper, s: &mut Scalars) -> AsgdCoef {
        if s[0] == 0.0 {
            // PyTorch creates the state at the first step, from the lr in effect then.
            s[ETA] = h.lr;
            s[MU] = 1.0;
        }
        s[0] += 1.0;
        let t = s[0];
        let coef = AsgdCoef {
            eta: s[ETA],
            lambd: c.lambd,
            mu: s[MU],
            weight_decay: c.weight_decay,
        };
        s[ETA] = h.lr / (1.0 + c.lambd * h.lr * t).powf(c.alpha);
        s[MU] = 1.0 / (t - c.t0).max(1.0);
        coef
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &AsgdCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        asgd_loop(c, p, g, s.a);
        [0.0; 4]
    }
}

/// The ASGD update over a chunk.
#[inline(always)]
fn asgd_loop<T: Real, A: Buffer<T>>(c: &AsgdCoef, p: &mut [T], g: Grad<T>, mut ax: A) {
    let wd = T::from_f64(c.weight_decay);
    let shrink = T::from_f64(1.0 - c.lambd * c.eta);
    let neg_eta = T::from_f64(-c.eta);
    let mu = T::from_f64(c.mu);
    let averaging = c.mu != 1.0;
    for (i, param) in p.iter_mut().enumerate() {
        let d = g.at(i) + wd * *param;
        let theta = *param * shrink + neg_eta * d;
        *param = theta;
        if averaging {
            let a = ax.get(i);
            ax.set(i, a + (theta - a) * mu);
        } else {
            ax.set(i, theta);
        }
    }
}
