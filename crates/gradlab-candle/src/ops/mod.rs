//! gradlab's own CPU ops for candle: convolution, pooling, linear layers, activations, batch
//! normalisation and the fused log-softmax + cross-entropy loss, each a candle custom op with
//! its own backward.
//!
//! Why: candle 0.11's CPU convolutions and their gradients are slow (a LeNet-5 step took 52 ms
//! where PyTorch takes 5), they compute gradients nobody needs (the input gradient of the first
//! layer), and its `max_pool2d` backward is wrong (it gives 1/4 of the gradient to the maximum
//! of a 2×2 window, see `candle_notes.md`). These ops are im2col/col2im around the `gemm`
//! crate, threaded across images on gradlab's persistent pool, and skip every gradient whose
//! input does not need one (`Tensor::track_op`).
//!
//! **Second order.** Every backward is itself made of differentiable ops: the convolution's
//! forward, input-gradient and weight-gradient products form one family whose members are each
//! other's derivatives, and the same holds for matrix products, pooling and ReLU. So
//! Hessian-vector products by double backward work through them (with
//! `CANDLE_GRAD_DO_NOT_DETACH`, see [`crate::hessian`]). The one exception is the fused
//! training-mode batch norm, whose backward is differentiated once: [`batch_norm_train`]
//! builds candle's reference formulation instead while second-order gradients are on
//! ([`second_order_enabled`]); the two are tested equal.
//!
//! Every op takes f32 or f64 tensors on the CPU (both arguments of one type) and checks its
//! shapes, returning a candle error that names the op and the shapes.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use gradlab_candle::ops;
//! let x = Tensor::new(&[[[[1f64, 2.], [3., 4.]]]], &Device::Cpu)?;
//! let x = Var::from_tensor(&x)?;
//! let grads = ops::max_pool2d(x.as_tensor(), 2, 2)?.sum_all()?.backward()?;
//! // The whole gradient goes to the maximum (candle's own max_pool2d gives 0.25 here).
//! assert_eq!(grads.get(&x).unwrap().flatten_all()?.to_vec1::<f64>()?, [0., 0., 0., 1.]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod activation;
mod batch_norm;
mod bias;
mod conv;
mod gemm;
mod linear;
mod loss;
mod pool;

pub use activation::{gelu_erf, relu};
pub use batch_norm::{batch_norm_reference, batch_norm_train, BatchStatistics};
pub use conv::{conv2d, Conv2dParams};
pub use gemm::matmul;
pub use linear::linear;
pub use loss::cross_entropy;
pub use pool::{avg_pool2d, max_pool2d};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

/// The float types the ops compute in.
pub(crate) trait Float:
    candle_core::WithDType + num_traits::Float + Default + gradlab::matmul::Scalar
{
    /// Wraps a vector as candle storage.
    fn storage(v: Vec<Self>) -> CpuStorage;
    /// The contiguous values of a storage of this type.
    fn values<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [Self]>;
    /// Runs `f` with this thread's scratch buffer of at least `len` values (reused).
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! float_impl {
    ($t:ty, $variant:ident, $scratch:ident) => {
        thread_local! {
            static $scratch: std::cell::RefCell<Vec<$t>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        impl Float for $t {
            fn storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
            fn values<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [Self]> {
                match s {
                    CpuStorage::$variant(v) => contiguous(v, l, op),
                    other => candle_core::bail!(
                        "{op}: expected {:?} values, got {:?}",
                        DType::$variant,
                        other.dtype()
                    ),
                }
            }
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                $scratch.with(|cell| {
                    let mut buf = cell.borrow_mut();
                    if buf.len() < len {
                        buf.resize(len, 0.0);
                    }
                    f(&mut buf[..len])
                })
            }
        }
    };
}
float_impl!(f32, F32, SCRATCH_F32);
float_impl!(f64, F64, SCRATCH_F64);

fn contiguous<'a, T>(v: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("{op}: the input is not contiguous"),
    }
}

/// The u32 labels of a storage.
pub(crate) fn labels<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [u32]> {
    match s {
        CpuStorage::U32(v) => contiguous(v, l, op),
        other => candle_core::bail!("{op}: labels must be u32, got {:?}", other.dtype()),
    }
}

/// Dispatches a computation over the float type of a storage.
macro_rules! dispatch {
    ($storage:expr, $op:expr, |$t:ident| $body:expr) => {
        match candle_core::backend::BackendStorage::dtype($storage) {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $t = f64;
                $body
            }
            other => candle_core::bail!("{}: f32 or f64 expected, got {other:?}", $op),
        }
    };
}
pub(crate) use dispatch;

/// True while candle keeps the graphs of gradients on this thread's backward passes, so that
/// gradients are differentiated again: `CANDLE_GRAD_DO_NOT_DETACH` set when the thread first
/// asks (candle, too, reads it once per thread; [`crate::hessian::second_order`] runs work on
/// a fresh thread with it set). Ops whose backward is not differentiable then switch to
/// their reference formulation.
pub fn second_order_enabled() -> bool {
    thread_local! {
        static ENABLED: bool = std::env::var_os("CANDLE_GRAD_DO_NOT_DETACH")
            .is_some_and(|v| !v.is_empty() && v != "0");
    }
    ENABLED.with(|e| *e)
}

pub(crate) use gradlab::pool::for_each_chunk;

/// `tensor` made contiguous (a no-op when it already is).
pub(crate) fn dense(t: &Tensor) -> Result<Tensor> {
    t.contiguous()
}
