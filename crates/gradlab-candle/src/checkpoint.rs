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

/// The three files of a checkpoint, as bytes.
struct Files {
    dir: std::path::PathBuf,
    state: Vec<u8>,
    model: Vec<u8>,
    optimizer: Vec<u8>,
}

/// Reads a checkpoint's files on rank 0 and shares them (or rank 0's error) with every rank.
fn read_files(dir: &Path, collective: &dyn Collective) -> Result<Files> {
    let read = || locate(dir);
    if collective.size() == 1 {
        return read();
    }
    // Rank 0's message: a status byte, then the folder and the files (length-prefixed), or
    // the error.
    let mut message = Vec::new();
    if collective.rank() == 0 {
        match read() {
            Ok(f) => {
                message.push(0);
                let folder = f.dir.display().to_string().into_bytes();
                for part in [&folder, &f.state, &f.model, &f.optimizer] {
                    message.extend_from_slice(&(part.len() as u64).to_le_bytes());
                    message.extend_from_slice(part);
                }
            }
            Err(e) => {
                message.push(1);
                message.extend_from_slice(e.to_string().as_bytes());
            }
        }
    }
    let mut all = collective.all_gather_bytes(&message);
    let message = std::mem::take(&mut all[0]);
    match message.split_first() {
        Some((0, mut rest)) => {
            let mut next = || {
                let (len, tail) = rest.split_at(8);
                let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
                let (part, tail) = tail.split_at(len);
                rest = tail;
                part.to_vec()
            };
            let folder = next();
            Ok(Files {
                dir: String::from_utf8_lossy(&folder).into_owned().into(),
                state: next(),
                model: next(),
                optimizer: next(),
            })
        }
        Some((_, text)) => Err(Error::Msg(format!(
            "rank 0 could not read the checkpoint: {}",
            String::from_utf8_lossy(text)
        ))),
        None => Err(Error::Msg("rank 0 sent no checkpoint".into())),
    }
}

/// The folder holding the checkpoint files inside `dir` (the verified `checkpoint/`, or a
/// recovered `checkpoint.tmp/` or `checkpoint.old/` after a crash between renames).
pub fn checkpoint_dir(dir: &Path) -> Result<std::path::PathBuf> {
    Ok(locate(dir)?.dir)
}

/// The verified checkpoint in `dir`: `dir` itself if it holds the files, else the first of
/// `checkpoint/`, `checkpoint.tmp/`, `checkpoint.old/` that is complete and whose files
/// match their checksums (the swap's recovery). The error lists each candidate's problem.
fn locate(dir: &Path) -> Result<Files> {
    if dir.join("state.json").is_file() {
        return verified(dir);
    }
    let mut problems = Vec::new();
    for name in CANDIDATES {
        let ck = dir.join(name);
        if !ck.join("state.json").is_file() {
            continue;
        }
        match verified(&ck) {
            Ok(files) => return Ok(files),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let unfinished: Vec<&str> = CANDIDATES
        .iter()
        .copied()
        .filter(|name| dir.join(name).is_dir())
        .collect();
    Err(Error::Msg(if !problems.is_empty() {
        problems.join("; ")
    } else if unfinished.is_empty() {
        format!(
            "{}: no checkpoint here (expected checkpoint/state.json)",
            dir.display()
        )
    } else {
        format!(
            "{}: no complete checkpoint here: {} without state.json is a save that was \
             interrupted before the first checkpoint was complete, so nothing can be resumed; \
             start the run afresh (gradlab train --overwrite)",
            dir.display(),
            unfinished.join(", ")
        )
    }))
}

/// Reads the checkpoint files in `ck` and checks them: `state.json` parses and has this
/// version, each tensor file has the recorded length and CRC-32, and every value in them is
/// finite.
fn verified(ck: &Path) -> Result<Files> {
    let read = |name: &str| {
        let path = ck.join(name);
        std::fs::read(&path).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))
    };
    let state_bytes = read("state.json")?;
    let state_path = ck.join("state.json");
    let state = parse_state(&state_bytes, &state_path)?;
    let mut contents = Vec::new();
    for name in TENSOR_FILES {
        let bytes = read(name)?;
        let record = &state["files"][name];
        let (want_len, want_crc) = (record["bytes"].as_u64(), record["crc32"].as_str());
        let (Some(want_len), Some(want_crc)) = (want_len, want_crc) else {
            return Err(Error::Msg(format!(
                "{}: no checksum recorded for {name}",
                state_path.display()
            )));
        };
        let got = crc32(&bytes);
        if bytes.len() as u64 != want_len || got != want_crc {
            return Err(Error::Msg(format!(
                "{}: corrupted: {} bytes with CRC-32 {got}, state.json records {want_len} bytes \
                 with CRC-32 {want_crc}",
                ck.join(name).display(),
                bytes.len()
            )));
        }
        check_finite(&bytes, &ck.join(name))?;
        contents.push(bytes);
    }
    let optimizer = contents.pop().expect("two files");
    let model = contents.pop().expect("two files");
    Ok(Files {
        dir: ck.to_path_buf(),
        state: state_bytes,
        model,
        optimizer,
    })
}

