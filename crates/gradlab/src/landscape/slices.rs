//! Slices of the loss landscape (Li et al. 2018; Goodfellow et al. 2015; Keskar et al. 2017):
//! 1-D interpolation between two solutions, 1-D and 2-D slices along random
//! filter-normalised directions, and the plane of a trajectory's first two principal
//! directions with the trajectory projected onto it.

use super::linalg::{dot, norm, symmetric_eigen};
use super::{Objective, Rng};
use crate::optim::Layout;
use crate::{Error, Result};
use std::fmt::Write;

/// `L((1 − α)a + αb)` for each α.
pub fn interpolate(
    objective: &mut dyn Objective,
    a: &[f64],
    b: &[f64],
    alphas: &[f64],
) -> Result<Vec<f64>> {
    let mut x = vec![0.0; a.len()];
    alphas
        .iter()
        .map(|&t| {
            for ((xi, ai), bi) in x.iter_mut().zip(a).zip(b) {
                *xi = (1.0 - t) * ai + t * bi;
            }
            objective.loss(&x)
        })
        .collect()
}

/// A random Gaussian direction, filter-normalised against `params` (Li et al. 2018): for a
/// tensor of two or more dimensions, each filter (row of a weight matrix, output channel of
/// a convolution) is scaled to the norm of the same filter of the parameters; tensors of one
/// dimension or less (biases, norms) are zeroed.
pub fn filter_normalized_direction(
    layout: &Layout,
    params: &[f64],
    rng: &mut Rng,
) -> Result<Vec<f64>> {
    if params.len() != layout.total() {
        return Err(Error::Length {
            what: "filter normalisation".into(),
            got: params.len(),
            unit: "parameters",
            expected: layout.total(),
        });
    }
    let mut d = vec![0.0; params.len()];
    for seg in layout.segments() {
        if seg.shape.len() < 2 || seg.len == 0 {
            continue;
        }
        let rows = seg.shape[0];
        let per_row = seg.len / rows;
        for r in 0..rows {
            let range = seg.offset + r * per_row..seg.offset + (r + 1) * per_row;
            let dir = &mut d[range.clone()];
            dir.iter_mut().for_each(|x| *x = rng.normal());
            let scale = norm(&params[range]) / (norm(dir) + 1e-10);
            dir.iter_mut().for_each(|x| *x *= scale);
        }
    }
    Ok(d)
}

/// A 2-D grid of losses: `values[j][i]` at `(xs[i], ys[j])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Coordinates along the first direction.
    pub xs: Vec<f64>,
    /// Coordinates along the second direction.
    pub ys: Vec<f64>,
    /// Losses, row by row (one row per y).
    pub values: Vec<Vec<f64>>,
}

impl Grid {
    /// CSV with columns `x,y,loss`.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("x,y,loss\n");
        for (j, y) in self.ys.iter().enumerate() {
            for (i, x) in self.xs.iter().enumerate() {
                let _ = writeln!(s, "{x:?},{y:?},{:?}", self.values[j][i]);
            }
        }
        s
    }
}

/// `L(center + α d)` for each α.
pub fn slice_1d(
    objective: &mut dyn Objective,
    center: &[f64],
    d: &[f64],
    alphas: &[f64],
) -> Result<Vec<f64>> {
    let mut x = vec![0.0; center.len()];
    alphas
        .iter()
        .map(|&a| {
            for ((xi, c), di) in x.iter_mut().zip(center).zip(d) {
                *xi = c + a * di;
            }
            objective.loss(&x)
        })
        .collect()
}

/// `L(center + α d1 + β d2)` on a grid.
pub fn slice_2d(
    objective: &mut dyn Objective,
    center: &[f64],
    d1: &[f64],
    d2: &[f64],
    xs: &[f64],
    ys: &[f64],
) -> Result<Grid> {
    let mut x = vec![0.0; center.len()];
    let mut values = Vec::with_capacity(ys.len());
    for &b in ys {
        let mut row = Vec::with_capacity(xs.len());
        for &a in xs {
            for (((xi, c), u), v) in x.iter_mut().zip(center).zip(d1).zip(d2) {
                *xi = c + a * u + b * v;
            }
            row.push(objective.loss(&x)?);
        }
        values.push(row);
    }
    Ok(Grid {
        xs: xs.to_vec(),
        ys: ys.to_vec(),
        values,
    })
}

/// The PCA plane of a trajectory.
#[derive(Debug, Clone, PartialEq)]
pub struct PcaPlane {
    /// The two unit principal directions.
    pub directions: [Vec<f64>; 2],
    /// Fraction of the variance each explains.
    pub explained: [f64; 2],
    /// Each trajectory point projected onto the plane (relative to the last point).
    pub projected: Vec<[f64; 2]>,
}

/// Principal directions of `θ_i − θ_final` over a saved trajectory (loss-landscape's
/// `setup_PCA_directions`, uncentred as there), with every point projected.
pub fn pca_plane(trajectory: &[Vec<f64>]) -> Result<PcaPlane> {
    let m = trajectory.len();
    if m < 3 {
        return Err(Error::OutOfRange {
            key: "the trajectory points of a PCA plane".into(),
            value: m as f64,
            range: "at least 3".into(),
        });
    }
    let n = trajectory[0].len();
    if let Some((i, t)) = trajectory.iter().enumerate().find(|(_, t)| t.len() != n) {
        return Err(Error::Length {
            what: format!("trajectory point {i} (point 0 sets the length)"),
            got: t.len(),
            unit: "entries",
            expected: n,
        });
    }
    let last = &trajectory[m - 1];
    let rows: Vec<Vec<f64>> = trajectory[..m - 1]
        .iter()
        .map(|t| t.iter().zip(last).map(|(a, b)| a - b).collect())
        .collect();
    let k = rows.len();
    let mut gram = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let g = dot(&rows[i], &rows[j]);
            gram[i * k + j] = g;
            gram[j * k + i] = g;
        }
    }
    let (values, vectors) = symmetric_eigen(&gram, k);
    let total: f64 = values
        .iter()
        .map(|v| v.max(0.0))
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let direction = |idx: usize| -> Vec<f64> {
        let mut d = vec![0.0; n];
        for (row, c) in rows.iter().zip(&vectors[idx]) {
            for (di, ri) in d.iter_mut().zip(row) {
                *di += c * ri;
            }
        }
        let s = norm(&d).max(f64::MIN_POSITIVE);
        d.iter_mut().for_each(|x| *x /= s);
        d
    };
    let d1 = direction(k - 1);
    let d2 = direction(k - 2);
    let projected = trajectory
        .iter()
        .map(|t| {
            let rel: Vec<f64> = t.iter().zip(last).map(|(a, b)| a - b).collect();
            [dot(&rel, &d1), dot(&rel, &d2)]
        })
        .collect();
    Ok(PcaPlane {
        explained: [
            values[k - 1].max(0.0) / total,
            values[k - 2].max(0.0) / total,
        ],
        directions: [d1, d2],
        projected,
    })
}
