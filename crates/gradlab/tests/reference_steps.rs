//! The fast path against a plain reference: for each optimizer here, one readable loop per
//! step in f64 (no chunks, no threads, no fused passes; PyTorch's update as written in its
//! docs), and a property test that the engine's chunked, threaded kernels give the same
//! parameters on random layouts — many tensors, odd lengths, sizes across chunk boundaries,
//! 1 to 3 threads — within a stated bound of a few ULPs per step.

mod common;

use common::*;
use gradlab::optim::{self, plan::CHUNK, Layout, Optimizer, Options};
use proptest::prelude::*;

/// The relative difference allowed after `STEPS` steps: the fast kernels may order the same
/// operations differently (fused multiply-adds, lanes), each step adding a few ULPs.
const TOLERANCE: f64 = 1e-12;
const STEPS: usize = 12;

/// A reference optimizer: the state it needs, one step over the flat parameters.
trait Reference {
    fn step(&mut self, t: usize, theta: &mut [f64], g: &[f64]);
}

/// `torch.optim.SGD`.
struct Sgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    buf: Vec<f64>,
}

impl Reference for Sgd {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        for i in 0..theta.len() {
            let mut g = grad[i] + self.weight_decay * theta[i];
            if self.momentum != 0.0 {
                self.buf[i] = if t == 1 {
                    g
                } else {
                    self.momentum * self.buf[i] + (1.0 - self.dampening) * g
                };
                g = if self.nesterov {
                    g + self.momentum * self.buf[i]
                } else {
                    self.buf[i]
                };
            }
            theta[i] -= self.lr * g;
        }
    }
}

/// `torch.optim.Adam` (L2 weight decay) and `AdamW` (decoupled), with AMSGrad.
struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    amsgrad: bool,
    m: Vec<f64>,
    v: Vec<f64>,
    v_max: Vec<f64>,
}

impl Reference for Adam {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        for i in 0..theta.len() {
            let mut g = grad[i];
            if self.decoupled {
                theta[i] *= 1.0 - self.lr * self.weight_decay;
            } else {
                g += self.weight_decay * theta[i];
            }
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let v = if self.amsgrad {
                self.v_max[i] = self.v_max[i].max(self.v[i]);
                self.v_max[i]
            } else {
                self.v[i]
            };
            let denom = v.sqrt() / bc2.sqrt() + self.eps;
            theta[i] -= self.lr / bc1 * self.m[i] / denom;
        }
    }
}

/// `torch.optim.RMSprop`.
struct RmsProp {
    lr: f64,
    alpha: f64,
    eps: f64,
    weight_decay: f64,
    momentum: f64,
    centered: bool,
    square_avg: Vec<f64>,
    grad_avg: Vec<f64>,
    buf: Vec<f64>,
}

impl Reference for RmsProp {
    fn step(&mut self, _t: usize, theta: &mut [f64], grad: &[f64]) {
        let a = self.alpha;
        for i in 0..theta.len() {
            let g = grad[i] + self.weight_decay * theta[i];
            self.square_avg[i] = a * self.square_avg[i] + (1.0 - a) * g * g;
            let avg = if self.centered {
                self.grad_avg[i] = a * self.grad_avg[i] + (1.0 - a) * g;
                (self.square_avg[i] - self.grad_avg[i] * self.grad_avg[i]).sqrt() + self.eps
            } else {
                self.square_avg[i].sqrt() + self.eps
            };
            if self.momentum > 0.0 {
                self.buf[i] = self.momentum * self.buf[i] + g / avg;
                theta[i] -= self.lr * self.buf[i];
            } else {
                theta[i] -= self.lr * g / avg;
            }
        }
    }
}

/// `torch.optim.Adagrad`.
struct Adagrad {
    lr: f64,
    lr_decay: f64,
    weight_decay: f64,
    eps: f64,
    sum: Vec<f64>,
}

impl Reference for Adagrad {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let clr = self.lr / (1.0 + (t as f64 - 1.0) * self.lr_decay);
        for i in 0..theta.len() {
            let g = grad[i] + self.weight_decay * theta[i];
            self.sum[i] += g * g;
            theta[i] -= clr * g / (self.sum[i].sqrt() + self.eps);
        }
    }
}

