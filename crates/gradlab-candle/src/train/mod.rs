//! The training loop: seeded shuffling, any optimizer and schedule, clipping, gradient
//! noise, weight averaging (EMA, SWA), metrics, checkpoints and exact resume.
//!
//! Files in the output folder:
//! - `metrics.jsonl`: one line per step (`kind: "step"`: step, epoch, loss, grad_norm, lr,
//!   momentum, seconds) and per epoch (`kind: "epoch"`: train and test loss and accuracy,
//!   EMA/SWA test accuracy, and per tensor its gradient norm, weight norm and
//!   update-to-weight ratio at the epoch's last step);
//! - `summary.json`: the final figures and the full configuration;
//! - `checkpoint/`: parameters, batch-norm statistics, EMA/SWA weights (`model.safetensors`),
//!   optimizer state (`optimizer.safetensors`) and `state.json` (step, epoch, schedule state,
//!   the seeds that fix every random draw, the configuration), replaced atomically each epoch.
//!
//! Random draws are functions of (seed, epoch) for shuffling and (seed, step) for dropout and
//! gradient noise, so a resumed run repeats exactly what the uninterrupted run would do.

mod batches;
mod split;
mod trainer;

pub use batches::{Curriculum, DataOrder};
pub use split::{checkpoint_data, load_data, InputScale, RunData};
pub use trainer::Trainer;

use crate::data::{Dataset, Split};
use crate::models::{correct, cross_entropy, Model, ModelSpec, Network};
use crate::optim::{GradlabOptimizer, OptimizerConfig};
use crate::{Error, Result};
pub(crate) use batches::shuffle;
use candle_core::{Device, Tensor, Var};
use gradlab::dist::{Collective, Local};
use gradlab::landscape::Rng;
use gradlab::optim::NonFinitePolicy;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// When a (non-plateau) schedule is stepped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleUnit {
    /// After every optimizer step.
    Step,
    /// After every epoch.
    Epoch,
}

/// How the learning rate goes from its value at the SWA start to `--swa-lr` (PyTorch's
/// `SWALR` `anneal_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwaAnneal {
    /// `(1 − cos πt) / 2`.
    Cos,
    /// `t`.
    Linear,
}

impl SwaAnneal {
    /// The name used in specs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SwaAnneal::Cos => "cos",
            SwaAnneal::Linear => "linear",
        }
    }
}

/// Everything a training run depends on.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelSpec,
    /// Optimizer spec.
    pub optimizer: String,
    /// Schedule spec (`plateau` is stepped with the test loss each epoch).
    pub schedule: Option<String>,
    /// When the schedule is stepped.
    pub schedule_unit: ScheduleUnit,
    /// Examples per batch.
    pub batch_size: usize,
    /// Epochs to reach.
    pub epochs: usize,
    /// Seed of initialisation, shuffling, dropout and noise.
    pub seed: u64,
    /// Global-norm gradient clipping.
    pub clip_norm: Option<f64>,
    /// Gradient noise η (variance η/(1+t)^0.55, Neelakantan et al. 2015).
    pub grad_noise: Option<f64>,
    /// EMA of the weights with this decay.
    pub ema: Option<f64>,
    /// SWA from this epoch (0-based) on.
    pub swa_start: Option<usize>,
    /// Learning rate during SWA: from the SWA start the rate follows PyTorch's `SWALR` alone
    /// (stepped after every optimizer step; the schedule is no longer stepped).
    pub swa_lr: Option<f64>,
    /// Optimizer steps over which the rate is annealed from its value at the SWA start to
    /// `swa_lr` (0: `swa_lr` from the first SWA step).
    pub swa_anneal_steps: u64,
    /// The annealing curve.
    pub swa_anneal: SwaAnneal,
    /// Non-finite gradients.
    pub nonfinite: NonFinitePolicy,
    /// With `nonfinite = skip`: stop with an error after this many consecutive skipped
    /// steps (capped at one epoch's steps).
    pub max_skipped: u64,
    /// Full MNIST-format folder instead of the bundled digits.
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training examples (quick runs).
    pub train_limit: Option<usize>,
    /// How the pixels reach the network (standardised, or raw 0–255 values).
    pub inputs: InputScale,
    /// Train and test on these classes only (e.g. digits 5–9 for fine-tuning).
    pub classes: Option<Vec<u8>>,
    /// Hold out the last N training examples as a validation set (evaluated each epoch:
    /// `validation_loss`, `validation_accuracy`), for choosing hyperparameters without the
    /// test set.
    pub validation: Option<usize>,
    /// The order of the training examples in each epoch.
    pub data_order: DataOrder,
    /// Curriculum learning: batches drawn from the easiest examples first.
    pub curriculum: Option<Curriculum>,
    /// Start from the model weights of the checkpoint in this folder (fine-tuning) instead
    /// of a fresh initialisation.
    pub init: Option<PathBuf>,
    /// With `init`: parameters whose name starts with one of these keep their fresh
    /// initialisation (e.g. `fc3.` for a new output layer).
    pub init_exclude: Vec<String>,
    /// Output folder.
    pub out: PathBuf,
    /// A fresh run may replace a run already in `out` (its files are replaced once this run
    /// has written its own first checkpoint).
    pub overwrite: bool,
}

