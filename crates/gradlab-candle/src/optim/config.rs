//! What a [`GradlabOptimizer`](super::GradlabOptimizer) is built from: the optimizer spec,
//! parameter groups, a schedule, gradient clipping and what to do with parameters that get
//! no gradient; written into the optimizer's saved file so that it can be rebuilt from it.

use crate::{Error, Result};
use candle_core::Var;
use gradlab::optim::{NonFinitePolicy, Options, ParamGroup};
use serde_json::{json, Value};

/// What to do with a parameter that has no gradient in a step (unused by the loss, or
/// dropped by candle from the graph).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MissingGradients {
    /// It sits out the step: not moved, its state not advanced (PyTorch's `p.grad is None`).
    /// Optimizers whose step couples the tensors (Muon, Adafactor, Prodigy, SAM, L-BFGS,
    /// Lookahead) refuse such a step, naming the parameter.
    #[default]
    Skip,
    /// The step fails with [`Error::NoGradient`].
    Error,
}

/// What [`GradlabOptimizer`](super::GradlabOptimizer) is built from (also its
/// `candle_nn::Optimizer::Config`):
///
/// ```
/// use gradlab_candle::OptimizerConfig;
/// let config = OptimizerConfig::new("adamw(lr=3e-3)")
///     .schedule("warmup_cosine(warmup_steps=100, total_steps=5000)")
///     .group(["*.bias", "*norm*"], "weight_decay=0")
///     .clip_norm(1.0);
/// assert_eq!(config.groups.len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct OptimizerConfig {
    /// The optimizer spec, e.g. `adamw(lr=1e-3)`.
    pub spec: String,
    /// Parameter groups by name pattern.
    pub groups: Vec<ParamGroup>,
    /// Clipping and non-finite policy.
    pub options: Options,
    /// A schedule spec (e.g. `cosine(t_max=1000)`), stepped after every optimizer step.
    pub schedule: Option<String>,
    /// Parameters without a gradient.
    pub missing_gradients: MissingGradients,
    /// Groups given by their variables (for optimizers built without names).
    pub(super) var_groups: Vec<(Vec<Var>, ParamGroup)>,
    /// The first invalid builder argument, reported when the optimizer is built.
    pub(super) invalid: Option<String>,
}

impl OptimizerConfig {
    /// A config with no groups, no schedule and default options.
    pub fn new(spec: impl Into<String>) -> Self {
        OptimizerConfig {
            spec: spec.into(),
            groups: Vec::new(),
            options: Options::default(),
            schedule: None,
            missing_gradients: MissingGradients::default(),
            var_groups: Vec::new(),
            invalid: None,
        }
    }

    /// A schedule, stepped after every optimizer step (a `plateau` schedule is stepped with
    /// a metric by [`GradlabOptimizer::schedule_step`](super::GradlabOptimizer::schedule_step)).
    pub fn schedule(mut self, spec: impl Into<String>) -> Self {
        self.schedule = Some(spec.into());
        self
    }

    /// A parameter group: the parameters whose names match any of `patterns` (`*` is a
    /// wildcard) take `overrides` (e.g. `"weight_decay=0"`); the first matching group wins.
    pub fn group<S: AsRef<str>>(
        mut self,
        patterns: impl IntoIterator<Item = S>,
        overrides: &str,
    ) -> Self {
        let patterns: Vec<String> = patterns
            .into_iter()
            .map(|p| p.as_ref().to_string())
            .collect();
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        match ParamGroup::parse(&refs, overrides) {
            Ok(g) => self.groups.push(g),
            Err(e) => self.note_invalid(format!("group {patterns:?}: {e}")),
        }
        self
    }

    /// A parameter group given by its variables, for optimizers built without names
    /// (`candle_nn::Optimizer::new`).
    pub fn group_vars(mut self, vars: &[Var], overrides: &str) -> Self {
        match ParamGroup::parse(&[], overrides) {
            Ok(g) => self.var_groups.push((vars.to_vec(), g)),
            Err(e) => self.note_invalid(format!("group of {} variables: {e}", vars.len())),
        }
        self
    }

