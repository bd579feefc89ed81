//! `gradlab train` and `gradlab lr-find --model`: networks on MNIST-format data.

use crate::ranks::Group;
use anyhow::{bail, Context, Result};
use gradlab::optim::NonFinitePolicy;
use gradlab_candle::models::{ModelKind, ModelSpec};
use gradlab_candle::train::{self, Curriculum, Event, ScheduleUnit, SwaAnneal, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

/// The model and data flags shared by the network commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// logreg, mlp or cnn.
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// Hidden widths of the MLP, e.g. 256,128.
    #[arg(long, default_value = "256,128", value_delimiter = ',')]
    pub widths: Vec<usize>,
    /// relu, tanh or gelu.
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// Batch normalisation.
    #[arg(long)]
    pub batch_norm: bool,
    /// Dropout probability (MLP).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Examples per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Seed of initialisation, shuffling, dropout and noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A folder with full MNIST / Fashion-MNIST / KMNIST files (default: the bundled digits).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train on the first N training examples only.
    #[arg(long)]
    pub train_limit: Option<usize>,
}

impl ModelArgs {
    /// The model spec.
    pub fn spec(&self) -> Result<ModelSpec> {
        let kind: ModelKind = self.model.parse()?;
        Ok(ModelSpec {
            kind,
            widths: self.widths.clone(),
            activation: self.activation.parse()?,
            batch_norm: self.batch_norm,
            dropout: self.dropout,
        })
    }
}

/// Arguments of `gradlab train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Optimizer spec.
    #[arg(long, default_value = "adamw(lr=0.001)")]
    optimizer: String,
    /// Schedule spec (plateau is stepped with the test loss each epoch).
    #[arg(long)]
    schedule: Option<String>,
    /// step or epoch.
    #[arg(long, default_value = "step")]
    schedule_unit: String,
    /// Epochs.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    clip_norm: Option<f64>,
    /// Gradient noise η: variance η/(1+t)^0.55.
    #[arg(long)]
    grad_noise: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay.
    #[arg(long)]
    ema: Option<f64>,
    /// Start stochastic weight averaging at this epoch (0-based).
    #[arg(long)]
    swa_start: Option<usize>,
    /// Learning rate during SWA: from --swa-start on it follows PyTorch's SWALR alone,
    /// after every step (the --schedule is no longer stepped).
    #[arg(long)]
    swa_lr: Option<f64>,
    /// Anneal the learning rate from its value at the SWA start to --swa-lr over this many
    /// steps (0: --swa-lr at once).
    #[arg(long, default_value_t = 0)]
    swa_anneal_steps: u64,
    /// cos or linear: the annealing curve of --swa-anneal-steps.
    #[arg(long, default_value = "cos")]
    swa_anneal: String,
    /// error or skip: what to do with non-finite gradients.
    #[arg(long, default_value = "error")]
    nonfinite: String,
    /// With --nonfinite skip: stop after this many consecutive skipped steps (at most one
    /// epoch's).
    #[arg(long, default_value_t = 100)]
    max_skipped: u64,
    /// Pixels as the network sees them: standardized (MNIST mean and deviation) or raw
    /// (0–255).
    #[arg(long, default_value = "standardized")]
    inputs: String,
    /// Train and test on these digit classes only, e.g. 5,6,7,8,9.
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<u8>>,
    /// Hold out the last N training examples as a validation set, evaluated each epoch.
    #[arg(long)]
    validation: Option<usize>,
    /// Order of the training examples in each epoch: shuffled or fixed.
    #[arg(long, default_value = "shuffled")]
    data_order: String,
    /// Curriculum learning: a file with one difficulty score per training example (lower is
    /// easier); batches come from the easiest examples first.
    #[arg(long)]
    curriculum: Option<PathBuf>,
    /// With --curriculum: the fraction of the easiest examples in reach at the first step.
    #[arg(long, default_value_t = 0.2, requires = "curriculum")]
    curriculum_start: f64,
    /// With --curriculum: the epochs after which all examples are in reach.
    #[arg(long, default_value_t = 1.0, requires = "curriculum")]
    curriculum_ramp: f64,
    /// Start from the model weights of the checkpoint in this folder (fine-tuning).
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// With --init: parameters whose name starts with this keep a fresh initialisation
    /// (repeat; e.g. fc3. for a new output layer).
    #[arg(long, requires = "init")]
    init_exclude: Vec<String>,
    /// Output folder (metrics.jsonl, summary.json, checkpoint/).
    #[arg(long)]
    out: PathBuf,
    /// Continue from the checkpoint in this folder.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Replace a run already in --out (its files go once this run has its first checkpoint).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
}

