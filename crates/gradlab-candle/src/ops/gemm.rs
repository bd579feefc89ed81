//! Matrix products on the `gemm` crate: a safe strided-view wrapper, and `matmul` as a candle
//! op whose backward is again made of `matmul`s (so it can be differentiated any number of
//! times).

use super::{dense, dispatch, for_each_chunk, Float};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// A matrix inside a slice: element (i, j) at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows × cols` matrix.
    pub(crate) fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (same memory).
    pub(crate) fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Rows `start..start + n`.
    fn rows_of(self, start: usize, n: usize) -> Self {
        MatRef {
            data: if n == 0 {
                &self.data[..0]
            } else {
                &self.data[start * self.rs..]
            },
            rows: n,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Products at least this large (multiply-adds) are split by rows across the pool.
const SPLIT_WORK: usize = 1 << 21;

/// `dst = a · b` (or `dst += a · b` when `accumulate`), `dst` row-major with row stride
/// `dst_rs`. Large products are split by rows over gradlab's pool.
pub(crate) fn gemm<T: Float>(
    dst: &mut [T],
    dst_rs: usize,
    a: MatRef<T>,
    b: MatRef<T>,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let threads = gradlab::pool::current_threads();
    if m * n * k >= SPLIT_WORK && m >= 2 * threads && threads > 1 && dst_rs == n {
        let rows = m.div_ceil(threads);
        for_each_chunk(&mut dst[..m * n], rows * n, |i, part| {
            let a = a.rows_of(i * rows, part.len() / n);
            gemm_serial(part, n, a, b, accumulate);
        });
    } else {
        gemm_serial(dst, dst_rs, a, b, accumulate);
    }
}

/// [`gemm`] on the calling thread.
pub(crate) fn gemm_serial<T: Float>(
    dst: &mut [T],
    dst_rs: usize,
    a: MatRef<T>,
    b: MatRef<T>,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions of a matrix product");
    assert!(a.fits() && b.fits(), "matrix view outside its slice");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + n <= dst.len(),
        "product outside its slice"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(T::zero());
            }
        }
        return;
    }
    // SAFETY: every index the product reads or writes was checked above to lie inside its
    // slice (`fits` for a and b, the last row of dst); dst is borrowed mutably and does not
    // overlap a or b (they are shared borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

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
