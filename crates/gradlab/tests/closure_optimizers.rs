//! Optimizers stepped with a closure (SAM/ASAM, L-BFGS, and wrappers around them): exact
//! resume, agreement of f32 with f64, what they refuse, and what happens to a step whose
//! closure returns non-finite values.

mod common;

use common::*;
use gradlab::optim::{self, Layout, NonFinitePolicy, Optimizer, Options, ParamAccess, ParamGroup};
use gradlab::{Error, Real};

/// Closure-stepped specs with hyperparameters that exercise their branches.
const CLOSURE_SPECS: &[&str] = &[
    "sam(sgd(lr=0.01, momentum=0.9), rho=0.05)",
    "sam(adam(lr=0.01, weight_decay=0.01), rho=0.3, adaptive=true)",
    "lookahead(sam(adamw(lr=0.01)), k=3)",
    "lbfgs(lr=0.5, max_iter=4, history_size=3)",
    "lbfgs(max_iter=5, history_size=4, line_search_fn=strong_wolfe)",
];

/// A smooth, non-quadratic loss on the small layout: Σ a_i (p_i − c_i)² + 0.1 Σ p_i⁴.
struct Loss {
    a: Vec<f64>,
    c: Vec<f64>,
}

impl Loss {
    fn new(n: usize) -> Self {
        let mut rng = Rng(99);
        Loss {
            a: (0..n).map(|_| 0.5 + rng.next_f64()).collect(),
            c: rng.vec(n),
        }
    }

    /// A closure over the layout's tensors that evaluates this loss in `T`.
    fn closure<'a, T: Real>(
        &'a self,
        layout: &'a Layout,
        calls: &'a mut u32,
    ) -> impl FnMut(&mut dyn ParamAccess<T>, &mut [Vec<T>]) -> gradlab::Result<f64> + 'a {
        move |params, grads| {
            *calls += 1;
            let mut loss = 0.0;
            for (i, seg) in layout.segments().iter().enumerate() {
                let g = &mut grads[i];
                params.read(i, &mut |p: &[T]| {
                    for (j, x) in p.iter().enumerate() {
                        let k = seg.offset + j;
                        let x = x.to_f64();
                        let d = x - self.c[k];
                        loss += self.a[k] * d * d + 0.1 * x.powi(4);
                        g[j] = T::from_f64(2.0 * self.a[k] * d + 0.4 * x.powi(3));
                    }
                })?;
            }
            Ok(loss)
        }
    }
}

fn step<T: Real>(
    opt: &mut dyn Optimizer<T>,
    layout: &Layout,
    loss: &Loss,
    params: &mut [T],
) -> u32 {
    let mut calls = 0;
    let mut closure = loss.closure::<T>(layout, &mut calls);
    let mut tensors = split(layout, params);
    let mut access: &mut [&mut [T]] = &mut tensors;
    let out = opt.step_with_closure(&mut access, &mut closure).unwrap();
    assert!(!out.step.skipped);
    drop(closure);
    assert_eq!(out.evaluations, calls);
    calls
}

/// A step after lowering the learning rate, as a schedule would.
fn scheduled_step(opt: &mut dyn Optimizer<f64>, layout: &Layout, loss: &Loss, params: &mut [f64]) {
    let lr = opt.lr(0);
    opt.hypers_mut()[0].lr = lr * 0.97;
    step(opt, layout, loss, params);
}

