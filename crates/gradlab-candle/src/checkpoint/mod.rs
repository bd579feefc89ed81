//! Training checkpoints: written to a fresh folder and swapped into place, so a crash
//! never leaves a half-written checkpoint; loaded with every piece checked.
//!
//! `state.json` records each tensor file's length and CRC-32, verified on every load (resume,
//! `hessian`, `landscape`), and every parameter and optimizer-state value must be finite.
//! The swap renames `checkpoint/` to `checkpoint.old/` and `checkpoint.tmp/` to
//! `checkpoint/`; a crash between the two renames leaves no `checkpoint/`, and a load then
//! takes the complete, verified `checkpoint.tmp/` (the newer) or else `checkpoint.old/`.

use crate::data::Split;
use crate::models::model_tensors;
use crate::models::{Model, Network};
use crate::optim::GradlabOptimizer;
use crate::train::{Averages, TrainConfig};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use gradlab::dist::Collective;
use gradlab::schedule::Scheduler;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

mod files;
mod model;

pub use files::checkpoint_dir;
use files::{crash_point, locate, parse_state, read_files};
pub use model::{init_weights, load_model, load_tensors, restore_model, truncate_metrics};

/// Version of the checkpoint layout (2: file checksums in `state.json`).
pub const CHECKPOINT_VERSION: u64 = 2;

/// The tensor files of a checkpoint, each listed with its length and CRC-32 in `state.json`.
const TENSOR_FILES: [&str; 2] = ["model.safetensors", "optimizer.safetensors"];

/// Where the swap may leave a complete checkpoint, newest first after `checkpoint/`.
const CANDIDATES: [&str; 3] = ["checkpoint", "checkpoint.tmp", "checkpoint.old"];

/// The CRC-32 of `bytes`, as 8 hex digits.
fn crc32(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// Where a checkpoint leaves off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Optimizer steps taken.
    pub step: u64,
    /// Epochs completed.
    pub epoch: usize,
}

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

