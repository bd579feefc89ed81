//! The Newton–Schulz iteration that orthogonalises Muon's update: quintic, on the wide
//! orientation, with every product in bfloat16 inputs and f32 accumulation by default.

use super::MuonConfig;
use crate::matmul::{gemm, MatRef};
use crate::optim::bf16::{from_bf16, to_bf16_nearest};

/// Rounds to bfloat16 (to nearest, ties to even) and back.
#[inline(always)]
fn bf16(x: f32) -> f32 {
    from_bf16(to_bf16_nearest(x))
}

/// The Newton–Schulz iteration's buffers, sized for the largest matrix.
#[derive(Default)]
pub(super) struct Scratch {
    x: Vec<f32>,
    product: Vec<f32>,
    gram: Vec<f32>,
    gram2: Vec<f32>,
}

/// Orthogonalises the `rows × cols` matrix `u` (row-major) into `out` (same shape) with
/// `ns_steps` Newton–Schulz iterations, working on the wide orientation.
pub(super) fn newton_schulz(
    u: &[f32],
    rows: usize,
    cols: usize,
    cfg: &MuonConfig,
    s: &mut Scratch,
    out: &mut [f32],
) {
    let round = |x: f32| if cfg.ns_bf16 { bf16(x) } else { x };
    let transpose = rows > cols;
    let (r, c) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    s.x.resize(r * c, 0.0);
    s.product.resize(r * c, 0.0);
    s.gram.resize(r * r, 0.0);
    s.gram2.resize(r * r, 0.0);
    for i in 0..rows {
        for j in 0..cols {
            let v = round(u[i * cols + j]);
            if transpose {
                s.x[j * c + i] = v;
            } else {
                s.x[i * c + j] = v;
            }
        }
    }
    let sum_sq: f64 = s.x.iter().map(|&v| v as f64 * v as f64).sum();
    let norm = round((sum_sq as f32).sqrt()).max(round(cfg.eps as f32));
    for v in s.x.iter_mut() {
        *v = round(*v / norm);
    }
    let (a, b, cc) = (
        cfg.ns_coefficients.0 as f32,
        cfg.ns_coefficients.1 as f32,
        cfg.ns_coefficients.2 as f32,
    );
    for _ in 0..cfg.ns_steps {
        let x = MatRef::new(&s.x, r, c);
        gemm(&mut s.gram, r, x, x.t(), false);
        for g in s.gram.iter_mut() {
            *g = round(*g);
        }
        let gram = MatRef::new(&s.gram, r, r);
        gemm(&mut s.gram2, r, gram, gram, false);
        for (g2, g) in s.gram2.iter_mut().zip(&s.gram) {
            *g2 = round(b * *g + cc * *g2);
        }
        gemm(&mut s.product, c, MatRef::new(&s.gram2, r, r), x, false);
        for (xv, p) in s.x.iter_mut().zip(&s.product) {
            *xv = round(a * *xv + *p);
        }
    }
    for i in 0..rows {
        for j in 0..cols {
            out[i * cols + j] = if transpose {
                s.x[j * c + i]
            } else {
                s.x[i * c + j]
            };
        }
    }
}