/// Lion (Chen et al. 2023), decoupled weight decay.
struct Lion {
    lr: f64,
    betas: (f64, f64),
    weight_decay: f64,
    m: Vec<f64>,
}

impl Reference for Lion {
    fn step(&mut self, _t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        for i in 0..theta.len() {
            theta[i] *= 1.0 - self.lr * self.weight_decay;
            let c = b1 * self.m[i] + (1.0 - b1) * grad[i];
            let sign = if c > 0.0 {
                1.0
            } else if c < 0.0 {
                -1.0
            } else {
                0.0
            };
            theta[i] -= self.lr * sign;
            self.m[i] = b2 * self.m[i] + (1.0 - b2) * grad[i];
        }
    }
}

/// `torch.optim.Adamax`.
struct Adamax {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    m: Vec<f64>,
    u: Vec<f64>,
}

impl Reference for Adamax {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        let clr = self.lr / (1.0 - b1.powi(t as i32));
        for i in 0..theta.len() {
            let g = grad[i] + self.weight_decay * theta[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.u[i] = (b2 * self.u[i]).max(g.abs() + self.eps);
            theta[i] -= clr * self.m[i] / self.u[i];
        }
    }
}

/// `torch.optim.NAdam` (L2 weight decay, momentum decay ψ).
struct NAdam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    momentum_decay: f64,
    mu_product: f64,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Reference for NAdam {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        let mu = |k: usize| b1 * (1.0 - 0.5 * 0.96f64.powf(k as f64 * self.momentum_decay));
        let (mu_t, mu_next) = (mu(t), mu(t + 1));
        self.mu_product *= mu_t;
        let bc2 = 1.0 - b2.powi(t as i32);
        for i in 0..theta.len() {
            let g = grad[i] + self.weight_decay * theta[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let denom = (self.v[i] / bc2).sqrt() + self.eps;
            theta[i] -= self.lr * (1.0 - mu_t) / (1.0 - self.mu_product) * g / denom;
            theta[i] -= self.lr * mu_next / (1.0 - self.mu_product * mu_next) * self.m[i] / denom;
        }
    }
}

/// `torch.optim.RAdam` (Liu et al. 2020): SGD with momentum while the variance of the
/// adaptive rate is intractable (ρ_t ≤ 5), then the rectified adaptive step.
struct RAdam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Reference for RAdam {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        let rho_inf = 2.0 / (1.0 - b2) - 1.0;
        let rho_t = rho_inf - 2.0 * t as f64 * b2.powi(t as i32) / bc2;
        for i in 0..theta.len() {
            let g = grad[i] + self.weight_decay * theta[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let m_hat = self.m[i] / bc1;
            if rho_t > 5.0 {
                let adaptive = bc2.sqrt() / (self.v[i].sqrt() + self.eps);
                let r = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                    / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                    .sqrt();
                theta[i] -= self.lr * m_hat * adaptive * r;
            } else {
                theta[i] -= self.lr * m_hat;
            }
        }
    }
}

/// `torch.optim.Adadelta`.
struct Adadelta {
    lr: f64,
    rho: f64,
    eps: f64,
    weight_decay: f64,
    square_avg: Vec<f64>,
    acc_delta: Vec<f64>,
}

impl Reference for Adadelta {
    fn step(&mut self, _t: usize, theta: &mut [f64], grad: &[f64]) {
        let rho = self.rho;
        for i in 0..theta.len() {
            let g = grad[i] + self.weight_decay * theta[i];
            self.square_avg[i] = rho * self.square_avg[i] + (1.0 - rho) * g * g;
            let delta =
                (self.acc_delta[i] + self.eps).sqrt() / (self.square_avg[i] + self.eps).sqrt() * g;
            self.acc_delta[i] = rho * self.acc_delta[i] + (1.0 - rho) * delta * delta;
            theta[i] -= self.lr * delta;
        }
    }
}

