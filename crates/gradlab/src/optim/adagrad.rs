//! Adagrad (Duchi, Hazan & Singer 2011), as PyTorch's `Adagrad`.
//!
//! ```text
//! g ← g + λθ
//! γ_t = γ / (1 + (t − 1)·lr_decay)
//! s ← s + g²                         (s starts at initial_accumulator_value)
//! θ ← θ − γ_t · g / (√s + ε)
//! ```

use super::rule::{check, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `adagrad` besides the learning rate (default 1e-2),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AdagradConfig {
    /// Learning-rate decay (default 0).
    pub lr_decay: f64,
    /// L2 weight decay (default 0).
    pub weight_decay: f64,
    /// Starting value of the accumulator (default 0).
    pub initial_accumulator_value: f64,
    /// ε outside the square root (default 1e-10).
    pub eps: f64,
}

/// The Adagrad rule.
pub struct Adagrad;

/// Adagrad's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdagradCoef {
    clr: f64,
    weight_decay: f64,
    eps: f64,
}

impl Rule for Adagrad {
    type Config = AdagradConfig;
    type Coef = AdagradCoef;
    const NAME: &'static str = "adagrad";

    fn parse(args: &Args) -> Result<(AdagradConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-2)?;
        let cfg = AdagradConfig {
            lr_decay: check::non_negative(args, "lr_decay", 0.0)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            initial_accumulator_value: check::non_negative(args, "initial_accumulator_value", 0.0)?,
            eps: check::non_negative(args, "eps", 1e-10)?,
        };
        Ok((cfg, Hyper::new(lr, None)))
    }

    fn to_spec(c: &AdagradConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("lr_decay", c.lr_decay)
            .with("weight_decay", c.weight_decay)
            .with("initial_accumulator_value", c.initial_accumulator_value)
            .with("eps", c.eps)
    }

    fn slots(_: &[AdagradConfig]) -> Vec<&'static str> {
        vec!["sum"]
    }
    fn slot_init(c: &AdagradConfig, _slot: usize) -> f64 {
        c.initial_accumulator_value
    }

    fn begin(c: &AdagradConfig, h: &Hyper, s: &mut Scalars) -> AdagradCoef {
        s[0] += 1.0;
        AdagradCoef {
            clr: h.lr / (1.0 + (s[0] - 1.0) * c.lr_decay),
            weight_decay: c.weight_decay,
            eps: c.eps,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(
        c: &AdagradCoef,
        p: &mut [T],
        g: Grad<T>,
        s: Slots<B>,
    ) -> Sums {
        let neg_clr = T::from_f64(-c.clr);
        let wd = T::from_f64(c.weight_decay);
        let eps = T::from_f64(c.eps);
        let mut sum = s.a;
        sum.assert_len(p.len());
        for (i, param) in p.iter_mut().enumerate() {
            let mut d = g.at(i);
            if c.weight_decay != 0.0 {
                d = d + wd * *param;
            }
            let total = sum.get(i) + d * d;
            sum.set(i, total);
            *param = *param + neg_clr * d / (total.sqrt() + eps);
        }
        [0.0; 4]
    }
}
