//! AdaBound and AMSBound (Luo, Xiong, Liu & Sun 2019): Adam whose per-element step is
//! clipped into bounds that converge to a final SGD learning rate. Exactly the authors'
//! `adabound` 0.0.5 package:
//!
//! ```text
//! g ← g + λθ                                   (L2 decay)
//! m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²;   v̄ ← max(v̄, v) (amsbound)
//! α = γ √(1 − β2^t) / (1 − β1^t)
//! f = final_lr · γ / γ0                         (γ0: the lr when the optimizer was built)
//! η = clamp(α / (√v + ε),  f (1 − 1/(gamma·t + 1)),  f (1 + 1/(gamma·t)))
//! θ ← θ − η m
//! ```

use super::rule::{check, Betas, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `adabound` besides the learning rate (default 1e-3) and β1 (default 0.9),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AdaBoundConfig {
    /// β2 (default 0.999).
    pub beta2: f64,
    /// The SGD learning rate the bounds converge to (default 0.1).
    pub final_lr: f64,
    /// Convergence speed of the bounds (default 1e-3).
    pub gamma: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// L2 weight decay (default 0).
    pub weight_decay: f64,
    /// AMSBound: use the running maximum of v.
    pub amsbound: bool,
}

/// The AdaBound rule.
pub struct AdaBound;

/// AdaBound's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdaBoundCoef {
    step_size: f64,
    lower: f64,
    upper: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    weight_decay: f64,
    amsbound: bool,
}

impl Rule for AdaBound {
    type Config = AdaBoundConfig;
    type Coef = AdaBoundCoef;
    const NAME: &'static str = "adabound";
    /// `base_lr` is the learning rate at construction, which `final_lr` is scaled against.
    const SCALARS: &'static [&'static str] = &["step", "base_lr"];

    fn parse(args: &Args) -> Result<(AdaBoundConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-3)?;
        let (beta1, beta2) = check::betas(args, (0.9, 0.999))?;
        let cfg = AdaBoundConfig {
            beta2,
            final_lr: check::non_negative(args, "final_lr", 0.1)?,
            gamma: check::within(args, "gamma", 1e-3, 0.0, 1.0)?,
            eps: check::non_negative(args, "eps", 1e-8)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            amsbound: args.bool("amsbound", false)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn to_spec(c: &AdaBoundConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2))
            .with("final_lr", c.final_lr)
            .with("gamma", c.gamma)
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
            .with("amsbound", c.amsbound)
    }

    fn slots(cfgs: &[AdaBoundConfig]) -> Vec<&'static str> {
        if cfgs.iter().any(|c| c.amsbound) {
            vec!["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        } else {
            vec!["exp_avg", "exp_avg_sq"]
        }
    }
    fn scalars_init(_: &AdaBoundConfig, h: &Hyper) -> Scalars {
        [0.0, h.lr, 0.0, 0.0, 0.0, 0.0]
    }

    fn begin(c: &AdaBoundConfig, h: &Hyper, s: &mut Scalars) -> AdaBoundCoef {
        s[0] += 1.0;
        let t = s[0];
        let (b1, b2) = (h.momentum_or_zero(), c.beta2);
        let final_lr = c.final_lr * h.lr / s[1];
        AdaBoundCoef {
            step_size: h.lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t)),
            lower: final_lr * (1.0 - 1.0 / (c.gamma * t + 1.0)),
            upper: final_lr * (1.0 + 1.0 / (c.gamma * t)),
            b1,
            b2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsbound: c.amsbound,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(
        c: &AdaBoundCoef,
        p: &mut [T],
        g: Grad<T>,
        s: Slots<B>,
    ) -> Sums {
        let n = p.len();
        let step = T::from_f64(c.step_size);
        let (lower, upper) = (T::from_f64(c.lower), T::from_f64(c.upper));
        let betas = Betas::<T>::new(c.b1, c.b2);
        let eps = T::from_f64(c.eps);
        let wd = T::from_f64(c.weight_decay);
        let (mut m, mut v, mut top) = (s.a, s.b, s.c);
        m.assert_len(n);
        v.assert_len(n);
        if c.amsbound {
            top.assert_len(n);
        }
        for (i, param) in p.iter_mut().enumerate() {
            let mut d = g.at(i);
            if c.weight_decay != 0.0 {
                d = d + wd * *param;
            }
            let mi = betas.mul_add_first(m.get(i), d);
            m.set(i, mi);
            let vi = betas.second(v.get(i), d);
            v.set(i, vi);
            let second = if c.amsbound {
                let vmax = top.get(i).max(vi);
                top.set(i, vmax);
                vmax
            } else {
                vi
            };
            let eta = (step / (second.sqrt() + eps)).max(lower).min(upper) * mi;
            *param = *param - eta;
        }
        [0.0; 4]
    }
}
