//! The library's error type.

use thiserror::Error;

/// Everything that can go wrong in gradlab's core library.
#[derive(Debug, Error)]
pub enum Error {
    /// A spec string that does not follow the grammar.
    #[error("invalid spec '{spec}' at column {column}: {message}")]
    Spec {
        /// The text that was parsed.
        spec: String,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A spec whose name is not known.
    #[error("unknown {what} '{name}' in '{spec}'; known: {known}")]
    UnknownName {
        /// `optimizer`, `schedule`, `function`, ...
        what: &'static str,
        /// The name given.
        name: String,
        /// The whole spec.
        spec: String,
        /// The known names, comma separated.
        known: String,
    },
    /// A key that the spec does not take.
    #[error("unknown key '{key}' in '{spec}'; valid keys: {valid}")]
    UnknownKey {
        /// The whole spec.
        spec: String,
        /// The key given.
        key: String,
        /// The valid keys, comma separated.
        valid: String,
    },
    /// A value of the wrong type or out of range.
    #[error("invalid value for '{key}' in '{spec}': {message}")]
    InvalidArgument {
        /// The whole spec.
        spec: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Parameters or gradients that do not match the optimizer's layout.
    #[error("{0}")]
    Layout(String),
    /// A non-finite gradient under the `error` policy.
    #[error("non-finite gradient at step {step} in tensor '{tensor}' (element {index} is {value}){}; use the 'skip' policy to skip such steps", if *partly_updated { "; the tensors before it were updated, so the optimizer needs a saved state to continue" } else { "" })]
    NonFiniteGradient {
        /// The step that was attempted (1-based).
        step: u64,
        /// The tensor's name.
        tensor: String,
        /// Index of the first non-finite element.
        index: usize,
        /// Its value.
        value: f64,
        /// Whether parameters and state were partly updated: the `error` policy checks the
        /// gradients during the update (one pass over memory) when it can; `skip`, clipping
        /// by norm and sharded optimizers check them all first and change nothing.
        partly_updated: bool,
    },
    /// A saved state that does not fit the optimizer.
    #[error("optimizer state{}: {message}", source_name.as_ref().map(|s| format!(" '{s}'")).unwrap_or_default())]
    State {
        /// The file, if the state was read from one.
        source_name: Option<String>,
        /// What is wrong (names the tensor).
        message: String,
    },
    /// Schedule misuse, such as stepping past `total_steps`.
    #[error("schedule '{spec}': {message}")]
    Schedule {
        /// The schedule's spec.
        spec: String,
        /// What happened.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
