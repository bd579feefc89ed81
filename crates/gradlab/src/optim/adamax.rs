//! Adamax (Kingma & Ba 2015, §7.1: Adam with the infinity norm), as PyTorch's `Adamax`.
//!
//! ```text
//! g ← g + λθ
//! m ← lerp(m, g, 1 − β1)
//! u ← max(β2 u, |g| + ε)
//! θ ← θ − (γ / (1 − β1^t)) · m / u
//! ```

use super::rule::{check, Betas, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `adamax` besides the learning rate (default 2e-3) and β1 (default
/// 0.9), which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AdamaxConfig {
    /// β2 (default 0.999).
    pub beta2: f64,
    /// ε, added to |g| inside the max (default 1e-8).
    pub eps: f64,
    /// L2 weight decay (default 0).
    pub weight_decay: f64,
}

/// The Adamax rule.
pub struct Adamax;

/// Adamax's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdamaxCoef {
    clr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    weight_decay: f64,
}

impl Rule for Adamax {
    type Config = AdamaxConfig;
    type Coef = AdamaxCoef;
    const NAME: &'static str = "adamax";
    const COMPACT_STATE: bool = true;

    fn parse(args: &Args) -> Result<(AdamaxConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 2e-3)?;
        let (beta1, beta2) = check::betas(args, (0.9, 0.999))?;
        let cfg = AdamaxConfig {
            beta2,
            eps: check::non_negative(args, "eps", 1e-8)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn to_spec(c: &AdamaxConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2))
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
    }

    fn slots(_: &[AdamaxConfig]) -> Vec<&'static str> {
        vec!["exp_avg", "exp_inf"]
    }

    fn begin(c: &AdamaxConfig, h: &Hyper, s: &mut Scalars) -> AdamaxCoef {
        s[0] += 1.0;
        let b1 = h.momentum_or_zero();
        AdamaxCoef {
            clr: h.lr / (1.0 - b1.powf(s[0])),
            b1,
            b2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &AdamaxCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        adamax_loop(c, p, g, s.a, s.b);
        [0.0; 4]
    }
}

/// The Adamax update over a chunk, whatever its buffers are stored in.
#[inline(always)]
fn adamax_loop<T: Real, M: Buffer<T>, U: Buffer<T>>(
    c: &AdamaxCoef,
    p: &mut [T],
    g: Grad<T>,
    mut m: M,
    mut u: U,
) {
    m.assert_len(p.len());
    u.assert_len(p.len());
    let neg_clr = T::from_f64(-c.clr);
    let betas = Betas::<T>::new(c.b1, c.b2);
    let eps = T::from_f64(c.eps);
    let wd = T::from_f64(c.weight_decay);
    for (i, param) in p.iter_mut().enumerate() {
        let mut d = g.at(i);
        if c.weight_decay != 0.0 {
            d = d + wd * *param;
        }
        let m_new = betas.lerp_first(m.get(i), d);
        m.set(i, m_new);
        let u_new = (u.get(i) * betas.b2).max(d.abs() + eps);
        u.set(i, u_new);
        *param = *param + neg_clr * m_new / u_new;
    }
}
