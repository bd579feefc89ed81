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

mod averages;
mod batches;
mod config;
mod data_parallel;
mod diagnostics;
mod lr_find;
mod metrics;
mod noise;
mod records;
mod split;
mod state;
mod summary;
mod trainer;

pub use crate::models::model_tensors;
pub(crate) use averages::Averages;
use averages::{recompute_batch_norm, with_weights};
pub use batches::{batch, Curriculum, DataOrder};
pub use config::{ScheduleUnit, SwaAnneal, TrainConfig};
use data_parallel::check_ranks;
pub use data_parallel::{evaluate_shared, share};
use diagnostics::{non_finite_cause, tensor_grad_norms, tensor_health, weights};
pub use lr_find::lr_find;
use metrics::MetricsFile;
pub(crate) use noise::step_rng;
use noise::{add_noise, add_noise_to_store};
pub use records::{EpochRecord, Record, StepRecord, SummaryRecord, SwatsSwitch, TensorHealth};
pub use split::{checkpoint_data, load_data, InputScale, RunData};
use state::TrainState;
pub use trainer::Trainer;

use crate::data::{Dataset, Split};
use crate::models::{correct, cross_entropy, Model, Network};
use crate::optim::{GradlabOptimizer, OptimizerConfig};
use crate::{Error, Result};
pub(crate) use batches::shuffle;

use gradlab::dist::{Collective, Local};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

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
    Epoch(&'a EpochRecord),
}

/// The final figures.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `summary.json`'s content, as written.
    pub json: Value,
    /// The same, typed.
    pub record: SummaryRecord,
}

