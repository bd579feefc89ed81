//! gradlab: optimizers, learning-rate schedules and loss-landscape diagnostics for deep
//! learning, without a tensor framework.
//!
//! - [`optim`]: every optimizer of a modern deep-learning optimization lecture, on named
//!   parameter segments of `f32` or `f64`, numerically matching the reference implementations.
//! - [`schedule`]: every PyTorch learning-rate scheduler, warm-up, WSD, plateau, the LR range
//!   test.
//! - [`landscape`]: curvature and the loss landscape (Lanczos, Hutchinson, SLQ, critical
//!   points, sharpness, slices) of any loss.
//! - [`spec`]: the `name(key=value, ...)` grammar used to name optimizers and schedules.
//! - [`surface`]: analytic 2-D test surfaces with exact gradients and Hessians.
//! - [`dist`]: data parallelism with sharded optimizer state (ZeRO-1) over any collective.
//! - [`pool`]: the persistent thread pool the kernels run on; [`matmul`]: matrix products
//!   (the `gemm` crate); [`real`]: the float types.
//! - [`mod@bench`]: step timing against the memory roofline; [`memory`]: sizes checked against
//!   the memory available; [`io`]: atomic writes; [`error`]: the error type.

#![warn(missing_docs)]

pub mod bench;
pub mod dist;
pub mod error;
pub mod io;
pub mod landscape;
pub mod matmul;
pub mod memory;
pub mod optim;
pub mod pool;
pub mod real;
pub mod rng;
pub mod schedule;
pub mod spec;
pub mod surface;

pub use error::{Error, Result};
pub use real::Real;
