//! Learning rates picked from one grid for every optimizer: each optimizer's rates (its own
//! and those of the optimizers it wraps) scaled by the same factors, one short run per
//! factor with a validation set held out of the training data, the factor with the best
//! validation accuracy kept. Every optimizer gets the same tuning effort, so a comparison
//! ranks optimizers rather than hand-picked rates.

use super::runs::*;
use super::Budget;
use anyhow::Result;
use gradlab::spec::{self, Spec, Value};
use std::path::Path;

/// The factors every optimizer's rates are scaled by.
pub(super) const FACTORS: [f64; 5] = [0.1, 0.3, 1.0, 3.0, 10.0];

/// The factors of a quick lab.
const QUICK_FACTORS: [f64; 3] = [0.1, 1.0, 10.0];

/// `spec` with every learning rate in it — its `lr` and, recursively, the `lr` of each
/// optimizer it wraps (Lookahead's, SAM's base, Muon's fallback) — times `factor`.
pub(super) fn scale_lrs(spec: &Spec, factor: f64) -> Spec {
    let mut out = spec.clone();
    for (key, value) in &mut out.args {
        match value {
            // Twelve significant digits: 0.001 × 0.1 is 0.0001, not 0.00010000000000000002.
            Value::Num(x) if key.as_deref() == Some("lr") => {
                *x = format!("{:.11e}", *x * factor)
                    .parse()
                    .unwrap_or(*x * factor)
            }
            Value::Spec(inner) => *inner = scale_lrs(inner, factor),
            _ => {}
        }
    }
    out
}

/// One optimizer's tuning: the factors tried, their validation accuracy (None: the run
/// diverged), and the spec kept.
pub(super) struct Tuned {
    /// (factor, validation accuracy or None when the run diverged).
    pub(super) tried: Vec<(f64, Option<f64>)>,
    /// The spec with the best factor applied.
    pub(super) spec: String,
    /// The best factor.
    pub(super) factor: f64,
}

/// The factors tried under `budget`.
pub(super) fn factors(budget: &Budget) -> &'static [f64] {
    if budget.is_small() {
        &QUICK_FACTORS
    } else {
        &FACTORS
    }
}

/// The validation examples held out under `budget`.
pub(super) fn validation_examples(budget: &Budget) -> usize {
    if budget.is_small() {
        200
    } else {
        1000
    }
}

/// Tunes `spec_text`: one epoch per factor on the training data minus a validation set.
pub(super) fn tune(out: &Path, budget: &Budget, spec_text: &str) -> Result<Tuned> {
    let spec = spec::parse(spec_text)?;
    let short = Budget {
        epochs: 1,
        ..budget.clone()
    };
    let mut tried = Vec::new();
    for &factor in factors(budget) {
        let scaled = scale_lrs(&spec, factor).to_string();
        let mut c = config(
            out,
            &format!("tuning/{}_x{}", slug(spec_text), slug(&factor.to_string())),
            &short,
            &scaled,
            64,
            0,
        );
        c.validation = Some(validation_examples(budget));
        let score = match run(&c) {
            Ok(r) => Some(r.validation_accuracy()).filter(|a| a.is_finite()),
            Err(e) if crate::interrupt::caused(&e) => return Err(e),
            // A rate so high that training diverged is a result of the grid, not a failure.
            Err(_) => None,
        };
        tried.push((factor, score));
    }
    let (factor, _) = tried
        .iter()
        .filter_map(|(f, s)| s.map(|s| (*f, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((1.0, f64::NAN));
    Ok(Tuned {
        spec: scale_lrs(&spec, factor).to_string(),
        factor,
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_learning_rate_in_a_spec_is_scaled() {
        let s = spec::parse("muon(lr=0.02, fallback=adamw(lr=0.001, weight_decay=0.01))").unwrap();
        let scaled = scale_lrs(&s, 10.0);
        assert_eq!(
            spec::parse(&scaled.to_string()).unwrap(),
            spec::parse("muon(lr=0.2, fallback=adamw(lr=0.01, weight_decay=0.01))").unwrap()
        );
        let s = spec::parse("lookahead(adam(lr=0.001), k=5, alpha=0.5)").unwrap();
        let scaled = scale_lrs(&s, 0.1);
        assert_eq!(
            scaled,
            spec::parse("lookahead(adam(lr=0.0001), k=5, alpha=0.5)").unwrap()
        );
        // A spec without a rate keeps its values.
        let s = spec::parse("sgd(momentum=0.9)").unwrap();
        assert_eq!(scale_lrs(&s, 3.0), s);
    }
}
