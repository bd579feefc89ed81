//! Matrix products on the `gemm` crate: a safe strided-view wrapper, and `matmul` as a candle
//! op whose backward is again made of `matmul`s (so it can be differentiated any number of
//! times).

use super::{dense, dispatch, Float};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
pub(crate) use gradlab::matmul::{gemm, gemm_serial, MatRef};

/// `op(a) · op(b)` of 2-D tensors, `op` a transpose where the flag says so.
#[derive(Clone, Copy)]
pub(crate) struct MatMul {
    pub(crate) ta: bool,
    pub(crate) tb: bool,
}

impl MatMul {
    fn dims(&self, la: &Layout, lb: &Layout) -> Result<(usize, usize, usize, usize, usize)> {
        let (ar, ac) = la.shape().dims2()?;
        let (br, bc) = lb.shape().dims2()?;
        let (m, k) = if self.ta { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if self.tb { (bc, br) } else { (br, bc) };
        if k != k2 {
            candle_core::bail!(
                "matmul: shapes {:?} and {:?} do not multiply (transposed: {}, {})",
                la.shape().dims(),
                lb.shape().dims(),
                self.ta,
                self.tb
            );
        }
        Ok((m, k, n, ac, bc))
    }

    fn run<T: Float>(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k, n, ac, bc) = self.dims(la, lb)?;
        let a = T::values(sa, la, "matmul")?;
        let b = T::values(sb, lb, "matmul")?;
        let mut a = MatRef::new(a, if self.ta { k } else { m }, ac);
        let mut b = MatRef::new(b, if self.tb { n } else { k }, bc);
        if self.ta {
            a = a.t();
        }
        if self.tb {
            b = b.t();
        }
        let mut out = vec![T::zero(); m * n];
        gemm(&mut out, n, a, b, false);
        Ok((T::storage(out), Shape::from((m, n))))
    }
}

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "gradlab-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, "matmul", |T| self.run::<T>(s1, l1, s2, l2))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = dense(grad)?;
        // C = A'B' with A' = op(A), B' = op(B): dA' = dC B'ᵀ, dB' = A'ᵀ dC.
        let da = if a.track_op() {
            Some(if self.ta {
                mm(b, &g, self.tb, true)? // dA = B' dCᵀ
            } else {
                mm(&g, b, false, !self.tb)? // dA = dC B'ᵀ
            })
        } else {
            None
        };
        let db = if b.track_op() {
            Some(if self.tb {
                mm(&g, a, true, self.ta)? // dB = dCᵀ A'
            } else {
                mm(a, &g, !self.ta, false)? // dB = A'ᵀ dC
            })
        } else {
            None
        };
        Ok((da, db))
    }
}

fn mm(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
    dense(a)?.apply_op2(&dense(b)?, MatMul { ta, tb })
}

/// `a · b` of 2-D f32/f64 tensors on gemm, differentiable any number of times (candle's
/// `matmul` is differentiable once it is in the graph too, but computes every gradient).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    mm(a, b, false, false)
}

pub(crate) fn matmul_t(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
    mm(a, b, ta, tb)
}
