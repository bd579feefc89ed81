//! Curvature tools against dense linear algebra and known answers.

use gradlab::landscape::critical::{analyze, classify, CriticalOptions, Kind};
use gradlab::landscape::hutchinson::hutchinson;
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab::landscape::power::{power_iteration, products_to_accuracy};
use gradlab::landscape::sharpness::{epsilon_sharpness, top_eigenvalue};
use gradlab::landscape::slices::{filter_normalized_direction, interpolate, pca_plane, slice_2d};
use gradlab::landscape::slq::{slq, SlqOptions};
use gradlab::landscape::{
    DenseHessian, FiniteDifferenceHessian, HessianOperator, Objective, Rng, SurfaceHessian,
    SurfaceObjective,
};
use gradlab::optim::Layout;
use gradlab::surface::{critical_points, Surface, ALL};
use nalgebra::{DMatrix, SymmetricEigen};

/// Q diag(λ) Qᵀ with a random orthogonal Q.
fn matrix_with_spectrum(lambdas: &[f64], seed: u64) -> DMatrix<f64> {
    let n = lambdas.len();
    let mut rng = Rng::new(seed);
    let g = DMatrix::from_fn(n, n, |_, _| rng.normal());
    let q = g.qr().q();
    let d = DMatrix::from_diagonal(&nalgebra::DVector::from_column_slice(lambdas));
    let a = &q * d * q.transpose();
    (&a + a.transpose()) * 0.5
}

fn dense(a: &DMatrix<f64>) -> DenseHessian {
    let n = a.nrows();
    DenseHessian::new(n, (0..n * n).map(|k| a[(k / n, k % n)]).collect()).unwrap()
}

