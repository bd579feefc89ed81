//! gradlab on candle: every gradlab optimizer as a `candle_nn::Optimizer` updating `Var`s in
//! place, models (logistic regression, MLP, LeNet-style CNN), MNIST-format data, the
//! training loop with checkpoints, and Hessian-vector products of real networks.

pub mod analysis;
pub mod averaging;
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

pub use gradlab::optim::{NonFinitePolicy, Options, ParamGroup, StepOutcome};
pub use gradlab::schedule::Scheduler;
pub use gradlab::spec::{Spec, Value as SpecValue};
pub use optim::{EngineView, GradlabOptimizer, MissingGradients, OptimizerConfig, TensorStats};

/// Errors of the candle bridge. They convert to and from `candle_core::Error`, so `?` works
/// in functions returning either kind of result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From gradlab's core.
    #[error(transparent)]
    Gradlab(#[from] gradlab::Error),
    /// From candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A parameter without a gradient, under `MissingGradients::Error` (by default such a
    /// parameter sits out the step, as in PyTorch).
    #[error("no gradient for parameter '{name}': is it used by the loss? (or let it sit out the step: OptimizerConfig::missing_gradients(MissingGradients::Skip))")]
    NoGradient {
        /// The parameter's name.
        name: String,
    },
    /// A parameter (or its gradient) the optimizer cannot take: on another device, of another
    /// type, not contiguous.
    #[error("parameter '{name}' {problem}")]
    Parameter {
        /// The parameter's name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A saved optimizer file that does not fit these variables or this optimizer.
    #[error("optimizer file '{path}': {problem}")]
    SavedFile {
        /// The file.
        path: String,
        /// What does not fit.
        problem: String,
    },
    /// Anything else, with its explanation.
    #[error("{0}")]
    Msg(String),
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
