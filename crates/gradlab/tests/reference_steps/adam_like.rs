//! References of the optimizers built on Adam's moments: Adam/AdamW/AMSGrad, Adamax, NAdam,
//! RAdam, AdaBound, LAMB, ADOPT, AdEMAMix, SWATS — each its reference's update as written,
//! one f64 loop per step.

use super::sgd_like::l2;
use super::Reference;

/// `torch.optim.Adam` (L2 weight decay) and `AdamW` (decoupled), with AMSGrad.
pub(super) struct Adam {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) decoupled: bool,
    pub(super) amsgrad: bool,
    pub(super) m: Vec<f64>,
    pub(super) v: Vec<f64>,
    pub(super) v_max: Vec<f64>,
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

/// `torch.optim.Adamax`.
pub(super) struct Adamax {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) m: Vec<f64>,
    pub(super) u: Vec<f64>,
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
pub(super) struct NAdam {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) momentum_decay: f64,
    pub(super) mu_product: f64,
    pub(super) m: Vec<f64>,
    pub(super) v: Vec<f64>,
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
pub(super) struct RAdam {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) m: Vec<f64>,
    pub(super) v: Vec<f64>,
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

/// AdaBound / AMSBound (Luo et al. 2019; the authors' `adabound` package): Adam's step
/// clipped into bounds converging to `final_lr`.
pub(super) struct AdaBound {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) final_lr: f64,
    pub(super) gamma: f64,
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) amsbound: bool,
    pub(super) m: Vec<f64>,
    pub(super) v: Vec<f64>,
    pub(super) v_max: Vec<f64>,
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

/// LAMB as torch-optimizer 0.3.0's `Lamb`: per tensor, the Adam direction plus weight decay
/// rescaled by the trust ratio min(‖θ‖, clamp)/‖r‖.
pub(super) struct Lamb {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) debias: bool,
    pub(super) lengths: Vec<usize>,
    pub(super) m: Vec<f64>,
    pub(super) v: Vec<f64>,
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

/// ADOPT (Taniguchi et al. 2024) as pytorch-optimizer's `ADOPT`, without weight decay: the
/// first step only fills v; then the gradient normalised by the previous v (clipped to
/// ±t^¼) drives the momentum, and v is updated after the move.
pub(super) struct Adopt {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) eps: f64,
    pub(super) m: Vec<f64>,
    pub(super) v: Vec<f64>,
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
pub(super) struct Ademamix {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64, f64),
    pub(super) alpha: f64,
    pub(super) eps: f64,
    pub(super) m1: Vec<f64>,
    pub(super) m2: Vec<f64>,
    pub(super) v: Vec<f64>,
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

/// SWATS (Keskar & Socher 2017, Algorithm 1), per tensor: Adam until the SGD rate implied by
/// Adam's steps settles, then SGD with momentum at that rate.
pub(super) struct Swats {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) eps: f64,
    pub(super) lengths: Vec<usize>,
    pub(super) m: Vec<f64>,
    pub(super) v: Vec<f64>,
    pub(super) v_sgd: Vec<f64>,
    /// Per tensor: λ, and the learned SGD rate once switched.
    pub(super) lambda: Vec<f64>,
    pub(super) sgd_lr: Vec<Option<f64>>,
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
