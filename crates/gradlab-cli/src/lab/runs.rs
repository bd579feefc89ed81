//! What the studies share: the lab's training runs (configuration, running, reading their
//! metrics back), curve helpers and the curvature of a checkpoint.

use super::Budget;
use crate::plot::{self, Band, LineChart, Path2};
use anyhow::{Context, Result};
use candle_core::Tensor;
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab::landscape::sharpness::epsilon_sharpness;
use gradlab_candle::checkpoint::load_model;
use gradlab_candle::hessian::{second_order, NetworkHessian, NetworkObjective};
use gradlab_candle::models::{Model, ModelKind, ModelSpec};
use gradlab_candle::train::{
    self, batch, DataOrder, EpochRecord, InputScale, Record, SummaryRecord, TrainConfig,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
/// The optimizers of the lecture, with learning rates that suit this MLP.
pub fn lab_optimizers() -> Vec<String> {
    [
        "sgd(lr=0.05)",
        "sgd(lr=0.05, momentum=0.9)",
        "sgd(lr=0.05, momentum=0.9, nesterov=true)",
        "adagrad(lr=0.01)",
        "rmsprop(lr=0.001)",
        "adam(lr=0.001)",
        "adamw(lr=0.001, weight_decay=0.01)",
        "adam(lr=0.001, amsgrad=true)",
        "nadam(lr=0.002)",
        "radam(lr=0.001)",
        "adabound(lr=0.001, final_lr=0.1)",
        "swats(lr=0.001)",
        "lookahead(adam(lr=0.001), k=5, alpha=0.5)",
        "lamb(lr=0.01)",
        "lars(lr=1.0, momentum=0.9, trust_coefficient=0.01)",
        "lion(lr=0.0001)",
        "adopt(lr=0.001)",
        "ademamix(lr=0.001)",
        "adamw_schedulefree(lr=0.0025)",
        "adafactor(lr=0.01)",
        "prodigy(lr=1)",
        "sam(sgd(lr=0.05, momentum=0.9), rho=0.05)",
        "muon(lr=0.02, fallback=adamw(lr=0.001))",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One finished training run.
pub(super) struct Run {
    pub(super) summary: SummaryRecord,
    /// (step, loss, grad_norm, lr, seconds).
    pub(super) steps: Vec<(f64, f64, f64, f64, f64)>,
    /// Epoch lines.
    pub(super) epochs: Vec<EpochRecord>,
    pub(super) dir: PathBuf,
}

impl Run {
    pub(super) fn ms_per_step(&self) -> f64 {
        let mut d: Vec<f64> = self.steps.windows(2).map(|w| w[1].4 - w[0].4).collect();
        if d.is_empty() {
            return f64::NAN;
        }
        d.sort_by(f64::total_cmp);
        1e3 * d[d.len() / 2]
    }
    pub(super) fn test_accuracy(&self) -> f64 {
        self.summary.test_accuracy
    }
    pub(super) fn validation_loss(&self) -> f64 {
        self.summary.validation_loss.unwrap_or(f64::NAN)
    }
    pub(super) fn validation_accuracy(&self) -> f64 {
        self.summary.validation_accuracy.unwrap_or(f64::NAN)
    }
    pub(super) fn test_loss(&self) -> f64 {
        self.summary.test_loss
    }
    pub(super) fn train_loss(&self) -> f64 {
        self.summary.train_loss
    }
}

pub(super) fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

pub(super) fn config(
    out: &Path,
    name: &str,
    budget: &Budget,
    optimizer: &str,
    batch_size: usize,
    seed: u64,
) -> TrainConfig {
    let mut c = TrainConfig::new(
        ModelSpec::new(ModelKind::Mlp),
        optimizer,
        &out.join("runs").join(name),
    );
    c.epochs = budget.epochs;
    c.train_limit = budget.train_limit;
    c.data_dir = budget.data_dir.clone();
    // The report's folder is the lab's own: a new report replaces the old one's runs.
    c.overwrite = true;
    c.batch_size = batch_size;
    c.seed = seed;
    c
}

/// Recompute every run even when its folder holds a finished run of the same configuration
/// (`--fresh`).
static FRESH: AtomicBool = AtomicBool::new(false);
/// Runs reused so far.
static REUSED: AtomicUsize = AtomicUsize::new(0);
/// Runs finished (trained or reused) so far.
static FINISHED: AtomicUsize = AtomicUsize::new(0);

/// How many runs have finished (trained or reused).
pub(super) fn finished_runs() -> usize {
    FINISHED.load(Ordering::Relaxed)
}

/// Sets whether runs are recomputed even when a finished one can be reused.
pub(super) fn set_fresh(fresh: bool) {
    FRESH.store(fresh, Ordering::Relaxed);
}

/// How many runs were reused instead of trained.
pub(super) fn reused_runs() -> usize {
    REUSED.load(Ordering::Relaxed)
}

/// The summary of a finished run of exactly `config` (the same configuration, written by the
/// same gradlab version, its checkpoint in place) in `config.out`, unless `--fresh`.
fn reusable(config: &TrainConfig) -> Option<SummaryRecord> {
    if FRESH.load(Ordering::Relaxed) || !config.out.join("checkpoint").is_dir() {
        return None;
    }
    let text = std::fs::read_to_string(config.out.join("summary.json")).ok()?;
    let summary: SummaryRecord = serde_json::from_str(&text).ok()?;
    (summary.config.to_json() == config.to_json()
        && summary.gradlab_version == env!("CARGO_PKG_VERSION")
        && config.out.join("metrics.jsonl").is_file())
    .then_some(summary)
}

/// One training run (or a finished one of the same configuration, reused); after Ctrl-C,
/// none starts (the run in progress has finished and written its files).
pub(super) fn run(config: &TrainConfig) -> Result<Run> {
    run_with(config, |c, on_event| {
        Ok(train::train(c, None, on_event)?.record)
    })
}

/// [`run`] with another trainer (a model of the lab's own, through `train::Trainer`):
/// `train` trains `config`, reporting its events to the closure it is given, and returns
/// the summary.
pub(super) fn run_with(
    config: &TrainConfig,
    train: impl FnOnce(
        &TrainConfig,
        &mut dyn FnMut(train::Event),
    ) -> gradlab_candle::Result<SummaryRecord>,
) -> Result<Run> {
    crate::interrupt::check()?;
    let name = config
        .out
        .strip_prefix(config.out.ancestors().nth(2).unwrap_or(Path::new("")))
        .unwrap_or(&config.out)
        .display()
        .to_string();
    let summary = match reusable(config) {
        Some(summary) => {
            REUSED.fetch_add(1, Ordering::Relaxed);
            super::progress::note(&format!(
                "  reused {} (same configuration)",
                config.out.display()
            ));
            summary
        }
        None => {
            let mut on_event = |e: train::Event| {
                if let train::Event::Step { step, total, .. } = e {
                    super::progress::run_step(&name, step, total);
                }
            };
            train(config, &mut on_event)
                .with_context(|| format!("training with {}", config.optimizer))?
        }
    };
    FINISHED.fetch_add(1, Ordering::Relaxed);
    super::progress::run_finished();
    let text = std::fs::read_to_string(config.out.join("metrics.jsonl"))?;
    let (mut steps, mut epochs) = (Vec::new(), Vec::new());
    for line in text.lines() {
        match serde_json::from_str(line)? {
            Record::Step(s) => steps.push((s.step as f64, s.loss, s.grad_norm, s.lr, s.seconds)),
            Record::Epoch(e) => epochs.push(e),
        }
    }
    Ok(Run {
        summary,
        steps,
        epochs,
        dir: config.out.clone(),
    })
}

/// The `gradlab train` command that repeats `config`'s run (every setting that differs from
/// the command's defaults).
pub(super) fn command(config: &TrainConfig) -> String {
    let m = &config.model;
    let mut c = format!("gradlab train --model {}", m.kind.name());
    if m.kind == ModelKind::Mlp && m.widths != [256, 128] {
        let widths: Vec<String> = m.widths.iter().map(usize::to_string).collect();
        c.push_str(&format!(" --widths {}", widths.join(",")));
    }
    if m.batch_norm {
        c.push_str(" --batch-norm");
    }
    if m.dropout > 0.0 {
        c.push_str(&format!(" --dropout {}", m.dropout));
    }
    c.push_str(&format!(
        " --optimizer '{}' --epochs {} --batch-size {} --seed {}",
        config.optimizer, config.epochs, config.batch_size, config.seed
    ));
    if let Some(s) = &config.schedule {
        c.push_str(&format!(" --schedule '{s}'"));
    }
    if let Some(v) = config.grad_noise {
        c.push_str(&format!(" --grad-noise {v}"));
    }
    if let Some(d) = &config.data_dir {
        c.push_str(&format!(" --data {}", d.display()));
    }
    if config.inputs != InputScale::Standardized {
        c.push_str(&format!(" --inputs {}", config.inputs.name()));
    }
    if let Some(classes) = &config.classes {
        let list: Vec<String> = classes.iter().map(u8::to_string).collect();
        c.push_str(&format!(" --classes {}", list.join(",")));
    }
    if let Some(n) = config.validation {
        c.push_str(&format!(" --validation {n}"));
    }
    if let Some(n) = config.train_limit {
        c.push_str(&format!(" --train-limit {n}"));
    }
    if config.data_order != DataOrder::Shuffled {
        c.push_str(&format!(" --data-order {}", config.data_order.name()));
    }
    if let Some(k) = &config.curriculum {
        c.push_str(&format!(
            " --curriculum {} --curriculum-start {} --curriculum-ramp {}",
            k.difficulty.display(),
            k.start,
            k.ramp
        ));
    }
    if let Some(d) = &config.init {
        c.push_str(&format!(" --init {}", d.display()));
    }
    for prefix in &config.init_exclude {
        c.push_str(&format!(" --init-exclude {prefix}"));
    }
    c.push_str(&format!(" --out {}", config.out.display()));
    c
}

/// Runs `config` once per seed (seed 0, 1, ...), each in its own folder.
pub(super) fn run_seeds(config: &TrainConfig, seeds: usize) -> Result<Vec<Run>> {
    (0..seeds.max(1) as u64)
        .map(|seed| {
            let mut c = config.clone();
            c.seed = seed;
            c.out = config.out.with_file_name(format!(
                "{}_{seed}",
                config
                    .out
                    .file_name()
                    .map_or("run".into(), |n| n.to_string_lossy().into_owned())
            ));
            run(&c)
        })
        .collect()
}

/// A run's log10 training loss per step, averaged over windows of `w` steps.
pub(super) fn log_loss_curve(run: &Run, w: usize) -> Vec<(f64, f64)> {
    windowed(
        &run.steps
            .iter()
            .map(|s| (s.0, s.1.max(1e-12).log10()))
            .collect::<Vec<_>>(),
        w,
    )
}

/// The runs' log10 training loss, averaged over windows of `w` steps: mean and spread.
pub(super) fn loss_curves(runs: &[Run], w: usize) -> (Vec<(f64, f64)>, Band) {
    let curves: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| log_loss_curve(r, w)).collect();
    mean_band(&curves)
}

pub(super) fn mean_of(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
}

/// Mean over windows of `w` steps, as (step, mean) points.
pub(super) fn windowed(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    points
        .chunks(w.max(1))
        .map(|c| {
            (
                c[c.len() - 1].0,
                c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64,
            )
        })
        .collect()
}

/// Mean curve and (x, min, max) band over several runs' curves (same x).
pub(super) fn mean_band(curves: &[Vec<(f64, f64)>]) -> (Vec<(f64, f64)>, Band) {
    let n = curves.iter().map(Vec::len).min().unwrap_or(0);
    let mut mean = Vec::with_capacity(n);
    let mut band = Vec::with_capacity(n);
    for i in 0..n {
        let ys: Vec<f64> = curves.iter().map(|c| c[i].1).collect();
        let m = ys.iter().sum::<f64>() / ys.len() as f64;
        let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        mean.push((curves[0][i].0, m));
        band.push((curves[0][i].0, lo, hi));
    }
    (mean, band)
}

pub(super) fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

pub(super) fn chart(
    path: &Path,
    title: &str,
    x: &str,
    y: &str,
    series: Vec<Path2>,
    bands: Vec<(usize, Band)>,
    log_x: bool,
) -> Result<()> {
    plot::line_chart(
        path,
        &LineChart {
            title,
            x_label: x,
            y_label: y,
            series,
            log_x,
            secondary: None,
            markers: Vec::new(),
            cap_blowup: false,
            bands,
        },
    )
}

/// A checkpoint's model in f64 and the first `examples` training digits (at least one) in
/// batches of 500: what the curvature measurements evaluate.
pub(super) fn f64_model_and_batches(
    dir: &Path,
    examples: usize,
) -> gradlab_candle::Result<(Model, Vec<(Tensor, Tensor)>)> {
    let (model, config) = load_model(dir)?;
    let model = model.to_dtype(candle_core::DType::F64)?;
    let split = train::checkpoint_data(&config, None)?;
    let idx: Vec<usize> = (0..examples.min(split.train.len()).max(1)).collect();
    let batches = idx
        .chunks(500)
        .map(|c| batch(&split.train, c))
        .collect::<gradlab_candle::Result<Vec<_>>>()?;
    Ok((model, batches))
}

/// Curvature of a checkpoint: (ε-sharpness, top Hessian eigenvalue), computed in f64.
pub(super) fn curvature(dir: PathBuf, examples: usize) -> Result<(f64, f64)> {
    second_order(move || -> gradlab_candle::Result<(f64, f64)> {
        let (model, batches) = f64_model_and_batches(&dir, examples)?;
        let mut objective = NetworkObjective::new(&model, batches.clone())?;
        let x = objective.point()?;
        let sharp = epsilon_sharpness(&mut objective, &x, 1e-3, 10)?;
        let mut h = NetworkHessian::new(NetworkObjective::new(&model, batches)?)?;
        let top = lanczos(
            &mut h,
            &LanczosOptions {
                top: 1,
                bottom: 0,
                tol: 1e-3,
                max_iter: Some(25),
                seed: 0,
            },
        )?;
        Ok((sharp.value, top.top[0].value))
    })
    .map_err(anyhow::Error::from)
}

/// A figure measured once per seed: mean, sample standard deviation and count.
#[derive(Debug, Clone, Copy)]
pub(super) struct SeedStats {
    pub(super) mean: f64,
    pub(super) sd: f64,
    pub(super) n: usize,
}

impl SeedStats {
    /// The statistics of `values` (one per seed).
    pub(super) fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let sd = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        SeedStats { mean, sd, n }
    }

    /// The standard error of `self.mean − other.mean`.
    pub(super) fn standard_error(&self, other: &SeedStats) -> f64 {
        (self.sd.powi(2) / self.n.max(1) as f64 + other.sd.powi(2) / other.n.max(1) as f64).sqrt()
    }

    /// Whether the means differ by more than the seed noise: more than twice the standard
    /// error of the difference (with one seed each there is no noise estimate: never).
    pub(super) fn beyond_noise(&self, other: &SeedStats) -> bool {
        self.n > 1
            && other.n > 1
            && (self.mean - other.mean).abs() > 2.0 * self.standard_error(other)
    }
}
