//! Adafactor and Prodigy beyond the golden trajectories: the factored path on matrices large
//! enough to be cut into bands (against a direct transcription of torch's formulas), state
//! shapes, Prodigy's estimate d and its early return, and what both refuse.

mod common;

use common::*;
use gradlab::optim::{self, Layout, Optimizer, Options, ParamGroup};

fn build(spec: &str, layout: &Layout, groups: &[ParamGroup]) -> Box<dyn Optimizer<f64>> {
    optim::build::<f64>(spec, layout.clone(), groups, Options::default()).unwrap()
}

fn error(spec: &str, layout: &Layout, groups: &[ParamGroup]) -> String {
    optim::build::<f64>(spec, layout.clone(), groups, Options::default())
        .err()
        .unwrap_or_else(|| panic!("{spec} was accepted"))
        .to_string()
}

/// torch's `_single_tensor_adafactor` for one matrix of `rows × cols` (f64, λ = 0, eps1 the
/// f64 epsilon), written out directly: the reference for the banded, threaded path.
struct Direct {
    rows: usize,
    cols: usize,
    lr: f64,
    r: Vec<f64>,
    c: Vec<f64>,
    t: f64,
}

impl Direct {
    fn step(&mut self, p: &mut [f64], g: &[f64]) {
        let (n, m) = (self.rows, self.cols);
        self.t += 1.0;
        let w = self.t.powf(-0.8);
        let rho = self.lr.min(1.0 / self.t.sqrt());
        let rms = (p.iter().map(|x| x * x).sum::<f64>() / (n * m) as f64).sqrt();
        let alpha = 1e-3f64.max(rms) * rho;
        for i in 0..n {
            let mean = (0..m).map(|j| g[i * m + j].powi(2)).sum::<f64>() / m as f64;
            self.r[i] += w * (mean - self.r[i]);
        }
        for j in 0..m {
            let mean = (0..n).map(|i| g[i * m + j].powi(2)).sum::<f64>() / n as f64;
            self.c[j] += w * (mean - self.c[j]);
        }
        let mean_r = (self.r.iter().sum::<f64>() / n as f64).max(f64::EPSILON);
        let u: Vec<f64> = (0..n * m)
            .map(|k| {
                let v = (self.r[k / m] * self.c[k % m] / mean_r).max(f64::EPSILON.powi(2));
                g[k] / v.sqrt()
            })
            .collect();
        let rms_u = (u.iter().map(|x| x * x).sum::<f64>() / (n * m) as f64).sqrt();
        let step = alpha / rms_u.max(1.0);
        for (p, u) in p.iter_mut().zip(&u) {
            *p -= step * u;
        }
    }
}

#[test]
fn the_banded_factored_path_equals_torchs_formulas_on_large_matrices() {
    // 300×200 is cut into 4 bands of rows, 5000×7 into 32: both run on the thread pool.
    for (rows, cols) in [(300, 200), (5000, 7), (3, 40_000)] {
        let layout = Layout::new([("w", vec![rows, cols])]).unwrap();
        let mut opt = build("adafactor(lr=0.05)", &layout, &[]);
        let mut direct = Direct {
            rows,
            cols,
            lr: 0.05,
            r: vec![0.0; rows],
            c: vec![0.0; cols],
            t: 0.0,
        };
        let mut rng = Rng(rows as u64);
        let mut p = rng.vec(rows * cols);
        let start = p.clone();
        let mut q = p.clone();
        for _ in 0..4 {
            // Rows and columns of different scales, so that the factoring matters.
            let g: Vec<f64> = (0..rows * cols)
                .map(|k| {
                    rng.symmetric() * (1.0 + (k / cols % 5) as f64) * (1.0 + (k % cols % 3) as f64)
                })
                .collect();
            opt.step(&mut [&mut p], &[&g]).unwrap();
            direct.step(&mut q, &g);
        }
        let worst = p
            .iter()
            .zip(&q)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0.0, f64::max);
        assert!(worst < 1e-12, "{rows}x{cols}: deviates by {worst:.2e}");
        let moved = p
            .iter()
            .zip(&start)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(moved > 1e-3, "{rows}x{cols}: hardly moved ({moved:.1e})");
    }
}