/// AdaBound / AMSBound (Luo et al. 2019; the authors' `adabound` package): Adam's step
/// clipped into bounds converging to `final_lr`.
struct AdaBound {
    lr: f64,
    betas: (f64, f64),
    final_lr: f64,
    gamma: f64,
    eps: f64,
    weight_decay: f64,
    amsbound: bool,
    m: Vec<f64>,
    v: Vec<f64>,
    v_max: Vec<f64>,
}

impl Reference for AdaBound {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        let step_size = self.lr * (1.0 - b2.powi(t as i32)).sqrt() / (1.0 - b1.powi(t as i32));
        // The rate never changes here, so final_lr · lr / initial lr is final_lr.
        let lower = self.final_lr * (1.0 - 1.0 / (self.gamma * t as f64 + 1.0));
        let upper = self.final_lr * (1.0 + 1.0 / (self.gamma * t as f64));
        for i in 0..theta.len() {
            let g = grad[i] + self.weight_decay * theta[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let v = if self.amsbound {
                self.v_max[i] = self.v_max[i].max(self.v[i]);
                self.v_max[i]
            } else {
                self.v[i]
            };
            let eta = (step_size / (v.sqrt() + self.eps)).clamp(lower, upper);
            theta[i] -= eta * self.m[i];
        }
    }
}

/// The L2 norm of `x`.
fn l2(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// LAMB as torch-optimizer 0.3.0's `Lamb`: per tensor, the Adam direction plus weight decay
/// rescaled by the trust ratio min(‖θ‖, clamp)/‖r‖.
struct Lamb {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    debias: bool,
    lengths: Vec<usize>,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Reference for Lamb {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        let s = if self.debias {
            self.lr * (1.0 - b2.powi(t as i32)).sqrt() / (1.0 - b1.powi(t as i32))
        } else {
            self.lr
        };
        let mut start = 0;
        for &len in &self.lengths {
            let range = start..start + len;
            start += len;
            let mut r = Vec::with_capacity(len);
            for i in range.clone() {
                self.m[i] = b1 * self.m[i] + (1.0 - b1) * grad[i];
                self.v[i] = b2 * self.v[i] + (1.0 - b2) * grad[i] * grad[i];
                r.push(self.m[i] / (self.v[i].sqrt() + self.eps) + self.weight_decay * theta[i]);
            }
            let (w, rn) = (l2(&theta[range.clone()]).min(10.0), l2(&r));
            let trust = if w == 0.0 || rn == 0.0 { 1.0 } else { w / rn };
            for (i, ri) in range.zip(&r) {
                theta[i] -= s * trust * ri;
            }
        }
    }
}

/// LARS with PyTorch SGD conventions: per tensor, d = g + λθ scaled by η‖θ‖/(‖g‖ + λ‖θ‖ + ε),
/// then SGD momentum on d.
struct Lars {
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    trust_coefficient: f64,
    eps: f64,
    lengths: Vec<usize>,
    buf: Vec<f64>,
}

impl Reference for Lars {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let mut start = 0;
        for &len in &self.lengths {
            let range = start..start + len;
            start += len;
            let (w, gn) = (l2(&theta[range.clone()]), l2(&grad[range.clone()]));
            let scale = if w > 0.0 && gn > 0.0 {
                self.trust_coefficient * w / (gn + self.weight_decay * w + self.eps)
            } else {
                1.0
            };
            for i in range {
                let d = (grad[i] + self.weight_decay * theta[i]) * scale;
                self.buf[i] = if t == 1 {
                    d
                } else {
                    self.momentum * self.buf[i] + d
                };
                theta[i] -= self.lr * self.buf[i];
            }
        }
    }
}

