//! What a training run depends on: [`TrainConfig`] and the choices inside it.

use super::{Curriculum, DataOrder, InputScale};
use crate::models::ModelSpec;
use crate::{Error, Result};
use gradlab::optim::NonFinitePolicy;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// When a (non-plateau) schedule is stepped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleUnit {
    /// After every optimizer step.
    Step,
    /// After every epoch.
    Epoch,
}

/// How the learning rate goes from its value at the SWA start to `--swa-lr` (PyTorch's
/// `SWALR` `anneal_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwaAnneal {
    /// `(1 − cos πt) / 2`.
    #[default]
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

/// Everything a training run depends on. Stored whole in checkpoints and summaries
/// ([`TrainConfig::to_json`], [`TrainConfig::from_json`]); keys added after the first
/// checkpoints take their default when absent (an older run was trained with it), and the
/// output folder is the reader's own.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// The model.
    #[serde(flatten)]
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
    #[serde(default)]
    pub swa_anneal_steps: u64,
    /// The annealing curve.
    #[serde(default)]
    pub swa_anneal: SwaAnneal,
    /// Non-finite gradients.
    #[serde(default)]
    pub nonfinite: NonFinitePolicy,
    /// With `nonfinite = skip`: stop with an error after this many consecutive skipped
    /// steps (capped at one epoch's steps).
    #[serde(default = "default_max_skipped")]
    pub max_skipped: u64,
    /// Full MNIST-format folder instead of the bundled digits.
    #[serde(rename = "data")]
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training examples (quick runs).
    pub train_limit: Option<usize>,
    /// How the pixels reach the network (standardised, or raw 0–255 values).
    #[serde(default)]
    pub inputs: InputScale,
    /// Train and test on these classes only (e.g. digits 5–9 for fine-tuning).
    pub classes: Option<Vec<u8>>,
    /// Hold out the last N training examples as a validation set (evaluated each epoch:
    /// `validation_loss`, `validation_accuracy`), for choosing hyperparameters without the
    /// test set.
    pub validation: Option<usize>,
    /// The order of the training examples in each epoch.
    #[serde(default)]
    pub data_order: DataOrder,
    /// Curriculum learning: batches drawn from the easiest examples first.
    pub curriculum: Option<Curriculum>,
    /// Start from the model weights of the checkpoint in this folder (fine-tuning) instead
    /// of a fresh initialisation.
    pub init: Option<PathBuf>,
    /// With `init`: parameters whose name starts with one of these keep their fresh
    /// initialisation (e.g. `fc3.` for a new output layer).
    #[serde(default)]
    pub init_exclude: Vec<String>,
    /// Output folder.
    #[serde(skip)]
    pub out: PathBuf,
    /// A fresh run may replace a run already in `out` (its files are replaced once this run
    /// has written its own first checkpoint).
    #[serde(skip)]
    pub overwrite: bool,
}