impl TrainArgs {
    /// The trainer configuration.
    pub fn config(&self) -> Result<TrainConfig> {
        let mut c = TrainConfig::new(self.model.spec()?, &self.optimizer, &self.out);
        c.schedule = self.schedule.clone();
        c.schedule_unit = match self.schedule_unit.as_str() {
            "step" => ScheduleUnit::Step,
            "epoch" => ScheduleUnit::Epoch,
            other => bail!("--schedule-unit '{other}' must be step or epoch"),
        };
        c.batch_size = self.model.batch_size;
        c.epochs = self.epochs;
        c.seed = self.model.seed;
        c.clip_norm = self.clip_norm;
        c.grad_noise = self.grad_noise;
        c.ema = self.ema;
        c.swa_start = self.swa_start;
        c.swa_lr = self.swa_lr;
        c.swa_anneal_steps = self.swa_anneal_steps;
        c.swa_anneal = match self.swa_anneal.as_str() {
            "cos" => SwaAnneal::Cos,
            "linear" => SwaAnneal::Linear,
            other => bail!("--swa-anneal '{other}' must be cos or linear"),
        };
        c.nonfinite = self
            .nonfinite
            .parse::<NonFinitePolicy>()
            .map_err(anyhow::Error::msg)?;
        c.max_skipped = self.max_skipped;
        c.data_dir = self.model.data.clone();
        c.train_limit = self.model.train_limit;
        c.overwrite = self.overwrite;
        c.inputs = self.inputs.parse().map_err(anyhow::Error::from)?;
        c.classes = self.classes.clone();
        if let Some(bad) = c.classes.iter().flatten().find(|&&k| k > 9) {
            bail!("--classes {bad}: a digit class is 0–9");
        }
        c.validation = self.validation;
        c.data_order = self.data_order.parse().map_err(anyhow::Error::from)?;
        c.curriculum = self.curriculum.as_ref().map(|path| Curriculum {
            difficulty: path.clone(),
            start: self.curriculum_start,
            ramp: self.curriculum_ramp,
        });
        c.init = self.init.clone();
        c.init_exclude = self.init_exclude.clone();
        Ok(c)
    }
}

/// A progress bar on a terminal, plain lines otherwise.
pub fn reporter(label: String) -> impl FnMut(Event) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} steps, {msg} ({eta} left)",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b.set_prefix(label.clone());
        b
    });
    move |event| match event {
        Event::Step { step, total, loss } => {
            if let Some(b) = &bar {
                b.set_length(total);
                b.set_position(step);
                b.set_message(format!("loss {loss:.4}"));
            }
        }
        Event::Epoch(line) => {
            let mut msg = format!(
                "{label} epoch {}: train loss {:.4}, test loss {:.4}, test accuracy {:.2}%",
                line.epoch + 1,
                line.train_loss,
                line.test_loss,
                100.0 * line.test_accuracy
            );
            if let Some(v) = line.validation_accuracy {
                msg.push_str(&format!(", validation accuracy {:.2}%", 100.0 * v));
            }
            match &bar {
                Some(b) => b.println(msg),
                None => eprintln!("{msg}"),
            }
        }
    }
}

/// Runs `gradlab train`: in one process, or as one rank of `mpirun -np N gradlab train ...`
/// (data-parallel; rank 0 reports and writes every file).
pub fn run(args: TrainArgs) -> Result<()> {
    let config = args.config()?;
    let group = Group::join()?;
    let collective = group.collective();
    let (rank, ranks) = (collective.rank(), collective.size());
    let label = config.model.kind.name().to_string();
    let mut report = (rank == 0).then(|| reporter(label));
    let result = train::train_on(
        &config,
        args.resume.as_deref(),
        |event| {
            if let Some(r) = report.as_mut() {
                r(event)
            }
        },
        collective,
    )
    .context("training");
    let summary = match result {
        Ok(s) => s,
        Err(e) if ranks > 1 => {
            // The other ranks may be waiting for this one: end them all now.
            eprintln!("error on rank {rank} of {ranks}: {e:#}");
            group.abort_others();
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if rank == 0 {
        let s = &summary.record;
        println!(
            "test accuracy {:.2}%  train loss {:.4}  {} steps in {:.1} s{}  -> {}",
            100.0 * s.test_accuracy,
            s.train_loss,
            s.steps,
            s.wall_seconds,
            if ranks > 1 {
                format!(" on {ranks} ranks")
            } else {
                String::new()
            },
            config.out.display()
        );
    }
    Ok(())
}