fn bits(x: &[f64]) -> Vec<u64> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn resume_of_a_closure_optimizer_is_bit_identical() {
    let layout = small_layout();
    let loss = Loss::new(layout.total());
    let dir = std::env::temp_dir().join(format!("gradlab-closure-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for spec in CLOSURE_SPECS {
        let make = || optim::build::<f64>(spec, layout.clone(), &[], Options::default()).unwrap();
        let mut params = Rng(5).vec(layout.total());
        let mut a = make();
        assert!(a.needs_closure(), "{spec}");
        for _ in 0..4 {
            scheduled_step(a.as_mut(), &layout, &loss, &mut params);
        }
        let path = dir.join("state.safetensors");
        a.save_state(&path).unwrap();
        let saved = params.clone();
        for _ in 0..5 {
            scheduled_step(a.as_mut(), &layout, &loss, &mut params);
        }
        let mut b = make();
        b.load_state(&path).unwrap();
        let mut resumed = saved;
        for _ in 0..5 {
            scheduled_step(b.as_mut(), &layout, &loss, &mut resumed);
        }
        assert_eq!(
            bits(&params),
            bits(&resumed),
            "{spec}: resumed parameters differ"
        );
        assert_eq!(
            a.state_dict(),
            b.state_dict(),
            "{spec}: resumed state differs"
        );
        assert_eq!(a.steps(), b.steps(), "{spec}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f32_closure_optimizers_follow_f64() {
    let layout = small_layout();
    let loss = Loss::new(layout.total());
    for spec in CLOSURE_SPECS {
        let mut o32 = optim::build::<f32>(spec, layout.clone(), &[], Options::default()).unwrap();
        let mut o64 = optim::build::<f64>(spec, layout.clone(), &[], Options::default()).unwrap();
        let start = Rng(5).vec(layout.total());
        let mut p32: Vec<f32> = start.iter().map(|&x| x as f32).collect();
        let mut p64: Vec<f64> = p32.iter().map(|&x| x as f64).collect();
        for _ in 0..3 {
            step(o32.as_mut(), &layout, &loss, &mut p32);
            step(o64.as_mut(), &layout, &loss, &mut p64);
        }
        for (a, b) in p32.iter().zip(&p64) {
            assert!(
                (*a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{spec}: f32 {a} vs f64 {b}"
            );
        }
    }
}

#[test]
fn sam_with_zero_radius_is_its_base_optimizer() {
    let layout = small_layout();
    let loss = Loss::new(layout.total());
    let mut sam = optim::build::<f64>(
        "sam(adam(lr=0.01), rho=0)",
        layout.clone(),
        &[],
        Options::default(),
    )
    .unwrap();
    let mut adam =
        optim::build::<f64>("adam(lr=0.01)", layout.clone(), &[], Options::default()).unwrap();
    let mut a = Rng(3).vec(layout.total());
    let mut b = a.clone();
    for _ in 0..5 {
        assert_eq!(step(sam.as_mut(), &layout, &loss, &mut a), 2);
        assert_eq!(step(adam.as_mut(), &layout, &loss, &mut b), 1);
    }
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn sam_steps_with_the_gradient_at_the_perturbed_point() {
    // One tensor, SGD without momentum: w' = w − lr ∇L(w + ρ g/‖g‖).
    let layout = Layout::new([("w", vec![2])]).unwrap();
    let loss = Loss::new(2);
    let mut sam = optim::build::<f64>(
        "sam(sgd(lr=0.1), rho=0.2)",
        layout.clone(),
        &[],
        Options::default(),
    )
    .unwrap();
    let w = vec![0.3, -0.7];
    let mut p = w.clone();
    step(sam.as_mut(), &layout, &loss, &mut p);
    let grad = |x: &[f64]| -> Vec<f64> {
        (0..2)
            .map(|k| 2.0 * loss.a[k] * (x[k] - loss.c[k]) + 0.4 * x[k].powi(3))
            .collect()
    };
    let g = grad(&w);
    let norm = (g[0] * g[0] + g[1] * g[1]).sqrt();
    let far: Vec<f64> = (0..2).map(|k| w[k] + 0.2 * g[k] / norm).collect();
    let g2 = grad(&far);
    for k in 0..2 {
        let want = w[k] - 0.1 * g2[k];
        assert!((p[k] - want).abs() < 1e-7, "{k}: {} vs {want}", p[k]);
    }
}

#[test]
fn lbfgs_finds_the_minimum_of_a_quadratic_in_few_steps() {
    let layout = small_layout();
    let n = layout.total();
    // Without the quartic term the loss is a diagonal quadratic with minimum c.
    let mut loss = Loss::new(n);
    for (k, a) in loss.a.iter_mut().enumerate() {
        *a *= 1.0 + k as f64; // condition number ~ 40
    }
    let quadratic = |params: &mut dyn ParamAccess<f64>, grads: &mut [Vec<f64>]| {
        let mut value = 0.0;
        for (i, seg) in layout.segments().iter().enumerate() {
            let g = &mut grads[i];
            params.read(i, &mut |p: &[f64]| {
                for (j, x) in p.iter().enumerate() {
                    let k = seg.offset + j;
                    value += loss.a[k] * (x - loss.c[k]).powi(2);
                    g[j] = 2.0 * loss.a[k] * (x - loss.c[k]);
                }
            })?;
        }
        Ok(value)
    };
    let mut closure = quadratic;
    let mut opt = optim::build::<f64>(
        "lbfgs(tolerance_grad=1e-12, tolerance_change=1e-20, line_search_fn=strong_wolfe)",
        layout.clone(),
        &[],
        Options::default(),
    )
    .unwrap();
    let mut params = vec![0.0; n];
    for _ in 0..3 {
        let mut tensors = split(&layout, &mut params);
        let mut access: &mut [&mut [f64]] = &mut tensors;
        opt.step_with_closure(&mut access, &mut closure).unwrap();
    }
    for (x, c) in params.iter().zip(&loss.c) {
        assert!((x - c).abs() < 1e-6, "{x} vs {c}");
    }
}

#[test]
fn closure_optimizers_refuse_a_plain_step_and_what_they_cannot_do() {
    let layout = small_layout();
    let n = layout.total();
    let mut p = vec![0.1; n];
    let g = vec![0.1; n];
    for spec in ["sam(sgd(lr=0.1))", "lbfgs"] {
        let mut opt = optim::build::<f64>(spec, layout.clone(), &[], Options::default()).unwrap();
        let err = opt
            .step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
            .unwrap_err()
            .to_string();
        assert!(err.contains("step_with_closure"), "{spec}: {err}");
    }
    let groups = [ParamGroup::parse(&["*.bias"], "lr=0.1").unwrap()];
    let err = optim::build::<f64>("lbfgs", layout.clone(), &groups, Options::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("one group"), "{err}");
    let clip = Options {
        clip_norm: Some(1.0),
        ..Options::default()
    };
    let err = optim::build::<f64>("lbfgs", layout.clone(), &[], clip)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("clipping"), "{err}");
    for (spec, key) in [
        ("sam(rho=0.1)", "(inner)"),
        ("sam(lbfgs)", "(inner)"),
        ("sam(sgd, rho=-1)", "rho"),
        ("lbfgs(max_iter=0)", "max_iter"),
        ("lbfgs(history_size=0)", "history_size"),
        ("lbfgs(line_search_fn=armijo)", "line_search_fn"),
        ("lbfgs(lr=0)", "lr"),
    ] {
        let err = optim::build::<f64>(spec, layout.clone(), &[], Options::default())
            .err()
            .unwrap();
        match &err {
            Error::InvalidArgument { key: k, .. } => assert_eq!(k, key, "{spec}: {err}"),
            other => panic!("{spec}: {other}"),
        }
    }
}

/// A closure that returns NaN gradients from its `bad`-th call on.
fn failing_closure(
    bad: u32,
    calls: &mut u32,
) -> impl FnMut(&mut dyn ParamAccess<f64>, &mut [Vec<f64>]) -> gradlab::Result<f64> + '_ {
    move |params, grads| {
        *calls += 1;
        let nan = *calls >= bad;
        let mut loss = 0.0;
        for (i, g) in grads.iter_mut().enumerate() {
            params.read(i, &mut |p: &[f64]| {
                for (g, x) in g.iter_mut().zip(p) {
                    loss += (x - 0.5) * (x - 0.5);
                    *g = if nan { f64::NAN } else { 2.0 * (x - 0.5) };
                }
            })?;
        }
        Ok(loss)
    }
}

#[test]
fn a_non_finite_first_gradient_changes_nothing_and_is_named() {
    let layout = small_layout();
    for spec in ["sam(adam(lr=0.1))", "lbfgs"] {
        for policy in [NonFinitePolicy::Error, NonFinitePolicy::Skip] {
            let options = Options {
                nonfinite: policy,
                ..Options::default()
            };
            let mut opt = optim::build::<f64>(spec, layout.clone(), &[], options).unwrap();
            let before = opt.state_dict();
            let mut params = vec![0.25; layout.total()];
            let mut calls = 0;
            let mut closure = failing_closure(1, &mut calls);
            let mut tensors = split(&layout, &mut params);
            let mut access: &mut [&mut [f64]] = &mut tensors;
            let out = opt.step_with_closure(&mut access, &mut closure);
            match policy {
                NonFinitePolicy::Error => {
                    let err = out.unwrap_err();
                    assert!(
                        matches!(&err, Error::NonFiniteGradient { tensor, index: 0, .. } if tensor == "fc.weight"),
                        "{spec}: {err}"
                    );
                }
                NonFinitePolicy::Skip => assert!(out.unwrap().step.skipped, "{spec}"),
            }
            assert!(params.iter().all(|&x| x == 0.25), "{spec}");
            assert_eq!(opt.state_dict(), before, "{spec}");
            assert_eq!(opt.steps(), 0);
        }
    }
}

#[test]
fn lbfgs_failing_within_a_step_restores_the_parameters_and_asks_for_a_state() {
    let layout = small_layout();
    let mut opt =
        optim::build::<f64>("lbfgs(max_iter=5)", layout.clone(), &[], Options::default()).unwrap();
    let mut params = vec![0.25; layout.total()];
    let mut calls = 0;
    let mut closure = failing_closure(3, &mut calls);
    let mut tensors = split(&layout, &mut params);
    let mut access: &mut [&mut [f64]] = &mut tensors;
    let err = opt
        .step_with_closure(&mut access, &mut closure)
        .unwrap_err()
        .to_string();
    assert!(err.contains("load a saved state"), "{err}");
    drop(tensors);
    assert!(params.iter().all(|&x| x == 0.25));
    let mut calls = 0;
    let mut closure = failing_closure(u32::MAX, &mut calls);
    let mut tensors = split(&layout, &mut params);
    let mut access: &mut [&mut [f64]] = &mut tensors;
    let err = opt
        .step_with_closure(&mut access, &mut closure)
        .unwrap_err()
        .to_string();
    assert!(err.contains("load a saved state"), "{err}");
}

#[test]
fn schedule_free_evaluates_at_the_average_and_trains_at_y() {
    let layout = small_layout();
    let n = layout.total();
    for spec in [
        "sgd_schedulefree(lr=0.05, warmup_steps=2)",
        "adamw_schedulefree(lr=0.01)",
    ] {
        let mut opt = optim::build::<f64>(spec, layout.clone(), &[], Options::default()).unwrap();
        assert!(opt.has_eval_point());
        let mut rng = Rng(8);
        let mut y = rng.vec(n);
        // Before the first step both points are the initial weights.
        let start = y.clone();
        opt.eval_mode(&mut split(&layout, &mut y).as_mut_slice())
            .unwrap();
        assert_eq!(bits(&y), bits(&start), "{spec}");
        opt.train_mode(&mut split(&layout, &mut y).as_mut_slice())
            .unwrap();
        for _ in 0..6 {
            let g = rng.vec(n);
            opt.step(&mut split(&layout, &mut y), &split_ref(&layout, &g))
                .unwrap();
        }
        let z = opt.state_dict().tensors["fc.weight/z"].1.clone();
        let y_before = y.clone();
        opt.eval_mode(&mut split(&layout, &mut y).as_mut_slice())
            .unwrap();
        // x = lerp(y, z, 1 − 1/β), so y = (1 − β) z + β x.
        let beta = opt.momentum(0).unwrap();
        for i in 0..12 {
            let back = (1.0 - beta) * z[i] + beta * y[i];
            assert!(
                (back - y_before[i]).abs() < 1e-12,
                "{spec}: {back} vs {}",
                y_before[i]
            );
        }
        assert_ne!(bits(&y), bits(&y_before));
        // Idempotent, recorded in the state, and a step in eval mode is refused.
        let x = y.clone();
        opt.eval_mode(&mut split(&layout, &mut y).as_mut_slice())
            .unwrap();
        assert_eq!(bits(&y), bits(&x));
        assert_eq!(opt.state_dict().meta.extra["eval_mode"], 1.0);
        let g = rng.vec(n);
        let err = opt
            .step(&mut split(&layout, &mut y), &split_ref(&layout, &g))
            .unwrap_err()
            .to_string();
        assert!(err.contains("train_mode"), "{err}");
        // A state saved in eval mode resumes to the same y as the run that went on.
        let saved = opt.state_dict();
        let mut other = optim::build::<f64>(spec, layout.clone(), &[], Options::default()).unwrap();
        other.load_state_dict(&saved).unwrap();
        let mut y2 = y.clone();
        opt.train_mode(&mut split(&layout, &mut y).as_mut_slice())
            .unwrap();
        other
            .train_mode(&mut split(&layout, &mut y2).as_mut_slice())
            .unwrap();
        assert_eq!(bits(&y), bits(&y2), "{spec}");
        for (a, b) in y.iter().zip(&y_before) {
            assert!((a - b).abs() < 1e-12);
        }
        // Other optimizers have no second point.
        let mut adam =
            optim::build::<f64>("adam", layout.clone(), &[], Options::default()).unwrap();
        assert!(!adam.has_eval_point());
        adam.eval_mode(&mut split(&layout, &mut y).as_mut_slice())
            .unwrap();
        assert_eq!(bits(&y), bits(&y2));
    }
}
