//! Training checkpoints' files: written to a fresh folder and swapped into place, so a crash
//! never leaves a half-written checkpoint; read with every piece checked. What a training run
//! puts in them is `train/state.rs`'s.
//!
//! `state.json` records each tensor file's length and CRC-32, verified on every load (resume,
//! `hessian`, `landscape`), and every parameter and optimizer-state value must be finite.
//! The swap renames `checkpoint/` to `checkpoint.old/` and `checkpoint.tmp/` to
//! `checkpoint/`; a crash between the two renames leaves no `checkpoint/`, and a load then
//! takes the complete, verified `checkpoint.tmp/` (the newer) or else `checkpoint.old/`.

use crate::models::{Model, Network};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use gradlab::dist::Collective;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

mod files;
mod model;

pub use files::checkpoint_dir;
pub(crate) use files::Files;
use files::{crash_point, locate, parse_state, read_files};
pub use model::{init_weights, load_model, load_tensors, restore_model};

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

/// Writes `out/checkpoint/` atomically: the model's and the optimizer's tensor files, and
/// `state.json` (`state`, with each file's length and CRC-32 and the layout version added).
pub(crate) fn write(
    out: &Path,
    model_bytes: &[u8],
    optimizer_bytes: &[u8],
    mut state: Value,
) -> Result<()> {
    let tmp = out.join("checkpoint.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    // Written like every other file (same mode, atomic), checksummed from the same bytes.
    gradlab::io::write_atomic(&tmp.join("model.safetensors"), model_bytes)?;
    gradlab::io::write_atomic(&tmp.join("optimizer.safetensors"), optimizer_bytes)?;
    let record = |bytes: &[u8]| json!({"bytes": bytes.len(), "crc32": crc32(bytes)});
    state["files"] = json!({
        "model.safetensors": record(model_bytes),
        "optimizer.safetensors": record(optimizer_bytes),
    });
    state["version"] = json!(CHECKPOINT_VERSION);
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
        std::fs::rename(&dest, &old).map_err(|e| Error::io(&dest, e))?;
    }
    crash_point("checkpoint-swap");
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Reads and verifies `dir/checkpoint` (or `dir` itself if it holds the files): its files and
/// its parsed `state.json`. With several ranks, rank 0 reads the files and sends them to the
/// others (collective), so only rank 0's machine needs them.
pub(crate) fn read(dir: &Path, collective: &dyn Collective) -> Result<(Files, Value)> {
    let files = read_files(dir, collective)?;
    let state = parse_state(&files.state, &files.dir.join("state.json"))?;
    Ok((files, state))
}
