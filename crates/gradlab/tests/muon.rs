//! Muon beyond the golden trajectories: what Newton–Schulz does to a matrix, the fallback
//! for other tensors, bfloat16 vs float32 iterations, and what it refuses.

mod common;

use common::*;
use gradlab::optim::{self, Layout, Optimizer, Options, ParamGroup};

fn build(spec: &str, layout: &Layout) -> Box<dyn Optimizer<f64>> {
    optim::build::<f64>(spec, layout.clone(), &[], Options::default()).unwrap()
}

/// The update Muon applies to a zero-momentum matrix: −(θ' − θ)/γ·ratio with λ = 0.
fn orthogonalised(spec: &str, rows: usize, cols: usize, g: &[f64]) -> Vec<f64> {
    let layout = Layout::new([("w", vec![rows, cols])]).unwrap();
    let mut opt = build(spec, &layout);
    let mut p = vec![0.0; rows * cols];
    opt.step(&mut [&mut p], &[g]).unwrap();
    let ratio = (rows as f64 / cols as f64).max(1.0).sqrt();
    p.iter().map(|x| -x / (0.1 * ratio)).collect()
}

#[test]
fn newton_schulz_makes_the_singular_values_of_the_momentum_near_one() {
    for (rows, cols) in [(6, 20), (20, 6), (12, 12)] {
        let g = Rng(rows as u64 * 31 + cols as u64).vec(rows * cols);
        for dtype in ["f32", "bf16"] {
            let spec = format!(
                "muon(lr=0.1, weight_decay=0, nesterov=false, momentum=0, ns_dtype={dtype})"
            );
            let o = orthogonalised(&spec, rows, cols, &g);
            // O Oᵀ (on the small side) has the squared singular values as eigenvalues; the
            // quintic iteration leaves them in about [0.68², 1.2²].
            let (r, c, t) = if rows <= cols {
                (rows, cols, false)
            } else {
                (cols, rows, true)
            };
            let at = |i: usize, j: usize| if t { o[j * cols + i] } else { o[i * cols + j] };
            let gram = nalgebra::DMatrix::from_fn(r, r, |i, k| {
                (0..c).map(|j| at(i, j) * at(k, j)).sum::<f64>()
            });
            let eig = gram.symmetric_eigen().eigenvalues;
            for s2 in eig.iter() {
                assert!(
                    (0.4..1.5).contains(s2),
                    "{rows}x{cols} {dtype}: squared singular value {s2}"
                );
            }
        }
    }
}

#[test]
fn bf16_iterations_are_within_bf16_rounding_of_f32() {
    let (rows, cols) = (16, 24);
    let g = Rng(5).vec(rows * cols);
    let base = "muon(lr=0.1, weight_decay=0, nesterov=false, momentum=0";
    let o16 = orthogonalised(&format!("{base})"), rows, cols, &g);
    let o32 = orthogonalised(&format!("{base}, ns_dtype=f32)"), rows, cols, &g);
    let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    let diff: Vec<f64> = o16.iter().zip(&o32).map(|(a, b)| a - b).collect();
    assert!(
        rms(&diff) < 0.05 * rms(&o32),
        "{} vs {}",
        rms(&diff),
        rms(&o32)
    );
    assert!(rms(&diff) > 0.0, "the bf16 path must round");
    // Every bf16 output is a bfloat16 number.
    for x in &o16 {
        let x = *x as f32;
        assert_eq!(x.to_bits() & 0xFFFF, 0, "{x} is not a bfloat16 value");
    }
}

#[test]
fn tensors_that_are_not_matrices_take_the_fallback() {
    let layout = small_layout();
    let n = layout.total();
    let mut muon = build("muon(lr=0.02, fallback=adamw(lr=0.01))", &layout);
    let sub = Layout::new([("fc.bias", vec![4]), ("scale", vec![1])]).unwrap();
    let mut adamw = build("adamw(lr=0.01)", &sub);
    let mut rng = Rng(2);
    let mut p = rng.vec(n);
    let mut q: Vec<f64> = p[12..].to_vec();
    for _ in 0..4 {
        let g = rng.vec(n);
        muon.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
            .unwrap();
        adamw
            .step(&mut split(&sub, &mut q), &split_ref(&sub, &g[12..]))
            .unwrap();
    }
    assert_eq!(
        &p[12..],
        &q[..],
        "the fallback's tensors follow AdamW exactly"
    );
    // A schedule's lr reaches both, in proportion.
    muon.hypers_mut()[0].lr = 0.01;
    let state = muon.state_dict();
    assert!(
        state.meta.groups[1].contains("lr=0.005"),
        "{:?}",
        state.meta.groups
    );
    assert!(state.tensors.contains_key("fc.weight/momentum_buffer"));
    assert!(state.tensors.contains_key("fc.bias/exp_avg"));
}

#[test]
fn muon_refuses_what_it_cannot_do_by_name() {
    let layout = small_layout();
    let err = |spec: &str, groups: &[ParamGroup], options: Options| {
        optim::build::<f64>(spec, layout.clone(), groups, options)
            .err()
            .unwrap()
            .to_string()
    };
    let e = err("muon", &[], Options::default());
    assert!(e.contains("'fc.bias'") && e.contains("fallback"), "{e}");
    let e = err("muon(fallback=lbfgs)", &[], Options::default());
    assert!(e.contains("fallback"), "{e}");
    let e = err("muon(ns_steps=100, fallback=sgd)", &[], Options::default());
    assert!(e.contains("ns_steps"), "{e}");
    let e = err("muon(ns_dtype=f16, fallback=sgd)", &[], Options::default());
    assert!(e.contains("ns_dtype") && e.contains("bf16"), "{e}");
    let e = err(
        "muon(adjust_lr_fn=mine, fallback=sgd)",
        &[],
        Options::default(),
    );
    assert!(e.contains("match_rms_adamw"), "{e}");
    let groups = [ParamGroup::parse(&["fc.*"], "lr=0.1").unwrap()];
    let e = err("muon(fallback=sgd)", &groups, Options::default());
    assert!(e.contains("'fc.*' matches the matrix 'fc.weight'"), "{e}");
    // Groups of the fallback's tensors are the fallback's.
    let groups = [ParamGroup::parse(&["*.bias"], "lr=0.1").unwrap()];
    let opt = optim::build::<f64>(
        "muon(fallback=sgd)",
        layout.clone(),
        &groups,
        Options::default(),
    )
    .unwrap();
    assert_eq!(opt.num_groups(), 2);
    assert_eq!(opt.lr(1), 0.1);
}

#[test]
fn the_lr_adjustment_follows_the_shape() {
    use gradlab::optim::muon::AdjustLr;
    assert_eq!(
        AdjustLr::Original.ratio(784, 256),
        (784.0f64 / 256.0).sqrt()
    );
    assert_eq!(AdjustLr::Original.ratio(256, 784), 1.0);
    assert_eq!(AdjustLr::MatchRmsAdamw.ratio(256, 784), 0.2 * 28.0);
    assert_eq!(AdjustLr::SpectralUnclamped.ratio(256, 1024), 0.5);
}
