//! The fast path against a plain reference: for each optimizer here, one readable loop per
//! step in f64 (no chunks, no threads, no fused passes; PyTorch's update as written in its
//! docs), and a property test that the engine's chunked, threaded kernels give the same
//! parameters on random layouts — many tensors, odd lengths, sizes across chunk boundaries,
//! 1 to 3 threads — within a stated bound of a few ULPs per step.

mod adam_like;
#[path = "../common/mod.rs"]
mod common;
mod sgd_like;

use adam_like::*;
use common::*;
use gradlab::optim::{self, plan::CHUNK, Layout, Options};
use proptest::prelude::*;
use sgd_like::*;

/// The relative difference allowed after `STEPS` steps: the fast kernels may order the same
/// operations differently (fused multiply-adds, lanes), each step adding a few ULPs.
const TOLERANCE: f64 = 1e-12;
const STEPS: usize = 12;

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
    let swats = |eps| -> Box<dyn Reference> {
        Box::new(Swats {
            lr: 0.01,
            betas: (0.9, 0.999),
            eps,
            lengths: lengths.to_vec(),
            m: z(),
            v: z(),
            v_sgd: z(),
            lambda: vec![0.0; lengths.len()],
            sgd_lr: vec![None; lengths.len()],
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
        ("swats(lr=0.01)", swats(1e-9)),
        // A large ε: tensors switch to SGD within the test's steps.
        ("swats(lr=0.01, eps=0.05)", swats(0.05)),
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
    for (spec, mut reference) in cases(lengths) {
        assert_fast_equals_reference(
            spec,
            reference.as_mut(),
            &layout,
            threads,
            seed,
            STEPS,
            TOLERANCE,
        );
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
