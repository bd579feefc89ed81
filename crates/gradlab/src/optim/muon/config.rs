//! Muon's hyperparameters (torch 2.15's names and defaults) and its learning-rate scaling
//! by shape (`adjust_lr_fn`).

use crate::optim::Hyper;
use crate::spec::{Args, Domain, Spec, Value};
use crate::Result;

/// How the learning rate is scaled to a weight's shape (`adjust_lr_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustLr {
    /// `√max(1, A/B)` (torch's default, `None` or `'original'`).
    Original,
    /// `0.2·√max(A, B)`: the update's RMS matches AdamW's (Liu et al. 2025).
    MatchRmsAdamw,
    /// `√(A/B)`.
    SpectralUnclamped,
}

impl AdjustLr {
    pub(super) fn word(self) -> &'static str {
        match self {
            AdjustLr::Original => "original",
            AdjustLr::MatchRmsAdamw => "match_rms_adamw",
            AdjustLr::SpectralUnclamped => "spectral_unclamped",
        }
    }

    /// The factor for a weight of shape `[a, b]`.
    pub fn ratio(self, a: usize, b: usize) -> f64 {
        let (a, b) = (a as f64, b as f64);
        match self {
            AdjustLr::Original => (a / b).max(1.0).sqrt(),
            AdjustLr::MatchRmsAdamw => 0.2 * a.max(b).sqrt(),
            AdjustLr::SpectralUnclamped => (a / b).sqrt(),
        }
    }
}

/// Hyperparameters of `muon` besides the learning rate γ (default 1e-3) and the momentum μ
/// (default 0.95), which the optimizer owns ([`Hyper`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MuonConfig {
    /// Decoupled weight decay λ, by the unadjusted γ (default 0.1).
    pub weight_decay: f64,
    /// Nesterov momentum (default true).
    pub nesterov: bool,
    /// Newton–Schulz coefficients (a, b, c) (default (3.4445, −4.7750, 2.0315)).
    pub ns_coefficients: (f64, f64, f64),
    /// The Frobenius norm's floor ε (default 1e-7).
    pub eps: f64,
    /// Newton–Schulz iterations (default 5, below 100).
    pub ns_steps: u64,
    /// The learning-rate scaling to the shape.
    pub adjust_lr: AdjustLr,
    /// Newton–Schulz in bfloat16 (torch; default) rather than float32.
    pub ns_bf16: bool,
    /// The optimizer of the tensors that are not 2-D.
    pub fallback: Option<Spec>,
}

impl MuonConfig {
    pub(super) fn parse(args: &Args) -> Result<(Self, Hyper)> {
        let ns_steps = args.count("ns_steps", 5)?;
        if ns_steps >= 100 {
            return Err(args.invalid("ns_steps", format!("must be below 100, got {ns_steps}")));
        }
        let ns_coefficients = args.triple("ns_coefficients", (3.4445, -4.7750, 2.0315))?;
        for x in [ns_coefficients.0, ns_coefficients.1, ns_coefficients.2] {
            if !x.is_finite() {
                return Err(args.invalid("ns_coefficients", format!("must be finite, got {x}")));
            }
        }
        let adjust_lr = match args.word(
            "adjust_lr_fn",
            "original",
            &["none", "original", "match_rms_adamw", "spectral_unclamped"],
        )? {
            "match_rms_adamw" => AdjustLr::MatchRmsAdamw,
            "spectral_unclamped" => AdjustLr::SpectralUnclamped,
            _ => AdjustLr::Original,
        };
        let fallback = match args.spec_value("fallback")? {
            Some(s) if matches!(s.name.as_str(), "muon" | "sam" | "lbfgs") => {
                return Err(args.invalid(
                    "fallback",
                    format!(
                    "must be an optimizer that takes any tensor and one gradient per step, got {}",
                    s.name
                ),
                ))
            }
            other => other,
        };
        let lr = args.number("lr", 1e-3, Domain::NON_NEGATIVE)?;
        let weight_decay = args.number("weight_decay", 0.1, Domain::NON_NEGATIVE)?;
        let momentum = args.number("momentum", 0.95, Domain::DECAY)?;
        let cfg = MuonConfig {
            weight_decay,
            nesterov: args.bool("nesterov", true)?,
            ns_coefficients,
            eps: args.number("eps", 1e-7, Domain::POSITIVE)?,
            ns_steps,
            adjust_lr,
            ns_bf16: args.word("ns_dtype", "bf16", &["bf16", "f32"])? == "bf16",
            fallback,
        };
        Ok((cfg, Hyper::new(lr, Some(momentum))))
    }

    pub(super) fn to_spec(&self, h: &Hyper) -> Spec {
        let spec = Spec::new("muon")
            .with("lr", h.lr)
            .with("weight_decay", self.weight_decay)
            .with("momentum", h.momentum_or_zero())
            .with("nesterov", self.nesterov)
            .with("ns_coefficients", self.ns_coefficients)
            .with("eps", self.eps)
            .with("ns_steps", self.ns_steps as f64)
            .with("adjust_lr_fn", Value::Word(self.adjust_lr.word().into()))
            .with(
                "ns_dtype",
                Value::Word(if self.ns_bf16 { "bf16" } else { "f32" }.into()),
            );
        match &self.fallback {
            Some(f) => spec.with("fallback", Value::Spec(f.clone())),
            None => spec,
        }
    }
}