#[allow(clippy::too_many_arguments)]
/// Writes `out/checkpoint/` atomically.
pub(crate) fn save(
    out: &Path,
    config: &TrainConfig,
    model: &dyn Network,
    opt: &mut GradlabOptimizer,
    scheduler: Option<&Scheduler>,
    averages: &Averages,
    split: &Split,
    step: u64,
    epoch: usize,
) -> Result<()> {
    // Collective when data-parallel: every rank sends its shard, rank 0 writes.
    let Some(optimizer_state) = opt.full_state_bytes()? else {
        return Ok(());
    };
    let (ema, swa) = (&averages.ema, &averages.swa);
    let tmp = out.join("checkpoint.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::Msg(format!("{}: {e}", tmp.display())))?;
    let mut tensors = model_tensors(model);
    let names: Vec<String> = model.params().iter().map(|(n, _)| n.clone()).collect();
    if let Some(ema) = ema {
        tensors.extend(
            names
                .iter()
                .zip(ema)
                .map(|(n, t)| (format!("ema/{n}"), t.clone())),
        );
    }
    if let Some((swa, _)) = swa {
        tensors.extend(
            names
                .iter()
                .zip(swa)
                .map(|(n, t)| (format!("swa/{n}"), t.clone())),
        );
    }
    // Serialised in memory and written like every other file (same mode, atomic), then
    // checksummed from the same bytes.
    let model_path = tmp.join("model.safetensors");
    let model_bytes = safetensors::tensor::serialize(tensors.iter(), None)
        .map_err(|e| Error::Msg(format!("{}: {e}", model_path.display())))?;
    gradlab::io::write_atomic(&model_path, &model_bytes)?;
    gradlab::io::write_atomic(&tmp.join("optimizer.safetensors"), &optimizer_state)?;
    let record = |bytes: &[u8]| json!({"bytes": bytes.len(), "crc32": crc32(bytes)});
    let state = json!({
        "files": {
            "model.safetensors": record(&model_bytes),
            "optimizer.safetensors": record(&optimizer_state),
        },
        "version": CHECKPOINT_VERSION,
        "step": step,
        "epoch": epoch,
        "config": config.to_json(),
        "data": {"train": split.train.fingerprint(), "test": split.test.fingerprint()},
        "schedule": scheduler.map(|s| s.state()),
        "swa_count": swa.as_ref().map(|s| s.1),
        "swa_schedule": averages.swa_schedule.as_ref().map(|s| s.state()),
        "rng": {"seed": config.seed, "next_step": step, "next_epoch": epoch},
    });
    gradlab::io::write_atomic(
        &tmp.join("state.json"),
        serde_json::to_string_pretty(&state)
            .expect("json")
            .as_bytes(),
    )?;
    let dest = out.join("checkpoint");
    let old = out.join("checkpoint.old");
    let _ = std::fs::remove_dir_all(&old);
    if dest.exists() {
        std::fs::rename(&dest, &old).map_err(|e| Error::Msg(format!("{}: {e}", dest.display())))?;
    }
    crash_point("checkpoint-swap");
    std::fs::rename(&tmp, &dest).map_err(|e| Error::Msg(format!("{}: {e}", dest.display())))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Reads `dir/checkpoint` (or `dir` itself if it holds the files) into the model,
/// optimizer, schedule and averages. With several ranks, rank 0 reads the files and sends
/// them to the others (collective), so only rank 0's machine needs them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn load(
    dir: &Path,
    config: &TrainConfig,
    model: &dyn Network,
    opt: &mut GradlabOptimizer,
    scheduler: Option<&mut Scheduler>,
    averages: &mut Averages,
    split: &Split,
    collective: &dyn Collective,
) -> Result<Resumed> {
    let files = read_files(dir, collective)?;
    let ck = files.dir.clone();
    let state_path = ck.join("state.json");
    let state = parse_state(&files.state, &state_path)?;
    check_same_run(&state, config, split)
        .map_err(|e| Error::Msg(format!("{}: {e}", state_path.display())))?;
    let resumed = position(&state, split.train.len().div_ceil(config.batch_size) as u64)
        .map_err(|e| Error::Msg(format!("{}: {e}", state_path.display())))?;
    let model_path = ck.join("model.safetensors");
    let tensors = candle_core::safetensors::load_buffer(&files.model, &Device::Cpu)
        .map_err(|e| Error::Msg(format!("{}: {e}", model_path.display())))?;
    restore_model(model, &tensors, &model_path)?;
    let names: Vec<String> = model.params().iter().map(|(n, _)| n.clone()).collect();
    let averaged = |prefix: &str| -> Result<Vec<Tensor>> {
        names
            .iter()
            .map(|n| {
                tensors
                    .get(&format!("{prefix}/{n}"))
                    .cloned()
                    .ok_or_else(|| {
                        Error::Msg(format!(
                            "{}: tensor '{prefix}/{n}' is missing",
                            ck.display()
                        ))
                    })
            })
            .collect()
    };
    if averages.ema.is_some() {
        averages.ema = Some(averaged("ema")?);
    }
    if let Some(count) = state["swa_count"].as_u64() {
        averages.swa = Some((averaged("swa")?, count as usize));
    }
    if let (Some(spec), Some(saved)) = (config.swa_schedule(), state.get("swa_schedule")) {
        if !saved.is_null() {
            averages.swa_schedule = Some(
                Scheduler::resume(&spec, saved)
                    .map_err(|e| Error::Msg(format!("{}: {e}", state_path.display())))?,
            );
        }
    }
    opt.load_state_bytes(&files.optimizer, &ck.join("optimizer.safetensors"))?;
    match (scheduler, &state["schedule"]) {
        (Some(s), saved) => s
            .load_state(saved)
            .map_err(|e| Error::Msg(format!("{}: schedule: {e}", state_path.display())))?,
        (None, Value::Null) => {}
        (None, saved) => {
            return Err(Error::Msg(format!(
                "{}: holds a schedule state {} but the run has no schedule",
                state_path.display(),
                gradlab::error::quote(&saved.to_string())
            )))
        }
    }
    Ok(resumed)
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
                "the checkpoint was trained on other {part} data ({was}), this run's {part}                  data ({}) is {is}",
                split.source
            ));
        }
    }
    Ok(())
}

/// The step and epoch a checkpoint leaves off at, checked against each other: `step` must
/// be `epoch` whole epochs of `steps_per_epoch` steps.
fn position(state: &Value, steps_per_epoch: u64) -> std::result::Result<Resumed, String> {
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
    Ok(Resumed {
        step,
        epoch: epoch as usize,
    })
}
