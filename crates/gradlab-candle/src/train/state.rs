//! The state a training run carries from one step to the next — the model's weights, the
//! optimizer with its state, the schedule, the weight averages, the step and the epoch (the
//! dropout and noise generators are functions of the seed and the step) — saved whole in a
//! checkpoint after every epoch and loaded back, checked against the run's configuration and
//! data first.

use super::{Averages, TrainConfig};
use crate::checkpoint::{self, restore_model};
use crate::data::Split;
use crate::models::{model_tensors, Network};
use crate::optim::GradlabOptimizer;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use gradlab::dist::Collective;
use gradlab::schedule::Scheduler;
use serde_json::{json, Value};
use std::path::Path;

/// The configuration keys that must match for a resume and that every checkpoint records.
/// (`optimizer` and `schedule` are compared as canonical specs, the data by fingerprint.)
const MUST_MATCH: &[&str] = &[
    "model",
    "widths",
    "activation",
    "batch_norm",
    "dropout",
    "schedule_unit",
    "batch_size",
    "seed",
    "clip_norm",
    "grad_noise",
    "ema",
    "swa_start",
    "swa_lr",
];

/// Keys added after the first checkpoints: an older checkpoint without one was trained with
/// the default value.
const MUST_MATCH_OR_DEFAULT: &[&str] = &[
    "swa_anneal_steps",
    "swa_anneal",
    "inputs",
    "classes",
    "validation",
    "data_order",
    "curriculum",
];

/// What a run carries from one step to the next; see the module documentation.
pub(crate) struct TrainState<'m> {
    /// The model being trained.
    pub(crate) model: &'m dyn Network,
    /// The optimizer, with its state and its learning rates as they stand.
    pub(crate) opt: GradlabOptimizer,
    /// The learning-rate schedule, if any.
    pub(crate) scheduler: Option<Scheduler>,
    /// EMA and SWA weights and SWA's own schedule.
    pub(crate) averages: Averages,
    /// Optimizer steps taken.
    pub(crate) step: u64,
    /// Epochs completed.
    pub(crate) epoch: usize,
}

impl TrainState<'_> {
    /// Writes the state to `config.out/checkpoint/` atomically (collective when
    /// data-parallel: every rank sends its shard of the optimizer state, rank 0 writes).
    pub(crate) fn save(&mut self, config: &TrainConfig, split: &Split) -> Result<()> {
        let Some(optimizer_state) = self.opt.full_state_bytes()? else {
            return Ok(());
        };
        let (ema, swa) = (&self.averages.ema, &self.averages.swa);
        let mut tensors = model_tensors(self.model);
        let names: Vec<String> = self.model.params().iter().map(|(n, _)| n.clone()).collect();
        let averaged = [("ema", ema.as_ref()), ("swa", swa.as_ref().map(|s| &s.0))];
        for (prefix, weights) in averaged {
            if let Some(weights) = weights {
                let named = names.iter().zip(weights);
                tensors.extend(named.map(|(n, t)| (format!("{prefix}/{n}"), t.clone())));
            }
        }
        let model_bytes = safetensors::tensor::serialize(tensors.iter(), None).map_err(|e| {
            Error::file(
                config.out.join("checkpoint/model.safetensors"),
                e.to_string(),
            )
        })?;
        let state = json!({
            "step": self.step,
            "epoch": self.epoch,
            "config": config.to_json(),
            "data": {"train": split.train.fingerprint(), "test": split.test.fingerprint()},
            "image": [split.train.rows, split.train.cols],
            "schedule": self.scheduler.as_ref().map(|s| s.state()),
            "swa_count": swa.as_ref().map(|s| s.1),
            "swa_schedule": self.averages.swa_schedule.as_ref().map(|s| s.state()),
            "rng": {"seed": config.seed, "next_step": self.step, "next_epoch": self.epoch},
        });
        checkpoint::write(&config.out, &model_bytes, &optimizer_state, state)
    }

    /// Loads the checkpoint in `dir` (or `dir/checkpoint`) into this state, after checking
    /// that it was written by this run's configuration on this run's data. With several
    /// ranks, rank 0 reads the files and sends them to the others (collective).
    pub(crate) fn load(
        &mut self,
        dir: &Path,
        config: &TrainConfig,
        split: &Split,
        collective: &dyn Collective,
    ) -> Result<()> {
        let (files, state) = checkpoint::read(dir, collective)?;
        let ck = files.dir.clone();
        let state_path = ck.join("state.json");
        let in_state = |e: String| Error::file(&state_path, e);
        check_same_run(&state, config, split).map_err(in_state)?;
        let steps_per_epoch = split.train.len().div_ceil(config.batch_size) as u64;
        let (step, epoch) = position(&state, steps_per_epoch).map_err(in_state)?;
        let model_path = ck.join("model.safetensors");
        let tensors = candle_core::safetensors::load_buffer(&files.model, &Device::Cpu)
            .map_err(|e| Error::file(&model_path, e.to_string()))?;
        restore_model(self.model, &tensors, &model_path)?;
        let names: Vec<String> = self.model.params().iter().map(|(n, _)| n.clone()).collect();
        let averaged = |prefix: &str| -> Result<Vec<Tensor>> {
            names
                .iter()
                .map(|n| {
                    tensors
                        .get(&format!("{prefix}/{n}"))
                        .cloned()
                        .ok_or_else(|| {
                            Error::file(&ck, format!("tensor '{prefix}/{n}' is missing"))
                        })
                })
                .collect()
        };
        let averages = &mut self.averages;
        if averages.ema.is_some() {
            averages.ema = Some(averaged("ema")?);
        }
        if let Some(count) = state["swa_count"].as_u64() {
            averages.swa = Some((averaged("swa")?, count as usize));
        }
        if let (Some(spec), Some(saved)) = (config.swa_schedule(), state.get("swa_schedule")) {
            if !saved.is_null() {
                let resumed =
                    Scheduler::resume(&spec, saved).map_err(|e| in_state(e.to_string()))?;
                averages.swa_schedule = Some(resumed);
            }
        }
        self.opt
            .load_state_bytes(&files.optimizer, &ck.join("optimizer.safetensors"))?;
        match (self.scheduler.as_mut(), &state["schedule"]) {
            (Some(s), saved) => s
                .load_state(saved)
                .map_err(|e| in_state(format!("schedule: {e}")))?,
            (None, Value::Null) => {}
            (None, saved) => {
                return Err(in_state(format!(
                    "holds a schedule state {} but the run has no schedule",
                    gradlab::error::quote(&saved.to_string())
                )))
            }
        }
        (self.step, self.epoch) = (step, epoch);
        Ok(())
    }
}

