//! gradlab on candle: every gradlab optimizer as a `candle_nn::Optimizer` updating `Var`s in
//! place, models (logistic regression, MLP, LeNet-style CNN), MNIST-format data, the
//! training loop with checkpoints, and Hessian-vector products of real networks.

pub mod analysis;
pub mod checkpoint;
pub mod data;
pub mod hessian;
pub mod landscape;
pub mod models;
pub mod ops;
pub mod optim;
pub mod parallel;
pub mod run_dir;
pub mod step_timing;
pub mod threads;
pub mod train;

pub use optim::{GradlabOptimizer, OptimizerConfig};

/// Errors of the candle bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From gradlab's core.
    #[error(transparent)]
    Gradlab(#[from] gradlab::Error),
    /// From candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Anything else, with its explanation.
    #[error("{0}")]
    Msg(String),
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
