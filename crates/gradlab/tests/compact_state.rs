//! `state_dtype=bf16`: the Adam family's moments in bfloat16 — half the state, 20 instead of
//! 28 bytes moved per f32 parameter, resumable bit for bit, and close to full precision.

mod common;

use common::*;
use gradlab::optim::{self, Layout, Optimizer, Options, ParamGroup};

fn build(spec: &str, layout: &Layout) -> Box<dyn Optimizer<f32>> {
    optim::build::<f32>(spec, layout.clone(), &[], Options::default()).unwrap()
}

/// Minimises Σ a_i (θ_i − 1)² / 2 with curvatures a_i from 0.1 to 10; returns the loss.
fn descend(opt: &mut dyn Optimizer<f32>, layout: &Layout, steps: usize) -> (Vec<f32>, f64) {
    let n = layout.total();
    let a: Vec<f32> = (0..n).map(|i| 0.1 + 9.9 * (i % 97) as f32 / 96.0).collect();
    let mut p = vec![0.0f32; n];
    for _ in 0..steps {
        let g: Vec<f32> = p.iter().zip(&a).map(|(x, a)| a * (x - 1.0)).collect();
        opt.step(&mut split(layout, &mut p), &split_ref(layout, &g))
            .unwrap();
    }
    let loss = p
        .iter()
        .zip(&a)
        .map(|(x, a)| 0.5 * *a as f64 * (*x as f64 - 1.0).powi(2))
        .sum();
    (p, loss)
}

#[test]
fn bf16_moments_train_like_f32_moments() {
    let layout = Layout::new([("w", vec![3000]), ("b", vec![10])]).unwrap();
    let start: f64 = (0..layout.total())
        .map(|i| 0.5 * (0.1 + 9.9 * (i % 97) as f64 / 96.0))
        .sum();
    for spec in [
        "adam(lr=0.01)",
        "adamw(lr=0.01, weight_decay=0.0)",
        "nadam(lr=0.01)",
        "radam(lr=0.01)",
        "adamax(lr=0.01)",
        "lion(lr=0.005)",
        "lamb(lr=0.05)",
        "adopt(lr=0.01)",
        "ademamix(lr=0.01)",
        "adafactor(lr=0.05)",
    ] {
        let compact = format!("{}, state_dtype=bf16)", spec.trim_end_matches(')'));
        let (_, full) = descend(build(spec, &layout).as_mut(), &layout, 400);
        let (_, half) = descend(build(&compact, &layout).as_mut(), &layout, 400);
        // Both descend by orders of magnitude, to about the same loss.
        assert!(
            full < 1e-2 * start && half < 1e-2 * start,
            "{spec}: {full} vs {half} from {start}"
        );
        assert!(
            half < 3.0 * full + 1e-4 * start,
            "{spec}: bf16 {half} vs f32 {full}"
        );
    }
}

