//! Critical points: is the gradient small because of a minimum, a maximum or a saddle?
//!
//! At a critical point (‖∇L‖ ≤ `grad_tol`) the second-order test reads the Hessian's
//! eigenvalues: all positive, a local minimum; all negative, a local maximum; both signs, a
//! saddle. An eigenvalue within `zero_tol·max|λ|` of zero (or a spectrum that is zero
//! altogether) leaves the test undecided unless both signs are present: `degenerate`.
//!
//! The *minimum ratio* (Hung-yi Lee's lecture) is the fraction of positive eigenvalues:
//! exact when every eigenvalue is computed (small dimension), from the SLQ density otherwise.
//!
//! At a saddle, moving along the eigenvector u of the most negative eigenvalue λ lowers the
//! loss: `L(x + t u) ≈ L(x) + t gᵀu + ½ λ t²`. The sign of u is chosen so that `gᵀu ≤ 0`
//! (and, at an exact critical point, so that its largest component is positive); the step
//! length starts at `max(1, ‖x‖∞)` and is halved until the loss really decreases.

use super::lanczos::{lanczos, LanczosOptions};
use super::linalg::{dot, symmetric_eigen};
use super::slq::{slq, SlqOptions};
use super::{HessianOperator, Objective};
use crate::Result;
use std::fmt;

/// The kind of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// All eigenvalues positive.
    Minimum,
    /// All eigenvalues negative.
    Maximum,
    /// Eigenvalues of both signs.
    Saddle,
    /// A zero eigenvalue and no sign change: the second-order test cannot decide.
    Degenerate,
    /// The gradient is not small.
    NotCritical,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Minimum => "minimum",
            Kind::Maximum => "maximum",
            Kind::Saddle => "saddle",
            Kind::Degenerate => "degenerate",
            Kind::NotCritical => "not-critical",
        })
    }
}

/// Settings of [`analyze`].
#[derive(Debug, Clone, PartialEq)]
pub struct CriticalOptions {
    /// A point is critical when ‖∇L‖ ≤ this.
    pub grad_tol: f64,
    /// Eigenvalues within `zero_tol·max|λ|` of zero count as zero.
    pub zero_tol: f64,
    /// Up to this dimension every eigenvalue is computed (from the dense Hessian).
    pub exact_up_to: usize,
    /// Extreme eigenvalues reported at each end in larger dimension.
    pub extremes: usize,
    /// Seed for Lanczos and SLQ.
    pub seed: u64,
}

impl Default for CriticalOptions {
    fn default() -> Self {
        CriticalOptions {
            grad_tol: 1e-6,
            zero_tol: 1e-6,
            exact_up_to: 64,
            extremes: 5,
            seed: 0,
        }
    }
}

/// A way out of a saddle.
#[derive(Debug, Clone, PartialEq)]
pub struct Escape {
    /// The most negative eigenvalue.
    pub eigenvalue: f64,
    /// Its unit eigenvector, oriented not to point uphill.
    pub direction: Vec<f64>,
    /// The step length taken along it (when an objective was given).
    pub step: Option<f64>,
    /// The loss after that step.
    pub loss_after: Option<f64>,
}

/// The analysis of one point.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Loss at the point.
    pub loss: f64,
    /// ‖∇L‖.
    pub gradient_norm: f64,
    /// Eigenvalues, ascending: all of them in small dimension, else the extremes.
    pub eigenvalues: Vec<f64>,
    /// Whether `eigenvalues` is the whole spectrum.
    pub complete: bool,
    /// The kind.
    pub kind: Kind,
    /// Fraction of positive eigenvalues.
    pub minimum_ratio: f64,
    /// For a saddle, the escape direction and step.
    pub escape: Option<Escape>,
    /// Hessian-vector products used.
    pub products: usize,
}

/// Classifies eigenvalues (ascending) of a critical point.
pub fn classify(eigenvalues: &[f64], zero_tol: f64) -> Kind {
    let scale = eigenvalues.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let zero = |x: f64| scale == 0.0 || x.abs() <= zero_tol * scale;
    let pos = eigenvalues.iter().any(|&x| x > 0.0 && !zero(x));
    let neg = eigenvalues.iter().any(|&x| x < 0.0 && !zero(x));
    let any_zero = eigenvalues.iter().any(|&x| zero(x));
    match (pos, neg, any_zero) {
        (true, true, _) => Kind::Saddle,
        (_, _, true) => Kind::Degenerate,
        (true, false, false) => Kind::Minimum,
        (false, true, false) => Kind::Maximum,
        (false, false, false) => Kind::Degenerate,
    }
}

