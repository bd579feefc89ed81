//! The optimizers after the lecture against plain references (see `reference_steps.rs` for
//! the others): schedule-free SGD and AdamW (`schedulefree` 1.4.1), Adafactor (PyTorch's
//! `Adafactor`), Prodigy (`prodigyopt` 1.1.2) and Muon (PyTorch's `Muon`), each one readable
//! loop per step in f64 over the tensors as their references write it, and a property test
//! that the fast path (chunks, fused passes, factored sums in bands, 1 to 3 threads) gives the
//! same parameters on random layouts of vectors and matrices, within a stated bound.

mod common;

use common::*;
use gradlab::optim::{self, plan::CHUNK, Layout, Optimizer, Options};
use proptest::prelude::*;

/// Relative bound after `STEPS` steps for the element-wise references: the fast kernels may
/// order the same operations differently, each step adding a few ULPs.
const TOLERANCE: f64 = 1e-12;
/// Muon's fast path runs Newton–Schulz in f32 (`ns_dtype=f32`) where the reference runs it
/// in f64: each entry of the orthogonalised update carries f32 rounding through 5 iterations
/// of the quintic, and θ moves by lr times it per step (the largest gap measured over these
/// layouts after 10 steps: 8e-8; a Newton–Schulz coefficient changed in its sixth digit
/// exceeds the bound).
const MUON_TOLERANCE: f64 = 1e-6;
const STEPS: usize = 10;

/// A reference optimizer over the flat parameters of a layout.
trait Reference {
    fn step(&mut self, t: usize, theta: &mut [f64], g: &[f64]);
}

