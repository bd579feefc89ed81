//! `gradlab hessian`: the curvature of a trained network at a checkpoint.

use crate::plot::{self, LineChart, Path2};
use anyhow::{Context, Result};
use gradlab_candle::analysis::{hessian_report, HessianOptions};
use std::path::PathBuf;

/// Arguments of `gradlab hessian`.
#[derive(clap::Args, Debug)]
pub struct HessianArgs {
    /// The training output folder (or its checkpoint/ folder).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Largest eigenvalues to report.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Smallest eigenvalues to report.
    #[arg(long, default_value_t = 3)]
    bottom: usize,
    /// Estimate the trace (Hutchinson).
    #[arg(long)]
    trace: bool,
    /// Plot the eigenvalue density (SLQ) to this SVG.
    #[arg(long)]
    density: Option<PathBuf>,
    /// Per tensor: top eigenvalue and trace of its diagonal block.
    #[arg(long)]
    per_layer: bool,
    /// Training batches the loss is taken over.
    #[arg(long, default_value_t = 2)]
    batches: usize,
    /// Their size.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// A folder with full MNIST files (default: the bundled digits).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The loss in training mode: batch norm normalises each batch with its own statistics
    /// (the loss the optimizer descends) instead of its running statistics.
    #[arg(long)]
    training_mode: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The eigenvalue density of a Hessian report as (eigenvalue, log10 density) points.
pub fn density_points(report: &serde_json::Value) -> Vec<(f64, f64)> {
    let values = |k: &str| report["density"][k].as_array().cloned().unwrap_or_default();
    values("grid")
        .iter()
        .zip(&values("density"))
        .map(|(x, y)| {
            (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(0.0).max(1e-7).log10(),
            )
        })
        .collect()
}

/// Runs the command.
pub fn run(args: HessianArgs) -> Result<()> {
    if let Some(path) = &args.density {
        gradlab::io::check_writable(path).context("--density")?;
    }
    let opts = HessianOptions {
        top: args.top,
        bottom: args.bottom,
        trace: args.trace,
        per_layer: args.per_layer,
        batches: args.batches,
        batch_size: args.batch_size,
        data_dir: args.data.clone(),
        training_mode: args.training_mode,
        ..HessianOptions::default()
    };
    let report = hessian_report(args.checkpoint.clone(), opts)
        .with_context(|| format!("--checkpoint {}", args.checkpoint.display()))?;
    if args.json {
        let mut r = report.clone();
        if args.density.is_none() {
            r.as_object_mut().map(|o| o.remove("density"));
        }
        println!("{}", serde_json::to_string_pretty(&r)?);
        return write_density(&args, &report);
    }
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
    println!(
        "{} parameters, loss {:.5} on {} examples",
        report["parameters"],
        report["loss"].as_f64().unwrap_or(f64::NAN),
        report["examples"]
    );
    println!(
        "gradient norm      {:.4e}",
        report["gradient_norm"].as_f64().unwrap_or(f64::NAN)
    );
    println!("top eigenvalues    {}", list("top_eigenvalues"));
    println!("bottom eigenvalues {}", list("bottom_eigenvalues"));
    if let Some(t) = report["trace"].as_object() {
        println!(
            "trace              {:.4} ± {:.4}",
            t["estimate"].as_f64().unwrap_or(f64::NAN),
            t["std_error"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "minimum ratio      {:.4}",
        report["minimum_ratio"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "kind               {}",
        report["kind"].as_str().unwrap_or("?")
    );
    println!(
        "({} Hessian-vector products by {}, cross-check {:.1e}, asymmetry {:.1e}; Lanczos {})",
        report["hessian_vector_products"],
        report["hvp_method"].as_str().unwrap_or("?"),
        report["hvp_cross_check"].as_f64().unwrap_or(f64::NAN),
        report["hvp_asymmetry"].as_f64().unwrap_or(f64::NAN),
        if report["lanczos_converged"].as_bool() == Some(true) {
            "converged: every residual within 1e-4 of its eigenvalue"
        } else {
            "NOT converged: see the residuals in --json"
        }
    );
    for l in report["per_layer"].as_array().into_iter().flatten() {
        println!(
            "  {:<14} top {:>10.4}  trace {:>10.4}",
            l["tensor"].as_str().unwrap_or("?"),
            l["top_eigenvalue"].as_f64().unwrap_or(f64::NAN),
            l["trace"].as_f64().unwrap_or(f64::NAN)
        );
    }
    write_density(&args, &report)
}

/// The density plot, written after the results are printed (so a failed write loses none).
fn write_density(args: &HessianArgs, report: &serde_json::Value) -> Result<()> {
    if let Some(path) = &args.density {
        let points = density_points(report);
        plot::line_chart(
            path,
            &LineChart {
                title: "Hessian eigenvalue density (SLQ)",
                x_label: "eigenvalue",
                y_label: "log10 density",
                series: vec![Path2 {
                    label: "density".into(),
                    points,
                }],
                log_x: false,
                secondary: None,
                markers: vec![(0.0, "zero".into())],
                cap_blowup: false,
                bands: Vec::new(),
            },
        )?;
    }
    Ok(())
}