#[test]
fn the_factored_state_has_torchs_shapes() {
    let layout = Layout::new([("conv", vec![4, 3, 2, 5]), ("bias", vec![4])]).unwrap();
    let mut opt = build("adafactor", &layout, &[]);
    let n = layout.total();
    let mut p = vec![0.5; n];
    opt.step_flat(&mut p, &vec![0.1; n]).unwrap();
    let state = opt.state_dict();
    let shapes: Vec<(&str, &[usize])> = state
        .tensors
        .iter()
        .map(|(k, (s, _))| (k.as_str(), s.as_slice()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("bias/variance", &[4][..]),
            ("conv/col_var", &[4, 3, 1, 5][..]),
            ("conv/row_var", &[4, 3, 2, 1][..]),
        ]
    );
    // A uniform gradient: every mean is g² (w = 1 at the first step).
    for (_, values) in state.tensors.values() {
        assert!(
            values.iter().all(|v| (v - 0.01).abs() < 1e-15),
            "{values:?}"
        );
    }
}

#[test]
fn adafactor_specs_are_checked_and_canonical() {
    let layout = small_layout();
    assert_eq!(
        optim::canonical_spec("adafactor").unwrap(),
        "adafactor(lr=0.01, beta2_decay=-0.8, eps=(none, 0.001), d=1, weight_decay=0)"
    );
    assert_eq!(
        optim::canonical_spec("adafactor(eps=(1e-30, 0.01))").unwrap(),
        "adafactor(lr=0.01, beta2_decay=-0.8, eps=(1e-30, 0.01), d=1, weight_decay=0)"
    );
    for (spec, needle) in [
        ("adafactor(beta2_decay=0.5)", "beta2_decay"),
        ("adafactor(d=0.5)", "'d'"),
        ("adafactor(eps=1e-3)", "pair"),
        ("adafactor(eps=(none, -1))", "eps"),
        ("adafactor(eps=(auto, 0.001))", "eps"),
        ("adafactor(lr=-1)", "lr"),
        ("adafactor(momentum=0.9)", "momentum"),
    ] {
        let err = error(spec, &layout, &[]);
        assert!(err.contains(needle), "{spec}: {err}");
    }
}

#[test]
fn prodigy_reports_d_which_grows_from_d0_and_waits_for_a_gradient() {
    let layout = small_layout();
    let n = layout.total();
    let mut opt = build("prodigy(lr=1)", &layout, &[]);
    assert_eq!(opt.estimates(), [("d", 1e-6)]);
    let mut p = Rng(3).vec(n);
    // A zero gradient: Σ|s| = 0, so nothing moves and the step does not count.
    let before = p.clone();
    opt.step_flat(&mut p, &vec![0.0; n]).unwrap();
    assert_eq!(p, before);
    assert_eq!(opt.steps(), 0);
    let mut last = 1e-6;
    for _ in 0..30 {
        let g: Vec<f64> = p.iter().map(|x| x - 2.0).collect();
        opt.step_flat(&mut p, &g).unwrap();
        let d = opt.estimates()[0].1;
        assert!(d >= last, "d fell from {last} to {d}");
        last = d;
    }
    assert_eq!(opt.steps(), 30);
    assert!(last > 1e-3, "d only reached {last}");
    // The wrappers pass it on.
    let wrapped = build("lookahead(prodigy(lr=1), k=2)", &layout, &[]);
    assert_eq!(wrapped.estimates(), [("d", 1e-6)]);
}

