//! Every critical point of a surface inside a box: Newton's method on ∇f = 0 from a grid of
//! starts, duplicates merged, each point classified by its exact Hessian.

use super::Surface;
use crate::landscape::critical::{analyze, Analysis, CriticalOptions};
use crate::landscape::{SurfaceHessian, SurfaceObjective};
use crate::Result;

/// A critical point and its analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticalPoint {
    /// Where.
    pub at: [f64; 2],
    /// Its analysis (kind, eigenvalues, escape direction).
    pub analysis: Analysis,
}

/// Finds the critical points of `surface` in `[xmin, xmax] × [ymin, ymax]`.
pub fn scan(
    surface: Surface,
    bounds: [f64; 4],
    opts: &CriticalOptions,
) -> Result<Vec<CriticalPoint>> {
    let [x0, x1, y0, y1] = bounds;
    let grid = 24;
    let scale = (x1 - x0).abs().max((y1 - y0).abs()).max(1e-12);
    let mut found: Vec<[f64; 2]> = Vec::new();
    for i in 0..=grid {
        for j in 0..=grid {
            let start = [
                x0 + (x1 - x0) * i as f64 / grid as f64,
                y0 + (y1 - y0) * j as f64 / grid as f64,
            ];
            let Some(p) = newton(surface, start) else {
                continue;
            };
            let inside =
                p[0] >= x0 - 1e-9 && p[0] <= x1 + 1e-9 && p[1] >= y0 - 1e-9 && p[1] <= y1 + 1e-9;
            if inside
                && !found
                    .iter()
                    .any(|q| (q[0] - p[0]).hypot(q[1] - p[1]) < 1e-6 * scale)
            {
                found.push(p);
            }
        }
    }
    found.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    found
        .into_iter()
        .map(|at| {
            let mut op = SurfaceHessian { surface, at };
            let mut obj = SurfaceObjective(surface);
            let analysis = analyze(&mut op, Some(&mut obj), &at, opts)?;
            Ok(CriticalPoint { at, analysis })
        })
        .collect()
}

/// Newton's method on ∇f = 0; the point if it converged to a stationary point.
fn newton(surface: Surface, start: [f64; 2]) -> Option<[f64; 2]> {
    let mut p = start;
    for _ in 0..100 {
        let g = surface.gradient(p[0], p[1]);
        let h = surface.hessian(p[0], p[1]);
        let det = h[0][0] * h[1][1] - h[0][1] * h[1][0];
        if det.abs() < 1e-14 {
            break;
        }
        let dx = (h[1][1] * g[0] - h[0][1] * g[1]) / det;
        let dy = (-h[1][0] * g[0] + h[0][0] * g[1]) / det;
        p = [p[0] - dx, p[1] - dy];
        if !(p[0].is_finite() && p[1].is_finite()) {
            return None;
        }
        if dx.hypot(dy) < 1e-13 * (1.0 + p[0].abs() + p[1].abs()) {
            break;
        }
    }
    let g = surface.gradient(p[0], p[1]);
    let scale = 1.0 + surface.value(p[0], p[1]).abs();
    (g[0].hypot(g[1]) <= 1e-8 * scale).then_some(p)
}
