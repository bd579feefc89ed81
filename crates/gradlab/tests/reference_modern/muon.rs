//! The reference of Muon (PyTorch's `Muon`): momentum, Newton–Schulz orthogonalisation in
//! f64 on the wide side, the shape-scaled step, and the fallback for other tensors.

use super::*;

/// `torch.optim.Muon` over the matrices, SGD (`fallback=sgd(lr)`) over the rest.
pub(super) struct Muon {
    pub(super) lr: f64,
    pub(super) momentum: f64,
    pub(super) nesterov: bool,
    pub(super) weight_decay: f64,
    pub(super) fallback_lr: f64,
    pub(super) tensors: Vec<(usize, Vec<usize>)>,
    pub(super) buf: Vec<f64>,
}

/// Newton–Schulz as `torch.optim._muon._zeropower_via_newtonschulz`, in f64.
fn newton_schulz(u: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let (a, b, c) = (3.4445, -4.775, 2.0315);
    let transpose = rows > cols;
    let (r, k) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut x: Vec<f64> = (0..r * k)
        .map(|idx| {
            let (i, j) = (idx / k, idx % k);
            if transpose {
                u[j * cols + i]
            } else {
                u[i * cols + j]
            }
        })
        .collect();
    let scale = norm(&x).max(1e-7);
    x.iter_mut().for_each(|v| *v /= scale);
    for _ in 0..5 {
        let gram: Vec<f64> = (0..r * r)
            .map(|idx| {
                (0..k)
                    .map(|l| x[idx / r * k + l] * x[idx % r * k + l])
                    .sum()
            })
            .collect();
        let update: Vec<f64> = (0..r * r)
            .map(|idx| {
                let square: f64 = (0..r)
                    .map(|l| gram[idx / r * r + l] * gram[l * r + idx % r])
                    .sum();
                b * gram[idx] + c * square
            })
            .collect();
        x = (0..r * k)
            .map(|idx| {
                let (i, j) = (idx / k, idx % k);
                a * x[idx]
                    + (0..r)
                        .map(|l| update[i * r + l] * x[l * k + j])
                        .sum::<f64>()
            })
            .collect();
    }
    (0..rows * cols)
        .map(|idx| {
            let (i, j) = (idx / cols, idx % cols);
            if transpose {
                x[j * k + i]
            } else {
                x[i * k + j]
            }
        })
        .collect()
}

impl Reference for Muon {
    fn step(&mut self, _t: usize, theta: &mut [f64], grad: &[f64]) {
        let mu = self.momentum;
        for (offset, shape) in &self.tensors {
            let n: usize = shape.iter().product();
            let range = *offset..offset + n;
            if shape.len() != 2 {
                for i in range {
                    theta[i] -= self.fallback_lr * grad[i];
                }
                continue;
            }
            let update: Vec<f64> = range
                .clone()
                .map(|i| {
                    self.buf[i] += (1.0 - mu) * (grad[i] - self.buf[i]);
                    if self.nesterov {
                        grad[i] + mu * (self.buf[i] - grad[i])
                    } else {
                        self.buf[i]
                    }
                })
                .collect();
            let o = newton_schulz(&update, shape[0], shape[1]);
            let adjusted = self.lr * (shape[0] as f64 / shape[1] as f64).max(1.0).sqrt();
            for (i, o) in range.zip(o) {
                theta[i] = theta[i] * (1.0 - self.lr * self.weight_decay) - adjusted * o;
            }
        }
    }
}
