//! The optimizers after the lecture against plain references (see `reference_steps/` for
//! the others): schedule-free SGD and AdamW (`schedulefree` 1.4.1), Adafactor (PyTorch's
//! `Adafactor`), Prodigy (`prodigyopt` 1.1.2) and Muon (PyTorch's `Muon`), each one readable
//! loop per step in f64 over the tensors as their references write it, and a property test
//! that the fast path (chunks, fused passes, factored sums in bands, 1 to 3 threads) gives the
//! same parameters on random layouts of vectors and matrices, within a stated bound.

mod adaptive;
#[path = "../common/mod.rs"]
mod common;
mod muon;

use adaptive::*;
use common::*;
use gradlab::optim::{plan::CHUNK, Layout};
use muon::*;
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
    for (spec, mut reference, tolerance) in cases(&layout) {
        assert_fast_equals_reference(
            &spec,
            reference.as_mut(),
            &layout,
            threads,
            seed,
            STEPS,
            tolerance,
        );
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
