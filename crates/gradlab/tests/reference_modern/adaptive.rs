//! References of schedule-free SGD and AdamW (`schedulefree` 1.4.1), Adafactor (PyTorch's)
//! and Prodigy (`prodigyopt` 1.1.2): one f64 loop per step, as their code writes it.

use super::*;

/// `schedulefree.SGDScheduleFree` and `AdamWScheduleFree` (β2 and ε only for AdamW).
pub(super) struct ScheduleFree {
    pub(super) adamw: bool,
    pub(super) lr: f64,
    pub(super) beta1: f64,
    pub(super) beta2: f64,
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) warmup_steps: usize,
    pub(super) r: f64,
    pub(super) weight_lr_power: f64,
    pub(super) z: Vec<f64>,
    pub(super) v: Vec<f64>,
    pub(super) lr_max: f64,
    pub(super) weight_sum: f64,
}

impl Reference for ScheduleFree {
    fn step(&mut self, t: usize, y: &mut [f64], grad: &[f64]) {
        let k = (t - 1) as f64;
        let sched = if t - 1 < self.warmup_steps {
            (k + 1.0) / self.warmup_steps as f64
        } else {
            1.0
        };
        let lr = self.lr * sched;
        self.lr_max = self.lr_max.max(lr);
        let weight = (k + 1.0).powf(self.r) * self.lr_max.powf(self.weight_lr_power);
        self.weight_sum += weight;
        let ckp1 = if self.weight_sum == 0.0 {
            0.0
        } else {
            weight / self.weight_sum
        };
        if t == 1 {
            self.z.copy_from_slice(y);
        }
        let bias_correction2 = 1.0 - self.beta2.powf(k + 1.0);
        for i in 0..y.len() {
            let mut d = grad[i];
            if self.adamw {
                self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * d * d;
                d /= (self.v[i] / bias_correction2).sqrt() + self.eps;
            }
            d += self.weight_decay * y[i];
            y[i] = y[i] + ckp1 * (self.z[i] - y[i]);
            y[i] += lr * (self.beta1 * (1.0 - ckp1) - 1.0) * d;
            self.z[i] -= lr * d;
        }
    }
}

/// `torch.optim.Adafactor`: vectors keep a full second moment, tensors of two or more
/// dimensions its row and column means over the last two (per leading index).
pub(super) struct Adafactor {
    pub(super) lr: f64,
    pub(super) beta2_decay: f64,
    pub(super) eps1: f64,
    pub(super) eps2: f64,
    pub(super) d: f64,
    pub(super) weight_decay: f64,
    pub(super) tensors: Vec<(usize, Vec<usize>)>,
    /// Per tensor: the full variance, or the row means then the column means.
    pub(super) state: Vec<(Vec<f64>, Vec<f64>)>,
}

impl Adafactor {
    pub(super) fn new(
        layout: &Layout,
        lr: f64,
        eps1: f64,
        eps2: f64,
        d: f64,
        weight_decay: f64,
    ) -> Self {
        let tensors = tensors(layout);
        let state = tensors
            .iter()
            .map(|(_, shape)| match shape.len() {
                0 | 1 => (vec![0.0; shape.iter().product()], Vec::new()),
                _ => {
                    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
                    let batches: usize = shape[..shape.len() - 2].iter().product();
                    (vec![0.0; batches * rows], vec![0.0; batches * cols])
                }
            })
            .collect();
        Adafactor {
            lr,
            beta2_decay: -0.8,
            eps1,
            eps2,
            d,
            weight_decay,
            tensors,
            state,
        }
    }
}

impl Reference for Adafactor {
    fn step(&mut self, t: usize, theta: &mut [f64], grad: &[f64]) {
        let tf = t as f64;
        let w = tf.powf(self.beta2_decay);
        let rho = self.lr.min(1.0 / tf.sqrt());
        for ((offset, shape), (a, b)) in self.tensors.iter().zip(&mut self.state) {
            let n: usize = shape.iter().product();
            let p = &mut theta[*offset..offset + n];
            let g = &grad[*offset..offset + n];
            let alpha = self.eps2.max(norm(p) / (n as f64).sqrt()) * rho;
            for x in p.iter_mut() {
                *x *= 1.0 - self.lr * self.weight_decay;
            }
            let mut v_hat = vec![0.0; n];
            if shape.len() < 2 {
                for (a, g) in a.iter_mut().zip(g) {
                    *a += w * (g * g - *a);
                }
                v_hat.copy_from_slice(a);
            } else {
                let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
                for batch in 0..n / (rows * cols) {
                    let at = |r: usize, c: usize| batch * rows * cols + r * cols + c;
                    for r in 0..rows {
                        let sq: f64 = (0..cols).map(|c| g[at(r, c)] * g[at(r, c)]).sum();
                        let mean = sq.sqrt().powi(2) / cols as f64;
                        let x = &mut a[batch * rows + r];
                        *x += w * (mean - *x);
                    }
                    for c in 0..cols {
                        let sq: f64 = (0..rows).map(|r| g[at(r, c)] * g[at(r, c)]).sum();
                        let mean = sq.sqrt().powi(2) / rows as f64;
                        let x = &mut b[batch * cols + c];
                        *x += w * (mean - *x);
                    }
                    let row_mean =
                        a[batch * rows..(batch + 1) * rows].iter().sum::<f64>() / rows as f64;
                    let scale = row_mean.max(self.eps1);
                    for r in 0..rows {
                        for c in 0..cols {
                            v_hat[at(r, c)] = a[batch * rows + r] * b[batch * cols + c] / scale;
                        }
                    }
                }
            }
            let u: Vec<f64> = (0..n)
                .map(|i| g[i] / v_hat[i].max(self.eps1 * self.eps1).sqrt())
                .collect();
            let denom = (norm(&u) / ((n as f64).sqrt() * self.d)).max(1.0);
            for i in 0..n {
                p[i] -= alpha / denom * u[i];
            }
        }
    }
}