impl TrainConfig {
    /// A configuration with the defaults of `gradlab train`.
    pub fn new(model: ModelSpec, optimizer: &str, out: &Path) -> Self {
        TrainConfig {
            model,
            optimizer: optimizer.to_string(),
            schedule: None,
            schedule_unit: ScheduleUnit::Step,
            batch_size: 64,
            epochs: 5,
            seed: 0,
            clip_norm: None,
            grad_noise: None,
            ema: None,
            swa_start: None,
            swa_lr: None,
            swa_anneal_steps: 0,
            swa_anneal: SwaAnneal::Cos,
            nonfinite: NonFinitePolicy::Error,
            max_skipped: 100,
            data_dir: None,
            train_limit: None,
            inputs: InputScale::Standardized,
            classes: None,
            validation: None,
            data_order: DataOrder::Shuffled,
            curriculum: None,
            init: None,
            init_exclude: Vec::new(),
            out: out.to_path_buf(),
            overwrite: false,
        }
    }

    /// The configuration as JSON (in summaries and checkpoints).
    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model.kind.name(),
            "widths": self.model.widths,
            "activation": self.model.activation.name(),
            "batch_norm": self.model.batch_norm,
            "dropout": self.model.dropout,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "schedule_unit": match self.schedule_unit { ScheduleUnit::Step => "step", ScheduleUnit::Epoch => "epoch" },
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "seed": self.seed,
            "clip_norm": self.clip_norm,
            "grad_noise": self.grad_noise,
            "ema": self.ema,
            "swa_start": self.swa_start,
            "swa_lr": self.swa_lr,
            "swa_anneal_steps": self.swa_anneal_steps,
            "swa_anneal": self.swa_anneal.name(),
            "nonfinite": match self.nonfinite { NonFinitePolicy::Error => "error", NonFinitePolicy::Skip => "skip" },
            "max_skipped": self.max_skipped,
            "data": self.data_dir.as_ref().map(|p| p.display().to_string()),
            "train_limit": self.train_limit,
            "inputs": self.inputs.name(),
            "classes": self.classes,
            "validation": self.validation,
            "data_order": self.data_order.name(),
            "curriculum": self.curriculum.as_ref().map(|c| json!({
                "difficulty": c.difficulty.display().to_string(),
                "start": c.start,
                "ramp": c.ramp,
            })),
            "init": self.init.as_ref().map(|p| p.display().to_string()),
            "init_exclude": self.init_exclude,
        })
    }

    /// The SWA learning-rate schedule's spec, when SWA is on.
    pub(crate) fn swa_schedule(&self) -> Option<String> {
        self.swa_lr.map(|lr| {
            format!(
                "swalr(swa_lr={}, anneal_epochs={}, anneal_strategy={})",
                gradlab::spec::format_number(lr),
                self.swa_anneal_steps,
                self.swa_anneal.name()
            )
        })
    }

    /// Whether `epoch` (0-based) averages weights.
    fn in_swa(&self, epoch: usize) -> bool {
        self.swa_start.is_some_and(|s| epoch >= s)
    }

    fn check(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Msg("--batch-size must be at least 1".into()));
        }
        if self.max_skipped == 0 {
            return Err(Error::Msg("--max-skipped 0: it must be at least 1".into()));
        }
        if self.epochs == 0 {
            return Err(Error::Msg("--epochs 0: it must be at least 1".into()));
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::Msg(format!(
                    "--clip-norm {c} is out of range: it must be a finite number > 0"
                )));
            }
        }
        if let Some(lr) = self.swa_lr {
            if !(lr.is_finite() && lr >= 0.0) {
                return Err(Error::Msg(format!(
                    "--swa-lr {lr} is out of range: it must be a finite number >= 0"
                )));
            }
        }
        if let Some(d) = self.ema {
            if !(0.0..1.0).contains(&d) {
                return Err(Error::Msg(format!("--ema {d} must be in [0, 1)")));
            }
        }
        if self.swa_start.is_some() != self.swa_lr.is_some() {
            return Err(Error::Msg("--swa-start and --swa-lr go together".into()));
        }
        if self.swa_start.is_none() && self.swa_anneal_steps > 0 {
            return Err(Error::Msg(
                "--swa-anneal-steps needs --swa-start and --swa-lr".into(),
            ));
        }
        if let Some(c) = &self.curriculum {
            c.check()?;
            if self.data_order != DataOrder::Shuffled {
                return Err(Error::Msg(
                    "--curriculum draws its own batches: it does not go with --data-order fixed"
                        .into(),
                ));
            }
        }
        if !self.init_exclude.is_empty() && self.init.is_none() {
            return Err(Error::Msg("--init-exclude needs --init".into()));
        }
        if let Some(classes) = &self.classes {
            if classes.is_empty() {
                return Err(Error::Msg("--classes names no class".into()));
            }
        }
        if let Some(eta) = self.grad_noise {
            if !(eta.is_finite() && eta >= 0.0) {
                return Err(Error::Msg(format!(
                    "--grad-noise {eta} is out of range: it must be a finite number >= 0"
                )));
            }
        }
        Ok(())
    }
}

