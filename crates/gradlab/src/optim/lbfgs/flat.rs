//! The vector operations of L-BFGS on the flat parameter vector (torch.optim.LBFGS's `dot`,
//! `abs().max()` and `add_(b, alpha=α)`).

use crate::Real;

/// `a·b`, accumulated in f64.
pub(super) fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.to_f64() * y.to_f64()).sum()
}

/// `max |aᵢ|`.
pub(super) fn max_abs<T: Real>(a: &[T]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.to_f64().abs()))
}

/// `a ← a + alpha·b`.
pub(super) fn axpy<T: Real>(a: &mut [T], alpha: f64, b: &[T]) {
    let alpha = T::from_f64(alpha);
    for (x, y) in a.iter_mut().zip(b) {
        *x = *x + alpha * *y;
    }
}
