//! Corrupted, tampered and half-swapped checkpoints: each is refused with the file and the
//! problem named, or recovered when a complete copy survives; `hessian`'s loader checks the
//! same things as `--resume`.

use gradlab_candle::checkpoint::{load_model, CHECKPOINT_VERSION};
use gradlab_candle::models::{ModelKind, ModelSpec};
use gradlab_candle::train::{self, TrainConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradlab-ck-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(out: &Path, epochs: usize) -> TrainConfig {
    let mut spec = ModelSpec::new(ModelKind::Mlp);
    spec.widths = vec![8];
    let mut c = TrainConfig::new(spec, "adam(lr=0.01)", out);
    c.epochs = epochs;
    c.train_limit = Some(200);
    c.batch_size = 50;
    c
}

/// A one-epoch run in a fresh folder, ready to be damaged.
fn trained(name: &str) -> PathBuf {
    let out = scratch(name);
    train::train(&config(&out, 1), None, |_| {}).unwrap();
    out
}

fn resume_error(out: &Path) -> String {
    let mut c = config(out, 2);
    c.overwrite = false;
    train::train(&c, Some(out), |_| {}).unwrap_err().to_string()
}

fn load_error(out: &Path) -> String {
    match load_model(out) {
        Ok(_) => panic!("{}: the damaged checkpoint loaded", out.display()),
        Err(e) => e.to_string(),
    }
}

fn flip_a_bit(path: &Path, at_end: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() - at_end;
    bytes[i] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// Rewrites the state's record of `file` to match its current bytes (a tamperer who knows
/// the format), so that only the content checks can catch what was done.
fn rerecord(ck: &Path, file: &str) {
    let bytes = std::fs::read(ck.join(file)).unwrap();
    let path = ck.join("state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    state["files"][file]["bytes"] = bytes.len().into();
    state["files"][file]["crc32"] = format!("{:08x}", crc32(&bytes)).into();
    std::fs::write(path, serde_json::to_vec(&state).unwrap()).unwrap();
}

fn crc32(bytes: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the implementation under test.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Writes NaN into the first `count` f32 values of tensor `name` in a safetensors file.
fn poison(path: &Path, name: &str, count: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + header_len;
    for k in 0..count {
        bytes[start + 4 * k..start + 4 * k + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_checkpoints_are_refused_naming_file_and_problem() {
    // Bit flips in either tensor file: the checksum catches them.
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let out = trained(&format!("flip-{file}"));
        flip_a_bit(&out.join("checkpoint").join(file), 3);
        let e = resume_error(&out);
        assert!(
            e.contains(file) && e.contains("corrupted") && e.contains("CRC-32"),
            "{e}"
        );
        let e = load_error(&out);
        assert!(e.contains("corrupted"), "hessian/landscape loader: {e}");
        std::fs::remove_dir_all(out).unwrap();
    }
    // NaNs written with a matching checksum: the content check catches them.
    let out = trained("nan");
    let ck = out.join("checkpoint");
    poison(&ck.join("model.safetensors"), "fc1.bias", 3);
    rerecord(&ck, "model.safetensors");
    for e in [resume_error(&out), load_error(&out)] {
        assert!(
            e.contains("fc1.bias") && e.contains("non-finite") && e.contains("element 0"),
            "{e}"
        );
    }
    std::fs::remove_dir_all(out).unwrap();
    // Another version, and a state.json that is not JSON.
    let out = trained("version");
    let path = out.join("checkpoint/state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(state["version"], CHECKPOINT_VERSION);
    state["version"] = 99.into();
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    for e in [resume_error(&out), load_error(&out)] {
        assert!(e.contains("version 99 is not supported"), "{e}");
    }
    std::fs::write(&path, b"{ truncated").unwrap();
    assert!(resume_error(&out).contains("not valid JSON"));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn a_crash_between_the_swap_renames_is_recovered() {
    // The state the swap leaves after its first rename: checkpoint.old/ (the previous
    // checkpoint) and checkpoint.tmp/ (the new, complete one), no checkpoint/.
    let out = trained("swap");
    let uninterrupted = scratch("swap-reference");
    train::train(&config(&uninterrupted, 2), None, |_| {}).unwrap();
    let ck = out.join("checkpoint");
    copy_dir(&ck, &out.join("checkpoint.old"));
    std::fs::rename(&ck, out.join("checkpoint.tmp")).unwrap();
    let resumed = train::train(&config(&out, 2), Some(&out), |_| {}).unwrap();
    let reference: Value =
        serde_json::from_slice(&std::fs::read(uninterrupted.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(resumed.json["train_loss"], reference["train_loss"]);
    assert_eq!(resumed.json["test_accuracy"], reference["test_accuracy"]);
    assert!(out.join("checkpoint/state.json").is_file());
    // A damaged .tmp falls back to .old.
    let out2 = trained("swap-old");
    let ck = out2.join("checkpoint");
    copy_dir(&ck, &out2.join("checkpoint.old"));
    std::fs::rename(&ck, out2.join("checkpoint.tmp")).unwrap();
    flip_a_bit(&out2.join("checkpoint.tmp/model.safetensors"), 5);
    let (model, _) = load_model(&out2).unwrap_or_else(|e| panic!("{e}"));
    assert!(model.num_parameters() > 0);
    for d in [out, out2, uninterrupted] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn every_checkpoint_file_has_the_same_mode() {
    use std::os::unix::fs::PermissionsExt;
    let out = trained("modes");
    let mode = |name: &str| {
        std::fs::metadata(out.join("checkpoint").join(name))
            .unwrap()
            .permissions()
            .mode()
    };
    let state = mode("state.json");
    for name in ["model.safetensors", "optimizer.safetensors"] {
        assert_eq!(mode(name), state, "{name}: {:o} vs {:o}", mode(name), state);
    }
    std::fs::remove_dir_all(out).unwrap();
}
