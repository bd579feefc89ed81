//! The learning rate and momentum have one owner, the optimizer's per-group `Hyper`: what is
//! written there is what the next step uses, for every optimizer; values out of range are
//! refused before anything changes; a schedule writes in place and puts the values back when
//! it fails.

mod common;

use common::*;
use gradlab::optim::{self, Layout, Optimizer, Options, ParamGroup};
use gradlab::schedule::Scheduler;

fn build(spec: &str, layout: &Layout) -> Box<dyn Optimizer<f64>> {
    optim::build::<f64>(spec, layout.clone(), &[], Options::default()).unwrap()
}

/// `spec` with its first `lr=X` replaced by `lr=X·factor`.
fn scaled_lr(spec: &str, factor: f64) -> String {
    let start = spec.find("lr=").expect("every shared spec sets lr") + 3;
    let end = spec[start..]
        .find([',', ')'])
        .map_or(spec.len(), |e| start + e);
    let lr: f64 = spec[start..end].parse().unwrap();
    format!("{}{}{}", &spec[..start], lr * factor, &spec[end..])
}

fn trajectory(opt: &mut dyn Optimizer<f64>, layout: &Layout, steps: usize) -> Vec<f64> {
    let mut rng = Rng(7);
    let mut p = rng.vec(layout.total());
    for _ in 0..steps {
        let g = rng.vec(layout.total());
        opt.step(&mut split(layout, &mut p), &split_ref(layout, &g))
            .unwrap();
    }
    p
}

#[test]
fn a_learning_rate_written_before_the_first_step_is_the_one_built_in() {
    let layout = small_layout();
    for spec in SPECS {
        // AdaBound records the lr it was built with (its bounds scale with lr/base_lr), and
        // Muon scales its fallback's lr by its own relative to the built one: for both, a
        // written lr is not the same as a built one, as in their references.
        if spec.starts_with("adabound") || spec.starts_with("muon") {
            continue;
        }
        let mut written = build(spec, &layout);
        for h in written.hypers_mut() {
            h.lr *= 0.5;
        }
        let built_spec = scaled_lr(spec, 0.5);
        let mut built = build(&built_spec, &layout);
        assert_eq!(
            written.spec().to_string(),
            built.spec().to_string(),
            "{spec}"
        );
        let a = trajectory(written.as_mut(), &layout, 6);
        let b = trajectory(built.as_mut(), &layout, 6);
        assert_eq!(a, b, "{spec} with lr written vs {built_spec}");
    }
}

#[test]
fn a_zero_learning_rate_written_holds_every_parameter() {
    let layout = small_layout();
    for spec in SPECS {
        // pytorch-optimizer's fixed decay shrinks θ by (1 − λ) whatever the learning rate;
        // Rprop's step sizes start at lr clamped to step_sizes' minimum (PyTorch's too).
        if spec.contains("fixed_decay=true") || spec.starts_with("rprop") {
            continue;
        }
        let mut opt = build(spec, &layout);
        for h in opt.hypers_mut() {
            h.lr = 0.0;
        }
        let mut rng = Rng(11);
        let p0 = rng.vec(layout.total());
        let mut p = p0.clone();
        let g = rng.vec(layout.total());
        opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
            .unwrap();
        assert_eq!(p, p0, "{spec}");
        assert!(opt.spec().to_string().contains("lr=0"), "{}", opt.spec());
    }
}

#[test]
fn momentum_written_is_the_one_the_step_uses() {
    let layout = small_layout();
    for (spec, lowered) in [
        ("sgd(lr=0.01, momentum=0.9)", "sgd(lr=0.01, momentum=0.5)"),
        ("adam(lr=0.01)", "adam(lr=0.01, betas=(0.5, 0.999))"),
        ("lion(lr=0.01)", "lion(lr=0.01, betas=(0.5, 0.99))"),
        (
            "muon(lr=0.02, fallback=adamw(lr=0.01))",
            "muon(lr=0.02, momentum=0.5, fallback=adamw(lr=0.01))",
        ),
        ("prodigy(lr=1)", "prodigy(lr=1, betas=(0.5, 0.999))"),
    ] {
        let mut written = build(spec, &layout);
        written.hypers_mut()[0].momentum = Some(0.5);
        let mut built = build(lowered, &layout);
        assert_eq!(written.spec().to_string(), built.spec().to_string());
        assert_eq!(
            trajectory(written.as_mut(), &layout, 5),
            trajectory(built.as_mut(), &layout, 5),
            "{spec}"
        );
    }
}