/// ADOPT (Taniguchi et al. 2024) as pytorch-optimizer's `ADOPT`, without weight decay: the
/// first step only fills v; then the gradient normalised by the previous v (clipped to
/// ±t^¼) drives the momentum, and v is updated after the move.
struct Adopt {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Reference for Adopt {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        let clip = (t as f64).powf(0.25);
        for i in 0..theta.len() {
            let g = grad[i];
            if t == 1 {
                self.v[i] = g * g;
                continue;
            }
            let n = (g / self.v[i].sqrt().max(self.eps)).clamp(-clip, clip);
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * n;
            theta[i] -= self.lr * self.m[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
        }
    }
}

/// AdEMAMix (Pagliardini et al. 2024) as pytorch-optimizer's `AdEMAMix`, without the α/β3
/// warm-up and without weight decay.
struct Ademamix {
    lr: f64,
    betas: (f64, f64, f64),
    alpha: f64,
    eps: f64,
    m1: Vec<f64>,
    m2: Vec<f64>,
    v: Vec<f64>,
}

impl Reference for Ademamix {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2, b3) = self.betas;
        let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        for i in 0..theta.len() {
            let g = grad[i];
            self.m1[i] = b1 * self.m1[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            self.m2[i] = b3 * self.m2[i] + (1.0 - b3) * g;
            theta[i] -= self.lr * (self.m1[i] / bc1 + self.alpha * self.m2[i])
                / (self.v[i].sqrt() / bc2.sqrt() + self.eps);
        }
    }
}

/// `torch.optim.Rprop`: only the gradient's sign, a per-element step size grown or shrunk
/// by the sign of g·g_prev.
struct Rprop {
    etas: (f64, f64),
    step_sizes: (f64, f64),
    step: Vec<f64>,
    prev: Vec<f64>,
}

impl Reference for Rprop {
    fn step(&mut self, _t: usize, theta: &mut [f64], grad: &[f64]) {
        let (minus, plus) = self.etas;
        for i in 0..theta.len() {
            let mut g = grad[i];
            let s = g * self.prev[i];
            let factor = if s > 0.0 {
                plus
            } else if s < 0.0 {
                minus
            } else {
                1.0
            };
            self.step[i] = (self.step[i] * factor).clamp(self.step_sizes.0, self.step_sizes.1);
            if s < 0.0 {
                g = 0.0;
            }
            // sign(0) = 0: a skipped element does not move.
            if g != 0.0 {
                theta[i] -= g.signum() * self.step[i];
            }
            self.prev[i] = g;
        }
    }
}

/// `torch.optim.ASGD`: the parameters hold the plain iterate with its decaying step.
struct Asgd {
    lr: f64,
    lambd: f64,
    alpha: f64,
    weight_decay: f64,
    eta: f64,
}

impl Reference for Asgd {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        for i in 0..theta.len() {
            let g = grad[i] + self.weight_decay * theta[i];
            theta[i] *= 1.0 - self.lambd * self.eta;
            theta[i] -= self.eta * g;
        }
        self.eta = self.lr / (1.0 + self.lambd * self.lr * t as f64).powf(self.alpha);
    }
}

/// SWATS (Keskar & Socher 2017, Algorithm 1), per tensor: Adam until the SGD rate implied by
/// Adam's steps settles, then SGD with momentum at that rate.
struct Swats {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    lengths: Vec<usize>,
    m: Vec<f64>,
    v: Vec<f64>,
    v_sgd: Vec<f64>,
    /// Per tensor: λ, and the learned SGD rate once switched.
    lambda: Vec<f64>,
    sgd_lr: Vec<Option<f64>>,
}

impl Reference for Swats {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        let mut start = 0;
        for (k, &len) in self.lengths.iter().enumerate() {
            let range = start..start + len;
            start += len;
            if let Some(rate) = self.sgd_lr[k] {
                for i in range {
                    self.v_sgd[i] = b1 * self.v_sgd[i] + grad[i];
                    theta[i] -= (1.0 - b1) * rate * self.v_sgd[i];
                }
                continue;
            }
            let c = self.lr * (1.0 - b2.powi(t as i32)).sqrt() / (1.0 - b1.powi(t as i32));
            let (mut pp, mut pg) = (0.0, 0.0);
            for i in range {
                self.m[i] = b1 * self.m[i] + (1.0 - b1) * grad[i];
                self.v[i] = b2 * self.v[i] + (1.0 - b2) * grad[i] * grad[i];
                let p = -c * self.m[i] / (self.v[i].sqrt() + self.eps);
                theta[i] += p;
                pp += p * p;
                pg += p * grad[i];
            }
            if pg != 0.0 {
                let rate = pp / -pg;
                self.lambda[k] = b2 * self.lambda[k] + (1.0 - b2) * rate;
                let corrected = self.lambda[k] / (1.0 - b2.powi(t as i32));
                if t > 1 && (corrected - rate).abs() < self.eps {
                    self.sgd_lr[k] = Some(corrected);
                }
            }
        }
    }
}