/// What the trainer reports while it runs.
pub enum Event<'a> {
    /// A step finished.
    Step {
        /// Step number (1-based).
        step: u64,
        /// Steps in the whole run.
        total: u64,
        /// Batch loss.
        loss: f64,
    },
    /// An epoch finished; its metrics line.
    Epoch(&'a Value),
}

/// The final figures.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `summary.json`'s content.
    pub json: Value,
}

/// A batch as tensors.
pub fn batch(data: &Dataset, indices: &[usize]) -> Result<(Tensor, Tensor)> {
    let p = data.pixels();
    let mut x = Vec::with_capacity(indices.len() * p);
    for &i in indices {
        x.extend_from_slice(&data.images[i * p..(i + 1) * p]);
    }
    let y: Vec<u32> = indices.iter().map(|&i| data.labels[i] as u32).collect();
    Ok((
        Tensor::from_vec(x, (indices.len(), data.rows, data.cols), &Device::Cpu)?,
        Tensor::from_vec(y, indices.len(), &Device::Cpu)?,
    ))
}

/// Mean loss and accuracy of `model` (evaluation mode) on `data`.
pub fn evaluate(model: &dyn Network, data: &Dataset) -> Result<(f64, f64)> {
    evaluate_shared(model, data, &Local)
}

/// [`evaluate`] split over the ranks of `collective`: each rank evaluates its share of the
/// examples and the sums are combined (collective).
pub fn evaluate_shared(
    model: &dyn Network,
    data: &Dataset,
    collective: &dyn Collective,
) -> Result<(f64, f64)> {
    let (mut loss, mut right) = (0.0, 0usize);
    let mut rng = Rng::new(0);
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in share(&all, collective).chunks(1000) {
        let (x, y) = batch(data, chunk)?;
        let logits = model.forward(&x, false, &mut rng)?;
        loss += cross_entropy(&logits, &y)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        right += correct(&logits, &y)?;
    }
    let mut sums = [loss, right as f64];
    collective.all_sum(&mut sums);
    let n = data.len().max(1) as f64;
    Ok((sums[0] / n, sums[1] / n))
}

/// This rank's contiguous share of a global batch (shares differ by at most one example).
pub fn share<'a>(batch: &'a [usize], collective: &dyn Collective) -> &'a [usize] {
    let (n, r, k) = (batch.len(), collective.rank(), collective.size());
    &batch[r * n / k..(r + 1) * n / k]
}

/// Gradient noise of step `step`: one stream of N(0, std²) draws over the flat parameter
/// space in sorted-name order, added to `g` from flat position `start` on (the same numbers
/// whether one process or a rank of many adds them).
fn add_noise(seed: u64, step: u64, std: f64, start: usize, g: &mut [f32]) {
    let mut rng = step_rng(seed ^ 0x6E6F_6973_6500, step);
    for _ in 0..start {
        rng.normal();
    }
    for x in g {
        *x += (rng.normal() * std) as f32;
    }
}

pub(crate) fn step_rng(seed: u64, step: u64) -> Rng {
    Rng::new(
        seed.wrapping_mul(0x9E37_79B9)
            .wrapping_add(step.wrapping_mul(0xD1B5_4A32_D192_ED03)),
    )
}

/// Why a step met a non-finite gradient, when it can be told: parameters already
/// non-finite mean the previous update overflowed (its learning rate and the optimizer's
/// settings named); a non-finite loss at finite parameters means the forward pass did.
fn non_finite_cause(
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

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt()
}

/// Weight averages kept beside the raw weights, and the SWA learning-rate schedule.
pub(crate) struct Averages {
    /// The EMA weights.
    pub(crate) ema: Option<Vec<Tensor>>,
    /// The SWA mean and how many epochs' weights it averages.
    pub(crate) swa: Option<(Vec<Tensor>, usize)>,
    /// `SWALR`, from the SWA start on: the one owner of the learning rate during SWA.
    pub(crate) swa_schedule: Option<gradlab::schedule::Scheduler>,
}

/// Swaps `weights` into the model, runs `f`, and puts the raw weights back.
fn with_weights<R>(
    model: &dyn Network,
    weights: &[Tensor],
    f: impl FnOnce() -> Result<R>,
) -> Result<R> {
    let vars: Vec<Var> = model.params().iter().map(|(_, v)| v.clone()).collect();
    crate::averaging::with_weights(&vars, weights, f)
}

/// The data, a freshly initialised model and its optimizer for `config` (one rank's, sharded,
/// when `collective` has several).
pub(crate) fn setup(
    config: &TrainConfig,
    collective: Arc<dyn Collective>,
) -> Result<(Split, Model, GradlabOptimizer)> {
    let split = load_data(config)?.split;
    let model = Model::new(
        &config.model,
        split.train.rows,
        split.train.cols,
        config.seed,
    )?;
    if let Some(dir) = &config.init {
        crate::checkpoint::init_weights(&model, dir, &config.init_exclude)?;
    }
    let opt = optimizer(config, &model, collective)?;
    Ok((split, model, opt))
}