fn sorted_eigenvalues(a: &DMatrix<f64>) -> Vec<f64> {
    let mut v: Vec<f64> = SymmetricEigen::new(a.clone())
        .eigenvalues
        .iter()
        .copied()
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

#[test]
fn lanczos_matches_a_dense_eigendecomposition() {
    let n = 500;
    let mut rng = Rng::new(9);
    let spread: Vec<f64> = (0..n).map(|_| -20.0 + 120.0 * rng.uniform()).collect();
    let centres = [-8.0, -1.0, 3.0, 40.0, 90.0];
    let clustered: Vec<f64> = (0..n)
        .map(|i| centres[i % 5] * (1.0 + 1e-3 * rng.uniform()))
        .collect();
    for (name, spectrum) in [("spread", spread), ("clustered", clustered)] {
        let a = matrix_with_spectrum(&spectrum, 3);
        let truth = sorted_eigenvalues(&a);
        let mut op = dense(&a);
        let r = lanczos(
            &mut op,
            &LanczosOptions {
                top: 5,
                bottom: 5,
                tol: 1e-10,
                max_iter: None,
                seed: 1,
            },
        )
        .unwrap();
        assert!(r.converged, "{name}");
        for (i, p) in r.top.iter().enumerate() {
            let t = truth[n - 1 - i];
            assert!(
                (p.value - t).abs() <= 1e-8 * t.abs(),
                "{name} top {i}: {} vs {t}",
                p.value
            );
            // Really an eigenvector.
            let mut hv = vec![0.0; n];
            op.hvp(&p.vector, &mut hv).unwrap();
            let res: f64 = hv
                .iter()
                .zip(&p.vector)
                .map(|(h, v)| (h - p.value * v).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(res <= 1e-6 * t.abs(), "{name} top {i}: residual {res}");
        }
        for (i, p) in r.bottom.iter().enumerate() {
            let t = truth[i];
            assert!(
                (p.value - t).abs() <= 1e-8 * t.abs(),
                "{name} bottom {i}: {} vs {t}",
                p.value
            );
        }
        println!("{name}: {} Hessian-vector products", r.products);
    }
}

#[test]
fn lanczos_needs_a_third_of_power_iterations_products() {
    let n = 400;
    let mut rng = Rng::new(4);
    let mut spectrum: Vec<f64> = (0..n - 2).map(|_| 95.0 * rng.uniform()).collect();
    spectrum.extend([96.0, 100.0]); // λ2 = 0.96 λ1: a small gap, as in networks' Hessians
    let a = matrix_with_spectrum(&spectrum, 5);
    let (mut lanczos_total, mut power_total) = (0, 0);
    for seed in 0..5 {
        let mut op = dense(&a);
        let power = products_to_accuracy(&mut op, 100.0, 1e-3, 5000, seed)
            .unwrap()
            .unwrap();
        let needed = (1..=n)
            .find(|&m| {
                let r = lanczos(
                    &mut op,
                    &LanczosOptions {
                        top: 1,
                        bottom: 0,
                        tol: 0.0,
                        max_iter: Some(m),
                        seed,
                    },
                )
                .unwrap();
                (r.top[0].value - 100.0).abs() <= 1e-3 * 100.0
            })
            .unwrap();
        println!("seed {seed}: Lanczos {needed} products, power iteration {power}");
        lanczos_total += needed;
        power_total += power;
    }
    assert!(
        3 * lanczos_total <= power_total,
        "Lanczos {lanczos_total} vs power {power_total}"
    );
    // The PyHessian-style baseline with deflation finds the top two.
    let mut op = dense(&a);
    let p = power_iteration(&mut op, 2, 1000, 1e-10, 0).unwrap();
    assert!(
        (p.pairs[0].value - 100.0).abs() < 1e-3 && (p.pairs[1].value - 96.0).abs() < 1e-2,
        "{:?}",
        p.pairs.iter().map(|q| q.value).collect::<Vec<_>>()
    );
}

#[test]
fn finite_differences_match_the_exact_hessian_on_every_surface() {
    let u = f64::EPSILON / 2.0;
    for f in ALL {
        for at in [[0.3, -0.7], [-1.2, 0.9], [1.5, 2.0]] {
            let mut exact = SurfaceHessian { surface: f, at };
            let mut fd = FiniteDifferenceHessian::new(SurfaceObjective(f), at.to_vec(), u).unwrap();
            for v in [[1.0, 0.0], [0.0, 1.0], [0.6, -0.8], [3.0, 4.0]] {
                let (mut a, mut b) = ([0.0; 2], [0.0; 2]);
                exact.hvp(&v, &mut a).unwrap();
                fd.hvp(&v, &mut b).unwrap();
                let h = f.hessian(at[0], at[1]);
                let hnorm = h.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
                let vnorm = (v[0] * v[0] + v[1] * v[1]).sqrt();
                // Documented: about u^(2/3) relative (1e-10 for f64) on well-scaled problems;
                // the surfaces' third derivatives allow a factor of 1000 more.
                let err = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
                assert!(
                    err <= 1e-7 * hnorm.max(1.0) * vnorm,
                    "{f:?} at {at:?} v {v:?}: {err}"
                );
            }
        }
    }
}

#[test]
fn the_lecture_saddle_and_its_escape() {
    let at = [0.0, 0.0];
    let mut op = SurfaceHessian {
        surface: Surface::Product,
        at,
    };
    let mut obj = SurfaceObjective(Surface::Product);
    let a = analyze(&mut op, Some(&mut obj), &at, &CriticalOptions::default()).unwrap();
    assert_eq!(a.kind, Kind::Saddle);
    assert!((a.eigenvalues[0] + 2.0).abs() < 1e-12 && (a.eigenvalues[1] - 2.0).abs() < 1e-12);
    let e = a.escape.unwrap();
    let s = std::f64::consts::FRAC_1_SQRT_2;
    assert!(
        (e.direction[0] - s).abs() < 1e-12 && (e.direction[1] - s).abs() < 1e-12,
        "{:?}",
        e.direction
    );
    assert!(e.loss_after.unwrap() < a.loss);
    assert_eq!(a.minimum_ratio, 0.5);
    // Near the saddle but not on it, the escape direction does not point uphill.
    let at = [0.01, -0.02];
    let mut op = SurfaceHessian {
        surface: Surface::Product,
        at,
    };
    let a = analyze(
        &mut op,
        None,
        &at,
        &CriticalOptions {
            grad_tol: 1.0,
            ..CriticalOptions::default()
        },
    )
    .unwrap();
    let g = Surface::Product.gradient(at[0], at[1]);
    let d = &a.escape.unwrap().direction;
    assert!(g[0] * d[0] + g[1] * d[1] <= 0.0);
}

#[test]
fn kinds_of_the_other_points() {
    let opts = CriticalOptions::default();
    let kind = |f: Surface, at: [f64; 2]| {
        analyze(&mut SurfaceHessian { surface: f, at }, None, &at, &opts)
            .unwrap()
            .kind
    };
    assert_eq!(kind(Surface::Monkey, [0.0, 0.0]), Kind::Degenerate);
    assert_eq!(kind(Surface::Rosenbrock, [1.0, 1.0]), Kind::Minimum);
    assert_eq!(kind(Surface::Rosenbrock, [0.0, 0.0]), Kind::NotCritical);
    assert_eq!(
        kind(Surface::Himmelblau, [-0.270845, -0.923039]),
        Kind::NotCritical
    ); // rounded point
    assert_eq!(classify(&[-3.0, -1.0], 1e-6), Kind::Maximum);
    assert_eq!(classify(&[0.0, 2.0], 1e-6), Kind::Degenerate);
    assert_eq!(classify(&[-1.0, 0.0, 2.0], 1e-6), Kind::Saddle);
}

#[test]
fn himmelblau_has_nine_critical_points() {
    let points = critical_points::scan(
        Surface::Himmelblau,
        [-5.0, 5.0, -5.0, 5.0],
        &CriticalOptions::default(),
    )
    .unwrap();
    let count = |k: Kind| points.iter().filter(|p| p.analysis.kind == k).count();
    assert_eq!(
        points.len(),
        9,
        "{:?}",
        points.iter().map(|p| p.at).collect::<Vec<_>>()
    );
    assert_eq!(
        (
            count(Kind::Minimum),
            count(Kind::Maximum),
            count(Kind::Saddle)
        ),
        (4, 1, 4)
    );
    let max = points
        .iter()
        .find(|p| p.analysis.kind == Kind::Maximum)
        .unwrap();
    assert!((max.at[0] + 0.270845).abs() < 1e-5 && (max.at[1] + 0.923039).abs() < 1e-5);
    assert!((max.analysis.loss - 181.617).abs() < 1e-2);
    for p in points.iter().filter(|p| p.analysis.kind == Kind::Saddle) {
        let e = p.analysis.escape.as_ref().unwrap();
        assert!(e.loss_after.unwrap() < p.analysis.loss);
    }
}

#[test]
fn trace_and_density() {
    let n = 200;
    let mut rng = Rng::new(2);
    let spectrum: Vec<f64> = (0..n)
        .map(|i| {
            if i < 60 {
                -1.0 - rng.uniform()
            } else {
                5.0 * rng.uniform() + 0.1
            }
        })
        .collect();
    let a = matrix_with_spectrum(&spectrum, 8);
    let true_trace: f64 = spectrum.iter().sum();
    let mut op = dense(&a);
    let t = hutchinson(&mut op, 300, 3).unwrap();
    assert!(
        (t.trace - true_trace).abs() <= 4.0 * t.std_error,
        "{} ± {} vs {true_trace}",
        t.trace,
        t.std_error
    );
    let d = slq(
        &mut op,
        &SlqOptions {
            runs: 10,
            steps: 60,
            ..SlqOptions::default()
        },
    )
    .unwrap();
    let dx = d.grid[1] - d.grid[0];
    assert!((d.density.iter().sum::<f64>() * dx - 1.0).abs() < 1e-9);
    assert!(
        (d.fraction_above(0.0) - 0.7).abs() < 0.08,
        "{}",
        d.fraction_above(0.0)
    );
    let (lo, hi) = d.range();
    let truth = sorted_eigenvalues(&a);
    assert!((lo - truth[0]).abs() < 1e-6 && (hi - truth[n - 1]).abs() < 1e-6);
    // In larger dimension, the minimum ratio comes from the density.
    let res = analyze(&mut op, None, &vec![0.0; n], &CriticalOptions::default()).unwrap();
    assert!(!res.complete && res.kind == Kind::Saddle && (res.minimum_ratio - 0.7).abs() < 0.08);
}

/// f(x) = ½ Σ λ_i x_i².
struct Quadratic(Vec<f64>);
impl Objective for Quadratic {
    fn dim(&self) -> usize {
        self.0.len()
    }
    fn loss_grad(&mut self, x: &[f64], g: &mut [f64]) -> gradlab::Result<f64> {
        for i in 0..x.len() {
            g[i] = self.0[i] * x[i];
        }
        Ok(0.5 * x.iter().zip(&self.0).map(|(x, l)| l * x * x).sum::<f64>())
    }
}

#[test]
fn sharp_minima_are_sharper() {
    let x = vec![0.0; 3];
    let flat = epsilon_sharpness(&mut Quadratic(vec![1.0, 1.0, 1.0]), &x, 1e-2, 10).unwrap();
    let sharp = epsilon_sharpness(&mut Quadratic(vec![100.0, 1.0, 1.0]), &x, 1e-2, 10).unwrap();
    // Exact maxima: ½ Σ λ ε² at a corner.
    assert!(
        (flat.value - 100.0 * 0.5 * 3.0 * 1e-4).abs() < 1e-12,
        "{flat:?}"
    );
    assert!(
        (sharp.value - 100.0 * 0.5 * 102.0 * 1e-4).abs() < 1e-12,
        "{sharp:?}"
    );
    let mut op =
        FiniteDifferenceHessian::new(Quadratic(vec![100.0, 1.0, 1.0]), x, f64::EPSILON / 2.0)
            .unwrap();
    assert!((top_eigenvalue(&mut op, 0).unwrap() - 100.0).abs() < 1e-4);
}

#[test]
fn slices_and_the_pca_plane() {
    let layout = Layout::new([("w", vec![3, 4]), ("b", vec![3])]).unwrap();
    let mut rng = Rng::new(1);
    let params: Vec<f64> = (0..15).map(|_| rng.normal()).collect();
    let d = filter_normalized_direction(&layout, &params, &mut rng).unwrap();
    for r in 0..3 {
        let row = |v: &[f64]| {
            v[r * 4..r * 4 + 4]
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
        };
        assert!((row(&d) - row(&params)).abs() < 1e-9);
    }
    assert!(d[12..].iter().all(|x| *x == 0.0));

    let mut q = Quadratic(vec![1.0, 2.0]);
    let losses = interpolate(&mut q, &[0.0, 0.0], &[1.0, 1.0], &[0.0, 0.5, 1.0]).unwrap();
    assert_eq!(losses, vec![0.0, 0.375, 1.5]);
    let grid = slice_2d(
        &mut q,
        &[0.0, 0.0],
        &[1.0, 0.0],
        &[0.0, 1.0],
        &[-1.0, 0.0, 1.0],
        &[0.0, 2.0],
    )
    .unwrap();
    assert_eq!(grid.values[1][2], 0.5 + 4.0);
    assert!(grid.to_csv().starts_with("x,y,loss\n-1.0,0.0,0.5\n"));

    // A trajectory in a known plane of a 10-dimensional space.
    let (u, v): (Vec<f64>, Vec<f64>) = (
        (0..10).map(|i| if i == 2 { 1.0 } else { 0.0 }).collect(),
        (0..10).map(|i| if i == 7 { 1.0 } else { 0.0 }).collect(),
    );
    let traj: Vec<Vec<f64>> = (0..12)
        .map(|k| {
            let t = 1.0 - k as f64 / 11.0;
            (0..10)
                .map(|i| 3.0 * t * u[i] + t * t * v[i] + 0.5)
                .collect()
        })
        .collect();
    let plane = pca_plane(&traj).unwrap();
    assert!((plane.explained[0] + plane.explained[1] - 1.0).abs() < 1e-9);
    assert!(plane.explained[0] > plane.explained[1]);
    for (p, t) in plane.projected.iter().zip(&traj) {
        // Projections reconstruct the points exactly (the plane holds the trajectory).
        let rec: Vec<f64> = (0..10)
            .map(|i| traj[11][i] + p[0] * plane.directions[0][i] + p[1] * plane.directions[1][i])
            .collect();
        assert!(rec.iter().zip(t).all(|(a, b)| (a - b).abs() < 1e-9));
    }
    assert!(pca_plane(&traj[..2]).is_err());
}

#[test]
fn lanczos_converges_every_pair_relative_to_its_own_value() {
    // One outlier far above a bulk: a tolerance relative to |λ|max would accept the
    // smaller top values and the bottom ones while still off by tol·λmax.
    let n = 300;
    let mut rng = Rng::new(21);
    let mut spectrum: Vec<f64> = (0..n - 1).map(|_| 0.5 + 4.5 * rng.uniform()).collect();
    spectrum.push(2000.0);
    let a = matrix_with_spectrum(&spectrum, 8);
    let truth = sorted_eigenvalues(&a);
    let mut op = dense(&a);
    let tol = 1e-5;
    let r = lanczos(
        &mut op,
        &LanczosOptions {
            top: 4,
            bottom: 4,
            tol,
            max_iter: None,
            seed: 2,
        },
    )
    .unwrap();
    assert!(r.converged);
    let pairs = r.top.iter().zip((0..4).map(|i| truth[n - 1 - i]));
    let pairs = pairs.chain(r.bottom.iter().zip(truth.iter().copied()));
    for (p, t) in pairs {
        let mut hv = vec![0.0; n];
        op.hvp(&p.vector, &mut hv).unwrap();
        let residual = hv
            .iter()
            .zip(&p.vector)
            .map(|(h, v)| (h - p.value * v).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(residual <= 1.01 * tol * t.abs(), "{t}: residual {residual}");
        assert!((p.residual - residual).abs() <= 1e-3 * t.abs(), "{t}");
        assert!((p.value - t).abs() <= tol * t.abs(), "{} vs {t}", p.value);
    }
}
