//! Power iteration with deflation, as PyHessian does it: the baseline Lanczos is measured
//! against. Each eigenvalue starts from a random unit vector, which is re-orthogonalised
//! against the eigenvectors already found at every step; the estimate is the Rayleigh
//! quotient, and it stops when that changes by less than `tol` relatively. It finds the
//! eigenvalues of largest magnitude (which may be negative).

use super::lanczos::Eigenpair;
use super::linalg::{axpy, dot, norm};
use super::{random_unit, HessianOperator, Rng};
use crate::Result;

/// What [`power_iteration`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerResult {
    /// Eigenpairs in the order found (decreasing magnitude).
    pub pairs: Vec<Eigenpair>,
    /// Hessian-vector products used.
    pub products: usize,
}

/// The `k` eigenvalues of largest magnitude, each with at most `max_iter` products.
pub fn power_iteration(
    op: &mut dyn HessianOperator,
    k: usize,
    max_iter: usize,
    tol: f64,
    seed: u64,
) -> Result<PowerResult> {
    let n = op.dim();
    let mut rng = Rng::new(seed);
    let mut pairs: Vec<Eigenpair> = Vec::new();
    let mut products = 0;
    let mut hv = vec![0.0; n];
    for _ in 0..k.min(n) {
        let mut v = random_unit(n, &mut rng);
        let mut lambda: Option<f64> = None;
        for _ in 0..max_iter {
            for p in &pairs {
                let c = dot(&v, &p.vector);
                axpy(-c, &p.vector, &mut v);
            }
            let s = norm(&v);
            v.iter_mut().for_each(|x| *x /= s);
            op.hvp(&v, &mut hv)?;
            products += 1;
            let estimate = dot(&v, &hv);
            let done =
                lambda.is_some_and(|prev| (estimate - prev).abs() / (prev.abs() + 1e-6) < tol);
            lambda = Some(estimate);
            let s = norm(&hv);
            if s == 0.0 {
                break;
            }
            v = hv.iter().map(|x| x / s).collect();
            if done {
                break;
            }
        }
        op.hvp(&v, &mut hv)?;
        products += 1;
        let value = dot(&v, &hv);
        axpy(-value, &v, &mut hv);
        pairs.push(Eigenpair {
            value,
            residual: norm(&hv),
            vector: v,
        });
    }
    Ok(PowerResult { pairs, products })
}

/// The number of Hessian-vector products power iteration needs before its estimate of
/// the dominant eigenvalue is within `rel` of `truth` (None if not within `max_iter`).
pub fn products_to_accuracy(
    op: &mut dyn HessianOperator,
    truth: f64,
    rel: f64,
    max_iter: usize,
    seed: u64,
) -> Result<Option<usize>> {
    let n = op.dim();
    let mut rng = Rng::new(seed);
    let mut v = random_unit(n, &mut rng);
    let mut hv = vec![0.0; n];
    for i in 1..=max_iter {
        op.hvp(&v, &mut hv)?;
        if (dot(&v, &hv) - truth).abs() <= rel * truth.abs() {
            return Ok(Some(i));
        }
        let s = norm(&hv);
        v = hv.iter().map(|x| x / s).collect();
    }
    Ok(None)
}
