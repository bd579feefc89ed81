//! Schedules against PyTorch (`tests/golden/schedules.json` and the scheduled cases of
//! `surfaces.json`), plateau against hand-computed sequences, resume, errors.

use gradlab::optim::{self, Layout, Optimizer, Options};
use gradlab::schedule::{self, Scheduler};
use gradlab::surface::{replay, Surface};
use serde_json::Value;

fn golden(name: &str) -> Value {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

fn optimizer(spec: &str) -> Box<dyn Optimizer<f64>> {
    optim::build::<f64>(spec, Layout::single("w", 3), &[], Options::default()).unwrap()
}

/// lr and momentum used by each of `steps` optimizer steps.
fn trace(opt: &mut dyn Optimizer<f64>, sched: &mut Scheduler, steps: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut w = [0.5, -0.2, 0.1];
    for _ in 0..steps {
        out.push((opt.lr(0), opt.momentum(0).unwrap_or(f64::NAN)));
        opt.step(&mut [&mut w], &[&[0.1, 0.2, -0.3]]).unwrap();
        sched.step(opt).unwrap();
    }
    out
}

#[test]
fn every_schedule_case_matches_pytorch() {
    let cases = golden("schedules.json");
    let cases = cases["cases"].as_array().unwrap();
    for case in cases {
        let (opt_spec, sched_spec) = (
            case["optimizer"].as_str().unwrap(),
            case["schedule"].as_str().unwrap(),
        );
        let mut opt = optimizer(opt_spec);
        let mut sched = Scheduler::new(sched_spec, opt.as_mut()).unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let got = trace(opt.as_mut(), &mut sched, steps);
        for (k, (lr, m)) in got.iter().enumerate() {
            let want_lr = case["lr"][k].as_f64().unwrap();
            let want_m = case["momentum"][k].as_f64().unwrap();
            assert!(
                close(*lr, want_lr, 1e-9),
                "{sched_spec}: lr of step {}: {lr} vs {want_lr}",
                k + 1
            );
            assert!(
                close(*m, want_m, 1e-9),
                "{sched_spec}: momentum of step {}: {m} vs {want_m}",
                k + 1
            );
        }
    }
    assert_eq!(cases.len(), 12);
}

#[test]
fn scheduled_surface_cases_match_pytorch() {
    let g = golden("surfaces.json");
    let mut n = 0;
    for case in g["cases"].as_array().unwrap() {
        let Some(sched) = case["schedule"].as_str() else {
            continue;
        };
        let surface: Surface = case["function"].as_str().unwrap().parse().unwrap();
        let start = [
            case["start"][0].as_f64().unwrap(),
            case["start"][1].as_f64().unwrap(),
        ];
        let spec = gradlab::spec::parse(case["optimizer"].as_str().unwrap()).unwrap();
        let mut opt = replay::optimizer_for_surface(&spec, Options::default()).unwrap();
        let sched = gradlab::spec::parse(sched).unwrap();
        let traj = replay::run_scheduled(
            surface,
            start,
            opt.as_mut(),
            case["steps"].as_u64().unwrap(),
            Some(&sched),
        )
        .unwrap();
        assert!(traj.stopped.is_none(), "{:?}", traj.stopped);
        for (k, (row, want)) in traj
            .rows
            .iter()
            .zip(case["trajectory"].as_array().unwrap())
            .enumerate()
        {
            for (j, got) in [row.x, row.y, row.loss].into_iter().enumerate() {
                let w = want[j].as_f64().unwrap();
                assert!(
                    close(got, w, 1e-6),
                    "{sched}: row {k} column {j}: {got} vs {w}"
                );
            }
        }
        for (k, lr) in case["lr"].as_array().unwrap().iter().enumerate() {
            assert!(
                close(traj.rows[k].lr, lr.as_f64().unwrap(), 1e-9),
                "{sched}: lr of step {}",
                k + 1
            );
        }
        n += 1;
    }
    assert_eq!(n, 3);
}

fn lrs(opt_spec: &str, sched_spec: &str, steps: usize) -> Vec<f64> {
    let mut opt = optimizer(opt_spec);
    let mut sched = Scheduler::new(sched_spec, opt.as_mut()).unwrap();
    trace(opt.as_mut(), &mut sched, steps)
        .into_iter()
        .map(|(lr, _)| lr)
        .collect()
}

#[test]
fn warmup_cosine_is_the_sequence_of_linear_and_cosine() {
    let a = lrs(
        "adam(lr=0.01)",
        "warmup_cosine(warmup_steps=7, total_steps=40, eta_min=1e-4, warmup_start_factor=0.1)",
        45,
    );
    let b = lrs(
        "adam(lr=0.01)",
        "sequential(linear(start_factor=0.1, end_factor=1, total_iters=7), cosine(t_max=33, eta_min=1e-4), milestones=[7])",
        45,
    );
    assert_eq!(a, b);
    assert!((a[7] - 0.01).abs() < 1e-15 && (a[40] - 1e-4).abs() < 1e-12);
}

#[test]
fn wsd_warms_up_holds_and_decays() {
    let v = lrs(
        "sgd(lr=0.1)",
        "wsd(warmup_steps=4, stable_steps=3, decay_steps=5, eta_min=0.01, warmup_start_factor=0)",
        14,
    );
    let want = [
        0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.082, 0.064, 0.046, 0.028, 0.01, 0.01,
    ];
    for (g, w) in v.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{v:?}");
    }
}

