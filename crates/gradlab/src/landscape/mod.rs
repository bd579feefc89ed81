//! Curvature and the loss landscape: is training stuck at a minimum or at a saddle?
//!
//! Everything here works through two traits: an [`Objective`] (loss and gradient at any
//! point) and a [`HessianOperator`] (Hessian-vector products at one point). Implementations:
//! exact ([`SurfaceHessian`] on the analytic surfaces), dense matrices ([`DenseHessian`],
//! for tests), and central finite differences of any gradient oracle
//! ([`FiniteDifferenceHessian`]); the network operator lives in `gradlab-candle`.
//!
//! - [`lanczos`]: extreme eigenpairs with full reorthogonalisation; [`power`]: power
//!   iteration with deflation (PyHessian's baseline); [`hutchinson`]: the trace;
//!   [`slq`]: the eigenvalue density; [`symmetry`]: whether an operator is symmetric at all.
//! - [`critical`]: classify a point (minimum, maximum, saddle, degenerate, not critical),
//!   the minimum ratio, and the escape direction out of a saddle.
//! - [`sharpness`]: Keskar et al.'s ε-sharpness; [`slices`]: 1-D and 2-D slices,
//!   filter-normalised directions, and the PCA plane of a trajectory.
//!
//! The saddle of `(1 − xy)²` at the origin, by its Hessian's eigenvalues:
//!
//! ```
//! use gradlab::landscape::critical::{classify, Kind};
//! use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
//! use gradlab::landscape::SurfaceHessian;
//! use gradlab::surface::Surface;
//! let mut h = SurfaceHessian { surface: "product".parse::<Surface>()?, at: [0.0, 0.0] };
//! let opts = LanczosOptions { top: 1, bottom: 1, tol: 1e-12, max_iter: None, seed: 0 };
//! let eig = lanczos(&mut h, &opts)?;
//! let values = [eig.top[0].value, eig.bottom[0].value];
//! assert!((values[0] - 2.0).abs() < 1e-12 && (values[1] + 2.0).abs() < 1e-12);
//! assert_eq!(classify(&values, 1e-9), Kind::Saddle);
//! # Ok::<(), gradlab::Error>(())
//! ```

pub mod critical;
pub mod hutchinson;
pub mod lanczos;
pub mod linalg;
pub mod power;
pub mod sharpness;
pub mod slices;
pub mod slq;
pub mod symmetry;

use crate::surface::{Surface, SurfaceFunction};
use crate::{Error, Result};

/// A loss that can be evaluated with its gradient anywhere.
pub trait Objective {
    /// Number of parameters.
    fn dim(&self) -> usize;
    /// The loss at `x`, with its gradient written to `grad`.
    fn loss_grad(&mut self, x: &[f64], grad: &mut [f64]) -> Result<f64>;
    /// The loss at `x`.
    fn loss(&mut self, x: &[f64]) -> Result<f64> {
        let mut g = vec![0.0; self.dim()];
        self.loss_grad(x, &mut g)
    }
}

/// The Hessian of a loss at one point, seen through Hessian-vector products.
pub trait HessianOperator {
    /// Number of parameters.
    fn dim(&self) -> usize;
    /// `out = H v`.
    fn hvp(&mut self, v: &[f64], out: &mut [f64]) -> Result<()>;
    /// The loss at the point, with its gradient written to `grad`.
    fn loss_grad(&mut self, grad: &mut [f64]) -> Result<f64>;
}

/// An analytic surface (built-in or typed) as an [`Objective`].
#[derive(Debug, Clone, Copy)]
pub struct SurfaceObjective<S = Surface>(pub S);

impl<S: SurfaceFunction> Objective for SurfaceObjective<S> {
    fn dim(&self) -> usize {
        2
    }
    fn loss_grad(&mut self, x: &[f64], grad: &mut [f64]) -> Result<f64> {
        check_dim(2, x.len(), "point")?;
        grad.copy_from_slice(&self.0.gradient(x[0], x[1]));
        Ok(self.0.value(x[0], x[1]))
    }
}

/// The exact Hessian of an analytic surface (built-in or typed) at a point.
#[derive(Debug, Clone, Copy)]
pub struct SurfaceHessian<S = Surface> {
    /// The surface.
    pub surface: S,
    /// The point.
    pub at: [f64; 2],
}

impl<S: SurfaceFunction + Copy> HessianOperator for SurfaceHessian<S> {
    fn dim(&self) -> usize {
        2
    }
    fn hvp(&mut self, v: &[f64], out: &mut [f64]) -> Result<()> {
        check_dim(2, v.len(), "vector")?;
        let h = self.surface.hessian(self.at[0], self.at[1]);
        out[0] = h[0][0] * v[0] + h[0][1] * v[1];
        out[1] = h[1][0] * v[0] + h[1][1] * v[1];
        Ok(())
    }
    fn loss_grad(&mut self, grad: &mut [f64]) -> Result<f64> {
        SurfaceObjective(self.surface).loss_grad(&self.at, grad)
    }
}

