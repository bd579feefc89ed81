//! Rprop (Riedmiller & Braun 1993, "A Direct Adaptive Method for Faster Backpropagation
//! Learning: The RPROP Algorithm"), as PyTorch's `Rprop` (no weight backtracking):
//!
//! ```text
//! s ← sign(g · g_prev)
//! Δ ← clamp(Δ · (η+ if s > 0, η− if s < 0, 1 otherwise), Δmin, Δmax)   (Δ starts at γ)
//! g ← 0 where s < 0                 (a sign change shrinks the step and skips the move)
//! θ ← θ − sign(g) · Δ
//! g_prev ← g
//! ```
//! Only the sign of the gradient is used. As in PyTorch, the learning rate only sets the
//! initial step size Δ (read at the first step): later changes, and schedules, do not act.

use super::rule::{check, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Domain, Spec};
use crate::{Real, Result};

/// Hyperparameters of `rprop` besides the learning rate, the initial step size (default
/// 1e-2), which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RpropConfig {
    /// (η−, η+), with 0 < η− < 1 < η+ (default (0.5, 1.2)).
    pub etas: (f64, f64),
    /// (Δmin, Δmax), the step sizes' bounds (default (1e-6, 50)).
    pub step_sizes: (f64, f64),
}

/// The Rprop rule.
pub struct Rprop;

/// Rprop's per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct RpropCoef {
    /// On the first step the step sizes start at the learning rate.
    first: bool,
    lr: f64,
    eta_minus: f64,
    eta_plus: f64,
    step_min: f64,
    step_max: f64,
}

impl Rule for Rprop {
    type Config = RpropConfig;
    type Coef = RpropCoef;
    const NAME: &'static str = "rprop";

    fn parse(args: &Args) -> Result<(RpropConfig, Hyper)> {
        let lr = check::non_negative(args, "lr", 1e-2)?;
        let etas = args.pair("etas", (0.5, 1.2))?;
        if !(etas.0 > 0.0 && etas.0 < 1.0 && etas.1 > 1.0 && etas.1.is_finite()) {
            return Err(args.invalid(
                "etas",
                format!(
                    "must be (η−, η+) with 0 < η− < 1 < η+ (finite), got ({}, {})",
                    crate::spec::format_number(etas.0),
                    crate::spec::format_number(etas.1)
                ),
            ));
        }
        let step_sizes = args.pair_in("step_sizes", (1e-6, 50.0), Domain::NON_NEGATIVE)?;
        if step_sizes.0 > step_sizes.1 {
            return Err(args.invalid(
                "step_sizes",
                format!(
                    "must be (min, max) with min <= max, got ({}, {})",
                    crate::spec::format_number(step_sizes.0),
                    crate::spec::format_number(step_sizes.1)
                ),
            ));
        }
        Ok((RpropConfig { etas, step_sizes }, Hyper::new(lr, None)))
    }

    fn to_spec(c: &RpropConfig, h: &Hyper) -> Spec {
        Spec::new(Self::NAME)
            .with("lr", h.lr)
            .with("etas", c.etas)
            .with("step_sizes", c.step_sizes)
    }

    fn slots(_: &[RpropConfig]) -> Vec<&'static str> {
        vec!["prev", "step_size"]
    }

    fn begin(c: &RpropConfig, h: &Hyper, s: &mut Scalars) -> RpropCoef {
        s[0] += 1.0;
        RpropCoef {
            first: s[0] == 1.0,
            lr: h.lr,
            eta_minus: c.etas.0,
            eta_plus: c.etas.1,
            step_min: c.step_sizes.0,
            step_max: c.step_sizes.1,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(c: &RpropCoef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums {
        rprop_loop(c, p, g, s.a, s.b);
        [0.0; 4]
    }
}

/// The Rprop update over a chunk.
#[inline(always)]
fn rprop_loop<T: Real, P: Buffer<T>, D: Buffer<T>>(
    c: &RpropCoef,
    p: &mut [T],
    g: Grad<T>,
    mut prev: P,
    mut step_size: D,
) {
    let zero = T::from_f64(0.0);
    let one = T::from_f64(1.0);
    let (eta_minus, eta_plus) = (T::from_f64(c.eta_minus), T::from_f64(c.eta_plus));
    let (step_min, step_max) = (T::from_f64(c.step_min), T::from_f64(c.step_max));
    let initial = T::from_f64(c.lr);
    for (i, param) in p.iter_mut().enumerate() {
        let d = g.at(i);
        let agreement = d * prev.get(i);
        let factor = if agreement > zero {
            eta_plus
        } else if agreement < zero {
            eta_minus
        } else {
            one
        };
        let size = if c.first { initial } else { step_size.get(i) };
        let size = (size * factor).max(step_min).min(step_max);
        step_size.set(i, size);
        let d = if agreement < zero { zero } else { d };
        *param = *param - d.sign() * size;
        prev.set(i, d);
    }
}