#[test]
fn plateau_follows_hand_computed_sequences() {
    // patience 2: the lr drops after the third step without improvement.
    let mut opt = optimizer("sgd(lr=1.0)");
    let mut s = Scheduler::new("plateau(factor=0.5, patience=2)", opt.as_mut()).unwrap();
    let metrics = [10.0, 9.0, 9.5, 9.2, 9.1, 9.05, 9.3, 9.4, 8.0, 8.5];
    let want = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25];
    for (m, w) in metrics.iter().zip(want) {
        s.step_with_metric(opt.as_mut(), *m).unwrap();
        assert_eq!(opt.lr(0), w, "after metric {m}");
    }
    // cooldown 2: two steps after a reduction do not count; min_lr floors the lr.
    let mut opt = optimizer("sgd(lr=1.0)");
    let mut s = Scheduler::new(
        "plateau(factor=0.1, patience=0, cooldown=2, min_lr=0.005)",
        opt.as_mut(),
    )
    .unwrap();
    let want = [
        1.0, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005,
    ];
    for (i, w) in want.iter().enumerate() {
        s.step_with_metric(opt.as_mut(), 5.0).unwrap();
        assert!(close(opt.lr(0), *w, 1e-15), "step {i}: {}", opt.lr(0));
    }
    // max mode with an absolute threshold.
    let mut opt = optimizer("sgd(lr=1.0)");
    let mut s = Scheduler::new(
        "plateau(mode=max, threshold_mode=abs, threshold=0.1, patience=1)",
        opt.as_mut(),
    )
    .unwrap();
    for (m, w) in [(0.5, 1.0), (0.55, 1.0), (0.58, 0.1), (0.7, 0.1)] {
        s.step_with_metric(opt.as_mut(), m).unwrap();
        assert!((opt.lr(0) - w).abs() < 1e-15, "after {m}");
    }
    let err = s.step(opt.as_mut()).unwrap_err().to_string();
    assert!(err.contains("metric"), "{err}");
}