/// A dense symmetric matrix as a Hessian (row-major), with a given gradient and loss.
#[derive(Debug, Clone)]
pub struct DenseHessian {
    /// Size.
    pub n: usize,
    /// Row-major entries.
    pub matrix: Vec<f64>,
    /// The gradient reported at the point (zeros by default).
    pub gradient: Vec<f64>,
    /// The loss reported at the point.
    pub loss: f64,
}

impl DenseHessian {
    /// A dense operator at a critical point (zero gradient, zero loss).
    pub fn new(n: usize, matrix: Vec<f64>) -> Result<Self> {
        if matrix.len() != n * n {
            return Err(Error::Length {
                what: format!("a {n}×{n} matrix"),
                got: matrix.len(),
                unit: "entries",
                expected: n * n,
            });
        }
        Ok(DenseHessian {
            n,
            matrix,
            gradient: vec![0.0; n],
            loss: 0.0,
        })
    }
}

impl HessianOperator for DenseHessian {
    fn dim(&self) -> usize {
        self.n
    }
    fn hvp(&mut self, v: &[f64], out: &mut [f64]) -> Result<()> {
        check_dim(self.n, v.len(), "vector")?;
        for (i, o) in out.iter_mut().enumerate() {
            *o = linalg::dot(&self.matrix[i * self.n..(i + 1) * self.n], v);
        }
        Ok(())
    }
    fn loss_grad(&mut self, grad: &mut [f64]) -> Result<f64> {
        grad.copy_from_slice(&self.gradient);
        Ok(self.loss)
    }
}

/// Hessian-vector products by central differences of an objective's gradient:
///
/// ```text
/// H v ≈ (∇L(x + h v̂) − ∇L(x − h v̂)) / 2h · ‖v‖,   v̂ = v/‖v‖,   h = u^(1/3) · max(1, ‖x‖∞)
/// ```
/// where `u` is the unit roundoff of the arithmetic the gradient is computed in (2⁻⁵³ for
/// f64, 2⁻²⁴ for f32). The truncation error is O(h²·‖∇³L‖) and the rounding error
/// O(u·‖∇L‖/h); with this h both are about u^(2/3): a relative error near 1e-10 for f64
/// gradients and 1e-5 for f32 ones on well-scaled problems (worse where the third
/// derivative is large against the second).
pub struct FiniteDifferenceHessian<O: Objective> {
    objective: O,
    at: Vec<f64>,
    unit_roundoff: f64,
    scratch: [Vec<f64>; 3],
}

impl<O: Objective> FiniteDifferenceHessian<O> {
    /// Differences `objective`'s gradient, computed with the given unit roundoff
    /// (`f64::EPSILON / 2` for f64 gradients, `f32::EPSILON as f64 / 2` for f32).
    pub fn new(objective: O, at: Vec<f64>, unit_roundoff: f64) -> Result<Self> {
        check_dim(objective.dim(), at.len(), "point")?;
        let n = at.len();
        Ok(FiniteDifferenceHessian {
            objective,
            at,
            unit_roundoff,
            scratch: [vec![0.0; n], vec![0.0; n], vec![0.0; n]],
        })
    }

    /// The step `h` used for a unit direction.
    pub fn step(&self) -> f64 {
        let scale = self.at.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        self.unit_roundoff.cbrt() * scale
    }

    /// The wrapped objective.
    pub fn objective_ref(&self) -> &O {
        &self.objective
    }

    /// The wrapped objective, mutably.
    pub fn objective_mut(&mut self) -> &mut O {
        &mut self.objective
    }
}

impl<O: Objective> HessianOperator for FiniteDifferenceHessian<O> {
    fn dim(&self) -> usize {
        self.at.len()
    }
    fn hvp(&mut self, v: &[f64], out: &mut [f64]) -> Result<()> {
        check_dim(self.at.len(), v.len(), "vector")?;
        let vn = linalg::norm(v);
        if vn == 0.0 {
            out.iter_mut().for_each(|o| *o = 0.0);
            return Ok(());
        }
        let h = self.step();
        let [x, g_plus, g_minus] = &mut self.scratch;
        for (xi, (a, vi)) in x.iter_mut().zip(self.at.iter().zip(v)) {
            *xi = a + h * vi / vn;
        }
        self.objective.loss_grad(x, g_plus)?;
        for (xi, (a, vi)) in x.iter_mut().zip(self.at.iter().zip(v)) {
            *xi = a - h * vi / vn;
        }
        self.objective.loss_grad(x, g_minus)?;
        for (o, (p, m)) in out.iter_mut().zip(g_plus.iter().zip(g_minus.iter())) {
            *o = (p - m) / (2.0 * h) * vn;
        }
        Ok(())
    }
    fn loss_grad(&mut self, grad: &mut [f64]) -> Result<f64> {
        let at = self.at.clone();
        self.objective.loss_grad(&at, grad)
    }
}

fn check_dim(expected: usize, got: usize, what: &str) -> Result<()> {
    if expected != got {
        return Err(Error::Length {
            what: format!("{what} (the operator's dimension)"),
            got,
            unit: "entries",
            expected,
        });
    }
    Ok(())
}

pub use crate::rng::Rng;

/// Unit vector of independent normals.
pub fn random_unit(n: usize, rng: &mut Rng) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let s = linalg::norm(&v);
    v.iter_mut().for_each(|x| *x /= s);
    v
}
