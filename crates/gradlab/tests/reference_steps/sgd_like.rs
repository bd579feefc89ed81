//! References of the optimizers without Adam's moments: SGD (momentum, Nesterov), RMSProp,
//! Adagrad, Lion, Adadelta, LARS, Rprop, ASGD — each PyTorch's (or its paper's) update as
//! written, one f64 loop per step.

use super::Reference;

/// `torch.optim.SGD`.
pub(super) struct Sgd {
    pub(super) lr: f64,
    pub(super) momentum: f64,
    pub(super) dampening: f64,
    pub(super) weight_decay: f64,
    pub(super) nesterov: bool,
    pub(super) buf: Vec<f64>,
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

/// `torch.optim.RMSprop`.
pub(super) struct RmsProp {
    pub(super) lr: f64,
    pub(super) alpha: f64,
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) momentum: f64,
    pub(super) centered: bool,
    pub(super) square_avg: Vec<f64>,
    pub(super) grad_avg: Vec<f64>,
    pub(super) buf: Vec<f64>,
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
pub(super) struct Adagrad {
    pub(super) lr: f64,
    pub(super) lr_decay: f64,
    pub(super) weight_decay: f64,
    pub(super) eps: f64,
    pub(super) sum: Vec<f64>,
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
pub(super) struct Lion {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) weight_decay: f64,
    pub(super) m: Vec<f64>,
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

/// `torch.optim.Adadelta`.
pub(super) struct Adadelta {
    pub(super) lr: f64,
    pub(super) rho: f64,
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) square_avg: Vec<f64>,
    pub(super) acc_delta: Vec<f64>,
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

/// The L2 norm of `x`.
pub(super) fn l2(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// LARS with PyTorch SGD conventions: per tensor, d = g + λθ scaled by η‖θ‖/(‖g‖ + λ‖θ‖ + ε),
/// then SGD momentum on d.
pub(super) struct Lars {
    pub(super) lr: f64,
    pub(super) momentum: f64,
    pub(super) weight_decay: f64,
    pub(super) trust_coefficient: f64,
    pub(super) eps: f64,
    pub(super) lengths: Vec<usize>,
    pub(super) buf: Vec<f64>,
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

/// `torch.optim.Rprop`: only the gradient's sign, a per-element step size grown or shrunk
/// by the sign of g·g_prev.
pub(super) struct Rprop {
    pub(super) etas: (f64, f64),
    pub(super) step_sizes: (f64, f64),
    pub(super) step: Vec<f64>,
    pub(super) prev: Vec<f64>,
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
pub(super) struct Asgd {
    pub(super) lr: f64,
    pub(super) lambd: f64,
    pub(super) alpha: f64,
    pub(super) weight_decay: f64,
    pub(super) eta: f64,
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