/// The specs under test and their references over tensors of `lengths`.
fn cases(lengths: &[usize]) -> Vec<(&'static str, Box<dyn Reference>)> {
    let n: usize = lengths.iter().sum();
    let z = || vec![0.0; n];
    let sgd = |lr, momentum, dampening, weight_decay, nesterov| -> Box<dyn Reference> {
        Box::new(Sgd {
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
            buf: z(),
        })
    };
    let adam = |lr, betas, weight_decay, decoupled, amsgrad| -> Box<dyn Reference> {
        Box::new(Adam {
            lr,
            betas,
            eps: 1e-8,
            weight_decay,
            decoupled,
            amsgrad,
            m: z(),
            v: z(),
            v_max: z(),
        })
    };
    vec![
        ("sgd(lr=0.1)", sgd(0.1, 0.0, 0.0, 0.0, false)),
        (
            "sgd(lr=0.05, momentum=0.9, weight_decay=0.01)",
            sgd(0.05, 0.9, 0.0, 0.01, false),
        ),
        (
            "sgd(lr=0.05, momentum=0.9, dampening=0.3)",
            sgd(0.05, 0.9, 0.3, 0.0, false),
        ),
        (
            "sgd(lr=0.05, momentum=0.9, nesterov=true, weight_decay=0.001)",
            sgd(0.05, 0.9, 0.0, 0.001, true),
        ),
        ("adam(lr=0.01)", adam(0.01, (0.9, 0.999), 0.0, false, false)),
        (
            "adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=true)",
            adam(0.01, (0.8, 0.99), 0.1, false, true),
        ),
        (
            "adamw(lr=0.01, weight_decay=0.05)",
            adam(0.01, (0.9, 0.999), 0.05, true, false),
        ),
        (
            "adamw(lr=0.003, amsgrad=true)",
            adam(0.003, (0.9, 0.999), 0.01, true, true),
        ),
        (
            "rmsprop(lr=0.01)",
            Box::new(RmsProp {
                lr: 0.01,
                alpha: 0.99,
                eps: 1e-8,
                weight_decay: 0.0,
                momentum: 0.0,
                centered: false,
                square_avg: z(),
                grad_avg: z(),
                buf: z(),
            }),
        ),
        (
            "rmsprop(lr=0.01, alpha=0.9, weight_decay=0.01, momentum=0.5, centered=true)",
            Box::new(RmsProp {
                lr: 0.01,
                alpha: 0.9,
                eps: 1e-8,
                weight_decay: 0.01,
                momentum: 0.5,
                centered: true,
                square_avg: z(),
                grad_avg: z(),
                buf: z(),
            }),
        ),
        (
            "adagrad(lr=0.1, lr_decay=0.01, weight_decay=0.001)",
            Box::new(Adagrad {
                lr: 0.1,
                lr_decay: 0.01,
                weight_decay: 0.001,
                eps: 1e-10,
                sum: z(),
            }),
        ),
        (
            "adabound(lr=0.01, final_lr=0.1, gamma=0.1, weight_decay=0.001)",
            Box::new(AdaBound {
                lr: 0.01,
                betas: (0.9, 0.999),
                final_lr: 0.1,
                gamma: 0.1,
                eps: 1e-8,
                weight_decay: 0.001,
                amsbound: false,
                m: z(),
                v: z(),
                v_max: z(),
            }),
        ),
        (
            "adabound(lr=0.01, final_lr=0.05, amsbound=true)",
            Box::new(AdaBound {
                lr: 0.01,
                betas: (0.9, 0.999),
                final_lr: 0.05,
                gamma: 1e-3,
                eps: 1e-8,
                weight_decay: 0.0,
                amsbound: true,
                m: z(),
                v: z(),
                v_max: z(),
            }),
        ),
        (
            "adadelta(lr=1, rho=0.9, weight_decay=0.01)",
            Box::new(Adadelta {
                lr: 1.0,
                rho: 0.9,
                eps: 1e-6,
                weight_decay: 0.01,
                square_avg: z(),
                acc_delta: z(),
            }),
        ),
        (
            "adamax(lr=0.002, weight_decay=0.01)",
            Box::new(Adamax {
                lr: 0.002,
                betas: (0.9, 0.999),
                eps: 1e-8,
                weight_decay: 0.01,
                m: z(),
                u: z(),
            }),
        ),
        (
            "nadam(lr=0.002, weight_decay=0.01)",
            Box::new(NAdam {
                lr: 0.002,
                betas: (0.9, 0.999),
                eps: 1e-8,
                weight_decay: 0.01,
                momentum_decay: 4e-3,
                mu_product: 1.0,
                m: z(),
                v: z(),
            }),
        ),
        (
            "radam(lr=0.001, betas=(0.9, 0.9))",
            Box::new(RAdam {
                lr: 0.001,
                betas: (0.9, 0.9),
                eps: 1e-8,
                weight_decay: 0.0,
                m: z(),
                v: z(),
            }),
        ),
        (
            "lamb(lr=0.01, weight_decay=0.01)",
            Box::new(Lamb {
                lr: 0.01,
                betas: (0.9, 0.999),
                eps: 1e-6,
                weight_decay: 0.01,
                debias: false,
                lengths: lengths.to_vec(),
                m: z(),
                v: z(),
            }),
        ),
        (
            "lamb(lr=0.01, betas=(0.8, 0.99), debias=true)",
            Box::new(Lamb {
                lr: 0.01,
                betas: (0.8, 0.99),
                eps: 1e-6,
                weight_decay: 0.0,
                debias: true,
                lengths: lengths.to_vec(),
                m: z(),
                v: z(),
            }),
        ),
        (
            "lars(lr=0.1, momentum=0.9, weight_decay=0.0005, trust_coefficient=0.02)",
            Box::new(Lars {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.0005,
                trust_coefficient: 0.02,
                eps: 1e-8,
                lengths: lengths.to_vec(),
                buf: z(),
            }),
        ),
        (
            "adopt(lr=0.001, betas=(0.9, 0.9999))",
            Box::new(Adopt {
                lr: 0.001,
                betas: (0.9, 0.9999),
                eps: 1e-6,
                m: z(),
                v: z(),
            }),
        ),
        (
            "ademamix(lr=0.001, betas=(0.9, 0.999, 0.99), alpha=3)",
            Box::new(Ademamix {
                lr: 0.001,
                betas: (0.9, 0.999, 0.99),
                alpha: 3.0,
                eps: 1e-8,
                m1: z(),
                m2: z(),
                v: z(),
            }),
        ),
        (
            "rprop(lr=0.01)",
            Box::new(Rprop {
                etas: (0.5, 1.2),
                step_sizes: (1e-6, 50.0),
                step: vec![0.01; n],
                prev: z(),
            }),
        ),
        (
            "asgd(lr=0.05, lambd=0.01, alpha=0.75, weight_decay=0.001)",
            Box::new(Asgd {
                lr: 0.05,
                lambd: 0.01,
                alpha: 0.75,
                weight_decay: 0.001,
                eta: 0.05,
            }),
        ),
        (
            "swats(lr=0.01)",
            Box::new(Swats {
                lr: 0.01,
                betas: (0.9, 0.999),
                eps: 1e-9,
                lengths: lengths.to_vec(),
                m: z(),
                v: z(),
                v_sgd: z(),
                lambda: vec![0.0; lengths.len()],
                sgd_lr: vec![None; lengths.len()],
            }),
        ),
        (
            // A large ε: tensors switch to SGD within the test's steps.
            "swats(lr=0.01, eps=0.05)",
            Box::new(Swats {
                lr: 0.01,
                betas: (0.9, 0.999),
                eps: 0.05,
                lengths: lengths.to_vec(),
                m: z(),
                v: z(),
                v_sgd: z(),
                lambda: vec![0.0; lengths.len()],
                sgd_lr: vec![None; lengths.len()],
            }),
        ),
        (
            "lion(lr=0.001, weight_decay=0.1)",
            Box::new(Lion {
                lr: 0.001,
                betas: (0.9, 0.99),
                weight_decay: 0.1,
                m: z(),
            }),
        ),
    ]
}