/// `state.json`'s content, refused unless it is an object of this checkpoint version.
fn parse_state(bytes: &[u8], path: &Path) -> Result<Value> {
    let state: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Msg(format!("{}: not valid JSON: {e}", path.display())))?;
    if state["version"].as_u64() != Some(CHECKPOINT_VERSION) {
        return Err(Error::Msg(format!(
            "{}: checkpoint version {} is not supported (this gradlab reads version \
             {CHECKPOINT_VERSION})",
            path.display(),
            state["version"]
        )));
    }
    Ok(state)
}

/// An error naming the tensor and element of the first non-finite f32/f64 value in a
/// safetensors file.
fn check_finite(bytes: &[u8], path: &Path) -> Result<()> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st
            .tensor(name)
            .map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
        let data = view.data();
        let values: Box<dyn Iterator<Item = f64>> = match view.dtype() {
            safetensors::Dtype::F32 => Box::new(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64),
            ),
            safetensors::Dtype::F64 => Box::new(
                data.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))),
            ),
            _ => Box::new(std::iter::empty()),
        };
        let bad = values.enumerate().find(|(_, x)| !x.is_finite());
        if let Some((i, x)) = bad {
            return Err(Error::Msg(format!(
                "{}: tensor '{name}' holds the non-finite value {x} at element {i}: refusing \
                 to load it",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Aborts the process at the named point when `GRADLAB_CRASH_AT` names it: the tests'
/// way to simulate a crash at the worst moment.
fn crash_point(name: &str) {
    if std::env::var_os("GRADLAB_CRASH_AT").is_some_and(|v| v == name) {
        eprintln!("GRADLAB_CRASH_AT={name}: aborting");
        std::process::abort();
    }
}

/// Reads a safetensors file.
pub fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::Msg(format!("{}: {e}", path.display())))
}

/// Sets `model`'s parameters and buffers from the checkpoint in `dir` (its model weights
/// only: the start of a fine-tuning run), checking names and shapes; parameters whose name
/// starts with one of `exclude` keep their fresh initialisation (a new output layer).
pub fn init_weights(model: &dyn Network, dir: &Path, exclude: &[String]) -> Result<()> {
    let files = locate(dir)?;
    let source = files.dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load_buffer(&files.model, &Device::Cpu)
        .map_err(|e| Error::Msg(format!("{}: {e}", source.display())))?;
    for prefix in exclude {
        let fresh: Vec<(String, Tensor)> = model
            .params()
            .iter()
            .filter(|(name, _)| name.starts_with(prefix.as_str()))
            .map(|(name, v)| Ok((name.clone(), v.as_tensor().copy()?)))
            .collect::<candle_core::Result<_>>()?;
        if fresh.is_empty() {
            let names: Vec<&str> = model.params().iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::Msg(format!(
                "--init-exclude {prefix}: no parameter's name starts with it; the model's \
                 parameters are {}",
                names.join(", ")
            )));
        }
        tensors.extend(fresh);
    }
    restore_model(model, &tensors, &source)
}

/// Sets a model's parameters and buffers from named tensors, checking names and shapes.
pub fn restore_model(
    model: &dyn Network,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
) -> Result<()> {
    for (name, var) in model.params() {
        let t = tensors.get(name).ok_or_else(|| {
            Error::Msg(format!(
                "{}: parameter '{name}' is missing",
                source.display()
            ))
        })?;
        if t.dims() != var.dims() {
            return Err(Error::Msg(format!(
                "{}: parameter '{name}' has shape {:?}, the model has {:?}",
                source.display(),
                t.dims(),
                var.dims()
            )));
        }
        var.set(t)?;
    }
    for (name, _) in model.buffers() {
        let t = tensors.get(&name).ok_or_else(|| {
            Error::Msg(format!("{}: buffer '{name}' is missing", source.display()))
        })?;
        model.set_buffer(&name, t.clone())?;
    }
    Ok(())
}

/// Keeps the metrics of steps up to `step` and epochs before `epoch` (what the checkpoint
/// covers), rewriting the file atomically.
pub fn truncate_metrics(path: &Path, step: u64, epoch: usize) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            match v["kind"].as_str() {
                Some("step") => v["step"].as_u64().is_some_and(|s| s <= step),
                Some("epoch") => v["epoch"].as_u64().is_some_and(|e| (e as usize) < epoch),
                _ => false,
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    gradlab::io::write_atomic(path, kept.as_bytes())?;
    Ok(())
}

/// The model saved in a checkpoint (with its batch-norm statistics) and the training
/// configuration it was trained with.
pub fn load_model(dir: &Path) -> Result<(Model, Value)> {
    let files = locate(dir)?;
    let ck = files.dir.clone();
    let state = parse_state(&files.state, &ck.join("state.json"))?;
    let config = state["config"].clone();
    let spec = model_spec(&config)
        .map_err(|e| Error::Msg(format!("{}: {e}", ck.join("state.json").display())))?;
    if spec.kind == crate::models::ModelKind::Custom {
        return Err(Error::Msg(format!(
            "{}: the checkpoint is of a model of a user's own (config.model = custom), which \
             gradlab cannot rebuild: load {} into that model with \
             gradlab_candle::checkpoint::load_tensors and restore_model",
            ck.display(),
            ck.join("model.safetensors").display()
        )));
    }
    let tensors = candle_core::safetensors::load_buffer(&files.model, &Device::Cpu)
        .map_err(|e| Error::Msg(format!("{}: {e}", ck.join("model.safetensors").display())))?;
    // The image size follows from the first fully connected layer's inputs.
    let first = tensors
        .get("fc1.weight")
        .or_else(|| tensors.get("fc.weight"))
        .ok_or_else(|| {
            Error::Msg(format!(
                "{}: the first layer's weights are missing",
                ck.display()
            ))
        })?;
    let inputs = first.dims()[1];
    let side = |pixels: usize| -> Result<usize> {
        let s = (pixels as f64).sqrt().round() as usize;
        if s * s == pixels {
            Ok(s)
        } else {
            Err(Error::Msg(format!(
                "{}: cannot tell the image size from {inputs} inputs",
                ck.display()
            )))
        }
    };
    let rows = if spec.kind == crate::models::ModelKind::Cnn {
        (side(inputs / 16)? * 2 + 4) * 2
    } else {
        side(inputs)?
    };
    let rows_cols = (rows, rows);
    let model = Model::new(&spec, rows_cols.0, rows_cols.1, 0)?;
    restore_model(&model, &tensors, &ck.join("model.safetensors"))?;
    Ok((model, config))
}

/// The model described by a checkpoint's `config`, each field checked.
fn model_spec(config: &Value) -> std::result::Result<crate::models::ModelSpec, String> {
    let found = |key: &str| {
        config
            .get(key)
            .map_or("nothing".to_string(), |v| v.to_string())
    };
    let text = |key: &str| {
        config[key].as_str().ok_or_else(|| {
            format!(
                "field 'config.{key}' is missing or not a string (found {})",
                found(key)
            )
        })
    };
    let widths = config["widths"]
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_u64().map(|v| v as usize)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| {
            format!(
                "field 'config.widths' is missing or not a list of non-negative integers (found {})",
                found("widths")
            )
        })?;
    Ok(crate::models::ModelSpec {
        kind: text("model")?
            .parse()
            .map_err(|e| format!("config.model: {e}"))?,
        widths,
        activation: match config.get("activation") {
            None => crate::models::Activation::Relu,
            Some(_) => text("activation")?
                .parse()
                .map_err(|e| format!("config.activation: {e}"))?,
        },
        batch_norm: match config.get("batch_norm") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                format!("field 'config.batch_norm' is not true or false (found {v})")
            })?,
        },
        dropout: match config.get("dropout") {
            None => 0.0,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("field 'config.dropout' is not a number (found {v})"))?,
        },
    })
}