/// Analyses the point `at` of `op`; with an `objective`, also takes the escape step.
pub fn analyze(
    op: &mut dyn HessianOperator,
    objective: Option<&mut dyn Objective>,
    at: &[f64],
    opts: &CriticalOptions,
) -> Result<Analysis> {
    let n = op.dim();
    let mut grad = vec![0.0; n];
    let loss = op.loss_grad(&mut grad)?;
    let gradient_norm = dot(&grad, &grad).sqrt();
    let mut products = 0;
    let (eigenvalues, complete, lowest, minimum_ratio) = if n <= opts.exact_up_to {
        let mut h = vec![0.0; n * n];
        let mut e = vec![0.0; n];
        let mut col = vec![0.0; n];
        for j in 0..n {
            e.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = if i == j { 1.0 } else { 0.0 });
            op.hvp(&e, &mut col)?;
            products += 1;
            for i in 0..n {
                h[i * n + j] = col[i];
            }
        }
        // Symmetrise what finite differences leave slightly asymmetric.
        for i in 0..n {
            for j in 0..i {
                let s = 0.5 * (h[i * n + j] + h[j * n + i]);
                h[i * n + j] = s;
                h[j * n + i] = s;
            }
        }
        let (values, vectors) = symmetric_eigen(&h, n);
        let scale = values.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let positive = values
            .iter()
            .filter(|&&x| x > opts.zero_tol * scale && scale > 0.0)
            .count();
        let ratio = positive as f64 / n as f64;
        (values.clone(), true, (values[0], vectors[0].clone()), ratio)
    } else {
        let k = opts.extremes;
        let res = lanczos(
            op,
            &LanczosOptions {
                top: k,
                bottom: k,
                tol: 1e-6,
                max_iter: Some(n.min(300)),
                seed: opts.seed,
            },
        )?;
        products += res.products;
        let density = slq(
            op,
            &SlqOptions {
                seed: opts.seed,
                ..SlqOptions::default()
            },
        )?;
        products += density.products;
        let mut values: Vec<f64> = res
            .bottom
            .iter()
            .chain(res.top.iter())
            .map(|p| p.value)
            .collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let lowest = res
            .bottom
            .first()
            .map(|p| (p.value, p.vector.clone()))
            .unwrap_or((0.0, vec![0.0; n]));
        let scale = values.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        (
            values,
            false,
            lowest,
            density.fraction_above(opts.zero_tol * scale),
        )
    };
    let kind = if gradient_norm > opts.grad_tol {
        Kind::NotCritical
    } else {
        classify(&eigenvalues, opts.zero_tol)
    };
    let escape = if kind == Kind::Saddle {
        Some(escape(lowest.0, lowest.1, &grad, loss, objective, at)?)
    } else {
        None
    };
    Ok(Analysis {
        loss,
        gradient_norm,
        eigenvalues,
        complete,
        kind,
        minimum_ratio,
        escape,
        products,
    })
}

fn escape(
    eigenvalue: f64,
    mut u: Vec<f64>,
    grad: &[f64],
    loss: f64,
    objective: Option<&mut dyn Objective>,
    at: &[f64],
) -> Result<Escape> {
    let gu = dot(grad, &u);
    let flip = if gu != 0.0 {
        gu > 0.0
    } else {
        let largest = u
            .iter()
            .copied()
            .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        largest < 0.0
    };
    if flip {
        u.iter_mut().for_each(|x| *x = -*x);
    }
    let (mut step, mut loss_after) = (None, None);
    if let Some(obj) = objective {
        let mut t = at.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let mut x = vec![0.0; at.len()];
        for _ in 0..60 {
            for ((xi, a), ui) in x.iter_mut().zip(at).zip(&u) {
                *xi = a + t * ui;
            }
            let l = obj.loss(&x)?;
            if l < loss {
                step = Some(t);
                loss_after = Some(l);
                break;
            }
            t *= 0.5;
        }
    }
    Ok(Escape {
        eigenvalue,
        direction: u,
        step,
        loss_after,
    })
}
