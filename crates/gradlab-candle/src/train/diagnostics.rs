//! What the trainer reports beside the loss: why a gradient became non-finite, each tensor's
//! gradient norm, SWATS's switches, the process's peak memory.

use super::records::{SwatsSwitch, TensorHealth};
use crate::models::Network;
use crate::optim::GradlabOptimizer;
use crate::Result;
use candle_core::Tensor;
use gradlab::dist::Collective;
use std::collections::HashMap;

/// Why a step met a non-finite gradient, when it can be told: parameters already
/// non-finite mean the previous update overflowed (its learning rate and the optimizer's
/// settings named); a non-finite loss at finite parameters means the forward pass did.
pub(super) fn non_finite_cause(
    model: &dyn Network,
    loss: f64,
    previous_lr: Option<f64>,
    optimizer: &str,
) -> String {
    for (name, v) in model.params() {
        let Ok(values) = flat(v.as_tensor()) else {
            continue;
        };
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            let update = match previous_lr {
                Some(lr) => format!(
                    "the previous step's update with lr = {} ({optimizer})",
                    gradlab::spec::format_number(lr)
                ),
                None => "the checkpoint's parameters".to_string(),
            };
            return format!(
                "; cause: parameter '{name}' is already {} at element {i}: {update} made it \
                 overflow; lower the learning rate, raise eps, or clip gradients (--clip-norm)",
                values[i]
            );
        }
    }
    if !loss.is_finite() {
        return format!(
            "; cause: the loss is {loss} at finite parameters (the logits overflowed); lower the \
             learning rate or clip gradients (--clip-norm)"
        );
    }
    String::new()
}

/// Each tensor's gradient norm at the last step: of `grads` in one process, of the global
/// mean gradient (combined over ranks) when data-parallel.
pub(super) fn tensor_grad_norms(
    opt: &GradlabOptimizer,
    grads: Option<&candle_core::backprop::GradStore>,
) -> Result<HashMap<String, f64>> {
    if let Some(s) = opt.sharded() {
        return Ok(s.last_tensor_grad_norms());
    }
    let mut out = HashMap::new();
    if let Some(grads) = grads {
        for (name, v) in opt.names().iter().zip(opt.vars()) {
            if let Some(g) = grads.get(v.as_tensor()) {
                out.insert(name.clone(), norm(&flat(g)?));
            }
        }
    }
    Ok(out)
}

/// SWATS's switch per tensor (`null` for other optimizers). A sharded rank holds pieces of
/// some tensors only, so the ranks' lists are gathered and merged by tensor (collective).
pub(super) fn swats_status(
    opt: &mut GradlabOptimizer,
    collective: &dyn Collective,
) -> Option<Vec<SwatsSwitch>> {
    let mine = opt.with_engine(|e| e.swats()).map(|list| {
        list.into_iter()
            .map(|t| SwatsSwitch {
                tensor: t.tensor,
                step: t.switched_at,
                sgd_lr: t.sgd_lr,
            })
            .collect::<Vec<_>>()
    });
    if collective.size() == 1 {
        return mine;
    }
    let sent = serde_json::to_vec(&mine).expect("plain data");
    let mut merged: Vec<SwatsSwitch> = Vec::new();
    for bytes in collective.all_gather_bytes(&sent) {
        let list: Option<Vec<SwatsSwitch>> = serde_json::from_slice(&bytes).ok().flatten();
        for entry in list? {
            if !merged.iter().any(|m| m.tensor == entry.tensor) {
                merged.push(entry);
            }
        }
    }
    merged.sort_by(|a, b| a.tensor.cmp(&b.tensor));
    Some(merged)
}

/// The process's peak resident memory (Linux `VmHWM`), if known.
pub(super) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The weights of every tensor, flat (to measure a step's updates).
pub(super) fn weights(model: &dyn Network) -> Result<Vec<Vec<f32>>> {
    model
        .params()
        .iter()
        .map(|(_, v)| flat(v.as_tensor()))
        .collect()
}

/// Per tensor, after a step from the weights `before`: its gradient's norm, its weights' norm
/// and the update's size relative to the weights (the epoch record's `tensors`).
pub(super) fn tensor_health(
    model: &dyn Network,
    before: &[Vec<f32>],
    grad_norms: &HashMap<String, f64>,
) -> Result<Vec<TensorHealth>> {
    let mut health = Vec::new();
    for ((name, v), w0) in model.params().iter().zip(before) {
        let w1 = flat(v.as_tensor())?;
        let delta: Vec<f32> = w1.iter().zip(w0).map(|(a, b)| a - b).collect();
        let w_norm = norm(w0);
        health.push(TensorHealth {
            name: name.clone(),
            grad_norm: grad_norms.get(name).copied().unwrap_or(0.0),
            weight_norm: norm(&w1),
            update_ratio: if w_norm > 0.0 {
                norm(&delta) / w_norm
            } else {
                0.0
            },
        });
    }
    Ok(health)
}

/// A tensor's values, flattened.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// The Euclidean norm.
fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt()
}