/// A layout of `lengths` tensors named t0, t1, ...
fn layout_of(lengths: &[usize]) -> Layout {
    Layout::new(
        lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("t{i}"), vec![n])),
    )
    .unwrap()
}

/// Runs every case on `lengths` with `threads` threads, checking each step.
fn fast_equals_reference(lengths: &[usize], threads: usize, seed: u64) {
    let layout = layout_of(lengths);
    let n = layout.total();
    let pool = gradlab::pool::Pool::new(threads);
    for (spec, mut reference) in cases(lengths) {
        let mut rng = Rng(seed | 1);
        let start = rng.vec(n);
        let (mut fast, mut slow) = (start.clone(), start);
        let mut opt: Box<dyn Optimizer<f64>> =
            optim::build::<f64>(spec, layout.clone(), &[], Options::default()).unwrap();
        for t in 1..=STEPS {
            let g = rng.vec(n);
            pool.install(|| {
                opt.step(&mut split(&layout, &mut fast), &split_ref(&layout, &g))
                    .unwrap()
            });
            reference.step(t, &mut slow, &g);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!(
                    (a - b).abs() <= TOLERANCE * (1.0 + b.abs()),
                    "{spec}, {threads} thread(s), lengths {lengths:?}, step {t}, element {i}: fast {a} vs reference {b}"
                );
            }
        }
    }
}

