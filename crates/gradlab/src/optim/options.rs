//! What a caller sets for every step (clipping, the non-finite policy, parameter groups) and
//! what a step reports back.

use crate::spec::{Spec, Value};
use crate::{Error, Result};

/// What to do with a step whose gradients hold NaN or infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinitePolicy {
    /// Fail with an error naming the step, the tensor and the element (the default). When
    /// the gradients need no pass of their own (no norm clipping, one process) they are
    /// checked chunk by chunk inside the update, so the step reads memory once; the tensors
    /// before the bad chunk are then already updated, the error says so, and the optimizer
    /// refuses to step until a state is loaded.
    #[default]
    Error,
    /// Skip the step: parameters, state and every counter stay as they were.
    Skip,
}

impl std::str::FromStr for NonFinitePolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "error" => Ok(NonFinitePolicy::Error),
            "skip" => Ok(NonFinitePolicy::Skip),
            other => Err(format!(
                "unknown non-finite policy '{other}' (expected error or skip)"
            )),
        }
    }
}

/// Gradient handling shared by all optimizers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Clip by global L2 norm as PyTorch's `clip_grad_norm_`: every gradient is multiplied by
    /// `min(1, max_norm / (norm + 1e-6))`.
    pub clip_norm: Option<f64>,
    /// Clip every element to `[-v, v]` (`clip_grad_value_`), after norm clipping.
    pub clip_value: Option<f64>,
    /// Non-finite gradients.
    pub nonfinite: NonFinitePolicy,
    /// Set when the optimizer holds one shard of a model split across ranks (ZeRO-1): its
    /// per-tensor and global sums are then combined with the other ranks'.
    pub distributed: Option<crate::dist::Distributed>,
}

/// A parameter group: the tensors whose names match any of `params` (`*` is a wildcard)
/// get the base spec with `overrides` applied, e.g. `weight_decay=0` for `*.bias`.
/// Tensors that no group matches form group 0 with the base spec; a tensor matched by
/// several groups belongs to the first.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup {
    /// Name patterns.
    pub params: Vec<String>,
    /// Hyperparameters that differ from the base spec.
    pub overrides: Vec<(String, Value)>,
}

impl ParamGroup {
    /// A group from name patterns and an override string such as `"weight_decay=0, lr=0.1"`.
    pub fn parse(params: &[&str], overrides: &str) -> Result<Self> {
        let spec = crate::spec::parse(&format!("group({overrides})"))?;
        let mut out = Vec::new();
        for (k, v) in spec.args {
            let Some(k) = k else {
                return Err(Error::InvalidArgument {
                    spec: overrides.to_string(),
                    key: "(positional)".into(),
                    message: "group overrides must be key=value pairs".into(),
                });
            };
            out.push((k, v));
        }
        Ok(ParamGroup {
            params: params.iter().map(|s| s.to_string()).collect(),
            overrides: out,
        })
    }
}

impl ParamGroup {
    /// The base spec with this group's overrides applied.
    pub fn apply(&self, base: &Spec) -> Spec {
        let mut merged = base.clone();
        for (k, v) in &self.overrides {
            merged
                .args
                .retain(|(key, _)| key.as_deref() != Some(k.as_str()));
            merged.args.push((Some(k.clone()), v.clone()));
        }
        merged
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// True when the step was skipped for non-finite gradients.
    pub skipped: bool,
    /// Global L2 norm of the gradients before clipping (NaN when skipped).
    pub grad_norm: f64,
    /// The factor global-norm clipping applied (1 when not clipping).
    pub clip_coef: f64,
}

impl StepOutcome {
    /// A step skipped for non-finite gradients (the `skip` policy).
    pub const SKIPPED: StepOutcome = StepOutcome {
        skipped: true,
        grad_norm: f64::NAN,
        clip_coef: 1.0,
    };
}