#[test]
fn bf16_state_is_half_the_bytes_and_resumes_exactly() {
    let layout = Layout::new([("w", vec![70_000]), ("b", vec![33])]).unwrap();
    let mut full = build("adamw(lr=0.01)", &layout);
    let mut half = build("adamw(lr=0.01, state_dtype=bf16)", &layout);
    assert_eq!(full.bytes_per_param(), 28.0);
    assert_eq!(half.bytes_per_param(), 20.0);
    assert!(
        half.spec().to_string().contains("state_dtype=bf16"),
        "{}",
        half.spec()
    );
    descend(full.as_mut(), &layout, 3);
    descend(half.as_mut(), &layout, 3);
    // Saved values are exactly bf16 numbers.
    for (key, (_, values)) in &half.state_dict().tensors {
        assert!(
            values.iter().all(|v| v.to_bits() & 0xFFFF == 0),
            "{key} is not bf16"
        );
    }
    // Save after 5 steps, load into a fresh optimizer, continue: bit for bit the same.
    let n = layout.total();
    let grads: Vec<Vec<f32>> = {
        let mut rng = Rng(17);
        (0..10)
            .map(|_| rng.vec(n).iter().map(|&x| x as f32).collect())
            .collect()
    };
    let run = |opt: &mut dyn Optimizer<f32>, p: &mut Vec<f32>, steps: std::ops::Range<usize>| {
        for g in &grads[steps] {
            opt.step(&mut split(&layout, p), &split_ref(&layout, g))
                .unwrap();
        }
    };
    for spec in [
        "adam(lr=0.01, state_dtype=bf16)",
        "adafactor(lr=0.01, state_dtype=bf16)",
    ] {
        let mut straight = build(spec, &layout);
        let mut p1 = vec![0.5f32; n];
        run(straight.as_mut(), &mut p1, 0..10);
        let mut first = build(spec, &layout);
        let mut p2 = vec![0.5f32; n];
        run(first.as_mut(), &mut p2, 0..5);
        let file =
            std::env::temp_dir().join(format!("gradlab-bf16-{}.safetensors", std::process::id()));
        first.save_state(&file).unwrap();
        let mut second = build(spec, &layout);
        second.load_state(&file).unwrap();
        run(second.as_mut(), &mut p2, 5..10);
        assert_eq!(
            p1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            p2.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{spec}"
        );
        assert_eq!(straight.state_dict(), second.state_dict(), "{spec}");
        let _ = std::fs::remove_file(file);
    }
    // Adafactor's vectors: V read twice and written once, in 2 bytes instead of 4.
    assert_eq!(build("adafactor", &layout).bytes_per_param(), 32.0);
    let half = build("adafactor(state_dtype=bf16)", &layout);
    assert_eq!(half.bytes_per_param(), 26.0);
    assert!(half.spec().to_string().contains("state_dtype=bf16"));
    // A state saved with one storage is refused by the other, by name.
    let err = build("adafactor", &layout)
        .load_state_dict(&half.state_dict())
        .unwrap_err()
        .to_string();
    assert!(err.contains("state_dtype=bf16"), "{err}");
}

#[test]
fn bf16_state_is_refused_where_it_would_stall() {
    let layout = Layout::new([("w", vec![4])]).unwrap();
    for spec in [
        "adagrad(state_dtype=bf16)",
        "sgd(lr=0.1, momentum=0.9, state_dtype=bf16)",
        "adadelta(state_dtype=bf16)",
    ] {
        let err = optim::build::<f32>(spec, layout.clone(), &[], Options::default())
            .err()
            .unwrap_or_else(|| panic!("{spec} was accepted"))
            .to_string();
        assert!(
            err.contains("state_dtype") && err.contains("full precision"),
            "{err}"
        );
    }
    let err = optim::build::<f32>(
        "adam(state_dtype=f16)",
        layout.clone(),
        &[],
        Options::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("f32, bf16"), "{err}");
    let group = ParamGroup::parse(&["w"], "state_dtype=bf16").unwrap();
    let err = optim::build::<f32>("adam", layout, &[group], Options::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not per parameter group"), "{err}");
}

/// Adam's second moment must keep decaying when each step changes it by less than half a
/// bf16 step (0.1% per step with β2 = 0.999): rounding to nearest would freeze it there;
/// stochastic rounding follows the f32 value.
#[test]
fn small_moment_updates_are_not_lost() {
    let layout = Layout::new([("w", vec![4096])]).unwrap();
    let n = layout.total();
    let mut v = Vec::new();
    for spec in ["adam(lr=0.0)", "adam(lr=0.0, state_dtype=bf16)"] {
        let mut opt = build(spec, &layout);
        let mut p = vec![0.0f32; n];
        let big = vec![1.0f32; n];
        let small = vec![1e-3f32; n];
        opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &big))
            .unwrap();
        for _ in 0..3000 {
            opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &small))
                .unwrap();
        }
        let state = opt.state_dict();
        let values = &state.tensors["w/exp_avg_sq"].1;
        v.push(values.iter().map(|&x| x as f64).sum::<f64>() / n as f64);
    }
    // 1e-3 · 0.999^3000 ≈ 5e-5 (plus 1e-9 from the small gradients).
    assert!((v[0] - 5.0e-5).abs() < 0.1e-5, "f32: {}", v[0]);
    assert!(
        (v[1] - v[0]).abs() < 0.02 * v[0],
        "bf16 {} vs f32 {}",
        v[1],
        v[0]
    );
}

