//! LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, arXiv:1708.03888),
//! with PyTorch SGD conventions.
//!
//! Per tensor, with `‖·‖` the L2 norm over that tensor:
//! ```text
//! d ← g + λθ
//! d ← d · η‖θ‖ / (‖g‖ + λ‖θ‖ + ε)      (only when ‖θ‖ > 0 and ‖g‖ > 0; η = trust_coefficient)
//! then SGD momentum on d: b ← d (first step) or μb + (1 − τ)d; d ← d + μb (nesterov) or b
//! θ ← θ − γd
//! ```
//! Unlike torch-optimizer 0.3.0, the trust ratio is applied whatever the weight decay.

use super::rule::{check, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums, LANES};
use super::sgd::{momentum_kernel, MomentumCoef};
use crate::spec::{Args, Domain, Spec};
use crate::{Real, Result};

/// Hyperparameters of `lars` besides the learning rate (default 1e-2) and the momentum (default 0),
/// which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LarsConfig {
    /// Dampening (default 0).
    pub dampening: f64,
    /// Weight decay λ (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Trust coefficient η (default 0.01).
    pub trust_coefficient: f64,
    /// ε in the trust ratio's denominator (default 1e-8).
    pub eps: f64,
}

/// The LARS rule.
pub struct Lars;

/// LARS coefficients: SGD's plus what the trust ratio needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct LarsCoef {
    sgd: MomentumCoef,
    weight_decay: f64,
}

impl Rule for Lars {
    type Config = LarsConfig;
    type Coef = LarsCoef;
    const NAME: &'static str = "lars";
    const SCALARS: &'static [&'static str] = &["step", "has_buffer"];
    const PRE_PASS: bool = true;

    fn parse(args: &Args) -> Result<(LarsConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-2)?;
        let momentum = check::decay(args, "momentum", 0.0)?;
        let cfg = LarsConfig {
            dampening: check::fraction(args, "dampening", 0.0)?,
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            nesterov: args.bool("nesterov", false)?,
            trust_coefficient: args.number("trust_coefficient", 0.01, Domain::POSITIVE)?,
            eps: check::non_negative(args, "eps", 1e-8)?,
        };
        if cfg.nesterov && (momentum <= 0.0 || cfg.dampening != 0.0) {
            return Err(args.invalid(
                "nesterov",
                "Nesterov momentum requires momentum > 0 and dampening = 0",
            ));
        }
        Ok((cfg, Hyper::new(lr, Some(momentum))))
    }

    fn to_spec(c: &LarsConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("momentum", h.momentum_or_zero())
            .with("dampening", c.dampening)
            .with("weight_decay", c.weight_decay)
            .with("nesterov", c.nesterov)
            .with("trust_coefficient", c.trust_coefficient)
            .with("eps", c.eps)
    }

    /// The norm pass reads p and g (2), then SGD's update (3, or 5 with momentum).
    fn traffic(_: &LarsConfig, h: &Hyper) -> usize {
        if h.momentum_or_zero() != 0.0 {
            7
        } else {
            5
        }
    }
    fn slots(_: &[LarsConfig]) -> Vec<&'static str> {
        vec!["momentum_buffer"]
    }

    fn begin(c: &LarsConfig, h: &Hyper, s: &mut Scalars) -> LarsCoef {
        let mut sgd = MomentumCoef::begin(s, h.lr, h.momentum_or_zero(), c.dampening, c.nesterov);
        sgd.l2 = c.weight_decay;
        LarsCoef {
            sgd,
            weight_decay: c.weight_decay,
        }
    }

    #[inline(always)]
    fn pre_kernel<T: Real, B: Buffer<T>>(_: &LarsCoef, p: &[T], g: Grad<T>, _: Slots<B>) -> Sums {
        // Fixed lanes over fixed blocks: vectorisable and deterministic.
        let raw = g.raw();
        let (mut pp, mut gg) = ([0.0f64; LANES], [0.0f64; LANES]);
        let (pb, pt) = p.as_chunks::<LANES>();
        let (gb, gt) = raw.as_chunks::<LANES>();
        for (pc, gc) in pb.iter().zip(gb) {
            for l in 0..LANES {
                let (x, gi) = (pc[l].to_f64(), g.process(gc[l]).to_f64());
                pp[l] += x * x;
                gg[l] += gi * gi;
            }
        }
        for (l, (x, gi)) in pt.iter().zip(gt).enumerate() {
            let (x, gi) = (x.to_f64(), g.process(*gi).to_f64());
            pp[l] += x * x;
            gg[l] += gi * gi;
        }
        let (pp, gg): (f64, f64) = (pp.iter().sum(), gg.iter().sum());
        [pp, gg, 0.0, 0.0]
    }

    fn mid(cfg: &LarsConfig, c: &mut LarsCoef, sums: Sums) {
        let (p_norm, g_norm) = (sums[0].sqrt(), sums[1].sqrt());
        c.sgd.trust = if p_norm > 0.0 && g_norm > 0.0 {
            cfg.trust_coefficient * p_norm / (g_norm + c.weight_decay * p_norm + cfg.eps)
        } else {
            1.0
        };
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &LarsCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        momentum_kernel(&c.sgd, p, g, s.a);
        [0.0; 4]
    }
}