    /// Clips the gradients by their global L2 norm (PyTorch's `clip_grad_norm_`).
    pub fn clip_norm(mut self, max_norm: f64) -> Self {
        self.options.clip_norm = Some(max_norm);
        self
    }

    /// Clips every gradient element to `[-value, value]` (`clip_grad_value_`).
    pub fn clip_value(mut self, value: f64) -> Self {
        self.options.clip_value = Some(value);
        self
    }

    /// What to do with a non-finite gradient (default: an error naming it).
    pub fn nonfinite(mut self, policy: NonFinitePolicy) -> Self {
        self.options.nonfinite = policy;
        self
    }

    /// What to do with a parameter that has no gradient (default: it sits out the step).
    pub fn missing_gradients(mut self, policy: MissingGradients) -> Self {
        self.missing_gradients = policy;
        self
    }

    fn note_invalid(&mut self, message: String) {
        self.invalid.get_or_insert(message);
    }

    /// The builder's first error, if any; checks the clipping values.
    pub(super) fn check(&self) -> Result<()> {
        if let Some(message) = &self.invalid {
            return Err(Error::setting(
                "OptimizerConfig",
                format!("optimizer config: {message}"),
            ));
        }
        for (what, value) in [
            ("clip_norm", self.options.clip_norm),
            ("clip_value", self.options.clip_value),
        ] {
            if let Some(v) = value {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::setting(
                        what,
                        format!(
                            "optimizer config: {what} must be a positive finite number, got {v}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The config as stored in a saved optimizer file (groups by variable are stored by the
    /// names they were given).
    pub(super) fn to_json(&self, groups: &[ParamGroup]) -> Value {
        json!({
            "spec": self.spec,
            "groups": groups.iter().map(|g| json!({
                "params": g.params,
                "overrides": g.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
            })).collect::<Vec<_>>(),
            "clip_norm": self.options.clip_norm,
            "clip_value": self.options.clip_value,
            "nonfinite": match self.options.nonfinite {
                NonFinitePolicy::Error => "error",
                NonFinitePolicy::Skip => "skip",
            },
            "schedule": self.schedule,
            "missing_gradients": match self.missing_gradients {
                MissingGradients::Skip => "skip",
                MissingGradients::Error => "error",
            },
        })
    }

    /// The config stored by [`OptimizerConfig::to_json`].
    pub(super) fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let text = |key: &str| -> std::result::Result<Option<String>, String> {
            match &v[key] {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                other => Err(format!("'{key}' is {other}, not a string")),
            }
        };
        let number = |key: &str| -> std::result::Result<Option<f64>, String> {
            match &v[key] {
                Value::Null => Ok(None),
                other => other
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| format!("'{key}' is {other}, not a number")),
            }
        };
        let spec = text("spec")?.ok_or("'spec' is missing")?;
        let mut config = OptimizerConfig::new(spec);
        for g in v["groups"].as_array().ok_or("'groups' is not a list")? {
            let params: Vec<String> = g["params"]
                .as_array()
                .ok_or("a group's 'params' is not a list")?
                .iter()
                .map(|p| {
                    p.as_str()
                        .map(str::to_string)
                        .ok_or("a pattern is not a string")
                })
                .collect::<std::result::Result<_, _>>()?;
            let overrides = g["overrides"]
                .as_str()
                .ok_or("a group's 'overrides' is missing")?;
            let refs: Vec<&str> = params.iter().map(String::as_str).collect();
            config
                .groups
                .push(ParamGroup::parse(&refs, overrides).map_err(|e| e.to_string())?);
        }
        config.options.clip_norm = number("clip_norm")?;
        config.options.clip_value = number("clip_value")?;
        config.options.nonfinite = match text("nonfinite")?.as_deref() {
            Some("skip") => NonFinitePolicy::Skip,
            Some("error") | None => NonFinitePolicy::Error,
            Some(other) => return Err(format!("'nonfinite' is '{other}'")),
        };
        config.schedule = text("schedule")?;
        config.missing_gradients = match text("missing_gradients")?.as_deref() {
            Some("error") => MissingGradients::Error,
            Some("skip") | None => MissingGradients::Skip,
            Some(other) => return Err(format!("'missing_gradients' is '{other}'")),
        };
        Ok(config)
    }
}