/// A 64-bit FNV-1a hash of the bits of the parameters and of every state buffer.
fn fingerprint<T: gradlab::Real>(p: &[T], opt: &dyn Optimizer<T>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: f64| {
        for b in x.to_bits().to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    };
    p.iter().for_each(|x| eat(x.to_f64()));
    for (_, values) in opt.state_dict().tensors.values() {
        values.iter().for_each(|x| eat(x.to_f64()));
    }
    h
}

/// Twelve steps of `spec` (with `options`) from a fixed start and gradients, over tensors
/// that cross the engine's chunks and pieces, fingerprinted.
fn trajectory<T: gradlab::Real>(spec: &str, options: Options) -> u64 {
    let layout = Layout::new([("w", vec![3, 7001]), ("b", vec![33]), ("s", vec![1])]).unwrap();
    let n = layout.total();
    let mut rng = Rng(2024);
    let mut p: Vec<T> = rng.vec(n).into_iter().map(T::from_f64).collect();
    let mut opt = optim::build::<T>(spec, layout.clone(), &[], options).unwrap();
    for _ in 0..12 {
        // Gradients over several orders of magnitude, some exactly zero.
        let g: Vec<T> = rng
            .vec(n)
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                T::from_f64(if i % 11 == 0 {
                    0.0
                } else {
                    x * 10f64.powi(i as i32 % 7 - 3)
                })
            })
            .collect();
        opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
            .unwrap();
    }
    fingerprint(&p, opt.as_ref())
}

/// Faster Adam loops must compute the same numbers: these fingerprints (f32 parameters,
/// f64 parameters) were taken with the loops as they stood before the gradient checks were
/// folded into pieces and before the plain (unclipped, no L2) variant (commit 69f6430), for
/// f32 and bf16 state, both lerp forms, L2 and decoupled decay, AMSGrad and both clippings.
/// A value clip that never binds takes the general loop and must match the plain one.
#[test]
fn adam_steps_are_unchanged_bit_for_bit() {
    let clipped = |norm: Option<f64>, value: Option<f64>| Options {
        clip_norm: norm,
        clip_value: value,
        ..Options::default()
    };
    let plain = Options::default;
    let cases: [(&str, Options, [u64; 2], [u64; 2]); 7] = [
        (
            "adam(lr=0.01)",
            plain(),
            [0xcb5991519f804672, 0xee235ce419bc2a40],
            [0x3922a04466930ce1, 0x1ec7c47ee6b540ae],
        ),
        (
            "adamw(lr=0.01)",
            plain(),
            [0xac65eaacc8481cd3, 0xa497ec809a42afb7],
            [0xb5d0a58451e61655, 0x5a9f3024c084c32a],
        ),
        (
            "adam(lr=0.01, weight_decay=0.1)",
            plain(),
            [0x195fb97721160986, 0x92bcdf9dedd6b0ae],
            [0xb1bacbd37e89e90f, 0x1a5bd9aac46032ca],
        ),
        (
            "adam(lr=0.01, betas=(0.3, 0.99), amsgrad=true)",
            plain(),
            [0x0b8b0263ac276689, 0x3ce2e2f02162446d],
            [0x5ec6c72e3f9cecc3, 0xbadca5cbd0becec8],
        ),
        (
            "adamw(lr=0.01)",
            clipped(Some(1.0), None),
            [0x2f24f75c54795f90, 0xe3e0a50052459d5f],
            [0x0ac779295d605b97, 0x88631842efb2b3d8],
        ),
        (
            "adamw(lr=0.01)",
            clipped(None, Some(0.05)),
            [0xccae124d36af49a7, 0x0523cb71eb631031],
            [0x7e38bbed1f9d2e67, 0xba074620d7b4b9f2],
        ),
        (
            "adamw(lr=0.01)",
            clipped(None, Some(1e30)),
            [0xac65eaacc8481cd3, 0xa497ec809a42afb7],
            [0xb5d0a58451e61655, 0x5a9f3024c084c32a],
        ),
    ];
    for (spec, options, full, half) in cases {
        let compact = format!("{}, state_dtype=bf16)", spec.trim_end_matches(')'));
        for (spec, expected) in [(spec.to_string(), full), (compact, half)] {
            let got = [
                trajectory::<f32>(&spec, options.clone()),
                trajectory::<f64>(&spec, options.clone()),
            ];
            assert_eq!(
                got, expected,
                "{spec} with {options:?}: {got:016x?} instead of {expected:016x?}"
            );
        }
    }
}
