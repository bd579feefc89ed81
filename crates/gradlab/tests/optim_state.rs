//! The optimizer's state: bit-identical resume from a saved state, state files checked before
//! anything changes, a step stopped part way that needs a saved state, scalar state through a
//! file bit for bit.

mod common;

use common::*;
use gradlab::optim::{self, Layout, Optimizer, Options, ParamGroup, StateDict};
use gradlab::Error;

fn run_steps(
    opt: &mut dyn Optimizer<f64>,
    layout: &Layout,
    params: &mut [f64],
    rng: &mut Rng,
    steps: usize,
) {
    for k in 0..steps {
        let g = rng.vec(layout.total());
        // A changing learning rate, as a schedule would set it.
        let lr = opt.lr(0);
        opt.hypers_mut()[0].lr = lr * (1.0 - 0.01 * (k % 3) as f64);
        opt.step(&mut split(layout, params), &split_ref(layout, &g))
            .unwrap();
    }
}

#[test]
fn resume_from_a_saved_state_is_bit_identical() {
    let layout = small_layout();
    let dir = std::env::temp_dir().join(format!("gradlab-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for spec in SPECS {
        // Prodigy's groups share one lr (or are frozen with lr=0), as prodigyopt's.
        let overrides = if spec.starts_with("prodigy") {
            "lr=0, weight_decay=0"
        } else {
            "lr=0.003"
        };
        let groups = [ParamGroup::parse(&["*.bias"], overrides).unwrap()];
        let make =
            || optim::build::<f64>(spec, layout.clone(), &groups, Options::default()).unwrap();
        let mut rng = Rng(7);
        let mut params = rng.vec(layout.total());
        let mut a = make();
        run_steps(a.as_mut(), &layout, &mut params, &mut rng, 11);
        let path = dir.join("state.safetensors");
        a.save_state(&path).unwrap();
        let saved_params = params.clone();
        let rng_state = rng.0;
        run_steps(a.as_mut(), &layout, &mut params, &mut rng, 12);

        let mut b = make();
        b.load_state(&path).unwrap();
        let mut params_b = saved_params;
        let mut rng_b = Rng(rng_state);
        run_steps(b.as_mut(), &layout, &mut params_b, &mut rng_b, 12);
        assert_eq!(
            params.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            params_b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{spec}: resumed parameters differ"
        );
        assert_eq!(
            a.state_dict(),
            b.state_dict(),
            "{spec}: resumed state differs"
        );
        assert_eq!(a.steps(), 23);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn state_files_are_checked_on_load() {
    let layout = small_layout();
    let mut opt = build::<f64>("adam(lr=0.01)", &layout, Options::default());
    let mut p = vec![0.5; layout.total()];
    let g = vec![0.1; layout.total()];
    opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
        .unwrap();
    let good = opt.state_dict();

    let expect_err = |state: &StateDict<f64>, needle: &str| {
        let mut fresh = build::<f64>("adam(lr=0.01)", &layout, Options::default());
        let before = fresh.state_dict();
        match fresh.load_state_dict(state) {
            Err(Error::State { message, .. }) => {
                assert!(message.contains(needle), "{message} lacks {needle}")
            }
            other => panic!("expected a state error containing {needle}, got {other:?}"),
        }
        assert_eq!(
            fresh.state_dict(),
            before,
            "a failed load changed the optimizer"
        );
    };

    let mut missing = good.clone();
    missing.tensors.remove("fc.bias/exp_avg_sq");
    expect_err(&missing, "'fc.bias/exp_avg_sq' is missing");

    let mut extra = good.clone();
    extra
        .tensors
        .insert("fc2.weight/exp_avg".into(), (vec![1], vec![0.0]));
    expect_err(&extra, "'fc2.weight/exp_avg'");

    let mut shaped = good.clone();
    shaped
        .tensors
        .insert("fc.weight/exp_avg".into(), (vec![3, 4], vec![0.0; 12]));
    expect_err(&shaped, "'fc.weight/exp_avg' has shape [3, 4]");

    let mut version = good.clone();
    version.meta.version = 99;
    expect_err(&version, "version 99");

    let mut other = good.clone();
    other.meta.optimizer = "sgd".into();
    expect_err(&other, "'sgd'");

    let mut no_scalars = good.clone();
    no_scalars.meta.scalars.remove("scale");
    expect_err(&no_scalars, "'scale'");

    // Through a file: the error names the file.
    let path = std::env::temp_dir().join(format!("gradlab-bad-{}.safetensors", std::process::id()));
    missing.save(&path).unwrap();
    let mut fresh = build::<f64>("adam(lr=0.01)", &layout, Options::default());
    let err = fresh.load_state(&path).unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("exp_avg_sq"),
        "{err}"
    );
    std::fs::write(&path, b"not a state file").unwrap();
    let err = fresh.load_state(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    std::fs::remove_file(&path).unwrap();

    // f32 state loads into an f64 optimizer (converted) and vice versa.
    let state32: StateDict<f32> = StateDict::from_bytes(&good.to_bytes().unwrap()).unwrap();
    let mut o32 = build::<f32>("adam(lr=0.01)", &layout, Options::default());
    o32.load_state_dict(&state32).unwrap();
    assert_eq!(o32.steps(), 1);
}

/// Under the default `error` policy without norm clipping the gradients are checked during
/// the update (one pass over memory): a non-finite one stops the step part-way, and the
/// optimizer then refuses to step until a state is loaded.
#[test]
fn a_step_stopped_part_way_needs_a_saved_state() {
    let layout = Layout::new([("a", vec![40_000]), ("b", vec![40_000])]).unwrap();
    let n = layout.total();
    let mut opt = build::<f32>("adam(lr=0.01)", &layout, Options::default());
    let mut p = vec![0.5f32; n];
    let mut g = vec![0.1f32; n];
    opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
        .unwrap();
    let saved = opt.state_dict();
    let p_saved = p.clone();
    g[60_000] = f32::INFINITY;
    let err = opt
        .step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
        .unwrap_err();
    match &err {
        Error::NonFiniteGradient {
            step,
            tensor,
            index,
            partly_updated,
            ..
        } => assert_eq!(
            (*step, tensor.as_str(), *index, *partly_updated),
            (2, "b", 20_000, true)
        ),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("needs a saved state"), "{err}");
    g[60_000] = 0.1;
    let again = opt
        .step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
        .unwrap_err();
    assert!(again.to_string().contains("load a saved state"), "{again}");
    opt.load_state_dict(&saved).unwrap();
    let mut p = p_saved;
    opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
        .unwrap();
    assert_eq!(opt.steps(), 2);

    // Tensors lent one at a time: the same, tensor "a" updated before "b" fails.
    let mut opt = build::<f32>("lamb(lr=0.01)", &layout, Options::default());
    let mut lent = OneAtATime(vec![vec![0.5; 40_000], vec![0.5; 40_000]]);
    g[60_000] = f32::NAN;
    let err = opt
        .step_with(&split_ref(&layout, &g), &mut lent)
        .unwrap_err();
    assert!(
        err.to_string().contains("tensor 'b'") && err.to_string().contains("needs a saved state"),
        "{err}"
    );
    assert!(lent.0[0][0] != 0.5 && lent.0[1].iter().all(|&x| x == 0.5));
}

#[test]
fn scalar_state_survives_a_file_bit_for_bit() {
    // serde_json's default float parser can be one ulp off; state scalars must not be.
    let layout = small_layout();
    let opt = build::<f64>("adam(lr=0.01)", &layout, Options::default());
    let mut state = opt.state_dict();
    let mut rng = Rng(11);
    let values: Vec<f64> = (0..2000)
        .map(|i| rng.symmetric() * 10f64.powi(i % 40 - 20))
        .chain([7650550.9955842905, 1.0 / 3.0, f64::MIN_POSITIVE, 5e-324])
        .collect();
    for (i, v) in values.iter().enumerate() {
        state.meta.extra.insert(format!("x{i}"), *v);
    }
    let back = StateDict::<f64>::from_bytes(&state.to_bytes().unwrap()).unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            back.meta.extra[&format!("x{i}")].to_bits(),
            v.to_bits(),
            "{v}"
        );
    }
}
