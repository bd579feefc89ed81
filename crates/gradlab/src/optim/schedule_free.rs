//! Schedule-free SGD and AdamW (Defazio et al. 2024, arXiv:2405.15682, "The Road Less
//! Scheduled"), as `schedulefree` 1.4.1's `SGDScheduleFree` and `AdamWScheduleFree`:
//!
//! ```text
//! γ_k = lr·(k+1)/warmup_steps during warm-up, else lr;   γmax = max(γmax, γ_k)
//! w_k = (k+1)^r · γmax^weight_lr_power;   c = w_k / Σ w   (the averaging weight)
//! AdamW:  v ← β2 v + (1 − β2) g²;   g ← g / (√(v / (1 − β2^(k+1))) + ε)
//! g ← g + λ y                                (weight decay at y)
//! y ← lerp(y, z, c) + γ_k (β(1 − c) − 1) g   (the parameters hold y, where gradients are taken)
//! z ← z − γ_k g                              (the base iterate; z = θ before the first step)
//! x = lerp(y, z, 1 − 1/β)                    (the average: what is evaluated, `eval_mode`)
//! ```
//! β is `momentum` (SGD) or `betas[0]` (AdamW). No learning-rate schedule is needed: the
//! average plays its part (warm-up only). [`Optimizer::eval_mode`](super::Optimizer::eval_mode)
//! puts x into the parameters and `train_mode` y back, as the reference's `eval()`/`train()`.

use super::rule::{check, lerp, Betas, Buffer, Grad, Hyper, Rule, Scalars, Slots, Sums};
use crate::spec::{Args, Domain, Spec};
use crate::{Real, Result};

/// Hyperparameters of `sgd_schedulefree` and `adamw_schedulefree` besides the learning rate
/// (default 1.0 for SGD, 0.0025 for AdamW) and β, the interpolation between z and x (SGD's
/// `momentum`, AdamW's `betas[0]`; default 0.9), which the engine owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFreeConfig {
    /// AdamW's normalisation (`adamw_schedulefree`) or plain SGD (`sgd_schedulefree`).
    pub adamw: bool,
    /// AdamW's β2 (default 0.999).
    pub beta2: f64,
    /// AdamW's ε (default 1e-8).
    pub eps: f64,
    /// Weight decay λ, applied at y (default 0).
    pub weight_decay: f64,
    /// Linear warm-up length in steps (default 0).
    pub warmup_steps: u64,
    /// Power of the step index in the averaging weights (default 0).
    pub r: f64,
    /// Power of the largest learning rate so far in the averaging weights (default 2).
    pub weight_lr_power: f64,
}

/// The schedule-free rule (both variants).
pub struct ScheduleFree;

/// Per-step coefficients.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScheduleFreeCoef {
    first: bool,
    adamw: bool,
    lr: f64,
    ckp1: f64,
    y_step: f64,
    beta2: f64,
    bias_correction2: f64,
    eps: f64,
    weight_decay: f64,
}

/// Scalar slots after `step`: Σ w and the largest learning rate so far.
const WEIGHT_SUM: usize = 1;
const LR_MAX: usize = 2;

