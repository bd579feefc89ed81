//! Stochastic Lanczos quadrature: the Hessian's eigenvalue density (Ghorbani, Krishnan &
//! Xiao 2019; PyHessian's `density`).
//!
//! Each run starts Lanczos from a normalised Rademacher vector; the Ritz values of its
//! `steps`-step tridiagonal matrix are quadrature nodes, weighted by the squared first
//! components of their eigenvectors. The density is the runs' average of Gaussians of
//! variance `sigma²` centred on the nodes (PyHessian: `1e-5·max(1, λmax − λmin)`),
//! evaluated on a grid and normalised to integrate to 1.

use super::lanczos::Krylov;
use super::{HessianOperator, Rng};
use crate::Result;

/// Settings of [`slq`].
#[derive(Debug, Clone, PartialEq)]
pub struct SlqOptions {
    /// Independent runs.
    pub runs: usize,
    /// Lanczos steps per run.
    pub steps: usize,
    /// Grid points.
    pub grid_points: usize,
    /// Gaussian variance (None: PyHessian's choice).
    pub sigma_squared: Option<f64>,
    /// Seed.
    pub seed: u64,
}

impl Default for SlqOptions {
    fn default() -> Self {
        SlqOptions {
            runs: 10,
            steps: 80,
            grid_points: 1000,
            sigma_squared: None,
            seed: 0,
        }
    }
}

/// An eigenvalue density.
#[derive(Debug, Clone, PartialEq)]
pub struct Density {
    /// Grid of eigenvalues.
    pub grid: Vec<f64>,
    /// Density on the grid (integrates to 1).
    pub density: Vec<f64>,
    /// Quadrature nodes of each run.
    pub nodes: Vec<Vec<f64>>,
    /// Their weights (each run's sum to 1).
    pub weights: Vec<Vec<f64>>,
    /// Hessian-vector products used.
    pub products: usize,
}

impl Density {
    /// The fraction of the spectrum above `threshold` (the "minimum ratio" for 0).
    pub fn fraction_above(&self, threshold: f64) -> f64 {
        let runs = self.nodes.len().max(1) as f64;
        self.nodes
            .iter()
            .zip(&self.weights)
            .map(|(n, w)| {
                n.iter()
                    .zip(w)
                    .filter(|(x, _)| **x > threshold)
                    .map(|(_, w)| w)
                    .sum::<f64>()
            })
            .sum::<f64>()
            / runs
    }

    /// The estimated extreme eigenvalues (smallest and largest node).
    pub fn range(&self) -> (f64, f64) {
        let all = self.nodes.iter().flatten();
        all.clone()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(*x), hi.max(*x))
            })
    }
}

/// Runs SLQ.
pub fn slq(op: &mut dyn HessianOperator, opts: &SlqOptions) -> Result<Density> {
    let n = op.dim();
    let mut rng = Rng::new(opts.seed);
    let (mut nodes, mut weights) = (Vec::new(), Vec::new());
    let mut products = 0;
    for run in 0..opts.runs.max(1) {
        let start: Vec<f64> = (0..n).map(|_| rng.rademacher()).collect();
        let mut k = Krylov::new(start, opts.seed.wrapping_add(run as u64));
        for _ in 0..opts.steps.min(n).max(1) {
            if !k.step(op)? {
                break;
            }
        }
        products += k.products;
        let (values, vectors) = k.ritz();
        weights.push(vectors.iter().map(|s| s[0] * s[0]).collect());
        nodes.push(values);
    }
    let mut d = Density {
        grid: Vec::new(),
        density: Vec::new(),
        nodes,
        weights,
        products,
    };
    let (lo, hi) = d.range();
    let sigma2 = opts.sigma_squared.unwrap_or(1e-5 * (hi - lo).max(1.0));
    let pad = 0.01 + 3.0 * sigma2.sqrt();
    let (g0, g1) = (lo - pad, hi + pad);
    let m = opts.grid_points.max(2);
    d.grid = (0..m)
        .map(|i| g0 + (g1 - g0) * i as f64 / (m - 1) as f64)
        .collect();
    let norm = 1.0 / (2.0 * std::f64::consts::PI * sigma2).sqrt();
    d.density = d
        .grid
        .iter()
        .map(|x| {
            d.nodes
                .iter()
                .zip(&d.weights)
                .flat_map(|(n, w)| n.iter().zip(w))
                .map(|(node, w)| w * norm * (-(x - node).powi(2) / (2.0 * sigma2)).exp())
                .sum::<f64>()
                / d.nodes.len() as f64
        })
        .collect();
    let dx = (g1 - g0) / (m - 1) as f64;
    let total: f64 = d.density.iter().sum::<f64>() * dx;
    if total > 0.0 {
        d.density.iter_mut().for_each(|v| *v /= total);
    }
    Ok(d)
}
