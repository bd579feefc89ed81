//! Lanczos with full reorthogonalisation: the extreme eigenvalues (both ends of the
//! spectrum) and eigenvectors of a Hessian from Hessian-vector products alone.
//!
//! Each iteration applies H once, orthogonalises the new vector against every earlier one
//! (twice, "twice is enough"), and extends the tridiagonal matrix T. The eigenpairs of T
//! (Ritz pairs) approximate H's; the residual of Ritz pair i is `β_m·|s_{m,i}|`, which is
//! `‖H y − θ y‖` exactly in exact arithmetic. It stops when every wanted Ritz pair at both
//! ends has a residual `≤ tol·|θ|`, relative to its own value (values closer to zero than
//! `ZERO_FLOOR·|λ|max` are measured against that floor), or after `max_iter` products. A
//! tolerance relative to `|λ|max` alone would accept the smaller wanted values while they
//! are still off by `tol·|λ|max`.

use super::linalg::{axpy, dot, norm, tridiagonal_eigen};
use super::{random_unit, HessianOperator, Rng};
use crate::Result;

/// Settings of [`lanczos`].
#[derive(Debug, Clone, PartialEq)]
pub struct LanczosOptions {
    /// How many of the largest eigenvalues.
    pub top: usize,
    /// How many of the smallest (most negative) eigenvalues.
    pub bottom: usize,
    /// Residual tolerance relative to each wanted Ritz value's own magnitude (see the
    /// module documentation).
    pub tol: f64,
    /// At most this many Hessian-vector products (default: the dimension).
    pub max_iter: Option<usize>,
    /// Seed of the random start vector.
    pub seed: u64,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        LanczosOptions {
            top: 1,
            bottom: 1,
            tol: 1e-6,
            max_iter: None,
            seed: 0,
        }
    }
}

/// An eigenvalue, its unit eigenvector and the residual `‖Hv − λv‖`.
#[derive(Debug, Clone, PartialEq)]
pub struct Eigenpair {
    /// Eigenvalue.
    pub value: f64,
    /// Unit eigenvector.
    pub vector: Vec<f64>,
    /// Residual norm.
    pub residual: f64,
}

/// What [`lanczos`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct LanczosResult {
    /// The largest eigenpairs, largest first.
    pub top: Vec<Eigenpair>,
    /// The smallest eigenpairs, smallest first.
    pub bottom: Vec<Eigenpair>,
    /// Hessian-vector products used.
    pub products: usize,
    /// Whether every wanted pair met the tolerance.
    pub converged: bool,
}

/// The Krylov basis and tridiagonal matrix built by the Lanczos recurrence.
pub struct Krylov {
    /// Orthonormal basis vectors.
    pub basis: Vec<Vec<f64>>,
    /// Diagonal of T.
    pub alpha: Vec<f64>,
    /// Off-diagonal of T (`beta[j]` couples j and j+1); after the last step, the norm of
    /// the remainder.
    pub beta: Vec<f64>,
    /// Hessian-vector products used.
    pub products: usize,
    next: Vec<f64>,
    work: Vec<f64>,
    rng: Rng,
}

impl Krylov {
    /// Starts from `start` (normalised here).
    pub fn new(start: Vec<f64>, seed: u64) -> Self {
        let s = norm(&start);
        let n = start.len();
        Krylov {
            basis: Vec::new(),
            alpha: Vec::new(),
            beta: Vec::new(),
            products: 0,
            next: start.into_iter().map(|x| x / s).collect(),
            work: vec![0.0; n],
            rng: Rng::new(seed.wrapping_add(1)),
        }
    }