impl Rule for ScheduleFree {
    type Config = ScheduleFreeConfig;
    type Coef = ScheduleFreeCoef;
    const NAME: &'static str = "sgd_schedulefree";
    const SCALARS: &'static [&'static str] = &["step", "weight_sum", "lr_max"];
    const EVAL_POINT: bool = true;

    fn parse(args: &Args) -> Result<(ScheduleFreeConfig, Hyper)> {
        let adamw = args.spec().name == "adamw_schedulefree";
        let lr = check::non_negative(args, "lr", if adamw { 0.0025 } else { 1.0 })?;
        let (beta1, beta2) = if adamw {
            check::betas(args, (0.9, 0.999))?
        } else {
            (args.number("momentum", 0.9, Domain::UNIT_OPEN)?, 0.0)
        };
        if adamw && beta1 == 0.0 {
            return Err(args.invalid(
                "betas",
                "beta1 must be above 0: the evaluation point x = lerp(y, z, 1 - 1/beta1) needs it",
            ));
        }
        let cfg = ScheduleFreeConfig {
            adamw,
            beta2,
            eps: if adamw {
                check::non_negative(args, "eps", 1e-8)?
            } else {
                0.0
            },
            weight_decay: check::non_negative(args, "weight_decay", 0.0)?,
            warmup_steps: args.count("warmup_steps", 0)?,
            r: args.number("r", 0.0, Domain::FINITE)?,
            weight_lr_power: args.number("weight_lr_power", 2.0, Domain::FINITE)?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    fn to_spec(c: &ScheduleFreeConfig, h: &Hyper) -> Spec {
        let spec = Spec::new(Self::name(c)).with("lr", h.lr);
        let spec = if c.adamw {
            spec.with("betas", (h.momentum_or_zero(), c.beta2))
                .with("eps", c.eps)
        } else {
            spec.with("momentum", h.momentum_or_zero())
        };
        spec.with("weight_decay", c.weight_decay)
            .with("warmup_steps", c.warmup_steps as f64)
            .with("r", c.r)
            .with("weight_lr_power", c.weight_lr_power)
    }

    fn name(c: &ScheduleFreeConfig) -> &'static str {
        if c.adamw {
            "adamw_schedulefree"
        } else {
            "sgd_schedulefree"
        }
    }

    fn slots(cfgs: &[ScheduleFreeConfig]) -> Vec<&'static str> {
        if cfgs[0].adamw {
            vec!["z", "exp_avg_sq"]
        } else {
            vec!["z"]
        }
    }
    fn scalars_init(_: &ScheduleFreeConfig, _: &Hyper) -> Scalars {
        [0.0, 0.0, -1.0, 0.0, 0.0, 0.0]
    }

    fn begin(c: &ScheduleFreeConfig, h: &Hyper, s: &mut Scalars) -> ScheduleFreeCoef {
        let k = s[0];
        let sched = if k < c.warmup_steps as f64 {
            (k + 1.0) / c.warmup_steps as f64
        } else {
            1.0
        };
        let lr = h.lr * sched;
        s[LR_MAX] = s[LR_MAX].max(lr);
        let weight = (k + 1.0).powf(c.r) * s[LR_MAX].powf(c.weight_lr_power);
        s[WEIGHT_SUM] += weight;
        let ckp1 = if s[WEIGHT_SUM] == 0.0 {
            0.0
        } else {
            weight / s[WEIGHT_SUM]
        };
        s[0] = k + 1.0;
        ScheduleFreeCoef {
            first: k == 0.0,
            adamw: c.adamw,
            lr,
            ckp1,
            y_step: lr * (h.momentum_or_zero() * (1.0 - ckp1) - 1.0),
            beta2: c.beta2,
            bias_correction2: 1.0 - c.beta2.powf(k + 1.0),
            eps: c.eps,
            weight_decay: c.weight_decay,
        }
    }

    #[inline(always)]
    fn kernel<T: Real, B: Buffer<T>>(
        c: &ScheduleFreeCoef,
        p: &mut [T],
        g: Grad<T>,
        s: Slots<B>,
    ) -> Sums {
        let mut z = s.a;
        if c.first {
            z.assert_len(p.len());
            for (i, &y) in p.iter().enumerate() {
                z.set(i, y);
            }
        }
        if c.adamw {
            adamw_loop(c, p, g, z, s.b);
        } else {
            sgd_loop(c, p, g, z);
        }
        [0.0; 4]
    }

    fn swap_point<T: Real>(
        _: &ScheduleFreeConfig,
        h: &Hyper,
        p: &mut [T],
        slots: &[Vec<T>],
        to_eval: bool,
    ) {
        let beta1 = h.momentum_or_zero();
        let w = if to_eval {
            1.0 - 1.0 / beta1
        } else {
            1.0 - beta1
        };
        let (w, one_minus_w) = (T::from_f64(w), T::from_f64(1.0 - w));
        for (y, z) in p.iter_mut().zip(&slots[0]) {
            *y = lerp(*y, *z, w, one_minus_w);
        }
    }
}

/// `y ← lerp(y, z, c) + γ(β(1−c) − 1)·d; z ← z − γ·d` for the processed gradient `d`.
#[inline(always)]
fn move_y_and_z<T: Real>(y: &mut T, z: &mut T, d: T, ckp1: (T, T), y_step: T, lr: T) {
    let zi = *z;
    *y = lerp(*y, zi, ckp1.0, ckp1.1) + y_step * d;
    *z = zi - lr * d;
}

#[inline(always)]
fn sgd_loop<T: Real, Z: Buffer<T>>(c: &ScheduleFreeCoef, p: &mut [T], g: Grad<T>, mut z: Z) {
    let wd = T::from_f64(c.weight_decay);
    let ckp1 = (T::from_f64(c.ckp1), T::from_f64(1.0 - c.ckp1));
    let (y_step, lr) = (T::from_f64(c.y_step), T::from_f64(c.lr));
    for (i, y) in p.iter_mut().enumerate() {
        let d = g.at(i) + wd * *y;
        let mut zi = z.get(i);
        move_y_and_z(y, &mut zi, d, ckp1, y_step, lr);
        z.set(i, zi);
    }
}

#[inline(always)]
fn adamw_loop<T: Real, Z: Buffer<T>, V: Buffer<T>>(
    c: &ScheduleFreeCoef,
    p: &mut [T],
    g: Grad<T>,
    mut z: Z,
    mut v: V,
) {
    let wd = T::from_f64(c.weight_decay);
    let ckp1 = (T::from_f64(c.ckp1), T::from_f64(1.0 - c.ckp1));
    let (y_step, lr) = (T::from_f64(c.y_step), T::from_f64(c.lr));
    // Only the second moment: β1 plays no part in it.
    let betas = Betas::<T>::new(0.0, c.beta2);
    let (bc2, eps) = (T::from_f64(c.bias_correction2), T::from_f64(c.eps));
    for (i, y) in p.iter_mut().enumerate() {
        let gi = g.at(i);
        let vi = betas.second(v.get(i), gi);
        v.set(i, vi);
        let d = gi / ((vi / bc2).sqrt() + eps) + wd * *y;
        let mut zi = z.get(i);
        move_y_and_z(y, &mut zi, d, ckp1, y_step, lr);
        z.set(i, zi);
    }
}
