//! Matrix products on the `gemm` crate: a safe strided view of a slice and a product split
//! by rows over gradlab's pool (used by Muon's Newton–Schulz iteration and by the candle
//! bridge's linear and convolution ops).

/// An element type of the products (f32, f64): what the products need besides the
/// arithmetic the `gemm` crate does.
pub trait Scalar: Copy + Send + Sync + 'static {
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
}

impl Scalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Scalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// A matrix inside a slice: element (i, j) at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows × cols` matrix.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (same memory).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Rows `start..start + n`.
    pub fn rows_of(self, start: usize, n: usize) -> Self {
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

    /// Whether every element of the view lies inside its slice.
    pub fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Products at least this large (multiply-adds) are split by rows across the pool.
const SPLIT_WORK: usize = 1 << 21;

/// `dst = a · b` (or `dst += a · b` when `accumulate`), `dst` row-major with row stride
/// `dst_rs`. Large products are split by rows over gradlab's pool.
pub fn gemm<T: Scalar>(dst: &mut [T], dst_rs: usize, a: MatRef<T>, b: MatRef<T>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let threads = crate::pool::current_threads();
    if m * n * k >= SPLIT_WORK && m >= 2 * threads && threads > 1 && dst_rs == n {
        let rows = m.div_ceil(threads);
        crate::pool::for_each_chunk(&mut dst[..m * n], rows * n, |i, part| {
            let a = a.rows_of(i * rows, part.len() / n);
            gemm_serial(part, n, a, b, accumulate);
        });
    } else {
        gemm_serial(dst, dst_rs, a, b, accumulate);
    }
}

/// [`fn@gemm`] on the calling thread.
pub fn gemm_serial<T: Scalar>(
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
                dst[i * dst_rs..i * dst_rs + n].fill(T::ZERO);
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
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
