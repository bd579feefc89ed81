//! Small dense symmetric eigensolvers for what Lanczos and the critical-point analysis need:
//! the tridiagonal QL algorithm with implicit shifts, and cyclic Jacobi for small dense
//! matrices. Both return eigenvalues in ascending order with unit eigenvectors.

/// Eigen-decomposition of the symmetric tridiagonal matrix with diagonal `d` and
/// off-diagonal `e` (`e[i]` couples rows i and i+1). Returns `(values, vectors)` where
/// `vectors[j]` is the eigenvector (in the tridiagonal basis) of `values[j]`.
pub fn tridiagonal_eigen(d: &[f64], e: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = d.len();
    let mut d = d.to_vec();
    let mut e: Vec<f64> = e
        .iter()
        .copied()
        .chain(std::iter::once(0.0))
        .take(n)
        .collect();
    e.resize(n, 0.0);
    // z[k][i]: component k of eigenvector i (column-major in i).
    let mut z = vec![vec![0.0; n]; n];
    for (i, row) in z.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 60 {
                break;
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + if g >= 0.0 { r.abs() } else { -r.abs() });
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut i = m;
            let mut underflow = false;
            while i > l {
                i -= 1;
                let mut f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                for row in z.iter_mut() {
                    f = row[i + 1];
                    row[i + 1] = s * row[i] + c * f;
                    row[i] = c * row[i] - s * f;
                }
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    sort_pairs(d, |j| z.iter().map(|row| row[j]).collect())
}

/// Eigen-decomposition of a small dense symmetric matrix (row-major `n×n`) by cyclic Jacobi
/// rotations. Returns ascending eigenvalues and their unit eigenvectors.
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(matrix.len(), n * n, "symmetric_eigen: matrix is not n×n");
    let mut a = matrix.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let values: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    sort_pairs(values, |j| (0..n).map(|k| v[k * n + j]).collect())
}

fn sort_pairs(values: Vec<f64>, vector: impl Fn(usize) -> Vec<f64>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let sorted = order.iter().map(|&i| values[i]).collect();
    let vectors = order.iter().map(|&i| vector(i)).collect();
    (sorted, vectors)
}

/// Dot product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm.
pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `y += a·x`.
pub fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tridiagonal_and_jacobi_agree() {
        let d = [4.0, 1.0, -2.0, 3.0, 0.5];
        let e = [1.0, 0.5, -0.7, 2.0];
        let (vals, vecs) = tridiagonal_eigen(&d, &e);
        let n = d.len();
        let mut dense = vec![0.0; n * n];
        for i in 0..n {
            dense[i * n + i] = d[i];
            if i + 1 < n {
                dense[i * n + i + 1] = e[i];
                dense[(i + 1) * n + i] = e[i];
            }
        }
        let (jvals, _) = symmetric_eigen(&dense, n);
        for (a, b) in vals.iter().zip(&jvals) {
            assert!((a - b).abs() < 1e-12, "{vals:?} vs {jvals:?}");
        }
        // A v = λ v
        for (lambda, v) in vals.iter().zip(&vecs) {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| dense[i * n + j] * v[j]).sum();
                assert!((av - lambda * v[i]).abs() < 1e-12);
            }
            assert!((norm(v) - 1.0).abs() < 1e-12);
        }
    }
}