/// The optimizer `config` asks for over `model`'s parameters (one rank's, sharded, when
/// `collective` has several).
fn optimizer(
    config: &TrainConfig,
    model: &dyn Network,
    collective: Arc<dyn Collective>,
) -> Result<GradlabOptimizer> {
    let mut opt_config = OptimizerConfig::new(config.optimizer.clone()).nonfinite(config.nonfinite);
    opt_config.options.clip_norm = config.clip_norm;
    GradlabOptimizer::data_parallel(model.params().to_vec(), &opt_config, collective)
}

/// Trains, writing metrics, checkpoints and the summary to `config.out`; `resume` names a
/// folder with a checkpoint to continue from.
pub fn train(
    config: &TrainConfig,
    resume: Option<&Path>,
    on_event: impl FnMut(Event),
) -> Result<Summary> {
    train_on(config, resume, on_event, Arc::new(Local))
}

/// [`train`] as one rank of a data-parallel group (every rank calls it with the same
/// configuration): each rank computes the gradients of its share of every global batch of
/// `config.batch_size` examples, the optimizer state is sharded over the ranks (ZeRO-1, see
/// [`crate::parallel`]), evaluation is split over the ranks, and only rank 0 writes files.
/// Ranks whose configuration or data differ from rank 0's stop at once with an error naming
/// the rank and the difference.
///
/// Data parallelism computes the same global-batch gradient as one process, except where the
/// model draws random numbers or normalises over the batch: with dropout each rank draws its
/// own masks, and batch norm normalises over each rank's share (its running statistics
/// are rank 0's), as in PyTorch's DistributedDataParallel without SyncBatchNorm.
pub fn train_on(
    config: &TrainConfig,
    resume: Option<&Path>,
    on_event: impl FnMut(Event),
    collective: Arc<dyn Collective>,
) -> Result<Summary> {
    config.check()?;
    let data = load_data(config)?;
    let model = Model::new(
        &config.model,
        data.split.train.rows,
        data.split.train.cols,
        config.seed,
    )?;
    run(config, resume, on_event, collective, data, &model)
}