/// Refuses a resume whose configuration or data differs from the checkpoint's: the specs
/// compared in canonical form (`lr=1e-3` is `lr=0.001`), the data by fingerprint (the same
/// digits under another path resume; changed digits under the same path do not).
fn check_same_run(
    state: &Value,
    config: &TrainConfig,
    split: &Split,
) -> std::result::Result<(), String> {
    let saved = state
        .get("config")
        .filter(|c| c.is_object())
        .ok_or("field 'config' is missing or not an object")?;
    let now = config.to_json();
    let differs = |key: &str, was: &Value, is: &Value| {
        format!("the checkpoint was trained with {key} = {was}, this run has {key} = {is}")
    };
    for key in MUST_MATCH {
        let was = saved
            .get(*key)
            .ok_or_else(|| format!("field 'config.{key}' is missing"))?;
        if *was != now[key] {
            return Err(differs(key, was, &now[key]));
        }
    }
    let defaults = TrainConfig::new(config.model.clone(), &config.optimizer, &config.out).to_json();
    for key in MUST_MATCH_OR_DEFAULT {
        let was = saved.get(*key).unwrap_or(&defaults[key]);
        if *was != now[key] {
            return Err(differs(key, was, &now[key]));
        }
    }
    let optimizer = saved["optimizer"]
        .as_str()
        .ok_or("field 'config.optimizer' is missing or not a string")?;
    if canonical(optimizer, gradlab::optim::canonical_spec)?
        != canonical(&config.optimizer, gradlab::optim::canonical_spec)?
    {
        return Err(differs("optimizer", &saved["optimizer"], &now["optimizer"]));
    }
    let schedule = match &saved["schedule"] {
        Value::Null => None,
        Value::String(s) => Some(canonical(s, gradlab::schedule::canonical_spec)?),
        other => {
            return Err(format!(
                "field 'config.schedule' is not a spec string: {other}"
            ))
        }
    };
    let schedule_now = config
        .schedule
        .as_deref()
        .map(|s| canonical(s, gradlab::schedule::canonical_spec))
        .transpose()?;
    if schedule != schedule_now {
        return Err(differs("schedule", &saved["schedule"], &now["schedule"]));
    }
    check_same_data(state, saved, &now, split)
}

/// The canonical text of a spec, or an error naming the spec that does not parse.
fn canonical(
    spec: &str,
    canonical_spec: fn(&str) -> gradlab::Result<String>,
) -> std::result::Result<String, String> {
    canonical_spec(spec).map_err(|e| format!("spec '{spec}': {e}"))
}

/// Compares the data by fingerprint; a checkpoint too old to hold one is compared by the
/// data's path and training-set limit.
fn check_same_data(
    state: &Value,
    saved: &Value,
    now: &Value,
    split: &Split,
) -> std::result::Result<(), String> {
    let Some(data) = state.get("data") else {
        for key in ["data", "train_limit"] {
            if saved[key] != now[key] {
                return Err(format!(
                    "the checkpoint was trained with {key} = {}, this run has {key} = {}",
                    saved[key], now[key]
                ));
            }
        }
        return Ok(());
    };
    for (part, set) in [("train", &split.train), ("test", &split.test)] {
        let was = data[part]
            .as_str()
            .ok_or_else(|| format!("field 'data.{part}' is missing or not a string"))?;
        let is = set.fingerprint();
        if was != is {
            return Err(format!(
                "the checkpoint was trained on other {part} data ({was}), this run's {part} data ({}) is {is}",
                split.source
            ));
        }
    }
    Ok(())
}

/// The step and epoch a checkpoint leaves off at, checked against each other: `step` must
/// be `epoch` whole epochs of `steps_per_epoch` steps.
fn position(state: &Value, steps_per_epoch: u64) -> std::result::Result<(u64, usize), String> {
    let count = |key: &str| {
        state[key].as_u64().ok_or_else(|| {
            format!(
                "field '{key}' is missing or not a non-negative integer (found {})",
                state
                    .get(key)
                    .map_or("nothing".to_string(), |v| v.to_string())
            )
        })
    };
    let (step, epoch) = (count("step")?, count("epoch")?);
    if epoch == 0 || epoch.checked_mul(steps_per_epoch) != Some(step) {
        return Err(format!(
            "step {step} and epoch {epoch} disagree: a checkpoint is written after whole \
             epochs, here of {steps_per_epoch} steps each, so step must be {steps_per_epoch} \
             × epoch with epoch ≥ 1"
        ));
    }
    Ok((step, epoch as usize))
}
