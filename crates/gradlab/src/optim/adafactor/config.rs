//! Adafactor's hyperparameters: torch 2.15's names and defaults (`eps=(eps1, eps2)` with
//! `none` for the type's machine epsilon).

use crate::optim::Hyper;
use crate::spec::{Args, Domain, Spec, Value};
use crate::Result;

/// Hyperparameters of `adafactor` (one parameter group) besides the learning rate γ, the
/// cap of the relative step size ρ (default 1e-2), which the optimizer owns ([`Hyper`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdafactorConfig {
    /// The exponent of the second moment's averaging weight `t^beta2_decay` (default −0.8,
    /// at most 0).
    pub beta2_decay: f64,
    /// ε1, the floor of V̂ (squared) and of the row means; `None` is the machine epsilon of
    /// the parameters' type (the default).
    pub eps1: Option<f64>,
    /// ε2, the floor of RMS(θ) in the step size (default 1e-3).
    pub eps2: f64,
    /// The clipping threshold d of RMS(U) (default 1, at least 1).
    pub d: f64,
    /// Decoupled weight decay λ, by γ (default 0).
    pub weight_decay: f64,
    /// The second moment of vectors stored in bfloat16, rounded stochastically
    /// (`state_dtype=bf16`, optimizer-wide; the factored means, O(rows + cols), keep the
    /// parameters' type).
    pub bf16_state: bool,
}

impl AdafactorConfig {
    pub(super) fn parse(args: &Args) -> Result<(Self, Hyper)> {
        let (eps1, eps2) = parse_eps(args)?;
        let lr = args.number("lr", 1e-2, Domain::NON_NEGATIVE)?;
        let cfg = AdafactorConfig {
            beta2_decay: args.number(
                "beta2_decay",
                -0.8,
                Domain::new(f64::NEG_INFINITY, true, 0.0, false),
            )?,
            eps1,
            eps2,
            d: args.number("d", 1.0, Domain::new(1.0, false, f64::INFINITY, true))?,
            weight_decay: args.number("weight_decay", 0.0, Domain::NON_NEGATIVE)?,
            bf16_state: args.word("state_dtype", "f32", &["f32", "bf16"])? == "bf16",
        };
        Ok((cfg, Hyper::new(lr, None)))
    }

    pub(super) fn to_spec(self, h: &Hyper) -> Spec {
        let eps1 = match self.eps1 {
            Some(e) => Value::Num(e),
            None => Value::Word("none".into()),
        };
        let spec = Spec::new("adafactor")
            .with("lr", h.lr)
            .with("beta2_decay", self.beta2_decay)
            .with("eps", Value::Tuple(vec![eps1, Value::Num(self.eps2)]))
            .with("d", self.d)
            .with("weight_decay", self.weight_decay);
        if self.bf16_state {
            spec.with("state_dtype", Value::Word("bf16".into()))
        } else {
            spec
        }
    }
}

/// `eps=(ε1, ε2)`, ε1 a number or `none`.
fn parse_eps(args: &Args) -> Result<(Option<f64>, f64)> {
    const FORM: &str = "must be a pair (eps1, eps2) of non-negative numbers, eps1 possibly none, such as (none, 1e-3)";
    let items = match args.value("eps") {
        None => return Ok((None, 1e-3)),
        Some(Value::Tuple(items)) | Some(Value::List(items)) if items.len() == 2 => items,
        Some(v) => return Err(args.invalid("eps", format!("{FORM}, got {v}"))),
    };
    let number = |v: &Value| match v {
        Value::Num(x) => Domain::NON_NEGATIVE
            .check(*x)
            .map_err(|m| args.invalid("eps", m)),
        other => Err(args.invalid("eps", format!("{FORM}, got {other}"))),
    };
    let eps1 = match &items[0] {
        Value::Word(w) if w == "none" => None,
        v => Some(number(v)?),
    };
    Ok((eps1, number(&items[1])?))
}

pub(super) fn parse(spec: &Spec) -> Result<(AdafactorConfig, Hyper)> {
    let args = Args::new(spec, 0);
    let parsed = AdafactorConfig::parse(&args)?;
    args.finish()?;
    Ok(parsed)
}
