//! SWATS (Keskar & Socher 2017, arXiv:1712.07628, Algorithm 1): Adam that switches to SGD
//! once the SGD learning rate implied by Adam's steps has settled. Per tensor:
//!
//! ```text
//! Adam phase:  m, v as Adam;  p_k = −γ √(1 − β2^k)/(1 − β1^k) · m/(√v + ε);  θ ← θ + p_k
//!              if p_k·g ≠ 0:  γ_k = (p_k·p_k)/(−p_k·g),  λ ← β2 λ + (1 − β2) γ_k
//!              switch when k > 1 and |λ/(1 − β2^k) − γ_k| < ε:  Λ = λ/(1 − β2^k), v_sgd = 0
//! SGD phase:   v_sgd ← β1 v_sgd + g;  θ ← θ − (1 − β1) Λ v_sgd
//! ```
//! ε (default 1e-9) serves both in Adam's denominator and in the switch test. The switch and
//! the learned rate Λ are visible in [`super::Optimizer::scalar_state`]
//! (`switched_at`, the step of the switch or 0, and `sgd_lr`) and through [`switch_status`].

use super::rule::{check, lane_sums, Betas, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use super::Optimizer;
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `swats` besides the Adam phase's learning rate (default 1e-3) and β1
/// (default 0.9), which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SwatsConfig {
    /// β2 (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-9).
    pub eps: f64,
}

/// The SWATS rule.
pub struct Swats;

/// SWATS's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct SwatsCoef {
    sgd: bool,
    step_size: f64,
    sgd_lr: f64,
    first_sgd: bool,
    b1: f64,
    b2: f64,
    eps: f64,
}

const STEP: usize = 0;
const PHASE: usize = 1;
const LAMBDA: usize = 2;
const SGD_LR: usize = 3;
const SWITCHED_AT: usize = 4;
const SGD_STARTED: usize = 5;

impl Rule for Swats {
    type Config = SwatsConfig;
    type Coef = SwatsCoef;
    const NAME: &'static str = "swats";
    const KERNEL_SUMS: bool = true;
    const SCALARS: &'static [&'static str] = &[
        "step",
        "phase_sgd",
        "lambda",
        "sgd_lr",
        "switched_at",
        "sgd_started",
    ];

    fn parse(args: &Args) -> Result<(SwatsConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-3)?;
        let (beta1, beta2) = check::betas(args, (0.9, 0.999))?;
        let cfg = SwatsConfig {
            beta2,
            eps: check::non_negative(args, "eps", 1e-9)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn to_spec(c: &SwatsConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2))
            .with("eps", c.eps)
    }

    /// The Adam phase: p, g, m, v (the SGD phase moves 5).
    fn traffic(_: &SwatsConfig, _: &Hyper) -> usize {
        7
    }
    fn slots(_: &[SwatsConfig]) -> Vec<&'static str> {
        vec!["exp_avg", "exp_avg_sq", "momentum_buffer"]
    }

    fn begin(c: &SwatsConfig, h: &Hyper, s: &mut Scalars) -> SwatsCoef {
        s[STEP] += 1.0;
        let t = s[STEP];
        let (b1, b2) = (h.momentum_or_zero(), c.beta2);
        let sgd = s[PHASE] != 0.0;
        let first_sgd = sgd && s[SGD_STARTED] == 0.0;
        if sgd {
            s[SGD_STARTED] = 1.0;
        }
        SwatsCoef {
            sgd,
            step_size: h.lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t)),
            sgd_lr: s[SGD_LR],
            first_sgd,
            b1,
            b2,
            eps: c.eps,
        }
    }

    /// Returns `[p_k·p_k, p_k·g, 0, 0]` in the Adam phase.
    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &SwatsCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        let n = p.len();
        let betas = Betas::<T>::new(c.b1, c.b2);
        if c.sgd {
            let rate = T::from_f64((1.0 - c.b1) * c.sgd_lr);
            let mut buf = s.c;
            buf.assert_len(n);
            for (i, param) in p.iter_mut().enumerate() {
                let d = g.at(i);
                let b = if c.first_sgd {
                    d
                } else {
                    betas.b1 * buf.get(i) + d
                };
                buf.set(i, b);
                *param = *param - rate * b;
            }
            return [0.0; 4];
        }
        let neg_step = T::from_f64(-c.step_size);
        let eps = T::from_f64(c.eps);
        let (mut m, mut v) = (s.a, s.b);
        m.assert_len(n);
        v.assert_len(n);
        let [pp, pg] = lane_sums(n, |i| {
            let d = g.at(i);
            // SAFETY: lane_sums calls with i < n, and every buffer here holds n elements.
            let (mi, vi, pi) = unsafe {
                let mi = betas.mul_add_first(m.get_unchecked(i), d);
                m.set_unchecked(i, mi);
                let vi = betas.second(v.get_unchecked(i), d);
                v.set_unchecked(i, vi);
                (mi, vi, p.get_unchecked_mut(i))
            };
            let step = neg_step * mi / (vi.sqrt() + eps);
            *pi = *pi + step;
            let (x, y) = (step.to_f64(), d.to_f64());
            [x * x, x * y]
        });
        [pp, pg, 0.0, 0.0]
    }

    fn end(_cfg: &SwatsConfig, s: &mut Scalars, c: &SwatsCoef, sums: Sums) {
        let (pp, pg) = (sums[0], sums[1]);
        if c.sgd || pg == 0.0 {
            return;
        }
        let k = s[STEP];
        let gamma = pp / -pg;
        s[LAMBDA] = c.b2 * s[LAMBDA] + (1.0 - c.b2) * gamma;
        let corrected = s[LAMBDA] / (1.0 - c.b2.powf(k));
        if k > 1.0 && (corrected - gamma).abs() < c.eps {
            s[PHASE] = 1.0;
            s[SGD_LR] = corrected;
            s[SWITCHED_AT] = k;
        }
    }
}

/// Whether and when one tensor switched from Adam to SGD.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchStatus {
    /// Tensor name.
    pub tensor: String,
    /// The step at which it switched, if it did.
    pub switched_at: Option<u64>,
    /// The learned SGD learning rate Λ (valid once switched).
    pub sgd_lr: f64,
}

/// SWATS's switch status of every tensor; `None` when `opt` is not (or does not wrap) SWATS.
pub fn switch_status<T: Real>(opt: &dyn Optimizer<T>) -> Option<Vec<SwitchStatus>> {
    let state = opt.scalar_state();
    let mut out = Vec::new();
    for (tensor, scalars) in state {
        let get = |k: &str| scalars.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let (Some(at), Some(lr)) = (get("switched_at"), get("sgd_lr")) else {
            return None;
        };
        out.push(SwitchStatus {
            tensor,
            switched_at: (at > 0.0).then_some(at as u64),
            sgd_lr: lr,
        });
    }
    Some(out)
}
