//! Mean cross-entropy of logits against class labels, with the log-softmax fused into it
//! (PyTorch's `F.cross_entropy`): one pass forward, and a backward `(softmax − onehot) · g / N`
//! in one pass. The backward is an op whose own derivative (the softmax Jacobian) is built
//! from candle's differentiable ops, so Hessian-vector products go through the loss.

use super::{dense, dispatch, labels, Float};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};

/// (logits (N, C), labels (N) u32) → mean over rows of logsumexp(row) − row[label].
struct CrossEntropy;

/// (logits, labels, g) → (softmax(logits) − onehot(labels)) · g / N.
struct CrossEntropyGrad;

fn sizes(ll: &Layout, ly: &Layout) -> Result<(usize, usize)> {
    let (n, c) = ll.shape().dims2()?;
    if ly.shape().dims() != [n] {
        candle_core::bail!(
            "cross entropy: {n} rows of logits but labels of shape {:?}",
            ly.shape().dims()
        );
    }
    if n == 0 || c == 0 {
        candle_core::bail!("cross entropy: needs at least one row and one class, got {n}×{c}");
    }
    Ok((n, c))
}

fn label(y: u32, c: usize) -> Result<usize> {
    let y = y as usize;
    if y >= c {
        candle_core::bail!("cross entropy: label {y} is not a class of 0..{c}");
    }
    Ok(y)
}

/// log Σ exp(row), computed from the row's maximum.
fn log_sum_exp<T: Float>(row: &[T]) -> T {
    let max = row
        .iter()
        .copied()
        .fold(T::neg_infinity(), num_traits::Float::max);
    if !max.is_finite() {
        return max;
    }
    let mut sum = T::zero();
    for &v in row {
        sum += (v - max).exp();
    }
    max + sum.ln()
}

impl CrossEntropy {
    fn run<T: Float>(
        &self,
        (sl, ll): (&CpuStorage, &Layout),
        (sy, ly): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c) = sizes(ll, ly)?;
        let z = T::values(sl, ll, "cross entropy")?;
        let y = labels(sy, ly, "cross entropy")?;
        let mut total = 0f64;
        for (row, &yi) in z.chunks_exact(c).zip(y) {
            let loss = log_sum_exp(row) - row[label(yi, c)?];
            total += loss.to_f64();
        }
        let mean = T::from_f64(total / n as f64);
        Ok((T::storage(vec![mean]), Shape::from(())))
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "gradlab-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, "cross entropy", |T| self.run::<T>((s1, l1), (s2, l2)))
    }

    fn bwd(
        &self,
        z: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dz = dense(z)?.apply_op3(y, &dense(grad)?, CrossEntropyGrad)?;
        Ok((Some(dz), None))
    }
}

impl CrossEntropyGrad {
    fn run<T: Float>(
        &self,
        (sl, ll): (&CpuStorage, &Layout),
        (sy, ly): (&CpuStorage, &Layout),
        (sg, lg): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c) = sizes(ll, ly)?;
        let z = T::values(sl, ll, "cross entropy backward")?;
        let y = labels(sy, ly, "cross entropy backward")?;
        let g = T::values(sg, lg, "cross entropy backward")?;
        let scale = g[0] / T::from_f64(n as f64);
        let mut out = vec![T::zero(); n * c];
        for ((row, &yi), o) in z.chunks_exact(c).zip(y).zip(out.chunks_exact_mut(c)) {
            let lse = log_sum_exp(row);
            for (o, &v) in o.iter_mut().zip(row) {
                *o = (v - lse).exp() * scale;
            }
            o[label(yi, c)?] -= scale;
        }
        Ok((T::storage(out), ll.shape().clone()))
    }
}

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "gradlab-cross-entropy-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, "cross entropy backward", |T| self.run::<T>(
            (s1, l1),
            (s2, l2),
            (s3, l3)
        ))
    }

    fn bwd(
        &self,
        z: &Tensor,
        y: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // out = (P − Y)·s with P = softmax(z), s = g/N. For an incoming D:
        //   d/dz = s·(P⊙D − P·Σ_row(P⊙D)),  d/dg = Σ((P − Y)⊙D) / N.
        let n = z.dim(0)? as f64;
        let shifted = z
            .broadcast_sub(&z.max_keepdim(D::Minus1)?.detach())?
            .exp()?;
        let p = shifted.broadcast_div(&shifted.sum_keepdim(D::Minus1)?)?;
        let pd = (&p * grad)?;
        let s = (g / n)?;
        let dz = (&pd - p.broadcast_mul(&pd.sum_keepdim(D::Minus1)?)?)?.broadcast_mul(&s)?;
        let dg = if g.track_op() {
            let onehot = candle_nn::encoding::one_hot(y.clone(), z.dim(1)?, 1f32, 0f32)?
                .to_dtype(z.dtype())?;
            Some(((p - onehot)? * grad)?.sum_all()?.affine(1.0 / n, 0.0)?)
        } else {
            None
        };
        Ok((z.track_op().then_some(dz), None, dg))
    }
}

/// Mean cross-entropy of `logits` (N, C) against `labels` (N, u32): PyTorch's
/// `F.cross_entropy` with mean reduction. A label outside `0..C` is an error.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    dense(logits)?.apply_op2(&dense(labels)?, CrossEntropy)
}
