//! Momentum on a quadratic, the model behind the lecture's picture of momentum (and Goh's
//! "Why Momentum Really Works", Distill 2017): on f(x, y) = ½(x² + κy²), whose Hessian has the
//! eigenvalues 1 and κ along the axes, gradient descent with heavy-ball momentum
//! (PyTorch's SGD: v ← βv + g, θ ← θ − αv) moves each eigen-component of the error on its own:
//! e_{k+1} = (1 + β − αλ)e_k − βe_{k−1}. Its rate is the larger modulus of the roots of
//! z² − (1 + β − αλ)z + β = 0, and the run's rate is the worst over the eigenvalues.

use super::SurfaceFunction;

/// ½(x² + κy²): condition number κ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quadratic {
    /// κ = λ_max / λ_min (the eigenvalue along y; the one along x is 1).
    pub condition: f64,
}

impl Quadratic {
    /// The eigenvalues of the Hessian, along x and along y.
    pub fn eigenvalues(&self) -> [f64; 2] {
        [1.0, self.condition]
    }

    /// The best constant step and momentum for this κ (Polyak): α = (2 / (1 + √κ))²,
    /// β = ((√κ − 1) / (√κ + 1))², with rate (√κ − 1) / (√κ + 1).
    pub fn optimal(&self) -> (f64, f64) {
        let s = self.condition.sqrt();
        ((2.0 / (1.0 + s)).powi(2), ((s - 1.0) / (s + 1.0)).powi(2))
    }

    /// The rate of the whole run: the worst eigen-component's ([`rate`]).
    pub fn rate(&self, lr: f64, momentum: f64) -> f64 {
        self.eigenvalues()
            .iter()
            .map(|&l| rate(lr, momentum, l))
            .fold(0.0, f64::max)
    }
}

impl SurfaceFunction for Quadratic {
    fn value(&self, x: f64, y: f64) -> f64 {
        0.5 * (x * x + self.condition * y * y)
    }
    fn gradient(&self, x: f64, y: f64) -> [f64; 2] {
        [x, self.condition * y]
    }
    fn hessian(&self, _x: f64, _y: f64) -> [[f64; 2]; 2] {
        [[1.0, 0.0], [0.0, self.condition]]
    }
}

/// The factor by which an eigen-component of eigenvalue `eigenvalue` shrinks per step in the
/// long run under step `lr` and momentum `momentum`: the spectral radius of
/// `[[1 + β − αλ, −β], [1, 0]]` (above 1: it diverges).
pub fn rate(lr: f64, momentum: f64, eigenvalue: f64) -> f64 {
    let t = 1.0 + momentum - lr * eigenvalue;
    let disc = t * t - 4.0 * momentum;
    if disc >= 0.0 {
        let r = disc.sqrt();
        ((t + r) / 2.0).abs().max(((t - r) / 2.0).abs())
    } else {
        momentum.sqrt()
    }
}

/// The rate measured on a sequence of errors: (|e_end| / |e_start|)^(1 / steps) over its last
/// half (where the slowest mode dominates), `None` when it has reached zero or is too short.
pub fn measured_rate(errors: &[f64]) -> Option<f64> {
    let n = errors.len();
    if n < 4 {
        return None;
    }
    let (a, b) = (n / 2, n - 1);
    // Oscillating components cross zero: use the running maximum of |e| over a window.
    let window = |i: usize| {
        errors[i.saturating_sub(8)..=i]
            .iter()
            .fold(0.0f64, |m, e| m.max(e.abs()))
    };
    let (ea, eb) = (window(a), window(b));
    (ea > 0.0 && eb > 0.0 && eb.is_finite()).then(|| (eb / ea).powf(1.0 / (b - a) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_gradient_descent_shrinks_by_one_minus_lr_lambda() {
        assert!((rate(0.1, 0.0, 1.0) - 0.9).abs() < 1e-15);
        assert!((rate(0.3, 0.0, 10.0) - 2.0).abs() < 1e-15);
    }

    #[test]
    fn the_optimal_settings_reach_the_optimal_rate() {
        let q = Quadratic { condition: 100.0 };
        let (lr, beta) = q.optimal();
        // (A double root: rounding moves it by about the square root of the machine epsilon.)
        assert!((q.rate(lr, beta) - 9.0 / 11.0).abs() < 1e-7);
        // Without momentum the best rate is (κ − 1) / (κ + 1).
        assert!((q.rate(2.0 / 101.0, 0.0) - 99.0 / 101.0).abs() < 1e-12);
    }

    #[test]
    fn the_measured_rate_of_an_iteration_matches_the_theory() {
        let (lr, beta, lambda) = (0.05, 0.8, 3.0);
        let (mut e, mut v) = (1.0f64, 0.0f64);
        let mut errors = vec![e];
        for _ in 0..400 {
            v = beta * v + lambda * e;
            e -= lr * v;
            errors.push(e);
        }
        let measured = measured_rate(&errors).unwrap();
        assert!(
            (measured - rate(lr, beta, lambda)).abs() < 5e-3,
            "{measured}"
        );
    }
}
