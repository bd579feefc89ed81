//! Lion (Chen et al. 2023, arXiv:2302.06675, "Symbolic Discovery of Optimization
//! Algorithms"), as google/automl's `lion_pytorch.py`:
//!
//! ```text
//! θ ← θ(1 − γλ)
//! θ ← θ − γ sign(β1 m + (1 − β1) g)        (sign(0) = 0)
//! m ← β2 m + (1 − β2) g
//! ```

use super::rule::{check, decay_terms, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `lion` besides the learning rate (default 1e-4) and β1 (default 0.9),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LionConfig {
    /// β2 (default 0.99).
    pub beta2: f64,
    /// Decoupled weight decay (default 0).
    pub weight_decay: f64,
}

/// The Lion rule.
pub struct Lion;

/// Lion's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct LionCoef {
    lr: f64,
    decay_factor: f64,
    b1: f64,
    b2: f64,
}

impl Rule for Lion {
    type Config = LionConfig;
    type Coef = LionCoef;
    const NAME: &'static str = "lion";
    const COMPACT_STATE: bool = true;

    fn parse(args: &Args) -> Result<(LionConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-4)?;
        let (beta1, beta2) = check::betas(args, (0.9, 0.99))?;
        let cfg = LionConfig {
            beta2,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn to_spec(c: &LionConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2))
            .with("weight_decay", c.weight_decay)
    }

    fn slots(_: &[LionConfig]) -> Vec<&'static str> {
        vec!["exp_avg"]
    }

    fn begin(c: &LionConfig, h: &Hyper, s: &mut Scalars) -> LionCoef {
        s[0] += 1.0;
        LionCoef {
            lr: h.lr,
            decay_factor: decay_terms(true, h.lr, c.weight_decay).1,
            b1: h.momentum_or_zero(),
            b2: c.beta2,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &LionCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        lion_loop(c, p, g, s.a);
        [0.0; 4]
    }
}

/// The Lion update over a chunk, whatever its momentum is stored in.
#[inline(always)]
fn lion_loop<T: Real, M: Buffer<T>>(c: &LionCoef, p: &mut [T], g: Grad<T>, mut m: M) {
    m.assert_len(p.len());
    let neg_lr = T::from_f64(-c.lr);
    let decay = T::from_f64(c.decay_factor);
    let (b1, w1, b2, w2) = (
        T::from_f64(c.b1),
        T::from_f64(1.0 - c.b1),
        T::from_f64(c.b2),
        T::from_f64(1.0 - c.b2),
    );
    for (i, param) in p.iter_mut().enumerate() {
        let d = g.at(i);
        let mi = m.get(i);
        let update = (mi * b1 + w1 * d).sign();
        *param = *param * decay + neg_lr * update;
        m.set(i, mi * b2 + w2 * d);
    }
}