    /// One Lanczos step; returns false when the whole space is spanned.
    pub fn step(&mut self, op: &mut dyn HessianOperator) -> Result<bool> {
        let n = self.next.len();
        if self.basis.len() >= n {
            return Ok(false);
        }
        let v = std::mem::take(&mut self.next);
        op.hvp(&v, &mut self.work)?;
        self.products += 1;
        let a = dot(&self.work, &v);
        let mut w = std::mem::take(&mut self.work);
        axpy(-a, &v, &mut w);
        if let (Some(prev), Some(b)) = (self.basis.last(), self.beta.last()) {
            axpy(-b, prev, &mut w);
        }
        self.alpha.push(a);
        self.basis.push(v);
        for _ in 0..2 {
            for q in &self.basis {
                let c = dot(&w, q);
                axpy(-c, q, &mut w);
            }
        }
        let mut b = norm(&w);
        let scale = self
            .alpha
            .iter()
            .fold(0.0f64, |m, x| m.max(x.abs()))
            .max(f64::MIN_POSITIVE);
        if b <= 1e-12 * scale && self.basis.len() < n {
            // An invariant subspace: continue with a fresh direction orthogonal to it.
            b = 0.0;
            w = random_unit(n, &mut self.rng);
            for _ in 0..2 {
                for q in &self.basis {
                    let c = dot(&w, q);
                    axpy(-c, q, &mut w);
                }
            }
            let s = norm(&w);
            w.iter_mut().for_each(|x| *x /= s);
            self.beta.push(b);
            self.work = vec![0.0; n];
            self.next = w;
            return Ok(true);
        }
        self.beta.push(b);
        if b > 0.0 {
            w.iter_mut().for_each(|x| *x /= b);
        }
        self.next = w;
        self.work = vec![0.0; n];
        Ok(true)
    }

    /// Ritz values (ascending) and the eigenvectors of T.
    pub fn ritz(&self) -> (Vec<f64>, Vec<Vec<f64>>) {
        let m = self.alpha.len();
        tridiagonal_eigen(&self.alpha, &self.beta[..m.saturating_sub(1)])
    }

    /// The Ritz vector for the eigenvector `s` of T.
    pub fn ritz_vector(&self, s: &[f64]) -> Vec<f64> {
        let n = self.basis.first().map_or(0, Vec::len);
        let mut y = vec![0.0; n];
        for (q, c) in self.basis.iter().zip(s) {
            axpy(*c, q, &mut y);
        }
        y
    }
}

/// Ritz values within this fraction of `|λ|max` of zero are converged against
/// `tol·ZERO_FLOOR·|λ|max` instead of their own magnitude.
pub const ZERO_FLOOR: f64 = 1e-6;

/// Whether a Ritz pair with value `value` and residual `residual` has converged.
fn converged_pair(value: f64, residual: f64, tol: f64, scale: f64) -> bool {
    residual <= tol * value.abs().max(ZERO_FLOOR * scale)
}

/// Finds the `top` largest and `bottom` smallest eigenpairs of `op`.
pub fn lanczos(op: &mut dyn HessianOperator, opts: &LanczosOptions) -> Result<LanczosResult> {
    let n = op.dim();
    let mut rng = Rng::new(opts.seed);
    let mut k = Krylov::new(random_unit(n, &mut rng), opts.seed);
    let limit = opts.max_iter.unwrap_or(n).min(n).max(1);
    let wanted = (opts.top + opts.bottom).max(1);
    let mut converged = false;
    while k.alpha.len() < limit {
        if !k.step(op)? {
            break;
        }
        let m = k.alpha.len();
        let every = if m < 40 { 1 } else { m / 20 };
        let last_beta = *k.beta.last().unwrap_or(&0.0);
        if m >= wanted.min(n)
            && (m.is_multiple_of(every) || m == limit)
            && (last_beta > 0.0 || m == n)
        {
            let (values, vectors) = k.ritz();
            let scale = values.iter().fold(0.0f64, |s, v| s.max(v.abs()));
            let done = |i: usize| {
                converged_pair(
                    values[i],
                    last_beta * vectors[i][m - 1].abs(),
                    opts.tol,
                    scale,
                )
            };
            let ok =
                (0..opts.top.min(m)).all(|i| done(m - 1 - i)) && (0..opts.bottom.min(m)).all(done);
            if ok || m == n {
                converged = ok || m == n;
                break;
            }
        }
    }
    let (values, vectors) = k.ritz();
    let m = values.len();
    let last_beta = if m == n {
        0.0
    } else {
        *k.beta.last().unwrap_or(&0.0)
    };
    let pair = |i: usize| Eigenpair {
        value: values[i],
        vector: k.ritz_vector(&vectors[i]),
        residual: last_beta * vectors[i][m - 1].abs(),
    };
    Ok(LanczosResult {
        top: (0..opts.top.min(m)).map(|i| pair(m - 1 - i)).collect(),
        bottom: (0..opts.bottom.min(m)).map(pair).collect(),
        products: k.products,
        converged,
    })
}