/// `prodigyopt.Prodigy` (one group).
pub(super) struct Prodigy {
    pub(super) lr: f64,
    pub(super) betas: (f64, f64),
    pub(super) beta3: f64,
    pub(super) eps: f64,
    pub(super) weight_decay: f64,
    pub(super) decouple: bool,
    pub(super) use_bias_correction: bool,
    pub(super) safeguard_warmup: bool,
    pub(super) d0: f64,
    pub(super) d: f64,
    pub(super) d_max: f64,
    pub(super) d_numerator: f64,
    pub(super) growth_rate: f64,
    pub(super) s: Vec<f64>,
    pub(super) p0: Vec<f64>,
    pub(super) m: Vec<f64>,
    pub(super) v: Vec<f64>,
}

impl Prodigy {
    pub(super) fn new(
        n: usize,
        lr: f64,
        betas: (f64, f64),
        weight_decay: f64,
        decouple: bool,
    ) -> Self {
        Prodigy {
            lr,
            betas,
            beta3: betas.1.sqrt(),
            eps: 1e-8,
            weight_decay,
            decouple,
            use_bias_correction: false,
            safeguard_warmup: false,
            d0: 1e-6,
            d: 1e-6,
            d_max: 1e-6,
            d_numerator: 0.0,
            growth_rate: f64::INFINITY,
            s: vec![0.0; n],
            p0: Vec::new(),
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
}

impl Reference for Prodigy {
    fn step(&mut self, t: usize, p: &mut [f64], grad: &[f64]) {
        let (b1, b2) = self.betas;
        let k = (t - 1) as f64;
        let bias_correction = if self.use_bias_correction {
            (1.0 - b2.powf(k + 1.0)).sqrt() / (1.0 - b1.powf(k + 1.0))
        } else {
            1.0
        };
        let (d, d0) = (self.d, self.d0);
        let dlr = d * self.lr * bias_correction;
        if t == 1 {
            self.p0 = p.to_vec();
        }
        let g: Vec<f64> = (0..p.len())
            .map(|i| {
                if self.decouple {
                    grad[i]
                } else {
                    grad[i] + self.weight_decay * p[i]
                }
            })
            .collect();
        let mut delta = 0.0;
        let mut denom = 0.0;
        for i in 0..p.len() {
            delta += (d / d0) * dlr * (g[i] * (self.p0[i] - p[i]));
            if b1 > 0.0 {
                self.m[i] = self.m[i] * b1 + d * (1.0 - b1) * g[i];
            }
            self.v[i] = self.v[i] * b2 + d * d * (1.0 - b2) * g[i] * g[i];
            let weight = if self.safeguard_warmup {
                (d / d0) * d
            } else {
                (d / d0) * dlr
            };
            self.s[i] = self.s[i] * self.beta3 + weight * g[i];
            denom += self.s[i].abs();
        }
        let numerator = self.d_numerator * self.beta3 + delta;
        if denom == 0.0 {
            return;
        }
        let d_hat = numerator / denom;
        if self.d == self.d0 {
            self.d = self.d.max(d_hat);
        }
        self.d_max = self.d_max.max(d_hat);
        self.d = self.d_max.min(self.d * self.growth_rate);
        self.d_numerator = numerator;
        let d = self.d;
        for i in 0..p.len() {
            let den = self.v[i].sqrt() + d * self.eps;
            if self.decouple {
                p[i] -= self.weight_decay * dlr * p[i];
            }
            if b1 > 0.0 {
                p[i] -= dlr * self.m[i] / den;
            } else {
                p[i] -= dlr * d * g[i] / den;
            }
        }
    }
}
