//! Hutchinson's trace estimator: `tr(H) = E[vᵀHv]` for Rademacher probes v (entries ±1).

use super::linalg::dot;
use super::{HessianOperator, Rng};
use crate::Result;

/// A trace estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEstimate {
    /// Mean of the probes' `vᵀHv`.
    pub trace: f64,
    /// Standard error of that mean (sample standard deviation / √probes).
    pub std_error: f64,
    /// Every probe's `vᵀHv`.
    pub samples: Vec<f64>,
}

/// Estimates the trace with `probes` Rademacher probes (one Hessian-vector product each).
pub fn hutchinson(op: &mut dyn HessianOperator, probes: usize, seed: u64) -> Result<TraceEstimate> {
    let n = op.dim();
    let mut rng = Rng::new(seed);
    let mut hv = vec![0.0; n];
    let mut samples = Vec::with_capacity(probes);
    for _ in 0..probes.max(1) {
        let v: Vec<f64> = (0..n).map(|_| rng.rademacher()).collect();
        op.hvp(&v, &mut hv)?;
        samples.push(dot(&v, &hv));
    }
    let m = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / m;
    let var = if samples.len() > 1 {
        samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (m - 1.0)
    } else {
        0.0
    };
    Ok(TraceEstimate {
        trace: mean,
        std_error: (var / m).sqrt(),
        samples,
    })
}
