//! An optimizer's state along a path, as the playground draws it: every two-element state
//! tensor and scalar after each step, with the momentum vector, σ and the effective step η/σ.

use gradlab::optim::Optimizer;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A number for JSON: non-finite values become null.
pub fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

/// The state along a path: every two-element state tensor, scalar and optimizer-wide
/// number after each step.
#[derive(Default)]
pub struct StateSeries {
    tensors: BTreeMap<String, Vec<[f64; 2]>>,
    scalars: BTreeMap<String, Vec<Value>>,
    lrs: Vec<f64>,
    steps: usize,
}

impl StateSeries {
    pub fn record(&mut self, opt: &dyn Optimizer<f64>) {
        let state = opt.state_dict();
        for (key, (_, values)) in &state.tensors {
            if values.len() != 2 {
                continue;
            }
            let slot = key.split_once('/').map_or(key.as_str(), |(_, s)| s);
            let series = self.tensors.entry(slot.to_string()).or_default();
            series.resize(self.steps, [f64::NAN; 2]);
            series.push([values[0], values[1]]);
        }
        let scalars = state
            .meta
            .scalars
            .values()
            .flat_map(|m| m.iter())
            .chain(state.meta.extra.iter());
        for (key, v) in scalars {
            let series = self.scalars.entry(key.clone()).or_default();
            series.resize(self.steps, Value::Null);
            series.push(finite(*v));
        }
        self.lrs.push(opt.lr(0));
        self.steps += 1;
    }

    /// The JSON of the series, with the lecture's derived quantities: the momentum vector,
    /// σ = √v of the second-moment state as stored (no bias correction, no ε; Adamax's
    /// infinity norm as is) and the effective step η/σ per coordinate.
    pub fn to_json(&self) -> Value {
        let pairs = |s: &Vec<[f64; 2]>| -> Value {
            json!(s
                .iter()
                .map(|p| [finite(p[0]), finite(p[1])])
                .collect::<Vec<_>>())
        };
        let mut tensors = Map::new();
        for (k, s) in &self.tensors {
            tensors.insert(k.clone(), pairs(s));
        }
        let momentum = ["exp_avg", "momentum_buffer"]
            .iter()
            .find_map(|k| self.tensors.get(*k))
            .map(pairs);
        let second = ["exp_avg_sq", "square_avg", "sum"]
            .iter()
            .find_map(|k| self.tensors.get(*k).map(|s| (s, true)))
            .or_else(|| self.tensors.get("exp_inf").map(|s| (s, false)));
        let (sigma, effective) = match second {
            Some((s, root)) => {
                let sigma: Vec<[f64; 2]> = s
                    .iter()
                    .map(|v| v.map(|x| if root { x.sqrt() } else { x }))
                    .collect();
                let eff: Vec<[f64; 2]> = sigma
                    .iter()
                    .zip(&self.lrs)
                    .map(|(s, lr)| s.map(|x| lr / x))
                    .collect();
                (pairs(&sigma), pairs(&eff))
            }
            None => (Value::Null, Value::Null),
        };
        json!({
            "tensors": tensors,
            "scalars": self.scalars,
            "momentum": momentum,
            "sigma": sigma,
            "effective_lr": effective,
            "slow_weights": self.tensors.get("lookahead_slow").map(pairs),
        })
    }
}