/// Mean loss and accuracy of `model` (evaluation mode) on `data`.
pub fn evaluate(model: &dyn Network, data: &Dataset) -> Result<(f64, f64)> {
    evaluate_shared(model, data, &Local)
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
/// [`crate::optim::sharded`]), evaluation is split over the ranks, and only rank 0 writes files.
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
        return Err(Error::setting(
            "--batch-size",
            format!(
                "--batch-size {} is smaller than the number of ranks ({ranks}): every rank needs \
             at least one example of each batch",
                config.batch_size
            ),
        ));
    }
    let mut lock = None;
    if lead {
        if resume.is_none() {
            crate::run_dir::check_fresh(&config.out, config.overwrite)?;
        }
        std::fs::create_dir_all(&config.out)
            .map_err(|e| Error::file(&config.out, format!("cannot create: {e}")))?;
        lock = Some(crate::run_dir::RunLock::acquire(&config.out)?);
    }
    let mut opt = optimizer(config, model, collective.clone())?;
    check_ranks(config, &split, model, collective.as_ref())?;
    let closure_steps = opt.needs_closure();
    let eval_point = opt.has_eval_point();
    if eval_point && ranks > 1 {
        return Err(Error::setting(
            "--optimizer",
            format!(
                "--optimizer '{}' evaluates the model at another point than it trains at: it \
                 runs in one process",
                config.optimizer
            ),
        ));
    }
    if closure_steps && (ranks > 1 || config.grad_noise.is_some()) {
        return Err(Error::setting(
            "--optimizer",
            format!(
                "--optimizer '{}' evaluates the batch more than once per step: it runs in one \
                 process and without --grad-noise",
                config.optimizer
            ),
        ));
    }
    let scheduler = match &config.schedule {
        Some(s) => Some(opt.with_engine(|e| e.scheduler(s))?),
        None => None,
    };
    let mut st = TrainState {
        model,
        opt,
        scheduler,
        averages: Averages::new(config, model)?,
        step: 0,
        epoch: 0,
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
    // A fresh run over an old one writes its metrics aside until its first checkpoint.
    let replacing = resume.is_none() && !crate::run_dir::contents(&config.out)?.is_empty();
    if let Some(dir) = resume {
        st.load(dir, config, &split, collective.as_ref())?;
    }
    let resumed = resume.map(|_| (st.step, st.epoch));
    let mut metrics = MetricsFile::open(&config.out, lead, replacing, resumed)?;
    let start_epoch = st.epoch;
    let started = Instant::now();
    let plateau = st.scheduler.as_ref().is_some_and(|s| s.needs_metric());
    let mut last_epoch: Option<EpochRecord> = None;
    let skip_limit = config.max_skipped.min(batches_per_epoch.max(1));
    // Consecutive skipped steps, and the first of them.
    let (mut skipped_run, mut first_skipped) = (0u64, 0u64);
    // The learning rate of the last step taken, named when the next one meets a
    // non-finite gradient.
    let mut previous_lr = None;
    for epoch in start_epoch..config.epochs {
        if let (true, None, Some(spec)) = (
            config.in_swa(epoch),
            st.averages.swa_schedule.as_ref(),
            config.swa_schedule(),
        ) {
            // From here on SWALR alone sets the learning rate.
            st.averages.swa_schedule = Some(st.opt.with_engine(|e| e.scheduler(&spec))?);
        }
        // The weights to train from (schedule-free: y; the epoch before ended at x).
        st.opt.train_mode()?;
        let (mut loss_sum, mut right, mut seen) = (0.0, 0.0, 0usize);
        let mut health = Vec::new();
        let batches = plan.batches(epoch, st.step);
        for (b, idx) in batches.iter().enumerate() {
            let mine = share(idx, collective.as_ref());
            let mut rng = step_rng(config.seed, st.step);
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
                .map(|eta| (eta / (1.0 + st.step as f64).powf(0.55)).sqrt());
            let last_of_epoch = b + 1 == batches.len();
            let before = last_of_epoch.then(|| weights(model)).transpose()?;
            let grad_norms = match before {
                Some(_) => Some(tensor_grad_norms(&st.opt, grads.as_ref())?),
                None => None,
            };
            let gradlab::optim::Hyper { lr, momentum } = st.opt.with_engine(|e| e.hypers()[0]);
            let mut evaluations = 1;
            let outcome = if closure_steps {
                // The gradient at the current weights is the one just computed; further
                // evaluations redo the batch with the same dropout masks.
                let (x, y) = inputs.as_ref().expect("one rank has the whole batch");
                let mut first = grads.take();
                let first_loss = loss_value;
                st.opt
                    .step_with_closure(|| {
                        if let Some(store) = first.take() {
                            return Ok((first_loss, store));
                        }
                        let logits = model.forward(x, true, &mut step_rng(config.seed, st.step))?;
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
                    add_noise_to_store(&st.opt, grads, config.seed, st.step, std)?;
                }
                st.opt.step_grads(grads)
            } else {
                let noise = |start: usize, g: &mut [f32]| {
                    add_noise(config.seed, st.step, noise_std.unwrap_or(0.0), start, g)
                };
                let noise: Option<crate::optim::sharded::GradNoise> =
                    noise_std.is_some().then_some(&noise);
                let weight = mine.len() as f32 / idx.len() as f32;
                st.opt.step_shared(grads.as_ref(), weight, noise)
            }
            .map_err(|e| {
                let cause = match &e {
                    Error::Gradlab(gradlab::Error::NonFiniteGradient { .. }) => {
                        non_finite_cause(model, loss_value, previous_lr, &config.optimizer)
                    }
                    _ => String::new(),
                };
                Error::Training {
                    step: st.step + 1,
                    message: format!("{e}{cause}"),
                }
            })?;
            previous_lr = Some(lr);
            if let (Some(before), Some(grad_norms)) = (before, grad_norms) {
                health = tensor_health(model, &before, &grad_norms)?;
            }
            st.averages.after_step(config, model)?;
            st.step += 1;
            if outcome.skipped {
                if skipped_run == 0 {
                    first_skipped = st.step;
                }
                skipped_run += 1;
                if skipped_run >= skip_limit {
                    return Err(Error::Training {
                        step: st.step,
                        message: format!(
                            "{skipped_run} consecutive steps skipped for non-finite gradients \
                             (steps {first_skipped}–{}, the limit is {skip_limit}; \
                             --max-skipped sets it): training has diverged; lower the \
                             learning rate or clip the gradients",
                            st.step
                        ),
                    });
                }
            } else {
                skipped_run = 0;
            }
            if let Some(s) = st.averages.swa_schedule.as_mut() {
                st.opt.with_engine(|e| e.step_schedule(s, None))?;
            } else if let (Some(s), ScheduleUnit::Step, false) =
                (st.scheduler.as_mut(), config.schedule_unit, plateau)
            {
                st.opt.with_engine(|e| e.step_schedule(s, None))?;
            }
            loss_sum += loss_value * idx.len() as f64;
            seen += idx.len();
            let record = StepRecord {
                step: st.step,
                epoch,
                loss: loss_value,
                grad_norm: outcome.grad_norm,
                skipped: outcome.skipped,
                evaluations,
                lr,
                momentum,
                seconds: started.elapsed().as_secs_f64(),
                // Prodigy's d, after the step that updated it.
                estimates: st
                    .opt
                    .with_engine(|e| e.estimates())
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect(),
            };
            metrics.write(&Record::Step(record))?;
            on_event(Event::Step {
                step: st.step,
                total: total_steps,
                loss: loss_value,
            });
        }
        if eval_point {
            // Test, checkpoint and analyse the average x, with batch-norm statistics of x.
            st.opt.eval_mode()?;
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
        if let (Some(s), false) = (st.scheduler.as_mut(), config.in_swa(epoch)) {
            if plateau {
                st.opt
                    .with_engine(|e| e.step_schedule(s, Some(test_loss)))?;
            } else if config.schedule_unit == ScheduleUnit::Epoch {
                st.opt.with_engine(|e| e.step_schedule(s, None))?;
            }
        }
        st.averages.after_epoch(config, model, epoch)?;
        let ema_accuracy = match &st.averages.ema {
            Some(ema) => Some(
                with_weights(model, ema, || {
                    evaluate_shared(model, &split.test, collective.as_ref())
                })?
                .1,
            ),
            None => None,
        };
        let record = EpochRecord {
            epoch,
            step: st.step,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: right / seen.max(1) as f64,
            test_loss,
            test_accuracy,
            validation_loss: validated.map(|v| v.0),
            validation_accuracy: validated.map(|v| v.1),
            ema_test_accuracy: ema_accuracy,
            lr: st.opt.with_engine(|e| e.hypers()[0].lr),
            tensors: std::mem::take(&mut health),
            seconds: started.elapsed().as_secs_f64(),
        };
        metrics.write(&Record::Epoch(record.clone()))?;
        on_event(Event::Epoch(&record));
        last_epoch = Some(record);
        st.epoch = epoch + 1;
        st.save(config, &split)?;
        metrics.checkpointed()?;
    }
    let Some(last_epoch) = last_epoch else {
        return Err(Error::setting(
            "--epochs",
            format!(
                "nothing to do: the checkpoint already has {start_epoch} epochs and --epochs is {}",
                config.epochs
            ),
        ));
    };
    let wall_seconds = started.elapsed().as_secs_f64();
    let record = st.summary(
        config,
        &split,
        &last_epoch,
        collective.as_ref(),
        wall_seconds,
    )?;
    let json = serde_json::to_value(&record).expect("a summary is plain data");
    if lead {
        gradlab::io::write_atomic(
            &config.out.join("summary.json"),
            serde_json::to_string_pretty(&json)
                .expect("json")
                .as_bytes(),
        )?;
    }
    drop(lock);
    Ok(Summary { json, record })
}
