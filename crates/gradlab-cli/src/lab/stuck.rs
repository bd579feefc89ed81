//! Study: training stuck is not small gradient.

use super::report::{esc, Claim, Figure, Section, Verdict};
use super::runs::*;
use super::Budget;
use crate::csv::{num, Table};
use crate::plot::{self, LineChart, Path2};
use anyhow::Result;
use gradlab_candle::analysis::{hessian_report, HessianOptions};
use std::path::Path;

/// Study 4: training stuck is not small gradient.
pub fn stuck(out: &Path, budget: &Budget) -> Result<Section> {
    let c = config(out, "stuck", budget, "sgd(lr=0.05)", 64, 0);
    let r = run(&c)?;
    let loss: Vec<(f64, f64)> =
        windowed(&r.steps.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(), 10);
    let grad: Vec<(f64, f64)> =
        windowed(&r.steps.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>(), 10);
    let svg = out.join("data/stuck_loss_gradient.svg");
    plot::line_chart(
        &svg,
        &LineChart {
            title: "training loss and gradient norm (means of 10 steps)",
            x_label: "step",
            y_label: "training loss",
            series: vec![Path2 {
                label: "loss".into(),
                points: loss.clone(),
            }],
            log_x: false,
            secondary: Some((
                "gradient norm".into(),
                Path2 {
                    label: "gradient norm".into(),
                    points: grad.clone(),
                },
            )),
            markers: Vec::new(),
            cap_blowup: false,
            bands: Vec::new(),
        },
    )?;
    let mut csv = Table::new(&["step", "loss", "grad_norm"]);
    for s in &r.steps {
        csv.row([num(s.0).as_str(), num(s.1).as_str(), num(s.2).as_str()]);
    }
    csv.save(&out.join("data/stuck.csv"))?;
    let opts = HessianOptions {
        top: 3,
        bottom: 3,
        trace: true,
        density: (5, 40),
        per_layer: false,
        batches: 1,
        batch_size: budget.curvature_examples.min(512),
        ..HessianOptions::default()
    };
    let report = hessian_report(r.dir.clone(), opts)?;
    gradlab::io::write_atomic(
        &out.join("data/stuck_hessian.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let density = crate::hessian_cmd::density_points(&report);
    let dsvg = out.join("data/stuck_density.svg");
    chart(
        &dsvg,
        "Hessian eigenvalue density at the end (SLQ)",
        "eigenvalue",
        "log10 density",
        vec![Path2 {
            label: "density".into(),
            points: density,
        }],
        Vec::new(),
        false,
    )?;
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    let list = |k: &str| {
        report[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| format!("{:.4}", v.as_f64().unwrap_or(f64::NAN)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let peak = grad.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let last_grad = grad.last().map_or(f64::NAN, |p| p.1);
    let (first_loss, last_loss) = (
        loss.first().map_or(f64::NAN, |p| p.1),
        loss.last().map_or(f64::NAN, |p| p.1),
    );
    let summary = vec![
        format!(
            "The loss fell from {first_loss:.3} to {last_loss:.3}, while the gradient norm ended at {last_grad:.3} ({:.0}% of its peak {peak:.3}): {}",
            100.0 * last_grad / peak,
            if last_grad > 0.3 * peak {
                "the gradient did not become small although the loss levelled off, so the slowdown is not explained by a small gradient."
            } else {
                "here the gradient did shrink with the loss."
            }
        ),
        format!(
            "At the end (f64 Hessian on {} examples, {}): top eigenvalues {}, bottom eigenvalues {}, minimum ratio {:.3}, kind <b>{}</b> (gradient norm {:.3e}).",
            report["examples"],
            esc(report["hvp_method"].as_str().unwrap_or("")),
            list("top_eigenvalues"),
            list("bottom_eigenvalues"),
            f("minimum_ratio"),
            esc(report["kind"].as_str().unwrap_or("?")),
            f("gradient_norm")
        ),
    ];
    Ok(Section {
        id: "stuck",
        title: "Training stuck is not small gradient".into(),
        summary,
        table: None,
        figures: vec![
            Figure { svg, caption: "Loss (left axis) and gradient norm (right axis) of plain SGD.".into(), data: vec!["data/stuck.csv".into()] },
            Figure { svg: dsvg, caption: "Eigenvalue density of the Hessian at the end of training: a bulk near zero and a few large outliers.".into(), data: vec!["data/stuck_hessian.json".into()] },
        ],
        commands: vec![command(&c), format!("gradlab hessian --checkpoint {} --trace --density density.svg", r.dir.display())],
        claims: vec![Claim::new(
            "Training stuck is not small gradient",
            format!("the loss went from {first_loss:.3} to {last_loss:.3} with the gradient norm ending at {:.0}% of its peak (holds above 30%, fails below 10%)", 100.0 * last_grad / peak),
            Verdict::from(last_grad > 0.3 * peak, last_grad < 0.1 * peak),
        )],
    })
}