/// Trains `model` on `data` as `config` says (the data and model options of `config` were
/// used to make them).
fn run(
    config: &TrainConfig,
    resume: Option<&Path>,
    mut on_event: impl FnMut(Event),
    collective: Arc<dyn Collective>,
    data: RunData,
    model: &dyn Network,
) -> Result<Summary> {
    let RunData {
        split,
        validation,
        filtered_train,
    } = data;
    if let (Some(dir), None) = (&config.init, resume) {
        crate::checkpoint::init_weights(model, dir, &config.init_exclude)?;
    }
    let ranking = config
        .curriculum
        .as_ref()
        .map(|c| c.ranking(filtered_train, split.train.len()))
        .transpose()?;
    let ranks = collective.size();
    let lead = collective.rank() == 0;
    if config.batch_size < ranks {
        return Err(Error::Msg(format!(
            "--batch-size {} is smaller than the number of ranks ({ranks}): every rank needs \
             at least one example of each batch",
            config.batch_size
        )));
    }
    let mut lock = None;
    if lead {
        if resume.is_none() {
            crate::run_dir::check_fresh(&config.out, config.overwrite)?;
        }
        std::fs::create_dir_all(&config.out)
            .map_err(|e| Error::Msg(format!("{}: cannot create: {e}", config.out.display())))?;
        lock = Some(crate::run_dir::RunLock::acquire(&config.out)?);
    }
    let mut opt = optimizer(config, model, collective.clone())?;
    check_ranks(config, &split, model, collective.as_ref())?;
    let closure_steps = opt.needs_closure();
    let eval_point = opt.has_eval_point();
    if eval_point && ranks > 1 {
        return Err(Error::Msg(format!(
            "--optimizer '{}' evaluates the model at another point than it trains at: it runs in one process",
            config.optimizer
        )));
    }
    if closure_steps && (ranks > 1 || config.grad_noise.is_some()) {
        return Err(Error::Msg(format!(
            "--optimizer '{}' evaluates the batch more than once per step: it runs in one process and without --grad-noise",
            config.optimizer
        )));
    }
    let mut scheduler = match &config.schedule {
        Some(s) => Some(opt.with_engine(|e| e.scheduler(s))?),
        None => None,
    };
    let copies = |m: &dyn Network| -> Result<Vec<Tensor>> {
        Ok(m.params()
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?)
    };
    let mut avg = Averages {
        ema: config.ema.map(|_| copies(model)).transpose()?,
        swa: None,
        swa_schedule: None,
    };
    let batches_per_epoch = split.train.len().div_ceil(config.batch_size) as u64;
    let total_steps = batches_per_epoch * config.epochs as u64;
    let plan = batches::EpochPlan {
        examples: split.train.len(),
        batch_size: config.batch_size,
        seed: config.seed,
        order: config.data_order,
        curriculum: config.curriculum.as_ref().zip(ranking.as_deref()),
        steps_per_epoch: batches_per_epoch,
    };
    let final_metrics = config.out.join("metrics.jsonl");
    // A fresh run over an old one writes its metrics aside until its first checkpoint.
    let replacing = resume.is_none() && !crate::run_dir::contents(&config.out)?.is_empty();
    let metrics_path = if replacing {
        config.out.join(".metrics.jsonl.partial")
    } else {
        final_metrics.clone()
    };
    let (mut step, mut start_epoch) = (0u64, 0usize);
    if let Some(dir) = resume {
        let resumed = crate::checkpoint::load(
            dir,
            config,
            model,
            &mut opt,
            scheduler.as_mut(),
            &mut avg,
            &split,
            collective.as_ref(),
        )?;
        step = resumed.step;
        start_epoch = resumed.epoch;
        if lead {
            crate::checkpoint::truncate_metrics(&metrics_path, step, start_epoch)?;
        }
    } else if lead {
        gradlab::io::write_atomic(&metrics_path, b"")?;
    }
    let mut metrics = lead
        .then(|| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&metrics_path)
                .map_err(|e| Error::Msg(format!("{}: {e}", metrics_path.display())))
        })
        .transpose()?;
    // Each line is built in memory and written with one call, so a kill never tears one.
    let mut write_line = |v: &Value| -> Result<()> {
        match metrics.as_mut() {
            Some(m) => {
                let mut line = v.to_string();
                line.push('\n');
                m.write_all(line.as_bytes())
                    .and_then(|()| m.flush())
                    .map_err(|e| Error::Msg(format!("{}: {e}", metrics_path.display())))
            }
            None => Ok(()),
        }
    };
    let mut pending_replace = replacing && lead;
    let started = Instant::now();
    let plateau = scheduler.as_ref().is_some_and(|s| s.needs_metric());
    let mut last_epoch_line = Value::Null;
    let skip_limit = config.max_skipped.min(batches_per_epoch.max(1));
    // Consecutive skipped steps, and the first of them.
    let (mut skipped_run, mut first_skipped) = (0u64, 0u64);
    // The learning rate of the last step taken, named when the next one meets a
    // non-finite gradient.
    let mut previous_lr = None;
    for epoch in start_epoch..config.epochs {
        if let (true, None, Some(spec)) = (
            config.in_swa(epoch),
            avg.swa_schedule.as_ref(),
            config.swa_schedule(),
        ) {
            // From here on SWALR alone sets the learning rate.
            avg.swa_schedule = Some(opt.with_engine(|e| e.scheduler(&spec))?);
        }
        // The weights to train from (schedule-free: y; the epoch before ended at x).
        opt.train_mode()?;
        let (mut loss_sum, mut right, mut seen) = (0.0, 0.0, 0usize);
        let mut health = Vec::new();
        let batches = plan.batches(epoch, step);
        for (b, idx) in batches.iter().enumerate() {
            let mine = share(idx, collective.as_ref());
            let mut rng = step_rng(config.seed, step);
            let (mut grads, mut sums, mut inputs) = (None, [0.0, 0.0], None);
            if !mine.is_empty() {
                let (x, y) = batch(&split.train, mine)?;
                let logits = model.forward(&x, true, &mut rng)?;
                let loss = cross_entropy(&logits, &y)?;
                sums = [
                    loss.to_scalar::<f32>()? as f64 * mine.len() as f64,
                    correct(&logits, &y)? as f64,
                ];
                grads = Some(loss.backward()?);
                inputs = Some((x, y));
            }
            collective.all_sum(&mut sums);
            let loss_value = sums[0] / idx.len() as f64;
            right += sums[1];
            let noise_std = config
                .grad_noise
                .map(|eta| (eta / (1.0 + step as f64).powf(0.55)).sqrt());
            let last_of_epoch = b + 1 == batches.len();
            let before = if last_of_epoch {
                Some(
                    model
                        .params()
                        .iter()
                        .map(|(_, v)| flat(v.as_tensor()))
                        .collect::<Result<Vec<_>>>()?,
                )
            } else {
                None
            };
            let grad_norms = match before {
                Some(_) => Some(tensor_grad_norms(&opt, grads.as_ref())?),
                None => None,
            };
            let (lr, momentum) = opt.with_engine(|e| (e.lr_of(0), e.momentum0()));
            let mut evaluations = 1;
            let outcome = if closure_steps {
                // The gradient at the current weights is the one just computed; further
                // evaluations redo the batch with the same dropout masks.
                let (x, y) = inputs.as_ref().expect("one rank has the whole batch");
                let mut first = grads.take();
                let first_loss = loss_value;
                opt.step_with_closure(|| {
                    if let Some(store) = first.take() {
                        return Ok((first_loss, store));
                    }
                    let logits = model.forward(x, true, &mut step_rng(config.seed, step))?;
                    let loss = cross_entropy(&logits, y)?;
                    Ok((loss.to_scalar::<f32>()? as f64, loss.backward()?))
                })
                .map(|o| {
                    evaluations = o.evaluations;
                    o.step
                })
            } else if ranks == 1 {
                let grads = grads.as_mut().expect("one rank has the whole batch");
                if let Some(std) = noise_std {
                    add_noise_to_store(&opt, grads, config.seed, step, std)?;
                }
                opt.step_grads(grads)
            } else {
                let noise = |start: usize, g: &mut [f32]| {
                    add_noise(config.seed, step, noise_std.unwrap_or(0.0), start, g)
                };
                let noise: Option<crate::parallel::GradNoise> =
                    noise_std.is_some().then_some(&noise);
                let weight = mine.len() as f32 / idx.len() as f32;
                opt.step_shared(grads.as_ref(), weight, noise)
            }
            .map_err(|e| {
                let cause = match &e {
                    Error::Gradlab(gradlab::Error::NonFiniteGradient { .. }) => {
                        non_finite_cause(model, loss_value, previous_lr, &config.optimizer)
                    }
                    _ => String::new(),
                };
                Error::Msg(format!("step {}: {e}{cause}", step + 1))
            })?;
            previous_lr = Some(lr);
            if let (Some(before), Some(grad_norms)) = (before, grad_norms) {
                for ((name, v), w0) in model.params().iter().zip(&before) {
                    let w1 = flat(v.as_tensor())?;
                    let delta: Vec<f32> = w1.iter().zip(w0).map(|(a, b)| a - b).collect();
                    let w_norm = norm(w0);
                    health.push(json!({
                        "name": name,
                        "grad_norm": grad_norms.get(name).copied().unwrap_or(0.0),
                        "weight_norm": norm(&w1),
                        "update_ratio": if w_norm > 0.0 { norm(&delta) / w_norm } else { 0.0 },
                    }));
                }
            }
            if let (Some(d), Some(ema)) = (config.ema, avg.ema.as_mut()) {
                let vars: Vec<Var> = model.params().iter().map(|(_, v)| v.clone()).collect();
                crate::averaging::ema_update(ema, &vars, d)?;
            }
            step += 1;
            if outcome.skipped {
                if skipped_run == 0 {
                    first_skipped = step;
                }
                skipped_run += 1;
                if skipped_run >= skip_limit {
                    return Err(Error::Msg(format!(
                        "{skipped_run} consecutive steps skipped for non-finite gradients \
                         (steps {first_skipped}–{step}, the limit is {skip_limit}; \
                         --max-skipped sets it): training has diverged; lower the learning \
                         rate or clip the gradients"
                    )));
                }
            } else {
                skipped_run = 0;
            }
            if let Some(s) = avg.swa_schedule.as_mut() {
                opt.with_engine(|e| e.step_schedule(s, None))?;
            } else if let (Some(s), ScheduleUnit::Step, false) =
                (scheduler.as_mut(), config.schedule_unit, plateau)
            {
                opt.with_engine(|e| e.step_schedule(s, None))?;
            }
            loss_sum += loss_value * idx.len() as f64;
            seen += idx.len();
            let mut line = json!({
                "kind": "step",
                "step": step,
                "epoch": epoch,
                "loss": loss_value,
                "grad_norm": outcome.grad_norm,
                "skipped": outcome.skipped,
                "evaluations": evaluations,
                "lr": lr,
                "momentum": momentum,
                "seconds": started.elapsed().as_secs_f64(),
            });
            // Prodigy's d, after the step that updated it.
            for (name, value) in opt.with_engine(|e| e.estimates()) {
                line[name] = json!(value);
            }
            write_line(&line)?;
            on_event(Event::Step {
                step,
                total: total_steps,
                loss: loss_value,
            });
        }
        if eval_point {
            // Test, checkpoint and analyse the average x, with batch-norm statistics of x.
            opt.eval_mode()?;
            if model.has_batch_norm() {
                recompute_batch_norm(model, &split.train, config.batch_size)?;
                model.set_cumulative_batch_norm(false)?;
            }
        }
        let (test_loss, test_accuracy) = evaluate_shared(model, &split.test, collective.as_ref())?;
        let validated = validation
            .as_ref()
            .map(|v| evaluate_shared(model, v, collective.as_ref()))
            .transpose()?;
        if let (Some(s), false) = (scheduler.as_mut(), config.in_swa(epoch)) {
            if plateau {
                opt.with_engine(|e| e.step_schedule(s, Some(test_loss)))?;
            } else if config.schedule_unit == ScheduleUnit::Epoch {
                opt.with_engine(|e| e.step_schedule(s, None))?;
            }
        }
        if config.in_swa(epoch) {
            avg.swa = Some(match avg.swa.take() {
                None => (copies(model)?, 1),
                Some((mut mean, n)) => {
                    let vars: Vec<Var> = model.params().iter().map(|(_, v)| v.clone()).collect();
                    crate::averaging::mean_update(&mut mean, n, &vars)?;
                    (mean, n + 1)
                }
            });
        }
        let ema_accuracy = match &avg.ema {
            Some(ema) => Some(
                with_weights(model, ema, || {
                    evaluate_shared(model, &split.test, collective.as_ref())
                })?
                .1,
            ),
            None => None,
        };
        let line = json!({
            "kind": "epoch",
            "epoch": epoch,
            "step": step,
            "train_loss": loss_sum / seen.max(1) as f64,
            "train_accuracy": right / seen.max(1) as f64,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "validation_loss": validated.map(|v| v.0),
            "validation_accuracy": validated.map(|v| v.1),
            "ema_test_accuracy": ema_accuracy,
            "lr": opt.with_engine(|e| e.lr_of(0)),
            "tensors": health,
            "seconds": started.elapsed().as_secs_f64(),
        });
        write_line(&line)?;
        on_event(Event::Epoch(&line));
        last_epoch_line = line;
        crate::checkpoint::save(
            &config.out,
            config,
            model,
            &mut opt,
            scheduler.as_ref(),
            &avg,
            &split,
            step,
            epoch + 1,
        )?;
        if pending_replace {
            // This run now has a checkpoint of its own: its metrics replace the old run's,
            // whose summary no longer describes the folder.
            std::fs::rename(&metrics_path, &final_metrics)
                .map_err(|e| Error::Msg(format!("{}: {e}", final_metrics.display())))?;
            match std::fs::remove_file(config.out.join("summary.json")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Msg(format!("{}: {e}", config.out.display())))
                }
                _ => {}
            }
            pending_replace = false;
        }
    }
    if last_epoch_line.is_null() {
        return Err(Error::Msg(format!(
            "nothing to do: the checkpoint already has {start_epoch} epochs and --epochs is {}",
            config.epochs
        )));
    }
    let swa_accuracy = match &avg.swa {
        Some((weights, _)) => Some(with_weights(model, weights, || {
            if model.has_batch_norm() {
                recompute_batch_norm(model, &split.train, config.batch_size)?;
            }
            let r = evaluate_shared(model, &split.test, collective.as_ref());
            model.set_cumulative_batch_norm(false)?;
            r
        })?),
        None => None,
    };
    let swats = swats_status(&mut opt, collective.as_ref());
    let state_bytes = opt
        .sharded()
        .map(|s| s.state_bytes_held())
        .unwrap_or_else(|| opt.with_engine(|e| e.state_bytes_held()));
    let json = json!({
        "test_accuracy": last_epoch_line["test_accuracy"],
        "test_loss": last_epoch_line["test_loss"],
        "train_loss": last_epoch_line["train_loss"],
        "train_accuracy": last_epoch_line["train_accuracy"],
        "validation_loss": last_epoch_line["validation_loss"],
        "validation_accuracy": last_epoch_line["validation_accuracy"],
        "ema_test_accuracy": last_epoch_line["ema_test_accuracy"],
        "swa_test_accuracy": swa_accuracy.map(|r| r.1),
        "swats_switched_at": swats,
        "epochs": config.epochs,
        "steps": step,
        "parameters": model.num_parameters(),
        "ranks": ranks,
        "optimizer_state_bytes_per_rank": state_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_bytes_by_rank": by_rank(collective.as_ref(), peak_rss_bytes().unwrap_or(0) as f64),
        "optimizer_state_bytes_by_rank": by_rank(collective.as_ref(), state_bytes as f64),
        "wall_seconds": started.elapsed().as_secs_f64(),
        "data": split.source,
        "config": config.to_json(),
        "optimizer_spec": opt.with_engine(|e| e.spec_string()),
        "gradlab_version": env!("CARGO_PKG_VERSION"),
    });
    if lead {
        gradlab::io::write_atomic(
            &config.out.join("summary.json"),
            serde_json::to_string_pretty(&json)
                .expect("json")
                .as_bytes(),
        )?;
    }
    drop(lock);
    Ok(Summary { json })
}

