//! The saddle study's second half: the network where plain SGD stalled, diagnosed as the
//! surface was (extreme Hessian eigenvalues, a step along the most negative eigenvector beside
//! the quadratic model and the negative gradient).

use crate::lab::report::{Claim, Verdict};
use crate::lab::runs::f64_model_and_batches;
use anyhow::Result;
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab::landscape::Objective;
use gradlab_candle::hessian::{second_order, NetworkHessian, NetworkObjective};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The network where training stalled, seen as the surface was: the Hessian's extreme
/// eigenvalues, and the loss after steps along the most negative eigenvector (oriented
/// downhill) beside steps of the same lengths along the negative gradient.
pub(super) struct NetworkDiagnosis {
    examples: usize,
    loss: f64,
    gradient_norm: f64,
    top: f64,
    bottom: f64,
    /// The gradient's component along the eigenvector (≤ 0 after orienting it).
    slope: f64,
    /// (step length, loss along the eigenvector, the quadratic model's prediction, loss
    /// along −g/‖g‖).
    steps: Vec<(f64, f64, f64, f64)>,
}

pub(super) fn diagnose_network(dir: PathBuf, examples: usize) -> Result<NetworkDiagnosis> {
    second_order(move || -> gradlab_candle::Result<NetworkDiagnosis> {
        let (model, batches) = f64_model_and_batches(&dir, examples)?;
        let examples = batches.iter().map(|(_, labels)| labels.elem_count()).sum();
        let mut objective = NetworkObjective::new(&model, batches.clone())?;
        let x = objective.point()?;
        let mut g = vec![0.0; x.len()];
        let loss = objective.loss_grad(&x, &mut g)?;
        let gradient_norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let mut h = NetworkHessian::new(NetworkObjective::new(&model, batches)?)?;
        let pairs = lanczos(
            &mut h,
            &LanczosOptions {
                top: 1,
                bottom: 1,
                tol: 1e-4,
                max_iter: Some(60),
                seed: 0,
            },
        )?;
        let mut v = pairs.bottom[0].vector.clone();
        let mut slope: f64 = v.iter().zip(&g).map(|(a, b)| a * b).sum();
        if slope > 0.0 {
            v.iter_mut().for_each(|a| *a = -*a);
            slope = -slope;
        }
        let bottom = pairs.bottom[0].value;
        let mut steps = Vec::new();
        for t in [0.1, 0.3, 1.0, 3.0] {
            let along = |d: &[f64], scale: f64| -> Vec<f64> {
                x.iter().zip(d).map(|(a, b)| a + t * scale * b).collect()
            };
            let eig = objective.loss(&along(&v, 1.0))?;
            let grad = objective.loss(&along(&g, -1.0 / gradient_norm.max(1e-300)))?;
            steps.push((t, eig, loss + t * slope + 0.5 * bottom * t * t, grad));
        }
        Ok(NetworkDiagnosis {
            examples,
            loss,
            gradient_norm,
            top: pairs.top[0].value,
            bottom,
            slope,
            steps,
        })
    })
    .map_err(anyhow::Error::from)
}

/// The network part of the section: text, table row data and JSON.
pub(super) fn network_part(
    out: &Path,
    d: &NetworkDiagnosis,
) -> Result<(Vec<String>, serde_json::Value, Claim)> {
    let minimum_ratio = std::fs::read_to_string(out.join("data/stuck_hessian.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["minimum_ratio"].as_f64());
    let best_eig = d.steps.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    let best_grad = d.steps.iter().map(|s| s.3).fold(f64::INFINITY, f64::min);
    let (t_best, _, predicted, _) = d
        .steps
        .iter()
        .copied()
        .find(|s| s.1 == best_eig)
        .unwrap_or((f64::NAN, f64::NAN, f64::NAN, f64::NAN));
    let mut text = vec![format!(
        "The same diagnosis on the network, where plain SGD stalled (the final weights of the study above, f64 Hessian on {} training examples): loss {:.4}, gradient norm {:.3e}, Hessian eigenvalues from {:.4} to {:.4}{}. {}",
        d.examples,
        d.loss,
        d.gradient_norm,
        d.bottom,
        d.top,
        minimum_ratio.map_or(String::new(), |r| format!(", minimum ratio {r:.3} (SLQ)")),
        if d.bottom < 0.0 {
            format!(
                "There is negative curvature, {:.1}% of the largest eigenvalue in size.",
                100.0 * d.bottom.abs() / d.top
            )
        } else {
            "There is no negative curvature: this is not a saddle.".to_string()
        }
    )];
    text.push(format!(
        "Steps along the most negative eigenvector (oriented downhill; the gradient's slope along it is {:.2e}): the best, of length {t_best}, {} the loss to {best_eig:.4} (the quadratic model predicted {predicted:.4}); steps of the same lengths along the negative gradient reach {best_grad:.4}. {}",
        d.slope,
        if best_eig < d.loss { "lowers" } else { "does not lower" },
        if best_eig < d.loss && best_eig < best_grad {
            "Here the curvature direction beats the gradient: the stall is saddle-like."
        } else if best_eig < d.loss {
            "The gradient direction does better: this is no saddle's plateau; the gradient still leads down, only slowly at the learning rate used."
        } else {
            "Escaping along negative curvature does not help here."
        }
    ));
    let json = json!({
        "examples": d.examples, "loss": d.loss, "gradient_norm": d.gradient_norm,
        "top_eigenvalue": d.top, "bottom_eigenvalue": d.bottom, "minimum_ratio": minimum_ratio,
        "slope_along_eigenvector": d.slope,
        "steps": d.steps.iter().map(|s| json!({"length": s.0, "loss_along_eigenvector": s.1, "quadratic_model": s.2, "loss_along_negative_gradient": s.3})).collect::<Vec<_>>(),
    });
    let claim = Claim::new(
        "Where training stalls, the Hessian has negative eigenvalues (a saddle, not a minimum)",
        format!(
            "most negative eigenvalue {:.4} against the largest {:.4} (holds below −0.1% of it, fails at ≥ 0)",
            d.bottom, d.top
        ),
        Verdict::from(d.bottom < -1e-3 * d.top, d.bottom >= 0.0),
    );
    Ok((text, json, claim))
}
