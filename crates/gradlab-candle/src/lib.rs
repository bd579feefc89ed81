//! gradlab on candle: every gradlab optimizer as a `candle_nn::Optimizer` updating `Var`s in
//! place, models (logistic regression, MLP, LeNet-style CNN) with fast CPU ops, MNIST-format
//! data, the training loop with checkpoints, weight averaging, and Hessian-vector products of
//! any model.
//!
//! A candle user's quick start: a model on a `VarMap`, an optimizer with parameter groups, a
//! schedule and clipping, a training loop, one file to resume from, and the Hessian of the
//! model.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
//! use gradlab_candle::hessian::{with_second_order, NetworkHessian};
//! use gradlab_candle::{GradlabOptimizer, OptimizerConfig};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
//! let model = candle_nn::linear(3, 1, vb.pp("fc"))?;
//! let config = OptimizerConfig::new("adamw(lr=0.05)")
//!     .schedule("warmup_cosine(warmup_steps=5, total_steps=50)")
//!     .group(["*.bias"], "weight_decay=0")
//!     .clip_norm(1.0);
//! let mut opt = GradlabOptimizer::from_varmap(&varmap, &config)?;
//! let x = Tensor::new(&[[1.0f64, 0.0, 2.0], [0.0, 1.0, -1.0], [2.0, 1.0, 0.0]], &Device::Cpu)?;
//! let y = Tensor::new(&[[1.0f64], [0.0], [2.0]], &Device::Cpu)?;
//! let loss = || -> gradlab_candle::Result<Tensor> {
//!     Ok((model.forward(&x)? - &y)?.sqr()?.mean_all()?)
//! };
//! for _ in 0..20 {
//!     opt.backward_step(&loss()?)?; // parameters updated in place, the schedule stepped
//! }
//! let file = std::env::temp_dir().join(format!("quick-start-{}.safetensors", std::process::id()));
//! opt.save(&file)?; // optimizer state, config and schedule state in one file
//! let mut opt = GradlabOptimizer::load(&file, &varmap)?; // in a new process, after the weights
//! opt.backward_step(&loss()?)?;
//! // The Hessian of this model's loss, exact by double backward (on a thread that keeps
//! // gradient graphs).
//! let curvature = with_second_order(|| -> gradlab_candle::Result<f64> {
//!     let mut vars: Vec<_> = varmap.data().lock().unwrap().clone().into_iter().collect();
//!     vars.sort_by(|a, b| a.0.cmp(&b.0));
//!     let mut h = NetworkHessian::of_loss(vars, loss)?;
//!     let opts = LanczosOptions { top: 1, bottom: 0, tol: 1e-10, max_iter: None, seed: 0 };
//!     Ok(lanczos(&mut h, &opts)?.top[0].value)
//! })?;
//! assert!(curvature > 0.0);
//! # std::fs::remove_file(&file).ok();
//! # Ok::<(), gradlab_candle::Error>(())
//! ```

#![warn(missing_docs)]

pub mod analysis;
pub mod averaging;
pub mod char_lm;
pub mod checkpoint;
pub mod data;
pub mod hessian;
pub mod landscape;
pub mod models;
pub mod ops;
pub mod optim;
/// Data-parallel steps with sharded optimizer state: the optimizer's sharded form, also
/// reachable under its old path.
pub use optim::sharded as parallel;
pub mod run_dir;
pub mod step_timing;
pub mod threads;
pub mod train;

pub use gradlab::optim::{NonFinitePolicy, Options, ParamGroup, StepOutcome};
pub use gradlab::schedule::Scheduler;
pub use gradlab::spec::{Spec, Value as SpecValue};
pub use optim::{EngineView, GradlabOptimizer, MissingGradients, OptimizerConfig, TensorStats};
use std::path::{Path, PathBuf};

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
    /// A file or folder that could not be opened, read, written, created or renamed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said (in the message, not chained: printing the chain would say
        /// it twice).
        error: std::io::Error,
    },
    /// A file that does not hold what it should: a checkpoint that is corrupted, of another
    /// version or of a model gradlab cannot rebuild; data files that do not fit together; a
    /// line of a text or score file that cannot be read.
    #[error("{}: {problem}", path.display())]
    File {
        /// The file (or the folder of files).
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A setting that is out of range, unknown, or does not go with another, named as the
    /// command line names it (`--epochs`, `--swa-lr`, ...; the same field of
    /// [`train::TrainConfig`]).
    #[error("{message}")]
    Setting {
        /// The setting, e.g. `--epochs`.
        setting: String,
        /// What is wrong and what it must be.
        message: String,
    },
    /// A model that cannot be built as described, or a tensor it lacks or holds in another
    /// shape.
    #[error("{message}")]
    Model {
        /// What is wrong.
        message: String,
    },
    /// Something this optimizer, model or run does not do, with what to do instead.
    #[error("{message}")]
    Unsupported {
        /// What is not done, and what to do instead.
        message: String,
    },
    /// Training that stopped at a step: the step failed, or the run diverged.
    #[error("step {step}: {message}")]
    Training {
        /// The step (1-based).
        step: u64,
        /// What happened.
        message: String,
    },
    /// Processes of a data-parallel run that disagree, or one that failed.
    #[error("{message}")]
    Ranks {
        /// What differs or failed.
        message: String,
    },
    /// A Hessian that cannot be computed as asked (no data, a detached graph, an operator
    /// that is not symmetric).
    #[error("{message}")]
    Hessian {
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl AsRef<Path>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }

    /// An [`Error::File`] for `path`.
    pub(crate) fn file(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().to_path_buf(),
            problem: problem.into(),
        }
    }

    /// An [`Error::Unsupported`].
    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported {
            message: message.into(),
        }
    }

    /// An [`Error::Setting`] for `setting`.
    pub(crate) fn setting(setting: &str, message: impl Into<String>) -> Self {
        Error::Setting {
            setting: setting.to_string(),
            message: message.into(),
        }
    }
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// Back into the core's error where the core calls the bridge (an objective, a closure): a
/// core error comes back as it was, any other is carried whole as
/// [`gradlab::Error::Callback`].
impl From<Error> for gradlab::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Gradlab(e) => e,
            other => gradlab::Error::Callback(Box::new(other)),
        }
    }
}

/// Shorthand for results with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
