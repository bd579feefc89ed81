//! Engine guarantees: f32 agrees with f64, non-finite policies, clipping, parameter groups, thread-count independence.

mod common;

use common::*;
use gradlab::optim::{self, Layout, NonFinitePolicy, Options, ParamGroup};
use gradlab::Error;

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn f32_kernels_agree_with_f64_step_by_step() {
    let layout = small_layout();
    let n = layout.total();
    for spec in SPECS {
        let mut rng = Rng(42);
        let mut o32 = build::<f32>(spec, &layout, Options::default());
        let mut o64 = build::<f64>(spec, &layout, Options::default());
        let mut p32: Vec<f32> = rng.vec(n).iter().map(|&x| x as f32).collect();
        for step in 0..30 {
            // Start both from the f32 run's exact state.
            o64.load_state_dict(&convert(&o32.state_dict())).unwrap();
            let mut p64: Vec<f64> = p32.iter().map(|&x| x as f64).collect();
            let g32: Vec<f32> = rng.vec(n).iter().map(|&x| x as f32).collect();
            let g64: Vec<f64> = g32.iter().map(|&x| x as f64).collect();
            o32.step(&mut split(&layout, &mut p32), &split_ref(&layout, &g32))
                .unwrap();
            o64.step(&mut split(&layout, &mut p64), &split_ref(&layout, &g64))
                .unwrap();
            for (i, (a, b)) in p32.iter().zip(&p64).enumerate() {
                assert!(
                    rel_close(*a as f64, *b, 1e-6),
                    "{spec} step {step} param {i}: f32 {a} vs f64 {b}"
                );
            }
            let s32 = o32.state_dict();
            let s64 = o64.state_dict();
            for (key, (_, v64)) in &s64.tensors {
                let v32 = &s32.tensors[key].1;
                for (a, b) in v32.iter().zip(v64) {
                    assert!(
                        rel_close(*a as f64, *b, 1e-6),
                        "{spec} step {step} state {key}: f32 {a} vs f64 {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn non_finite_gradients_error_or_skip() {
    let layout = small_layout();
    let n = layout.total();
    for spec in SPECS {
        let mut p = vec![0.3; n];
        let mut g = vec![0.1; n];
        let mut opt = build::<f64>(spec, &layout, Options::default());
        opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
            .unwrap();
        g[13] = f64::NAN; // fc.bias[1]
        let err = opt
            .step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
            .unwrap_err();
        match &err {
            Error::NonFiniteGradient {
                step,
                tensor,
                index,
                ..
            } => {
                assert_eq!(
                    (*step, tensor.as_str(), *index),
                    (2, "fc.bias", 1),
                    "{spec}"
                );
            }
            other => panic!("{spec}: {other:?}"),
        }
        assert!(err.to_string().contains("step 2") && err.to_string().contains("fc.bias"));

        let skip = Options {
            nonfinite: NonFinitePolicy::Skip,
            ..Options::default()
        };
        let mut opt = build::<f64>(spec, &layout, skip);
        let mut clean = vec![0.1; n];
        opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &clean))
            .unwrap();
        let (state, params) = (opt.state_dict(), p.clone());
        clean[0] = f64::INFINITY;
        let outcome = opt
            .step(&mut split(&layout, &mut p), &split_ref(&layout, &clean))
            .unwrap();
        assert!(outcome.skipped);
        assert_eq!(
            opt.state_dict(),
            state,
            "{spec}: a skipped step changed the state"
        );
        assert_eq!(p, params, "{spec}: a skipped step changed the parameters");
        assert_eq!(opt.steps(), 1);
    }
}

#[test]
fn clipping_follows_pytorch() {
    let layout = small_layout();
    let n = layout.total();
    let mut rng = Rng(3);
    let g = rng.vec(n);
    let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
    let max_norm = 0.5;
    let clipped = Options {
        clip_norm: Some(max_norm),
        ..Options::default()
    };
    let mut a = build::<f64>("sgd(lr=0.1)", &layout, clipped);
    let mut pa = vec![0.0; n];
    let outcome = a
        .step(&mut split(&layout, &mut pa), &split_ref(&layout, &g))
        .unwrap();
    assert!((outcome.grad_norm - norm).abs() < 1e-12);
    let coef = max_norm / (norm + 1e-6);
    assert!((outcome.clip_coef - coef).abs() < 1e-15);
    for (p, gi) in pa.iter().zip(&g) {
        assert!((p + 0.1 * gi * coef).abs() < 1e-15);
    }
    // Below the threshold the gradient is untouched.
    let mut b = build::<f64>(
        "sgd(lr=0.1)",
        &layout,
        Options {
            clip_norm: Some(100.0),
            ..Options::default()
        },
    );
    let mut pb = vec![0.0; n];
    assert_eq!(
        b.step(&mut split(&layout, &mut pb), &split_ref(&layout, &g))
            .unwrap()
            .clip_coef,
        1.0
    );
    // Clip by value clamps each element.
    let mut c = build::<f64>(
        "sgd(lr=1.0)",
        &layout,
        Options {
            clip_value: Some(0.25),
            ..Options::default()
        },
    );
    let mut pc = vec![0.0; n];
    c.step(&mut split(&layout, &mut pc), &split_ref(&layout, &g))
        .unwrap();
    for (p, gi) in pc.iter().zip(&g) {
        assert_eq!(*p, -gi.clamp(-0.25, 0.25));
    }
}

#[test]
fn parameter_groups_have_their_own_hyperparameters() {
    let layout = small_layout();
    let n = layout.total();
    let groups = [ParamGroup::parse(&["*.bias", "scale"], "weight_decay=0").unwrap()];
    let mut grouped = optim::build::<f64>(
        "adamw(lr=0.1, weight_decay=0.5)",
        layout.clone(),
        &groups,
        Options::default(),
    )
    .unwrap();
    let mut decayed = build::<f64>(
        "adamw(lr=0.1, weight_decay=0.5)",
        &layout,
        Options::default(),
    );
    let mut plain = build::<f64>("adamw(lr=0.1, weight_decay=0)", &layout, Options::default());
    let mut rng = Rng(11);
    let start = rng.vec(n);
    let (mut a, mut b, mut c) = (start.clone(), start.clone(), start.clone());
    for _ in 0..5 {
        let g = rng.vec(n);
        grouped
            .step(&mut split(&layout, &mut a), &split_ref(&layout, &g))
            .unwrap();
        decayed
            .step(&mut split(&layout, &mut b), &split_ref(&layout, &g))
            .unwrap();
        plain
            .step(&mut split(&layout, &mut c), &split_ref(&layout, &g))
            .unwrap();
    }
    assert_eq!(&a[..12], &b[..12], "weights use the base group's decay");
    assert_eq!(
        &a[12..],
        &c[12..],
        "biases and scale use the group without decay"
    );
    assert_eq!(grouped.num_groups(), 2);
    grouped.hypers_mut()[1].lr = 0.5;
    assert_eq!((grouped.lr(0), grouped.lr(1)), (0.1, 0.5));
    assert_eq!(grouped.momentum(0), Some(0.9));
    // A pattern that matches nothing is an error naming it.
    let bad = [ParamGroup::parse(&["*.gamma"], "weight_decay=0").unwrap()];
    let err = optim::build::<f64>("adam", layout.clone(), &bad, Options::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("'*.gamma'"), "{err}");
    // A bad override is reported like a bad spec.
    let bad = [ParamGroup::parse(&["*.bias"], "betas=(0.9, 1.5)").unwrap()];
    let err = optim::build::<f64>("adam", layout, &bad, Options::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("betas"), "{err}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Large enough to be split into chunks and run in parallel.
    let layout = Layout::new([("a", vec![300_000]), ("b", vec![17]), ("c", vec![70_001])]).unwrap();
    let n = layout.total();
    let mut rng = Rng(5);
    let start = rng.vec(n);
    let grads: Vec<Vec<f64>> = (0..3).map(|_| rng.vec(n)).collect();
    for spec in [
        "adam(lr=0.01)",
        "lamb(lr=0.01, weight_decay=0.01)",
        "lars(lr=0.1, momentum=0.9)",
        "swats(lr=0.01)",
        "adam(lr=0.01, state_dtype=bf16)",
        "lamb(lr=0.01, state_dtype=bf16)",
    ] {
        let run = |threads: usize| {
            let pool = gradlab::pool::Pool::new(threads);
            pool.install(|| {
                let mut opt = optim::build::<f32>(
                    spec,
                    layout.clone(),
                    &[],
                    Options {
                        clip_norm: Some(1.0),
                        ..Options::default()
                    },
                )
                .unwrap();
                let mut p: Vec<f32> = start.iter().map(|&x| x as f32).collect();
                for g in &grads {
                    let g: Vec<f32> = g.iter().map(|&x| x as f32).collect();
                    opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
                        .unwrap();
                }
                p.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            })
        };
        assert_eq!(run(1), run(2), "{spec}");
        assert_eq!(run(1), run(3), "{spec}");
    }
}

#[test]
fn wrong_tensor_sizes_are_errors_naming_the_tensor() {
    let layout = small_layout();
    let mut opt = build::<f64>("sgd", &layout, Options::default());
    let mut w = vec![0.0; 12];
    let mut b = vec![0.0; 5];
    let mut s = vec![0.0; 1];
    let err = opt
        .step(
            &mut [&mut w, &mut b, &mut s],
            &[&[0.0; 12], &[0.0; 5], &[0.0; 1]],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'fc.bias'") && err.contains("expected 4"),
        "{err}"
    );
    let err = opt
        .step(&mut [&mut w], &[&[0.0; 12]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 3"), "{err}");
}

#[test]
fn swats_reports_its_switch() {
    use gradlab::surface::{replay, Surface};
    let spec = gradlab::spec::parse("swats(lr=0.001)").unwrap();
    let mut opt = replay::optimizer_for_surface(&spec, Options::default()).unwrap();
    let before = optim::swats::switch_status(opt.as_ref()).unwrap();
    assert_eq!(before[0].switched_at, None);
    assert!(replay::run(
        Surface::Himmelblau,
        [-4.0, 3.0],
        opt.as_mut(),
        600,
        |_, _| Ok(())
    )
    .stopped
    .is_none());
    let status = optim::swats::switch_status(opt.as_ref()).unwrap();
    let at = status[0]
        .switched_at
        .expect("SWATS switches to SGD on this case");
    assert!(at > 1 && at < 600);
    assert!(status[0].sgd_lr > 0.0);
    let adam = build::<f64>("adam", &small_layout(), Options::default());
    assert!(optim::swats::switch_status(adam.as_ref()).is_none());
}

#[test]
fn lending_tensors_one_at_a_time_gives_the_same_result() {
    let layout = Layout::new([("a", vec![70_000]), ("b", vec![3, 5]), ("c", vec![1])]).unwrap();
    let n = layout.total();
    let clipped = Options {
        clip_norm: Some(2.0),
        ..Options::default()
    };
    // Clipping checks the gradients first; the default checks them inside the update.
    for (spec, options) in SPECS
        .iter()
        .flat_map(|s| [(*s, clipped.clone()), (*s, Options::default())])
    {
        let mut rng = Rng(21);
        let start: Vec<f32> = rng.vec(n).iter().map(|&x| x as f32).collect();
        let grads: Vec<Vec<f32>> = (0..4)
            .map(|_| rng.vec(n).iter().map(|&x| x as f32).collect())
            .collect();
        let mut a = optim::build::<f32>(spec, layout.clone(), &[], options.clone()).unwrap();
        let mut b = optim::build::<f32>(spec, layout.clone(), &[], options).unwrap();
        let mut flat = start.clone();
        let mut lent = OneAtATime(
            split_ref(&layout, &start)
                .iter()
                .map(|s| s.to_vec())
                .collect(),
        );
        for g in &grads {
            let gs = split_ref(&layout, g);
            a.step(&mut split(&layout, &mut flat), &gs).unwrap();
            b.step_with(&gs, &mut lent).unwrap();
        }
        let joined: Vec<f32> = lent.0.concat();
        assert_eq!(
            flat.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            joined.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{spec}"
        );
        assert_eq!(a.state_dict(), b.state_dict(), "{spec}");
    }
}

/// The one-pass check reports the same gradient norm as the separate pass, also for finite
/// f32 gradients whose squares overflow f32.
#[test]
fn the_one_pass_norm_equals_the_separate_pass_norm() {
    let layout = Layout::new([("a", vec![50_000]), ("b", vec![7])]).unwrap();
    let n = layout.total();
    let mut rng = Rng(11);
    for huge in [false, true] {
        let mut g: Vec<f32> = rng.vec(n).iter().map(|&x| x as f32).collect();
        if huge {
            g[123] = 3e20; // finite, but its square is not in f32
        }
        let exact: f64 = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let skip = Options {
            nonfinite: NonFinitePolicy::Skip,
            ..Options::default()
        };
        for options in [Options::default(), skip] {
            let mut opt = build::<f32>("sgd(lr=0.0)", &layout, options);
            let mut p = vec![0.0f32; n];
            let out = opt
                .step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
                .unwrap();
            assert!(!out.skipped);
            assert!(
                rel_close(out.grad_norm, exact, 1e-6),
                "huge={huge}: {} vs {exact}",
                out.grad_norm
            );
        }
    }
}

/// A tensor without a gradient (PyTorch's `p.grad is None`) is not moved and its state does
/// not advance: each tensor follows exactly the trajectory of an optimizer of its own that
/// steps only when the tensor has a gradient, and clipping takes the gradients present.
#[test]
fn tensors_without_a_gradient_sit_out_the_step() {
    let layout = Layout::new([("a", vec![40_000]), ("b", vec![3, 7])]).unwrap();
    let (na, nb) = (40_000, 21);
    let mut rng = Rng(5);
    let start = rng.vec(na + nb);
    let grads: Vec<Vec<f64>> = (0..4).map(|_| rng.vec(na + nb)).collect();
    // b has no gradient at steps 1 and 2 (0-based), a none at step 3.
    let absent = |step: usize, seg: usize| matches!((step, seg), (1, 1) | (2, 1) | (3, 0));
    for (spec, options) in [
        ("adam(lr=0.01)", Options::default()),
        ("sgd(lr=0.1, momentum=0.9)", Options::default()),
        ("lamb(lr=0.01)", Options::default()),
        (
            "adamw(lr=0.01)",
            Options {
                clip_norm: Some(0.5),
                ..Options::default()
            },
        ),
    ] {
        let mut joint = build::<f64>(spec, &layout, options.clone());
        let mut p = start.clone();
        for (step, g) in grads.iter().enumerate() {
            let mask = [absent(step, 0), absent(step, 1)];
            let (ga, gb) = g.split_at(na);
            let views: [&[f64]; 2] = [
                if mask[0] { &[] } else { ga },
                if mask[1] { &[] } else { gb },
            ];
            let (pa, pb) = p.split_at_mut(na);
            let mut params: Vec<&mut [f64]> = vec![pa, pb];
            joint
                .step_with_absent(&views, &mask, &mut params.as_mut_slice())
                .unwrap();
        }
        for (seg, (name, range)) in [("a", 0..na), ("b", na..na + nb)].into_iter().enumerate() {
            let own = Layout::new([(name, layout.segments()[seg].shape.clone())]).unwrap();
            // Clipped by hand below, by the norm of the gradients present at each step.
            let plain = Options {
                clip_norm: None,
                ..options.clone()
            };
            let mut alone = build::<f64>(spec, &own, plain);
            let mut q = start[range.clone()].to_vec();
            for (step, g) in grads.iter().enumerate() {
                if absent(step, seg) {
                    continue;
                }
                let present: f64 = (0..2)
                    .filter(|&s| !absent(step, s))
                    .flat_map(|s| if s == 0 { &g[..na] } else { &g[na..] })
                    .map(|x| x * x)
                    .sum::<f64>()
                    .sqrt();
                let coef = options
                    .clip_norm
                    .map_or(1.0, |m| (m / (present + 1e-6)).min(1.0));
                let mine: Vec<f64> = g[range.clone()].iter().map(|x| x * coef).collect();
                alone.step(&mut [&mut q], &[&mine]).unwrap();
            }
            let worst = p[range]
                .iter()
                .zip(&q)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < 1e-12,
                "{spec}: tensor {name} deviates by {worst:.1e}"
            );
        }
    }
    // Optimizers whose step couples the tensors refuse, naming the tensor.
    for spec in [
        "muon(lr=0.02, fallback=adamw)",
        "adafactor",
        "prodigy",
        "lookahead(adam)",
    ] {
        let mut opt = build::<f64>(spec, &layout, Options::default());
        let mut p = start.clone();
        let (pa, pb) = p.split_at_mut(na);
        let g = &grads[0];
        let err = opt
            .step_with_absent(
                &[&g[..na], &[]],
                &[false, true],
                &mut [pa, pb].as_mut_slice(),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("'b' has none"), "{spec}: {err}");
    }
}
