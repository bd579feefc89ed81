//! gradlab: optimizers, learning-rate schedules and loss-landscape diagnostics for deep
//! learning, without a tensor framework.
//!
//! - [`optim`]: every optimizer of a modern deep-learning optimization lecture, on named
//!   parameter segments of `f32` or `f64`, numerically matching the reference implementations.
//! - [`spec`]: the `name(key=value, ...)` grammar used to name optimizers and schedules.
//! - [`surface`]: analytic 2-D test surfaces with exact gradients and Hessians.

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
pub mod schedule;
pub mod spec;
pub mod surface;

pub use error::{Error, Result};
pub use real::Real;