#[test]
fn a_resumed_schedule_continues_exactly() {
    for spec in [
        "step(step_size=3, gamma=0.5)",
        "cosine(t_max=7, eta_min=0.001)",
        "sgdr(t_0=3, t_mult=2)",
        "cyclic(base_lr=0.001, max_lr=0.1, step_size_up=4)",
        "onecycle(max_lr=0.1, total_steps=30)",
        "sequential(linear(start_factor=0.1, total_iters=4), cosine(t_max=20), milestones=[4])",
        "warmup_cosine(warmup_steps=3, total_steps=25)",
        "noam(d_model=64, warmup=5)",
        "wsd(warmup_steps=3, stable_steps=5, decay_steps=6)",
    ] {
        let dir = std::env::temp_dir().join(format!("gradlab-sched-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("opt.safetensors");
        let mut opt = optimizer("sgd(lr=0.1, momentum=0.9)");
        let mut sched = Scheduler::new(spec, opt.as_mut()).unwrap();
        let first = trace(opt.as_mut(), &mut sched, 11);
        opt.save_state(&path).unwrap();
        let saved = sched.state();
        let rest = trace(opt.as_mut(), &mut sched, 15);

        let mut opt2 = optimizer("sgd(lr=0.1, momentum=0.9)");
        let mut sched2 = Scheduler::new(spec, opt2.as_mut()).unwrap();
        opt2.load_state(&path).unwrap();
        sched2
            .load_state(&serde_json::from_str(&saved.to_string()).unwrap())
            .unwrap();
        let resumed = trace(opt2.as_mut(), &mut sched2, 15);
        assert_eq!(rest, resumed, "{spec}");
        assert_eq!(first.len(), 11);
        std::fs::remove_dir_all(dir).unwrap();
    }
    // A state is never loaded into another schedule.
    let mut opt = optimizer("sgd(lr=0.1)");
    let a = Scheduler::new("step(step_size=3)", opt.as_mut()).unwrap();
    let mut b = Scheduler::new("step(step_size=4)", opt.as_mut()).unwrap();
    let err = b.load_state(&a.state()).unwrap_err().to_string();
    assert!(err.contains("step(step_size=3"), "{err}");
}

fn schedule_error(opt_spec: &str, spec: &str) -> String {
    let mut opt = optimizer(opt_spec);
    match Scheduler::new(spec, opt.as_mut()) {
        Ok(_) => panic!("'{spec}' was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_schedules_get_clear_errors() {
    for (spec, needle) in [
        ("cosine", "'t_max'"),
        ("cosine(t_max=0)", "at least 1"),
        ("step(gamma=0.5)", "'step_size'"),
        ("onecycle(max_lr=0.1)", "'total_steps'"),
        ("onecycle(total_steps=10)", "'max_lr'"),
        ("multistep(milestones=[30, 10])", "strictly increasing"),
        ("multistep(milestones=[30, 30])", "strictly increasing"),
        ("multistep", "'milestones'"),
        (
            "cyclic(base_lr=0.1, max_lr=1, mode=zigzag)",
            "triangular, triangular2, exp_range",
        ),
        (
            "onecycle(max_lr=1, total_steps=10, anneal_strategy=cubic)",
            "cos, linear",
        ),
        ("plateau(mode=lowest)", "min, max"),
        ("plateau(factor=1.5)", "'factor'"),
        ("linear(start_factor=0)", "'start_factor'"),
        ("linear(total_iters=0)", "'total_iters'"),
        ("constant(factor=0)", "'factor'"),
        ("sequential(linear, cosine(t_max=5))", "milestones"),
        (
            "sequential(linear, cosine(t_max=5), milestones=[0])",
            "positive",
        ),
        ("sequential(linear, plateau, milestones=[3])", "plateau"),
        (
            "warmup_cosine(warmup_steps=10, total_steps=5)",
            "'total_steps'",
        ),
        ("cosinus(t_max=3)", "unknown schedule 'cosinus'"),
        ("cosine(t_max=3, tmax=4)", "unknown key 'tmax'"),
        ("noam(d_model=512)", "'warmup'"),
        ("sgdr(t_0=10, t_mult=1.5)", "whole number"),
    ] {
        let e = schedule_error("sgd(lr=0.1, momentum=0.9)", spec);
        assert!(e.contains(needle), "{spec}: {e}");
    }
    let e = schedule_error("adagrad", "cyclic(base_lr=0.01, max_lr=0.1)");
    assert!(e.contains("cycle_momentum") && e.contains("adagrad"), "{e}");
    // cycle_momentum=false works with it.
    let mut opt = optimizer("adagrad");
    Scheduler::new(
        "cyclic(base_lr=0.01, max_lr=0.1, cycle_momentum=false)",
        opt.as_mut(),
    )
    .unwrap();
}

#[test]
fn stepping_past_total_steps_says_what_happened() {
    let mut opt = optimizer("sgd(lr=0.1, momentum=0.9)");
    let mut s = Scheduler::new("onecycle(max_lr=0.1, total_steps=5)", opt.as_mut()).unwrap();
    for _ in 0..5 {
        s.step(opt.as_mut()).unwrap();
    }
    let err = s.step(opt.as_mut()).unwrap_err().to_string();
    assert!(
        err.contains("stepped 6 times") && err.contains("total_steps is 5"),
        "{err}"
    );
    // The failed step changed nothing: the optimizer keeps its last lr.
    let lr = opt.lr(0);
    assert!(s.step(opt.as_mut()).is_err());
    assert_eq!(opt.lr(0), lr);
}

#[test]
fn canonical_schedule_specs_round_trip() {
    for name in schedule::SCHEDULES {
        let text = match *name {
            "step" => "step(step_size=3)",
            "multistep" => "multistep(milestones=[2, 5])",
            "exponential" => "exponential(gamma=0.9)",
            "cosine" => "cosine(t_max=5)",
            "sgdr" => "sgdr(t_0=5)",
            "cyclic" => "cyclic(base_lr=0.01, max_lr=0.1)",
            "onecycle" => "onecycle(max_lr=0.1, epochs=3, steps_per_epoch=4)",
            "noam" => "noam(d_model=16, warmup=4)",
            "sequential" => "sequential(linear, cosine(t_max=5), milestones=[5])",
            "warmup_cosine" => "warmup_cosine(warmup_steps=2, total_steps=10)",
            "wsd" => "wsd(warmup_steps=1, stable_steps=2, decay_steps=3)",
            "swalr" => "swalr(swa_lr=0.05, anneal_epochs=3)",
            other => other,
        };
        let s = schedule::build(text).unwrap();
        let canonical = s.spec().to_string();
        assert_eq!(
            schedule::build(&canonical).unwrap().spec().to_string(),
            canonical,
            "{text}"
        );
    }
}

/// `torch.optim.swa_utils.SWALR(SGD(lr=0.05, momentum=0.9), swa_lr=0.01, ...)`: the lr of
/// 9 optimizer steps, printed by torch 2 (its recursive form, `_get_initial_lr`).
#[test]
fn swalr_matches_pytorch() {
    let cases: [(&str, [f64; 9]); 3] = [
        (
            "swalr(swa_lr=0.01, anneal_epochs=5, anneal_strategy=cos)",
            [
                0.05,
                0.04618033988749895,
                0.03618033988749895,
                0.02381966011250105,
                0.013819660112501051,
                0.01,
                0.01,
                0.01,
                0.01,
            ],
        ),
        (
            "swalr(swa_lr=0.01, anneal_epochs=3, anneal_strategy=linear)",
            [
                0.05,
                0.036666666666666674,
                0.023333333333333338,
                0.01,
                0.01,
                0.01,
                0.01,
                0.01,
                0.01,
            ],
        ),
        ("swalr(swa_lr=0.01, anneal_epochs=0)", [0.01; 9]),
    ];
    for (spec, want) in cases {
        let mut opt = optimizer("sgd(lr=0.05, momentum=0.9)");
        let mut sched = Scheduler::new(spec, opt.as_mut()).unwrap();
        let got = trace(opt.as_mut(), &mut sched, want.len());
        for (k, ((lr, _), want)) in got.iter().zip(want).enumerate() {
            assert!(
                close(*lr, want, 1e-15),
                "{spec}: step {}: {lr} vs {want}",
                k + 1
            );
        }
    }
}
