//! Curvature reports of a trained network (what `gradlab hessian` prints).

use crate::checkpoint::load_model;
use crate::hessian::{second_order, Block, HvpMethod, NetworkHessian, NetworkObjective};
use crate::train::batch;
use crate::{Error, Result};
use gradlab::landscape::critical::{classify, Kind};
use gradlab::landscape::hutchinson::hutchinson;
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab::landscape::slq::{slq, SlqOptions};
use gradlab::landscape::HessianOperator;
use serde_json::{json, Value};
use std::path::PathBuf;

/// What to compute.
#[derive(Debug, Clone)]
pub struct HessianOptions {
    /// Largest eigenvalues.
    pub top: usize,
    /// Smallest eigenvalues.
    pub bottom: usize,
    /// Hutchinson trace.
    pub trace: bool,
    /// SLQ density runs × steps (also gives the minimum ratio).
    pub density: (usize, usize),
    /// Per-tensor top eigenvalue and trace.
    pub per_layer: bool,
    /// Batches of the training data the loss is taken over.
    pub batches: usize,
    /// Their size.
    pub batch_size: usize,
    /// A point is critical when ‖∇L‖ is below this.
    pub grad_tol: f64,
    /// Eigenvalues within `zero_tol·|λ|max` of zero count as zero, not positive, in the
    /// minimum ratio (SLQ's quadrature nodes only approximate the bulk near zero).
    pub zero_tol: f64,
    /// Data folder (default: the bundled digits).
    pub data_dir: Option<PathBuf>,
    /// The loss in training mode (batch norm with each batch's statistics) instead of
    /// evaluation mode (its running statistics).
    pub training_mode: bool,
}

impl Default for HessianOptions {
    fn default() -> Self {
        HessianOptions {
            top: 3,
            bottom: 3,
            trace: true,
            density: (3, 40),
            per_layer: false,
            batches: 2,
            batch_size: 256,
            grad_tol: 1e-3,
            zero_tol: 1e-3,
            data_dir: None,
            training_mode: false,
        }
    }
}

/// Analyses the checkpoint in `dir` (in f64) and returns a JSON report.
pub fn hessian_report(dir: PathBuf, opts: HessianOptions) -> Result<Value> {
    second_order(move || report(&dir, &opts))
}

fn report(dir: &std::path::Path, opts: &HessianOptions) -> Result<Value> {
    let (model32, config) = load_model(dir)?;
    let model = model32.to_dtype(candle_core::DType::F64)?;
    let split = crate::train::checkpoint_data(&config, opts.data_dir.as_deref())?;
    let n_examples = (opts.batches * opts.batch_size).min(split.train.len());
    if n_examples == 0 {
        return Err(Error::setting(
            "--batches",
            "--batches and --batch-size must be at least 1",
        ));
    }
    let idx: Vec<usize> = (0..n_examples).collect();
    let batches = idx
        .chunks(opts.batch_size.max(1))
        .map(|c| batch(&split.train, c))
        .collect::<Result<Vec<_>>>()?;
    let objective = if opts.training_mode {
        NetworkObjective::in_training_mode(&model, batches)?
    } else {
        NetworkObjective::new(&model, batches)?
    };
    let mut h = NetworkHessian::new(objective)?;
    h.check_symmetric()?;
    let n = h.dim();
    let mut grad = vec![0.0; n];
    let loss = h.loss_grad(&mut grad)?;
    let gradient_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
    let lz = lanczos(
        &mut h,
        &LanczosOptions {
            top: opts.top.max(1),
            bottom: opts.bottom.max(1),
            tol: 1e-4,
            max_iter: Some(n.min(200)),
            seed: 0,
        },
    )?;
    let top: Vec<f64> = lz.top.iter().map(|p| p.value).collect();
    let bottom: Vec<f64> = lz.bottom.iter().map(|p| p.value).collect();
    let relative_residuals = |pairs: &[gradlab::landscape::lanczos::Eigenpair]| -> Vec<f64> {
        pairs
            .iter()
            .map(|p| p.residual / p.value.abs().max(f64::MIN_POSITIVE))
            .collect()
    };
    let mut products = lz.products;
    let trace = if opts.trace {
        let t = hutchinson(&mut h, 30, 1)?;
        products += t.samples.len();
        Some(json!({"estimate": t.trace, "std_error": t.std_error, "probes": t.samples.len()}))
    } else {
        None
    };
    let density = slq(
        &mut h,
        &SlqOptions {
            runs: opts.density.0.max(1),
            steps: opts.density.1.max(2),
            grid_points: 400,
            sigma_squared: None,
            seed: 3,
        },
    )?;
    products += density.products;
    let scale = top
        .first()
        .copied()
        .unwrap_or(0.0)
        .abs()
        .max(bottom.first().copied().unwrap_or(0.0).abs());
    let minimum_ratio = density.fraction_above(opts.zero_tol * scale);
    let mut extremes: Vec<f64> = bottom.iter().chain(top.iter()).copied().collect();
    extremes.sort_by(f64::total_cmp);
    let kind = if gradient_norm > opts.grad_tol {
        Kind::NotCritical
    } else {
        classify(&extremes, 1e-6)
    };
    let mut per_layer = Vec::new();
    if opts.per_layer {
        let mut offset = 0;
        for (name, v) in model.params() {
            let len = v.elem_count();
            let mut block = Block::new(&mut h, offset..offset + len);
            let r = lanczos(
                &mut block,
                &LanczosOptions {
                    top: 1,
                    bottom: 0,
                    tol: 1e-3,
                    max_iter: Some(len.min(40)),
                    seed: 0,
                },
            )?;
            let t = hutchinson(&mut block, 10, 2)?;
            products += r.products + t.samples.len();
            per_layer.push(json!({"tensor": name, "parameters": len, "top_eigenvalue": r.top[0].value, "top_relative_residual": r.top[0].residual / r.top[0].value.abs().max(f64::MIN_POSITIVE), "trace": t.trace, "trace_std_error": t.std_error}));
            offset += len;
        }
    }
    Ok(json!({
        "checkpoint": dir.display().to_string(),
        "model": config["model"],
        "parameters": n,
        "examples": n_examples,
        "loss": loss,
        "gradient_norm": gradient_norm,
        "top_eigenvalues": top,
        "bottom_eigenvalues": bottom,
        "top_relative_residuals": relative_residuals(&lz.top),
        "bottom_relative_residuals": relative_residuals(&lz.bottom),
        "lanczos_converged": lz.converged,
        "lanczos_tolerance": 1e-4,
        "trace": trace,
        "minimum_ratio": minimum_ratio,
        "kind": kind.to_string(),
        "hvp_method": match h.method() { HvpMethod::DoubleBackward => "double-backward", HvpMethod::FiniteDifference => "finite-difference" },
        "hvp_cross_check": h.cross_check,
        "hvp_asymmetry": h.asymmetry,
        "hessian_vector_products": products,
        "density": {"grid": density.grid, "density": density.density},
        "per_layer": per_layer,
    }))
}