/// Adds the step's gradient noise to a single process's gradients, tensor by tensor in the
/// optimizer's (sorted-name) order: the stream [`add_noise`] draws.
fn add_noise_to_store(
    opt: &GradlabOptimizer,
    grads: &mut candle_core::backprop::GradStore,
    seed: u64,
    step: u64,
    std: f64,
) -> Result<()> {
    let mut flat_noise = Vec::new();
    for v in opt.vars() {
        flat_noise.resize(flat_noise.len() + v.elem_count(), 0.0f32);
    }
    add_noise(seed, step, std, 0, &mut flat_noise);
    let mut offset = 0;
    for v in opt.vars() {
        let n = v.elem_count();
        if let Some(g) = grads.get(v.as_tensor()) {
            let noise = Tensor::from_slice(&flat_noise[offset..offset + n], g.shape(), g.device())?;
            let noisy = (g + noise)?;
            grads.insert(v.as_tensor(), noisy);
        }
        offset += n;
    }
    Ok(())
}

/// Each tensor's gradient norm at the last step: of `grads` in one process, of the global
/// mean gradient (combined over ranks) when data-parallel.
fn tensor_grad_norms(
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
fn swats_status(opt: &mut GradlabOptimizer, collective: &dyn Collective) -> Value {
    let mine = opt.with_engine(|e| e.swats()).map(|list| {
        list.iter()
            .map(|t| json!({"tensor": t.tensor, "step": t.switched_at, "sgd_lr": t.sgd_lr}))
            .collect::<Vec<_>>()
    });
    if collective.size() == 1 {
        return json!(mine);
    }
    let all = collective.all_gather_bytes(json!(mine).to_string().as_bytes());
    let mut merged: Vec<Value> = Vec::new();
    for bytes in all {
        let list: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let Some(list) = list.as_array() else {
            return Value::Null;
        };
        for entry in list {
            if !merged.iter().any(|m| m["tensor"] == entry["tensor"]) {
                merged.push(entry.clone());
            }
        }
    }
    merged.sort_by(|a, b| a["tensor"].as_str().cmp(&b["tensor"].as_str()));
    json!(merged)
}

/// Every rank's `value`, in rank order (collective).
fn by_rank(collective: &dyn Collective, value: f64) -> Vec<u64> {
    let mut all = vec![0.0; collective.size()];
    all[collective.rank()] = value;
    collective.all_sum(&mut all);
    all.into_iter().map(|v| v as u64).collect()
}

/// The process's peak resident memory (Linux `VmHWM`), if known.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Stops every rank at once when any rank's configuration, data or model differs from rank
/// 0's (collective; nothing to do for one process).
fn check_ranks(
    config: &TrainConfig,
    split: &Split,
    model: &dyn Network,
    collective: &dyn Collective,
) -> Result<()> {
    if collective.size() == 1 {
        return Ok(());
    }
    let mut facts = config.to_json();
    facts["out"] = json!(config.out.display().to_string());
    facts["training data"] = json!(split.train.fingerprint());
    facts["test data"] = json!(split.test.fingerprint());
    facts["parameters"] = json!(model.num_parameters());
    facts["gradlab version"] = json!(env!("CARGO_PKG_VERSION"));
    let all = collective.all_gather_bytes(facts.to_string().as_bytes());
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
    let first = parse(&all[0]);
    for (rank, bytes) in all.iter().enumerate().skip(1) {
        let other = parse(bytes);
        let Some(fields) = first.as_object() else {
            continue;
        };
        for (key, value) in fields {
            if other[key] != *value {
                return Err(Error::Msg(format!(
                    "rank {rank} differs from rank 0 in {key}: {} vs {value}; every rank must \
                     run the same command on the same data",
                    other[key]
                )));
            }
        }
    }
    Ok(())
}

/// Recomputes batch-norm statistics for the current weights with one pass over the
/// training data (torch.optim.swa_utils.update_bn).
fn recompute_batch_norm(model: &dyn Network, data: &Dataset, batch_size: usize) -> Result<()> {
    model.set_cumulative_batch_norm(true)?;
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut rng = Rng::new(0);
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, _) = batch(data, chunk)?;
        model.forward(&x, true, &mut rng)?;
    }
    Ok(())
}

