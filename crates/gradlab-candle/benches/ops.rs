//! Criterion benchmarks of gradlab-candle's ops at the built-in CNN's and MLP's sizes (batch
//! 64, f32), forward alone and forward + backward (`cargo bench -p gradlab-candle`), beside
//! candle's own op where candle has one. `gradlab bench --train` times whole steps.

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use gradlab_candle::ops::{self, Conv2dParams};

fn random(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut rng = gradlab::landscape::Rng::new(seed);
    let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

type Forward = dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

/// Times `f(x, w)` alone and with the backward pass of its sum.
fn pair(c: &mut Criterion, name: &str, f: &Forward, x: &[usize], w: &[usize]) {
    let x = Var::from_tensor(&random(x, 1)).unwrap();
    let w = Var::from_tensor(&random(w, 2)).unwrap();
    c.bench_function(&format!("{name}/forward"), |b| {
        b.iter(|| f(x.as_tensor(), w.as_tensor()).unwrap())
    });
    c.bench_function(&format!("{name}/forward+backward"), |b| {
        b.iter(|| {
            f(x.as_tensor(), w.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        })
    });
}

fn conv(c: &mut Criterion) {
    let (x1, w1) = ([64, 1, 28, 28], [6, 1, 5, 5]);
    pair(
        c,
        "conv1 gradlab",
        &|x, w| ops::conv2d(x, w, None, Conv2dParams::padded(2)),
        &x1,
        &w1,
    );
    pair(c, "conv1 candle", &|x, w| x.conv2d(w, 2, 1, 1, 1), &x1, &w1);
    let (x2, w2) = ([64, 6, 14, 14], [16, 6, 5, 5]);
    pair(
        c,
        "conv2 gradlab",
        &|x, w| ops::conv2d(x, w, None, Conv2dParams::padded(0)),
        &x2,
        &w2,
    );
    pair(c, "conv2 candle", &|x, w| x.conv2d(w, 0, 1, 1, 1), &x2, &w2);
}

fn pool_and_activations(c: &mut Criterion) {
    let (x, unused) = ([64, 6, 28, 28], [1]);
    pair(
        c,
        "max_pool2d gradlab",
        &|x, _| ops::max_pool2d(x, 2, 2),
        &x,
        &unused,
    );
    pair(c, "max_pool2d candle", &|x, _| x.max_pool2d(2), &x, &unused);
    pair(c, "relu gradlab", &|x, _| ops::relu(x), &x, &unused);
    pair(c, "relu candle", &|x, _| x.relu(), &x, &unused);
}

fn linear_and_loss(c: &mut Criterion) {
    let (x, w) = ([64, 784], [256, 784]);
    pair(
        c,
        "linear 784-256 gradlab",
        &|x, w| ops::linear(x, w, None),
        &x,
        &w,
    );
    pair(
        c,
        "linear 784-256 candle",
        &|x, w| x.matmul(&w.t()?),
        &x,
        &w,
    );
    let labels: Vec<u32> = (0..64u32).map(|i| i % 10).collect();
    let labels = Tensor::from_vec(labels, 64, &Device::Cpu).unwrap();
    let ours = labels.clone();
    pair(
        c,
        "cross_entropy gradlab",
        &move |x, _| ops::cross_entropy(x, &ours),
        &[64, 10],
        &[1],
    );
    pair(
        c,
        "cross_entropy candle",
        &move |x, _| candle_nn::loss::cross_entropy(x, &labels),
        &[64, 10],
        &[1],
    );
}

criterion_group!(benches, conv, pool_and_activations, linear_and_loss);
criterion_main!(benches);