#[test]
fn prodigy_refuses_what_prodigyopt_refuses_and_groups_it_cannot_honour() {
    let layout = small_layout();
    for (spec, needle) in [
        ("prodigy(lr=0)", "lr"),
        ("prodigy(d0=0)", "d0"),
        ("prodigy(eps=0)", "eps"),
        ("prodigy(betas=(1, 0.999))", "betas"),
        ("prodigy(growth_rate=0.5)", "growth_rate"),
        ("prodigy(beta3=1)", "beta3"),
        ("prodigy(slice_p=2)", "slice_p"),
    ] {
        let err = error(spec, &layout, &[]);
        assert!(err.contains(needle), "{spec}: {err}");
    }
    let bias = |o: &str| [ParamGroup::parse(&["*.bias"], o).unwrap()];
    let err = error("prodigy(lr=1)", &layout, &bias("lr=0.5"));
    assert!(err.contains("base lr") && err.contains("0.5"), "{err}");
    let err = error("prodigy(lr=1)", &layout, &bias("betas=(0.8, 0.9)"));
    assert!(
        err.contains("betas") && err.contains("whole optimizer"),
        "{err}"
    );
    // Frozen groups and per-group decay are accepted.
    build(
        "prodigy(lr=1)",
        &layout,
        &bias("lr=0, weight_decay=0.1, eps=1e-6"),
    );
    assert_eq!(
        optim::canonical_spec("prodigy").unwrap(),
        "prodigy(lr=1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decouple=true, use_bias_correction=false, safeguard_warmup=false, d0=1e-6, d_coef=1, growth_rate=inf)"
    );
}

/// Adafactor reads the gradient before its norm is known when no norm clipping is asked for
/// (the check rides on its first pass), and after a separate norm pass when it is: both
/// report the norm, clip by it exactly, and leave everything as it was on a skipped step.
#[test]
fn the_gradient_check_and_clipping_hold_on_both_reading_paths() {
    let layout = Layout::new([
        ("w", vec![40, 30]),
        ("conv", vec![3, 2, 5, 7]),
        ("bias", vec![1000]),
    ])
    .unwrap();
    let n = layout.total();
    let mut rng = Rng(11);
    let start = rng.vec(n);
    let grads: Vec<Vec<f64>> = (0..3).map(|_| rng.vec(n)).collect();
    for spec in ["adafactor(lr=0.05, weight_decay=0.01)", "prodigy(lr=1)"] {
        let run = |options: Options, scale_by_coef: bool| {
            let mut opt = optim::build::<f64>(spec, layout.clone(), &[], options).unwrap();
            let mut p = start.clone();
            let mut norms = Vec::new();
            for g in &grads {
                let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
                let g: Vec<f64> = if scale_by_coef {
                    let coef = (0.5 / (norm + 1e-6)).min(1.0);
                    g.iter().map(|x| x * coef).collect()
                } else {
                    g.clone()
                };
                let outcome = opt
                    .step(&mut split(&layout, &mut p), &split_ref(&layout, &g))
                    .unwrap();
                norms.push((outcome.grad_norm, norm));
            }
            (p, norms)
        };
        let clip = Options {
            clip_norm: Some(0.5),
            ..Options::default()
        };
        let (clipped, norms) = run(clip.clone(), false);
        let (by_hand, _) = run(Options::default(), true);
        // The same up to the rounding of the norm (summed in another order here).
        let worst = clipped
            .iter()
            .zip(&by_hand)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-12,
            "{spec}: clipping differs from scaling by {worst:.1e}"
        );
        let (unclipped, _) = run(Options::default(), false);
        let moved = clipped
            .iter()
            .zip(&unclipped)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let step = unclipped
            .iter()
            .zip(&start)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(moved > 1e-3 * step, "{spec}: clipping changed nothing");
        let (_, plain_norms) = run(Options::default(), false);
        for (got, want) in norms.iter().chain(&plain_norms) {
            assert!(
                (got - want).abs() <= 1e-12 * want,
                "{spec}: norm {got} vs {want}"
            );
        }
        for options in [Options::default(), clip] {
            let skip = Options {
                nonfinite: optim::NonFinitePolicy::Skip,
                ..options
            };
            let mut opt = optim::build::<f64>(spec, layout.clone(), &[], skip).unwrap();
            let mut p = start.clone();
            opt.step(&mut split(&layout, &mut p), &split_ref(&layout, &grads[0]))
                .unwrap();
            let (state, before) = (opt.state_dict(), p.clone());
            let mut bad = grads[1].clone();
            bad[n - 1] = f64::NAN; // the last tensor, read after the others
            let outcome = opt
                .step(&mut split(&layout, &mut p), &split_ref(&layout, &bad))
                .unwrap();
            assert!(outcome.skipped, "{spec}");
            assert_eq!(
                opt.state_dict(),
                state,
                "{spec}: a skipped step changed the state"
            );
            assert_eq!(p, before, "{spec}: a skipped step moved the parameters");
        }
    }
}