/// The tensors of a layout as (offset, shape).
fn tensors(layout: &Layout) -> Vec<(usize, Vec<usize>)> {
    layout
        .segments()
        .iter()
        .map(|s| (s.offset, s.shape.clone()))
        .collect()
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `schedulefree.SGDScheduleFree` and `AdamWScheduleFree` (β2 and ε only for AdamW).
struct ScheduleFree {
    adamw: bool,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    warmup_steps: usize,
    r: f64,
    weight_lr_power: f64,
    z: Vec<f64>,
    v: Vec<f64>,
    lr_max: f64,
    weight_sum: f64,
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
struct Adafactor {
    lr: f64,
    beta2_decay: f64,
    eps1: f64,
    eps2: f64,
    d: f64,
    weight_decay: f64,
    tensors: Vec<(usize, Vec<usize>)>,
    /// Per tensor: the full variance, or the row means then the column means.
    state: Vec<(Vec<f64>, Vec<f64>)>,
}

impl Adafactor {
    fn new(layout: &Layout, lr: f64, eps1: f64, eps2: f64, d: f64, weight_decay: f64) -> Self {
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
struct Prodigy {
    lr: f64,
    betas: (f64, f64),
    beta3: f64,
    eps: f64,
    weight_decay: f64,
    decouple: bool,
    use_bias_correction: bool,
    safeguard_warmup: bool,
    d0: f64,
    d: f64,
    d_max: f64,
    d_numerator: f64,
    growth_rate: f64,
    s: Vec<f64>,
    p0: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Prodigy {
    fn new(n: usize, lr: f64, betas: (f64, f64), weight_decay: f64, decouple: bool) -> Self {
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

/// `torch.optim.Muon` over the matrices, SGD (`fallback=sgd(lr)`) over the rest.
struct Muon {
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    fallback_lr: f64,
    tensors: Vec<(usize, Vec<usize>)>,
    buf: Vec<f64>,
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

/// The specs under test, their references and bounds, on `layout`.
fn cases(layout: &Layout) -> Vec<(String, Box<dyn Reference>, f64)> {
    let n = layout.total();
    let z = || vec![0.0; n];
    let schedule_free = |adamw, lr, beta1, weight_decay, warmup_steps, r| {
        Box::new(ScheduleFree {
            adamw,
            lr,
            beta1,
            beta2: if adamw { 0.999 } else { 0.0 },
            eps: if adamw { 1e-8 } else { 0.0 },
            weight_decay,
            warmup_steps,
            r,
            weight_lr_power: 2.0,
            z: z(),
            v: z(),
            lr_max: -1.0,
            weight_sum: 0.0,
        }) as Box<dyn Reference>
    };
    let mut out: Vec<(String, Box<dyn Reference>, f64)> = vec![
        (
            "sgd_schedulefree(lr=0.5, momentum=0.9, weight_decay=0.01, warmup_steps=3)".into(),
            schedule_free(false, 0.5, 0.9, 0.01, 3, 0.0),
            TOLERANCE,
        ),
        (
            "adamw_schedulefree(lr=0.01, betas=(0.8, 0.999), weight_decay=0.1, warmup_steps=2, r=0.5)"
                .into(),
            schedule_free(true, 0.01, 0.8, 0.1, 2, 0.5),
            TOLERANCE,
        ),
        (
            "adafactor(lr=0.05, weight_decay=0.01, eps=(1e-30, 0.001))".into(),
            Box::new(Adafactor::new(layout, 0.05, 1e-30, 1e-3, 1.0, 0.01)),
            TOLERANCE,
        ),
        (
            "adafactor(lr=0.5, d=2)".into(),
            Box::new(Adafactor::new(layout, 0.5, f64::EPSILON, 1e-3, 2.0, 0.0)),
            TOLERANCE,
        ),
        (
            "prodigy(lr=1, weight_decay=0.01)".into(),
            Box::new(Prodigy::new(n, 1.0, (0.9, 0.999), 0.01, true)),
            TOLERANCE,
        ),
        (
            "prodigy(lr=0.5, betas=(0, 0.99), weight_decay=0.1, decouple=false, use_bias_correction=true, safeguard_warmup=true, growth_rate=1.5)"
                .into(),
            Box::new(Prodigy {
                use_bias_correction: true,
                safeguard_warmup: true,
                growth_rate: 1.5,
                ..Prodigy::new(n, 0.5, (0.0, 0.99), 0.1, false)
            }),
            TOLERANCE,
        ),
    ];
    if layout.segments().iter().any(|s| s.shape.len() == 2) {
        for (nesterov, weight_decay) in [(true, 0.1), (false, 0.0)] {
            out.push((
                format!(
                    "muon(lr=0.02, weight_decay={weight_decay}, nesterov={nesterov}, ns_dtype=f32, fallback=sgd(lr=0.01))"
                ),
                Box::new(Muon {
                    lr: 0.02,
                    momentum: 0.95,
                    nesterov,
                    weight_decay,
                    fallback_lr: 0.01,
                    tensors: tensors(layout),
                    buf: z(),
                }),
                MUON_TOLERANCE,
            ));
        }
    }
    out
}

/// A layout of tensors of `shapes`, named t0, t1, ...
fn layout_of(shapes: &[Vec<usize>]) -> Layout {
    Layout::new(
        shapes
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("t{i}"), s.clone())),
    )
    .unwrap()
}

/// Runs every case on `shapes` with `threads` threads, checking each step.
fn fast_equals_reference(shapes: &[Vec<usize>], threads: usize, seed: u64) {
    let layout = layout_of(shapes);
    let n = layout.total();
    let pool = gradlab::pool::Pool::new(threads);
    for (spec, mut reference, tolerance) in cases(&layout) {
        let mut rng = Rng(seed | 1);
        let start = rng.vec(n);
        let (mut fast, mut slow) = (start.clone(), start);
        let mut opt: Box<dyn Optimizer<f64>> =
            optim::build::<f64>(&spec, layout.clone(), &[], Options::default()).unwrap();
        for t in 1..=STEPS {
            let g = rng.vec(n);
            pool.install(|| {
                opt.step(&mut split(&layout, &mut fast), &split_ref(&layout, &g))
                    .unwrap()
            });
            reference.step(t, &mut slow, &g);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!(
                    (a - b).abs() <= tolerance * (1.0 + b.abs()),
                    "{spec}, {threads} thread(s), shapes {shapes:?}, step {t}, element {i}: fast {a} vs reference {b}"
                );
            }
        }
    }
}

#[test]
fn fast_paths_equal_the_reference_across_chunk_boundaries() {
    // A vector just over two chunks, a matrix of more than one chunk, a tall and a wide
    // matrix, a batch of matrices, single elements.
    let shapes = [
        vec![1],
        vec![CHUNK * 2 + 7],
        vec![37, CHUNK / 16 + 3],
        vec![9, 4],
        vec![3, 11],
        vec![2, 3, 5],
        vec![5],
    ];
    for threads in 1..=3 {
        fast_equals_reference(&shapes, threads, 3 + threads as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    #[test]
    fn fast_paths_equal_the_reference_on_random_layouts(
        shapes in prop::collection::vec(
            prop_oneof![
                (1usize..3000).prop_map(|n| vec![n]),
                (1usize..40, 1usize..60).prop_map(|(r, c)| vec![r, c]),
            ],
            1..8,
        ),
        threads in 1usize..=3,
        seed in any::<u64>(),
    ) {
        fast_equals_reference(&shapes, threads, seed);
    }
}