/// Runs the LR range test on the network: one training step per iteration on successive
/// batches, with a fresh model and optimizer.
pub fn lr_find(
    config: &TrainConfig,
    test: &gradlab::schedule::range_test::RangeTest,
) -> Result<gradlab::schedule::range_test::RangeTestResult> {
    config.check()?;
    let (split, model, mut opt) = setup(config, Arc::new(Local))?;
    let mut epoch = 0;
    let mut order = shuffle(split.train.len(), config.seed, epoch);
    let mut pos = 0;
    let mut step = 0u64;
    let result = test.run(|lr| {
        if pos + config.batch_size > order.len() {
            epoch += 1;
            order = shuffle(split.train.len(), config.seed, epoch);
            pos = 0;
        }
        let idx = &order[pos..(pos + config.batch_size).min(order.len())];
        pos += config.batch_size;
        let (x, y) = batch(&split.train, idx).map_err(to_core)?;
        let mut rng = step_rng(config.seed, step);
        step += 1;
        let logits = model.forward(&x, true, &mut rng).map_err(to_core)?;
        let loss = cross_entropy(&logits, &y).map_err(to_core)?;
        let value = loss.to_scalar::<f32>().map_err(|e| to_core(e.into()))? as f64;
        if !value.is_finite() {
            return Ok(value);
        }
        opt.with_engine(|e| (0..e.groups()).for_each(|g| e.set_lr_of(g, lr)));
        let grads = loss.backward().map_err(|e| to_core(e.into()))?;
        let stepped = if opt.needs_closure() {
            // SAM, L-BFGS: the first evaluation is the one just made; more redo the batch.
            let mut first = Some(grads);
            opt.step_with_closure(|| {
                if let Some(store) = first.take() {
                    return Ok((value, store));
                }
                let logits = model.forward(&x, true, &mut step_rng(config.seed, step - 1))?;
                let loss = cross_entropy(&logits, &y)?;
                Ok((loss.to_scalar::<f32>()? as f64, loss.backward()?))
            })
            .map(|o| o.step)
        } else {
            opt.step_grads(&grads)
        };
        if let Err(e) = stepped {
            if let Error::Gradlab(gradlab::Error::NonFiniteGradient { .. }) = e {
                return Ok(f64::INFINITY);
            }
            return Err(to_core(e));
        }
        Ok(value)
    })?;
    Ok(result)
}

fn to_core(e: Error) -> gradlab::Error {
    gradlab::Error::Layout(e.to_string())
}

/// Named tensors of a model (parameters and buffers) for safetensors.
pub fn model_tensors(model: &dyn Network) -> HashMap<String, Tensor> {
    let mut map: HashMap<String, Tensor> = model
        .params()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    map.extend(model.buffers());
    map
}
