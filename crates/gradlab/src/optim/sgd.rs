//! Stochastic gradient descent with momentum, Nesterov momentum, and L2 (`sgd`) or
//! decoupled (`sgdw`) weight decay.
//!
//! PyTorch's `SGD` (torch 2.x, single-tensor path), with `g` the gradient:
//! ```text
//! g ← g + λθ                                   (sgd: L2 decay)
//! θ ← θ(1 − γλ)                                (sgdw: decoupled decay, Loshchilov & Hutter)
//! b ← g on the first step, else μb + (1 − τ)g  (momentum μ, dampening τ)
//! g ← g + μb (nesterov) or b
//! θ ← θ − γg
//! ```
//! The learning rate multiplies the whole buffer (PyTorch's convention, not Sutskever's
//! `v = μv + γg`), which matters when a schedule changes γ.

use super::rule::{check, decay_terms, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Hyperparameters of `sgd` / `sgdw` besides the learning rate γ (default 1e-3) and the
/// momentum μ (default 0), which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SgdConfig {
    /// `sgdw`: decoupled weight decay.
    pub decoupled: bool,
    /// Dampening τ (default 0).
    pub dampening: f64,
    /// Weight decay λ (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (requires μ > 0 and τ = 0).
    pub nesterov: bool,
}

/// The SGD rule.
pub struct Sgd;

/// Per-step coefficients shared with LARS.
#[derive(Debug, Default, Clone, Copy)]
pub struct MomentumCoef {
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Dampening.
    pub dampening: f64,
    /// Coupled (L2) decay added to the gradient.
    pub l2: f64,
    /// Factor applied to θ before the update (1 − γλ for decoupled decay, else 1).
    pub decay_factor: f64,
    /// Multiplier on the decayed gradient (LARS's trust ratio; 1 for SGD).
    pub trust: f64,
    /// Nesterov.
    pub nesterov: bool,
    /// First step with a momentum buffer: the buffer starts as the gradient.
    pub first: bool,
}

impl MomentumCoef {
    /// Advances `step` and the `has_buffer` flag of `s`, and fills the common fields.
    pub fn begin(s: &mut Scalars, lr: f64, momentum: f64, dampening: f64, nesterov: bool) -> Self {
        s[0] += 1.0;
        let first = momentum != 0.0 && s[1] == 0.0;
        if momentum != 0.0 {
            s[1] = 1.0;
        }
        MomentumCoef {
            lr,
            momentum,
            dampening,
            l2: 0.0,
            decay_factor: 1.0,
            trust: 1.0,
            nesterov,
            first,
        }
    }
}

/// The momentum update shared by SGD, SGDW and LARS: `p` params, `buf` the momentum buffer.
#[inline(always)]
pub fn momentum_kernel<T: Real, B: Buffer<T>>(c: &MomentumCoef, p: &mut [T], g: Grad<T>, buf: B) {
    // One branch-free loop per variant, so that each vectorises.
    match (c.momentum != 0.0, c.first, c.nesterov) {
        (false, _, _) => momentum_loop::<T, B, false, false, false>(c, p, g, buf),
        (true, true, false) => momentum_loop::<T, B, true, true, false>(c, p, g, buf),
        (true, true, true) => momentum_loop::<T, B, true, true, true>(c, p, g, buf),
        (true, false, false) => momentum_loop::<T, B, true, false, false>(c, p, g, buf),
        (true, false, true) => momentum_loop::<T, B, true, false, true>(c, p, g, buf),
    }
}

/// Decoupled decay multiplies by `1 − γλ` (exactly 1 without it), L2 decay adds `λθ` (exactly
/// 0 without it) and the trust ratio is exactly 1 for SGD, so none needs a branch.
#[inline(always)]
fn momentum_loop<
    T: Real,
    B: Buffer<T>,
    const MOMENTUM: bool,
    const FIRST: bool,
    const NESTEROV: bool,
>(
    c: &MomentumCoef,
    p: &mut [T],
    g: Grad<T>,
    mut buf: B,
) {
    let n = p.len();
    let lr = T::from_f64(c.lr);
    let mu = T::from_f64(c.momentum);
    let keep = T::from_f64(1.0 - c.dampening);
    let l2 = T::from_f64(c.l2);
    let decay = T::from_f64(c.decay_factor);
    let trust = T::from_f64(c.trust);
    if MOMENTUM {
        buf.assert_len(n);
    }
    for (i, param) in p.iter_mut().enumerate() {
        let theta0 = *param;
        let mut d = (g.at(i) + l2 * theta0) * trust;
        let theta = theta0 * decay;
        if MOMENTUM {
            let b = if FIRST { d } else { mu * buf.get(i) + keep * d };
            buf.set(i, b);
            d = if NESTEROV { d + mu * b } else { b };
        }
        *param = theta + (-lr) * d;
    }
}

impl Rule for Sgd {
    type Config = SgdConfig;
    type Coef = MomentumCoef;
    const NAME: &'static str = "sgd";
    const SCALARS: &'static [&'static str] = &["step", "has_buffer"];

    fn parse(args: &Args) -> Result<(SgdConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-3)?;
        let momentum = check::decay(args, "momentum", 0.0)?;
        let cfg = SgdConfig {
            decoupled: args.spec().name == "sgdw",
            dampening: check::fraction(args, "dampening", 0.0)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            nesterov: args.bool("nesterov", false)?,
        };
        if cfg.nesterov && (momentum <= 0.0 || cfg.dampening != 0.0) {
            return Err(args.invalid(
                "nesterov",
                "Nesterov momentum requires momentum > 0 and dampening = 0",
            ));
        }
        Ok((cfg, Hyper::new(lr, Some(momentum))))
    }

    fn name(cfg: &SgdConfig) -> &'static str {
        if cfg.decoupled {
            "sgdw"
        } else {
            "sgd"
        }
    }

    fn to_spec(c: &SgdConfig, h: &Hyper) -> Spec {
        Spec::new(Self::name(c))
            .with("lr", h.lr)
            .with("momentum", h.momentum_or_zero())
            .with("dampening", c.dampening)
            .with("weight_decay", c.weight_decay)
            .with("nesterov", c.nesterov)
    }

    /// p (2), g (1), and the momentum buffer (2) when there is momentum.
    fn traffic(_: &SgdConfig, h: &Hyper) -> usize {
        if h.momentum_or_zero() != 0.0 {
            5
        } else {
            3
        }
    }
    fn slots(_: &[SgdConfig]) -> Vec<&'static str> {
        vec!["momentum_buffer"]
    }

    fn begin(c: &SgdConfig, h: &Hyper, s: &mut Scalars) -> MomentumCoef {
        let mu = h.momentum_or_zero();
        let mut coef = MomentumCoef::begin(s, h.lr, mu, c.dampening, c.nesterov);
        (coef.l2, coef.decay_factor) = decay_terms(c.decoupled, h.lr, c.weight_decay);
        coef
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(
        c: &MomentumCoef,
        p: &mut [T],
        g: Grad<T>,
        s: Slots<B>,
    ) -> Sums {
        momentum_kernel(c, p, g, s.a);
        [0.0; 4]
    }
}
