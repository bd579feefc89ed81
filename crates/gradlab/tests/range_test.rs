//! The LR range test where the answer is known: gradient descent on a quadratic with
//! curvature L diverges above 2/L.

use gradlab::schedule::range_test::{Ramp, RangeTest};

/// f(x) = Σ L_i x_i² / 2 with the largest curvature `l_max`.
struct Quadratic {
    curvatures: Vec<f64>,
    x: Vec<f64>,
}

impl Quadratic {
    fn new(l_max: f64, dim: usize) -> Self {
        let curvatures = (0..dim)
            .map(|i| l_max * (0.2 + 0.8 * i as f64 / (dim - 1) as f64))
            .collect();
        let x = (0..dim).map(|i| 1.0 + 0.1 * i as f64).collect();
        Quadratic { curvatures, x }
    }

    fn loss(&self) -> f64 {
        self.x
            .iter()
            .zip(&self.curvatures)
            .map(|(x, l)| 0.5 * l * x * x)
            .sum()
    }

    /// One gradient-descent step; returns the loss before it.
    fn step(&mut self, lr: f64) -> f64 {
        let loss = self.loss();
        for (x, l) in self.x.iter_mut().zip(&self.curvatures) {
            *x -= lr * l * *x;
        }
        loss
    }
}

#[test]
fn the_suggestion_is_below_the_divergence_threshold_and_trains() {
    for l_max in [0.5, 4.0, 30.0, 400.0] {
        let mut q = Quadratic::new(l_max, 20);
        let test = RangeTest::default();
        let result = test.run(|lr| Ok(q.step(lr))).unwrap();
        if 2.0 / l_max < 1.0 {
            assert!(
                result.diverged_at.is_some(),
                "L={l_max}: the test should see divergence"
            );
        }
        // fastai's valley is a second opinion: it must at least stay below the threshold.
        let valley = result.valley.expect("a valley suggestion");
        assert!(
            valley < 2.0 / l_max,
            "L={l_max}: valley suggestion {valley} >= 2/L"
        );
        // The suggestion (steepest descent) must also train.
        {
            let (name, lr) = ("steepest", result.steepest.expect("a steepest suggestion"));
            assert!(lr < 2.0 / l_max, "L={l_max}: {name} suggestion {lr} >= 2/L");
            let mut fresh = Quadratic::new(l_max, 20);
            let start = fresh.loss();
            for _ in 0..1000 {
                fresh.step(lr);
            }
            assert!(
                fresh.loss() * 100.0 <= start,
                "L={l_max}: {name} lr {lr} cut the loss only {}x",
                start / fresh.loss()
            );
        }
    }
}

#[test]
fn ramps_and_bad_settings() {
    let exp = RangeTest {
        start_lr: 1e-4,
        end_lr: 1.0,
        num_iter: 5,
        ..RangeTest::default()
    };
    assert!((exp.lr_at(0) - 1e-4).abs() < 1e-18 && (exp.lr_at(4) - 1.0).abs() < 1e-12);
    assert!((exp.lr_at(2) - 1e-2).abs() < 1e-15);
    let lin = RangeTest {
        ramp: Ramp::Linear,
        ..exp.clone()
    };
    assert!((lin.lr_at(2) - (1e-4 + 0.5 * (1.0 - 1e-4))).abs() < 1e-15);
    let bad = RangeTest {
        start_lr: 1.0,
        end_lr: 0.1,
        ..RangeTest::default()
    };
    assert!(bad
        .run(|_| Ok(1.0))
        .unwrap_err()
        .to_string()
        .contains("start_lr < end_lr"));
    // A non-finite loss ends the test without a panic.
    let r = RangeTest::default()
        .run(|lr| Ok(if lr > 1e-3 { f64::NAN } else { 1.0 }))
        .unwrap();
    assert!(r.diverged_at.is_some());
}
