//! The library's error type.

use thiserror::Error;

/// Everything that can go wrong in gradlab's core library.
///
/// Each kind carries what a caller may act on (the key, the tensor, the sizes); the message
/// says it in words. New kinds may be added, so a `match` needs a `_` arm.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A spec string that does not follow the grammar.
    #[error("invalid spec {} at column {column}: {message}", excerpt(spec, *column))]
    Spec {
        /// The text that was parsed.
        spec: String,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A spec whose name is not known.
    #[error("unknown {what} '{name}' in {}; known: {known}", quote(spec))]
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
    #[error("unknown key '{key}' in {}; valid keys: {valid}", quote(spec))]
    UnknownKey {
        /// The whole spec.
        spec: String,
        /// The key given.
        key: String,
        /// The valid keys, comma separated.
        valid: String,
    },
    /// A value of the wrong type or out of range.
    #[error("invalid value for '{key}' in {}: {message}", quote(spec))]
    InvalidArgument {
        /// The whole spec.
        spec: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A typed surface f(x, y) that does not parse or uses what cannot be differentiated.
    #[error("invalid expression {}: {message}", quote(expression))]
    Expression {
        /// The text typed.
        expression: String,
        /// What is wrong.
        message: String,
    },
    /// A count that does not match: parameters or gradients against the optimizer's layout,
    /// a vector against an operator's dimension, shards against their tensor.
    #[error("{what}: {got} {unit}, expected {expected}")]
    Length {
        /// What was counted (names the tensor or the optimizer).
        what: String,
        /// The count given.
        got: usize,
        /// What is counted: `elements`, `gradient tensors`, ...
        unit: &'static str,
        /// The count the layout or operator has.
        expected: usize,
    },
    /// A parameter name that cannot serve (empty, given twice), or a group's pattern that
    /// names no tensor or one the group cannot take.
    #[error("{problem}")]
    Name {
        /// The name or pattern.
        name: String,
        /// What is wrong, in words that name it.
        problem: String,
    },
    /// A call or a combination the object does not take (L-BFGS or SAM stepped without a
    /// closure, clipping with L-BFGS, a sharded SAM, a step while the evaluation point is
    /// loaded), with what to do instead.
    #[error("{what}: {reason}")]
    Unsupported {
        /// The optimizer or function.
        what: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// More memory than the machine has available (checked before allocating).
    #[error("{}", crate::memory::describe(what, *needed, *available))]
    Memory {
        /// What would need it.
        what: String,
        /// Bytes needed (`None`: more than a 128-bit count holds).
        needed: Option<u128>,
        /// Bytes available, where known.
        available: Option<u64>,
    },
    /// A loss that is not finite where the optimizer needs one (L-BFGS's line search).
    #[error("{optimizer}: the closure returned a non-finite loss ({loss}) at step {step}")]
    NonFiniteLoss {
        /// The optimizer.
        optimizer: String,
        /// The step (1-based).
        step: u64,
        /// The loss.
        loss: f64,
    },
    /// A step that failed midway in an optimizer whose memory it had changed: the parameters
    /// are back, the optimizer refuses further steps until a saved state is loaded.
    #[error("{optimizer}: step {step} failed after its memory had changed ({cause}); the parameters are back where the step began; load a saved state to continue")]
    StepFailed {
        /// The optimizer.
        optimizer: String,
        /// The step (1-based).
        step: u64,
        /// The error that stopped it.
        cause: String,
    },
    /// An error raised by code gradlab calls back (an objective, a closure, a parameter
    /// store such as candle's variables), kept whole so that its owner can downcast it.
    #[error("{0}")]
    Callback(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A number outside the range its key allows (a hyperparameter written during a run).
    #[error("{key} is {}; it must be {range}", crate::spec::format_number(*value))]
    OutOfRange {
        /// What the number is, with where it was given.
        key: String,
        /// The value given.
        value: f64,
        /// The valid range, in words.
        range: String,
    },
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
    /// A step without a tensor's gradient, by an optimizer that needs them all.
    #[error("optimizer '{optimizer}' needs a gradient for every parameter at every step, and '{tensor}' has none (its step couples the tensors); give it a gradient, or use an element-wise optimizer")]
    MissingGradient {
        /// The optimizer's name.
        optimizer: String,
        /// The tensor without a gradient.
        tensor: String,
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
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error (in the message, not chained as a source: printing the
        /// chain would say it twice).
        error: std::io::Error,
    },
}

/// Shorthand for results with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `text` quoted, or its first 80 characters and its length when it is longer: how every
/// error quotes a spec or argument the user typed.
pub fn quote(text: &str) -> String {
    excerpt(text, 41)
}

/// At most about 80 characters of `text` around 1-based `column`, quoted, with `…` where
/// text was left out (a 10,000-deep spec's error would otherwise print all of it).
pub fn excerpt(text: &str, column: usize) -> String {
    const SIDE: usize = 40;
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 2 * SIDE {
        return format!("'{text}'");
    }
    let at = column.saturating_sub(1).min(chars.len());
    let start = at.saturating_sub(SIDE);
    let end = (at + SIDE).min(chars.len());
    let body: String = chars[start..end].iter().collect();
    format!(
        "'{}{body}{}' ({} characters)",
        if start > 0 { "…" } else { "" },
        if end < chars.len() { "…" } else { "" },
        chars.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_specs_are_quoted_around_the_column_only() {
        assert_eq!(excerpt("adam(lr=1)", 6), "'adam(lr=1)'");
        let long = format!("{}x{}", "(".repeat(5000), ")".repeat(5000));
        let e = excerpt(&long, 5001);
        assert!(e.len() < 120, "{e}");
        assert!(e.contains('x') && e.starts_with("'…") && e.contains("…' (10001 characters)"));
        let err = Error::Spec {
            spec: long,
            column: 5001,
            message: "too deep".into(),
        };
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn io_errors_are_said_once() {
        let e = Error::Io {
            path: "x".into(),
            error: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(e.to_string().matches("denied").count(), 1, "{e}");
    }
}
