//! Prodigy's hyperparameters: prodigyopt 1.1.2's names and defaults, which of them groups
//! may set.

use crate::optim::Hyper;
use crate::spec::{Args, Domain, Spec, Value};
use crate::Result;

/// Hyperparameters of `prodigy` (one parameter group) besides the learning rate γ, a factor
/// on the estimated step (default 1), and β1 (default 0.9), which the optimizer owns
/// ([`Hyper`]; β1 is read from group 0, as prodigyopt reads it from its first group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProdigyConfig {
    /// β2 (default 0.999).
    pub beta2: f64,
    /// β3, the decay of s and of the numerator (default `None`: √β2).
    pub beta3: Option<f64>,
    /// ε, times d in the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay λ (default 0).
    pub weight_decay: f64,
    /// Decoupled (AdamW-style, by dlr) rather than L2 decay (default true).
    pub decouple: bool,
    /// Bias-correct the step (default false).
    pub use_bias_correction: bool,
    /// s accumulates (d/d0)·d·g instead of (d/d0)·dlr·g (default false).
    pub safeguard_warmup: bool,
    /// The initial estimate d0 (default 1e-6).
    pub d0: f64,
    /// The factor on the estimate d̂ (default 1).
    pub d_coef: f64,
    /// The largest factor d may grow by per step (default inf).
    pub growth_rate: f64,
}

/// Keys a parameter group may set; the others are the optimizer's.
pub(super) const GROUP_KEYS: &[&str] = &["weight_decay", "eps", "safeguard_warmup", "lr"];

impl ProdigyConfig {
    pub(super) fn parse(args: &Args) -> Result<(Self, Hyper)> {
        let beta3 = args.opt_number("beta3", Domain::DECAY)?;
        let lr = args.number("lr", 1.0, Domain::NON_NEGATIVE)?;
        let (beta1, beta2) = crate::optim::rule::check::betas(args, (0.9, 0.999))?;
        let cfg = ProdigyConfig {
            beta2,
            beta3,
            eps: args.number("eps", 1e-8, Domain::POSITIVE)?,
            weight_decay: args.number("weight_decay", 0.0, Domain::NON_NEGATIVE)?,
            decouple: args.bool("decouple", true)?,
            use_bias_correction: args.bool("use_bias_correction", false)?,
            safeguard_warmup: args.bool("safeguard_warmup", false)?,
            d0: args.number("d0", 1e-6, Domain::POSITIVE)?,
            d_coef: args.number("d_coef", 1.0, Domain::POSITIVE)?,
            growth_rate: args.limit(
                "growth_rate",
                f64::INFINITY,
                Domain::new(1.0, false, f64::INFINITY, true),
            )?,
        };
        Ok((cfg, Hyper::new(lr, Some(beta1))))
    }

    pub(super) fn to_spec(self, h: &Hyper) -> Spec {
        let spec = Spec::new("prodigy")
            .with("lr", h.lr)
            .with("betas", (h.momentum_or_zero(), self.beta2));
        let spec = match self.beta3 {
            Some(b) => spec.with("beta3", b),
            None => spec,
        };
        spec.with("eps", self.eps)
            .with("weight_decay", self.weight_decay)
            .with("decouple", self.decouple)
            .with("use_bias_correction", self.use_bias_correction)
            .with("safeguard_warmup", self.safeguard_warmup)
            .with("d0", self.d0)
            .with("d_coef", self.d_coef)
            .with("growth_rate", Value::Num(self.growth_rate))
    }

    pub(super) fn beta3(&self) -> f64 {
        self.beta3.unwrap_or(self.beta2.sqrt())
    }
}

pub(super) fn parse(spec: &Spec) -> Result<(ProdigyConfig, Hyper)> {
    let args = Args::new(spec, 0);
    let parsed = ProdigyConfig::parse(&args)?;
    args.finish()?;
    Ok(parsed)
}