#[test]
fn values_out_of_range_are_refused_before_anything_changes() {
    let layout = small_layout();
    let mut rng = Rng(3);
    let p0 = rng.vec(layout.total());
    let g = rng.vec(layout.total());
    for spec in [
        "adam(lr=0.01)",
        "sgd(lr=0.1, momentum=0.9)",
        "prodigy(lr=1)",
        "adafactor",
        "muon(lr=0.02, fallback=adamw(lr=0.01))",
        "lookahead(adam(lr=0.01))",
    ] {
        for (lr, momentum, says) in [
            (f64::NAN, None, "lr is NaN; it must be a finite number >= 0"),
            (-0.1, None, "lr is -0.1; it must be a finite number >= 0"),
            (f64::INFINITY, None, "lr is inf"),
            (
                0.01,
                Some(1.0),
                "momentum (beta1) is 1; it must be in [0, 1)",
            ),
        ] {
            let mut opt = build(spec, &layout);
            let before = opt.hypers().to_vec();
            opt.hypers_mut()[0].lr = lr;
            if let (Some(m), Some(_)) = (momentum, before[0].momentum) {
                opt.hypers_mut()[0].momentum = Some(m);
            } else if momentum.is_some() {
                continue; // adafactor has no momentum
            }
            let mut p = p0.clone();
            let e = opt
                .step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
                .unwrap_err()
                .to_string();
            assert!(e.contains("group 0") && e.contains(says), "{spec}: {e}");
            // Lookahead's inner optimizer owns the values and names itself.
            let owner = spec.strip_prefix("lookahead(").unwrap_or(spec);
            let name = owner.split('(').next().unwrap();
            assert!(e.contains(&format!("'{name}'")), "{spec}: {e}");
            assert_eq!(p, p0, "{spec}: the parameters moved");
            assert_eq!(opt.steps(), 0, "{spec}");
            // Put right, the optimizer steps on.
            opt.hypers_mut().copy_from_slice(&before);
            opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
                .unwrap();
        }
    }
    // A momentum given to an optimizer without one, or taken from one that has it.
    let mut opt = build("adagrad(lr=0.1)", &layout);
    opt.hypers_mut()[0].momentum = Some(0.5);
    let mut p = p0.clone();
    let e = opt
        .step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'adagrad' has no momentum"), "{e}");
    let mut opt = build("adam", &layout);
    opt.hypers_mut()[0].momentum = None;
    let e = opt
        .step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
        .unwrap_err()
        .to_string();
    assert!(e.contains("momentum (beta1) was removed"), "{e}");
}

#[test]
fn each_group_owns_its_values_and_the_saved_state_keeps_them() {
    let layout = small_layout();
    let groups = [ParamGroup::parse(&["fc.bias"], "lr=0.1").unwrap()];
    let mut opt =
        optim::build::<f64>("adam(lr=0.01)", layout.clone(), &groups, Options::default()).unwrap();
    assert_eq!(opt.num_groups(), 2);
    opt.hypers_mut()[1].lr = 0.25;
    opt.hypers_mut()[1].momentum = Some(0.8);
    assert_eq!(opt.lr(0), 0.01);
    assert_eq!((opt.lr(1), opt.momentum(1)), (0.25, Some(0.8)));
    let specs: Vec<String> = opt.group_specs().iter().map(|s| s.to_string()).collect();
    assert!(specs[1].contains("lr=0.25") && specs[1].contains("betas=(0.8, 0.999)"));
    let state = opt.state_dict();
    let mut fresh =
        optim::build::<f64>("adam(lr=0.01)", layout.clone(), &groups, Options::default()).unwrap();
    fresh.load_state_dict(&state).unwrap();
    assert_eq!(fresh.hypers(), opt.hypers());
}

#[test]
fn a_schedule_writes_in_place_and_puts_the_values_back_when_it_fails() {
    let layout = small_layout();
    let mut opt = build("sgd(lr=0.1, momentum=0.9)", &layout);
    let mut sched = Scheduler::new("step(step_size=1, gamma=0.5)", opt.as_mut()).unwrap();
    sched.step(opt.as_mut()).unwrap();
    assert_eq!(opt.lr(0), 0.05);
    // A value written between steps is the schedule's starting point for its next step
    // (PyTorch's recursive form reads the group's lr).
    opt.hypers_mut()[0].lr = 0.4;
    sched.step(opt.as_mut()).unwrap();
    assert_eq!(opt.lr(0), 0.2);

    let mut opt = build("sgd(lr=0.1, momentum=0.9)", &layout);
    let spec = "cyclic(base_lr=0.1, max_lr=1, step_size_up=2, mode=exp_range, gamma=1e300)";
    let mut sched = Scheduler::new(spec, opt.as_mut()).unwrap();
    for _ in 0..50 {
        let before = opt.hypers().to_vec();
        if let Err(e) = sched.step(opt.as_mut()) {
            assert!(e.to_string().contains("which must be"), "{e}");
            assert_eq!(opt.hypers(), &before[..], "the failed step's values stayed");
            return;
        }
    }
    panic!("'{spec}' never handed out a value out of range");
}

#[test]
fn muons_fallback_follows_a_schedule_through_zero() {
    // Muon's lr scales its fallback's base group from the values as built. (When the fallback
    // was rescaled by the ratio of successive values, an lr of 0 left it at 0 for good.)
    let layout = small_layout();
    let mut opt = build("muon(lr=0.02, fallback=adamw(lr=0.001))", &layout);
    let mut sched = Scheduler::new("cosine(t_max=2)", opt.as_mut()).unwrap();
    let mut rng = Rng(5);
    let mut p = rng.vec(layout.total());
    let mut seen = Vec::new();
    for _ in 0..4 {
        let g = rng.vec(layout.total());
        opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
            .unwrap();
        sched.step(opt.as_mut()).unwrap();
        let groups = opt.state_dict().meta.groups;
        seen.push((opt.lr(0), groups[1].clone()));
    }
    // Epochs 1..4 of cosine(t_max=2): 0.01, 0, 0.01, 0.02 (PyTorch's recursive form).
    assert_eq!(seen[1].0, 0.0);
    for (lr, fallback) in &seen {
        let expected = 0.001 * (lr / 0.02);
        let spec = gradlab::spec::parse(fallback).unwrap();
        let got = match spec.get("lr") {
            Some(gradlab::spec::Value::Num(x)) => *x,
            other => panic!("{other:?}"),
        };
        assert!(
            (got - expected).abs() <= 1e-18,
            "muon lr {lr}: fallback {got}"
        );
    }
    assert!(seen[3].0 > 0.0);
}
