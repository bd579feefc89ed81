//! Is a Hessian operator symmetric? A Hessian is, so an operator that is not has a wrong
//! gradient somewhere (a backward that is not the derivative of its forward), or finite
//! differences too coarse for the loss; Lanczos, Hutchinson and SLQ all assume symmetry and
//! return numbers without meaning when it fails.
//!
//! [`asymmetry`] measures it on random unit pairs `(v, w)`:
//! `|v·Hw − w·Hv| / ((‖Hv‖ + ‖Hw‖)/2)`, the largest over the pairs. It is 0 up to rounding
//! for an exact Hessian, of the order of the finite-difference error for a difference
//! operator, and of order 1 for a broken one.

use super::linalg::{dot, norm};
use super::{random_unit, HessianOperator, Rng};
use crate::Result;

/// The largest relative asymmetry of `op` over `pairs` random unit pairs (2·pairs products).
pub fn asymmetry(op: &mut dyn HessianOperator, pairs: usize, seed: u64) -> Result<f64> {
    let n = op.dim();
    let mut rng = Rng::new(seed);
    let (mut hv, mut hw) = (vec![0.0; n], vec![0.0; n]);
    let mut worst = 0.0f64;
    for _ in 0..pairs {
        let v = random_unit(n, &mut rng);
        let w = random_unit(n, &mut rng);
        op.hvp(&v, &mut hv)?;
        op.hvp(&w, &mut hw)?;
        let scale = 0.5 * (norm(&hv) + norm(&hw));
        if scale > 0.0 {
            worst = worst.max((dot(&v, &hw) - dot(&w, &hv)).abs() / scale);
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landscape::DenseHessian;

    #[test]
    fn symmetric_matrices_pass_and_skewed_ones_do_not() {
        let n = 30;
        let mut rng = Rng::new(4);
        let g: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
        let sym: Vec<f64> = (0..n * n).map(|k| g[k] + g[(k % n) * n + k / n]).collect();
        let mut op = DenseHessian::new(n, sym.clone()).unwrap();
        assert!(asymmetry(&mut op, 3, 1).unwrap() < 1e-13);
        let mut skewed = sym;
        skewed[1] += 5.0; // H[0][1] ≠ H[1][0]
        let mut op = DenseHessian::new(n, skewed).unwrap();
        assert!(asymmetry(&mut op, 3, 1).unwrap() > 1e-3);
        let mut zero = DenseHessian::new(n, vec![0.0; n * n]).unwrap();
        assert_eq!(asymmetry(&mut zero, 2, 1).unwrap(), 0.0);
    }
}
