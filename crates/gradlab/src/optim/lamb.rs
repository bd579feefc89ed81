//! LAMB (You et al. 2019, arXiv:1904.00962): Adam directions rescaled per tensor by a trust
//! ratio. Exactly torch-optimizer 0.3.0's `Lamb`:
//!
//! ```text
//! m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
//! r = m / (√v + ε) + λθ
//! τ = min(‖θ‖, clamp_value) / ‖r‖      (1 if either norm is 0, or when adam=true)
//! s = γ √(1 − β2^t)/(1 − β1^t) if debias else γ
//! θ ← θ − s τ r
//! ```

use super::rule::{check, lane_sums, Betas, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `lamb` besides the learning rate (default 1e-3) and β1 (default 0.9),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LambConfig {
    /// β2 (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-6).
    pub eps: f64,
    /// Weight decay added to the Adam direction (default 0).
    pub weight_decay: f64,
    /// Upper clamp of ‖θ‖ in the trust ratio (default 10).
    pub clamp_value: f64,
    /// Plain Adam direction (trust ratio 1).
    pub adam: bool,
    /// Bias-correct the step size.
    pub debias: bool,
}

/// The LAMB rule.
pub struct Lamb;

/// LAMB's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct LambCoef {
    step_size: f64,
    trust: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    weight_decay: f64,
}

impl LambCoef {
    #[inline(always)]
    fn direction<T: Real>(&self, m: T, v: T, theta: T) -> T {
        // Adds exactly 0 without weight decay: no branch in the loop.
        m / (v.sqrt() + T::from_f64(self.eps)) + T::from_f64(self.weight_decay) * theta
    }
}

impl Rule for Lamb {
    type Config = LambConfig;
    type Coef = LambCoef;
    const NAME: &'static str = "lamb";
    const COMPACT_STATE: bool = true;
    const PRE_PASS: bool = true;

    fn parse(args: &Args) -> Result<(LambConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-3)?;
        let (beta1, beta2) = check::betas(args, (0.9, 0.999))?;
        let cfg = LambConfig {
            beta2,
            eps: check::non_negative(args, "eps", 1e-6)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            clamp_value: check::non_negative(args, "clamp_value", 10.0)?,
            adam: args.bool("adam", false)?,
            debias: args.bool("debias", false)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn to_spec(c: &LambConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), c.beta2))
            .with("eps", c.eps)
            .with("weight_decay", c.weight_decay)
            .with("clamp_value", c.clamp_value)
            .with("adam", c.adam)
            .with("debias", c.debias)
    }

    /// Moment pass: p, g, m, v read, m, v written (6); update pass: p, m, v read, p written (4).
    fn traffic(_: &LambConfig, _: &Hyper) -> usize {
        10
    }
    /// m, v read and written in the moment pass, read in the update pass.
    fn slot_traffic(_: &LambConfig) -> usize {
        6
    }
    fn slots(_: &[LambConfig]) -> Vec<&'static str> {
        vec!["exp_avg", "exp_avg_sq"]
    }

    fn begin(c: &LambConfig, h: &Hyper, s: &mut Scalars) -> LambCoef {
        s[0] += 1.0;
        let t = s[0];
        let (b1, b2) = (h.momentum_or_zero(), c.beta2);
        let correction = if c.debias {
            (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t))
        } else {
            1.0
        };
        LambCoef {
            step_size: h.lr * correction,
            trust: 1.0,
            b1,
            b2,
            eps: c.eps,
            weight_decay: c.weight_decay,
        }
    }

    /// Updates the moments and sums ‖θ‖² and ‖r‖².
    #[inline(always)]
    fn pre_kernel<T: Real, B: Buffer<T>>(c: &LambCoef, p: &[T], g: Grad<T>, s: Slots<B>) -> Sums {
        moments(c, p, g, s.a, s.b)
    }

    fn mid(cfg: &LambConfig, c: &mut LambCoef, sums: Sums) {
        let weight_norm = sums[0].sqrt().min(cfg.clamp_value);
        let adam_norm = sums[1].sqrt();
        c.trust = if cfg.adam || weight_norm == 0.0 || adam_norm == 0.0 {
            1.0
        } else {
            weight_norm / adam_norm
        };
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &LambCoef, p: &mut [T], _g: Grad<T>, s: Slots<B>) -> Sums {
        step(c, p, s.a, s.b);
        [0.0; 4]
    }
}

/// The moment pass over a chunk, whatever the moments are stored in: updates them and sums
/// ‖θ‖² and ‖r‖².
#[inline(always)]
fn moments<T: Real, M: Buffer<T>, V: Buffer<T>>(
    c: &LambCoef,
    p: &[T],
    g: Grad<T>,
    mut m: M,
    mut v: V,
) -> Sums {
    let betas = Betas::<T>::new(c.b1, c.b2);
    m.assert_len(p.len());
    v.assert_len(p.len());
    let [pp, rr] = lane_sums(p.len(), |i| {
        // SAFETY: lane_sums calls with i < n, the length of every buffer here.
        let pi = unsafe { *p.get_unchecked(i) };
        let d = g.at(i);
        let m_new = betas.mul_add_first(m.get(i), d);
        m.set(i, m_new);
        let v_new = betas.second(v.get(i), d);
        v.set(i, v_new);
        let r = c.direction(m_new, v_new, pi).to_f64();
        let x = pi.to_f64();
        [x * x, r * r]
    });
    [pp, rr, 0.0, 0.0]
}

/// The update pass over a chunk (the moments are only read).
#[inline(always)]
fn step<T: Real, M: Buffer<T>, V: Buffer<T>>(c: &LambCoef, p: &mut [T], m: M, v: V) {
    // A copy: the compiler cannot tell that writing the parameters leaves `*c` alone, and
    // reloading it each element kept the loop from vectorising.
    let c = *c;
    m.assert_len(p.len());
    v.assert_len(p.len());
    let neg = T::from_f64(-c.step_size * c.trust);
    for (i, param) in p.iter_mut().enumerate() {
        *param = *param + neg * c.direction(m.get(i), v.get(i), *param);
    }
}