#[test]
fn fast_kernels_equal_the_reference_across_chunk_boundaries() {
    // One tensor just over three chunks, odd small tensors around it, single elements.
    let lengths = [1, CHUNK * 3 + 7, 5, 3, CHUNK - 1, 2, 1];
    for threads in 1..=3 {
        fast_equals_reference(&lengths, threads, 7 + threads as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn fast_kernels_equal_the_reference_on_random_layouts(
        lengths in prop::collection::vec(1usize..3000, 1..12),
        threads in 1usize..=3,
        seed in any::<u64>(),
    ) {
        fast_equals_reference(&lengths, threads, seed);
    }
}

/// bfloat16 state against the reference: Adam's moments stored with 8 significant bits
/// (stochastically rounded) perturb each step's adaptive ratio m̂/(√v̂ + ε) by a relative
/// error of a few units of 2⁻⁸, so after t steps every parameter is within
/// Σₖ lr·max|ratioₖ|·2⁻⁵ of the f64 reference — and not equal to it (the rounding acts).
#[test]
fn bf16_state_stays_within_its_rounding_bound_of_the_reference() {
    let layout = layout_of(&[CHUNK + 3, 17, 1]);
    let n = layout.total();
    let (lr, b1, b2, eps): (f64, f64, f64, f64) = (0.01, 0.9, 0.999, 1e-8);
    let mut rng = Rng(99);
    let start = rng.vec(n);
    let (mut fast, mut slow) = (start.clone(), start);
    let mut opt = optim::build::<f64>(
        "adam(lr=0.01, state_dtype=bf16)",
        layout.clone(),
        &[],
        Options::default(),
    )
    .unwrap();
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    let mut bound = 0.0;
    let mut largest_gap: f64 = 0.0;
    for t in 1..=STEPS {
        let g = rng.vec(n);
        opt.step(&mut split(&layout, &mut fast), &split_ref(&layout, &g))
            .unwrap();
        let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        let mut ratio_max: f64 = 0.0;
        for i in 0..n {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let ratio = (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
            ratio_max = ratio_max.max(ratio.abs());
            slow[i] -= lr * ratio;
        }
        bound += lr * ratio_max * 2f64.powi(-5);
        for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
            let gap = (a - b).abs();
            largest_gap = largest_gap.max(gap);
            assert!(
                gap <= bound,
                "step {t}, element {i}: bf16 {a} vs reference {b}, bound {bound:e}"
            );
        }
    }
    assert!(largest_gap > 0.0, "the bf16 state rounded nothing");
}
