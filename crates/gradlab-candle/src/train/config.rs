//! What a training run depends on: [`TrainConfig`] and the choices inside it.

use super::{Curriculum, DataOrder, InputScale};
use crate::models::ModelSpec;
use crate::{Error, Result};
use gradlab::optim::NonFinitePolicy;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

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
    pub(crate) fn in_swa(&self, epoch: usize) -> bool {
        self.swa_start.is_some_and(|s| epoch >= s)
    }

    pub(crate) fn check(&self) -> Result<()> {
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
