//! `lbfgs`'s hyperparameters: torch.optim.LBFGS's names, defaults and checks.

use crate::optim::Hyper;
use crate::spec::{Args, Domain, Spec};
use crate::Result;

/// Hyperparameters of `lbfgs` (torch.optim.LBFGS's names and defaults) besides the step
/// length `lr` (default 1), which the optimizer owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsConfig {
    /// Iterations per step (default 20).
    pub max_iter: u64,
    /// Closure evaluations per step (default `max_iter * 5 / 4`).
    pub max_eval: u64,
    /// Stop when the largest gradient element is at most this (default 1e-7).
    pub tolerance_grad: f64,
    /// Stop when a move or the loss change is below this (default 1e-9).
    pub tolerance_change: f64,
    /// Curvature pairs remembered (default 100).
    pub history_size: u64,
    /// A strong-Wolfe line search instead of the fixed step `lr` (default false).
    pub strong_wolfe: bool,
}

impl LbfgsConfig {
    pub(super) fn parse(args: &Args) -> Result<(Self, Hyper)> {
        let lr = args.number("lr", 1.0, Domain::POSITIVE)?;
        let max_iter = args.count("max_iter", 20)?;
        if max_iter == 0 {
            return Err(args.invalid("max_iter", "must be at least 1"));
        }
        let max_eval = args.count("max_eval", max_iter * 5 / 4)?;
        if max_eval == 0 {
            return Err(args.invalid("max_eval", "must be at least 1"));
        }
        let history_size = args.count("history_size", 100)?;
        if history_size == 0 {
            return Err(args.invalid("history_size", "must be at least 1"));
        }
        let cfg = LbfgsConfig {
            max_iter,
            max_eval,
            tolerance_grad: args.number("tolerance_grad", 1e-7, Domain::NON_NEGATIVE)?,
            tolerance_change: args.number("tolerance_change", 1e-9, Domain::NON_NEGATIVE)?,
            history_size,
            strong_wolfe: args.word("line_search_fn", "none", &["none", "strong_wolfe"])?
                == "strong_wolfe",
        };
        Ok((cfg, Hyper::new(lr, None)))
    }

    pub(super) fn to_spec(&self, h: &Hyper) -> Spec {
        Spec::new("lbfgs")
            .with("lr", h.lr)
            .with("max_iter", self.max_iter as f64)
            .with("max_eval", self.max_eval as f64)
            .with("tolerance_grad", self.tolerance_grad)
            .with("tolerance_change", self.tolerance_change)
            .with("history_size", self.history_size as f64)
            .with(
                "line_search_fn",
                crate::spec::Value::Word(
                    if self.strong_wolfe {
                        "strong_wolfe"
                    } else {
                        "none"
                    }
                    .into(),
                ),
            )
    }
}