fn default_max_skipped() -> u64 {
    100
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
            max_skipped: default_max_skipped(),
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

    /// The configuration as JSON (in summaries and checkpoints): every field but the output
    /// folder, the model's flattened in (`model`, `widths`, `activation`, ...).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a configuration is plain data")
    }

    /// A configuration read back from [`TrainConfig::to_json`]'s form (`out` empty). Keys
    /// added after the first checkpoints take their defaults; anything else missing or of
    /// the wrong kind is an error naming it.
    pub fn from_json(value: &Value) -> std::result::Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("config: {e}"))
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
            return Err(Error::setting(
                "--batch-size",
                "--batch-size must be at least 1",
            ));
        }
        if self.max_skipped == 0 {
            return Err(Error::setting(
                "--max-skipped",
                "--max-skipped 0: it must be at least 1",
            ));
        }
        if self.epochs == 0 {
            return Err(Error::setting(
                "--epochs",
                "--epochs 0: it must be at least 1",
            ));
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::setting(
                    "--clip-norm",
                    format!("--clip-norm {c} is out of range: it must be a finite number > 0"),
                ));
            }
        }
        if let Some(lr) = self.swa_lr {
            if !(lr.is_finite() && lr >= 0.0) {
                return Err(Error::setting(
                    "--swa-lr",
                    format!("--swa-lr {lr} is out of range: it must be a finite number >= 0"),
                ));
            }
        }
        if let Some(d) = self.ema {
            if !(0.0..1.0).contains(&d) {
                return Err(Error::setting(
                    "--ema",
                    format!("--ema {d} must be in [0, 1)"),
                ));
            }
        }
        if self.swa_start.is_some() != self.swa_lr.is_some() {
            return Err(Error::setting(
                "--swa-start",
                "--swa-start and --swa-lr go together",
            ));
        }
        if self.swa_start.is_none() && self.swa_anneal_steps > 0 {
            return Err(Error::setting(
                "--swa-anneal-steps",
                "--swa-anneal-steps needs --swa-start and --swa-lr",
            ));
        }
        if let Some(c) = &self.curriculum {
            c.check()?;
            if self.data_order != DataOrder::Shuffled {
                return Err(Error::setting(
                    "--curriculum",
                    "--curriculum draws its own batches: it does not go with --data-order fixed",
                ));
            }
        }
        if !self.init_exclude.is_empty() && self.init.is_none() {
            return Err(Error::setting(
                "--init-exclude",
                "--init-exclude needs --init",
            ));
        }
        if let Some(classes) = &self.classes {
            if classes.is_empty() {
                return Err(Error::setting("--classes", "--classes names no class"));
            }
        }
        if let Some(eta) = self.grad_noise {
            if !(eta.is_finite() && eta >= 0.0) {
                return Err(Error::setting(
                    "--grad-noise",
                    format!("--grad-noise {eta} is out of range: it must be a finite number >= 0"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Activation, ModelKind};

    #[test]
    fn the_configuration_goes_to_json_and_back_whole() {
        let mut c = TrainConfig::new(
            ModelSpec::new(ModelKind::Cnn),
            "adamw(lr=0.001)",
            Path::new("out"),
        );
        c.model.activation = Activation::Gelu;
        c.model.batch_norm = true;
        c.schedule = Some("cosine(t_max=10)".into());
        c.schedule_unit = ScheduleUnit::Epoch;
        c.swa_start = Some(2);
        c.swa_lr = Some(0.01);
        c.swa_anneal = SwaAnneal::Linear;
        c.nonfinite = NonFinitePolicy::Skip;
        c.data_dir = Some(PathBuf::from("/data/mnist"));
        c.inputs = InputScale::Raw;
        c.classes = Some(vec![5, 6]);
        c.data_order = DataOrder::Fixed;
        c.curriculum = Some(Curriculum::new(Path::new("difficulty.txt")));
        c.init_exclude = vec!["fc3.".into()];
        let json = c.to_json();
        assert_eq!(json["model"], "cnn");
        assert_eq!(json["activation"], "gelu");
        assert_eq!(json["schedule_unit"], "epoch");
        assert_eq!(json["nonfinite"], "skip");
        assert_eq!(json["data"], "/data/mnist");
        assert_eq!(json["curriculum"]["difficulty"], "difficulty.txt");
        assert!(json.get("out").is_none() && json.get("overwrite").is_none());
        let back = TrainConfig::from_json(&json).unwrap();
        assert_eq!(back.to_json(), json);
        assert_eq!(back.model, c.model);
        assert_eq!(back.out, PathBuf::new());
    }

    #[test]
    fn an_older_configuration_reads_with_the_defaults_of_later_keys() {
        // What the first checkpoints recorded: no activation, batch norm, dropout, SWA
        // annealing, input scale, classes, validation, data order or curriculum.
        let old = serde_json::json!({
            "model": "mlp", "widths": [64], "optimizer": "sgd(lr=0.1)", "schedule": null,
            "schedule_unit": "step", "batch_size": 32, "epochs": 2, "seed": 7,
            "clip_norm": null, "grad_noise": null, "ema": null, "swa_start": null,
            "swa_lr": null, "data": null, "train_limit": 500,
        });
        let c = TrainConfig::from_json(&old).unwrap();
        assert_eq!(c.model.activation, Activation::Relu);
        assert!(!c.model.batch_norm && c.model.dropout == 0.0);
        assert_eq!((c.swa_anneal, c.swa_anneal_steps), (SwaAnneal::Cos, 0));
        assert_eq!(
            (c.inputs, c.data_order),
            (InputScale::Standardized, DataOrder::Shuffled)
        );
        assert_eq!((c.max_skipped, c.nonfinite), (100, NonFinitePolicy::Error));
        assert_eq!((c.batch_size, c.seed, c.train_limit), (32, 7, Some(500)));
        // What is not optional is an error naming it.
        let mut bad = old.clone();
        bad["batch_size"] = serde_json::json!("many");
        let e = TrainConfig::from_json(&bad).unwrap_err();
        assert!(e.contains("config") && e.contains("many"), "{e}");
        let mut bad = old.clone();
        bad.as_object_mut().unwrap().remove("optimizer");
        let e = TrainConfig::from_json(&bad).unwrap_err();
        assert!(e.contains("optimizer"), "{e}");
        let mut bad =
            TrainConfig::new(ModelSpec::new(ModelKind::Mlp), "sgd", Path::new("o")).to_json();
        bad["model"] = serde_json::json!("rnn");
        let e = TrainConfig::from_json(&bad).unwrap_err();
        assert!(e.contains("rnn") && e.contains("mlp"), "{e}");
    }
}
