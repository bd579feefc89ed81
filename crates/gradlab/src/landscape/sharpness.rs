//! Sharpness of a minimum: Keskar et al. 2017's ε-sharpness and the top Hessian eigenvalue.
//!
//! ```text
//! C_ε = { z : |z_i| ≤ ε (|x_i| + 1) }
//! sharpness = 100 · (max_{z ∈ C_ε} L(x + z) − L(x)) / (1 + L(x))
//! ```
//! The paper maximises with 10 iterations of L-BFGS-B; here the maximum is found by
//! projected sign-gradient ascent (the steepest ascent for a box), starting with a jump to
//! the corner the gradient points to (a random corner where the gradient is zero) and
//! halving the step when a move does not raise the loss. The result is a lower bound on the true maximum, like the paper's.

use super::lanczos::{lanczos, LanczosOptions};
use super::{HessianOperator, Objective};
use crate::Result;

/// An ε-sharpness measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Sharpness {
    /// ε.
    pub eps: f64,
    /// The sharpness (percent).
    pub value: f64,
    /// L(x).
    pub loss: f64,
    /// The largest loss found in the box.
    pub max_loss: f64,
    /// Loss-and-gradient evaluations used.
    pub evaluations: usize,
}

/// ε-sharpness of `objective` at `x` with `iterations` ascent steps.
pub fn epsilon_sharpness(
    objective: &mut dyn Objective,
    x: &[f64],
    eps: f64,
    iterations: usize,
) -> Result<Sharpness> {
    let n = x.len();
    let radius: Vec<f64> = x.iter().map(|xi| eps * (xi.abs() + 1.0)).collect();
    let mut grad = vec![0.0; n];
    let loss = objective.loss_grad(x, &mut grad)?;
    let mut z = vec![0.0; n];
    let mut best = loss;
    let mut alpha = 1.0;
    let mut evaluations = 1;
    let mut trial = vec![0.0; n];
    let mut point = vec![0.0; n];
    let mut trial_grad = vec![0.0; n];
    let mut rng = super::Rng::new(0);
    for _ in 0..iterations {
        for i in 0..n {
            // Where the gradient vanishes (at a minimum) any corner is a first guess.
            let dir = if grad[i] == 0.0 {
                rng.rademacher()
            } else {
                grad[i].signum()
            };
            let step = alpha * radius[i] * dir;
            trial[i] = (z[i] + step).clamp(-radius[i], radius[i]);
            point[i] = x[i] + trial[i];
        }
        let value = objective.loss_grad(&point, &mut trial_grad)?;
        evaluations += 1;
        if value > best {
            best = value;
            z.copy_from_slice(&trial);
            grad.copy_from_slice(&trial_grad);
        } else {
            alpha *= 0.5;
        }
    }
    Ok(Sharpness {
        eps,
        value: 100.0 * (best - loss) / (1.0 + loss),
        loss,
        max_loss: best,
        evaluations,
    })
}

/// The largest Hessian eigenvalue (Lanczos, tolerance 1e-4).
pub fn top_eigenvalue(op: &mut dyn HessianOperator, seed: u64) -> Result<f64> {
    let max_iter = Some(op.dim().min(100));
    let r = lanczos(
        op,
        &LanczosOptions {
            top: 1,
            bottom: 0,
            tol: 1e-4,
            max_iter,
            seed,
        },
    )?;
    Ok(r.top.first().map_or(0.0, |p| p.value))
}
