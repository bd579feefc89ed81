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

/// Writes an IDX image file (`n` images of 28×28 from a seeded generator) and its labels.
fn write_idx_pair(dir: &Path, prefix: &str, n: usize, seed: u64) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u8
    };
    let mut images = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    images.extend((0..n * 784).map(|_| next()));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    labels.extend((0..n).map(|_| next() % 10));
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}

/// A folder of MNIST-format files: 100 training and 30 test digits.
fn data_folder(name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    write_idx_pair(&dir, "train", 100, 1);
    write_idx_pair(&dir, "t10k", 30, 2);
    dir
}

fn resume_with(out: &Path, change: impl FnOnce(&mut TrainConfig)) -> Result<(), String> {
    let mut c = config(out, 2);
    change(&mut c);
    train::train(&c, Some(out), |_| {})
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn resume_compares_canonical_specs_and_data_by_content() {
    let data = data_folder("data");
    let out = scratch("canonical");
    let mut first = config(&out, 1);
    first.optimizer = "adamw(lr=1e-3)".into();
    first.schedule = Some("cosine(t_max=8)".into());
    first.data_dir = Some(data.clone());
    train::train(&first, None, |_| {}).unwrap();
    // The same optimizer and schedule spelled otherwise, the same data under another
    // spelling of its path: the resume goes on.
    let respelled = data.join("..").join(data.file_name().unwrap()).join(".");
    resume_with(&out, |c| {
        c.optimizer = "adamw(lr=0.001, betas=(0.9, 0.999))".into();
        c.schedule = Some("cosine(t_max=8.0, eta_min=0)".into());
        c.data_dir = Some(respelled);
    })
    .unwrap();
    // A different optimizer value is still refused, naming the key.
    let e = resume_with(&out, |c| {
        c.epochs = 3;
        c.optimizer = "adamw(lr=0.002)".into();
        c.schedule = Some("cosine(t_max=8)".into());
        c.data_dir = Some(data.clone());
    })
    .unwrap_err();
    assert!(
        e.contains("optimizer") && e.contains("adamw(lr=0.002)"),
        "{e}"
    );
    // Changed digits under the same path are refused, naming the fingerprints.
    let images = data.join("train-images-idx3-ubyte");
    let mut bytes = std::fs::read(&images).unwrap();
    bytes[16 + 300] ^= 0xff;
    std::fs::write(&images, bytes).unwrap();
    let e = resume_with(&out, |c| {
        c.epochs = 3;
        c.optimizer = "adamw(lr=1e-3)".into();
        c.schedule = Some("cosine(t_max=8)".into());
        c.data_dir = Some(data.clone());
    })
    .unwrap_err();
    assert!(e.contains("other train data") && e.contains("crc32"), "{e}");
    for d in [out, data] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// A change made to `state.json`.
type Edit = dyn Fn(&mut Value);

#[test]
fn tampered_state_fields_are_refused_by_name() {
    let out = trained("fields");
    let path = out.join("checkpoint/state.json");
    let original = std::fs::read(&path).unwrap();
    let edit = |change: &Edit| {
        let mut state: Value = serde_json::from_slice(&original).unwrap();
        change(&mut state);
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    };
    // 200 examples in batches of 50: 4 steps per epoch, one epoch done.
    let cases: [(&Edit, &str); 7] = [
        (
            &|s| s["schedule"] = serde_json::json!({"step": "x"}),
            "holds a schedule state '{\"step\":\"x\"}' but the run has no schedule",
        ),
        (&|s| s["step"] = 7.into(), "step 7 and epoch 1 disagree"),
        (&|s| s["epoch"] = 0.into(), "step 4 and epoch 0 disagree"),
        (
            &|s| s["step"] = (-4).into(),
            "field 'step' is missing or not a non-negative integer (found -4)",
        ),
        (
            &|s| {
                s.as_object_mut().unwrap().remove("epoch");
            },
            "field 'epoch' is missing or not a non-negative integer (found nothing)",
        ),
        (
            &|s| s["config"]["model"] = "".into(),
            "trained with model = \"\", this run has model = \"mlp\"",
        ),
        (
            &|s| {
                s["config"].as_object_mut().unwrap().remove("widths");
            },
            "field 'config.widths' is missing",
        ),
    ];
    for (change, expected) in cases {
        edit(change);
        let e = resume_error(&out);
        assert!(
            e.contains(expected) && e.contains("state.json"),
            "{expected}: {e}"
        );
    }
    // The loader of `hessian` and `landscape` names the model field too.
    edit(&|s| {
        s["config"].as_object_mut().unwrap().remove("model");
    });
    // (The configuration is read by its serde form, whose messages say which field.)
    let e = load_error(&out);
    assert!(e.contains("config: missing field `model`"), "{e}");
    edit(&|s| s["config"]["model"] = "resnet".into());
    let e = load_error(&out);
    assert!(
        e.contains("config: unknown variant `resnet`, expected one of `logreg`, `mlp`, `cnn`"),
        "{e}"
    );
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn a_run_killed_during_its_first_save_says_nothing_can_be_resumed() {
    let out = trained("unfinished");
    let ck = out.join("checkpoint");
    let tmp = out.join("checkpoint.tmp");
    std::fs::rename(&ck, &tmp).unwrap();
    std::fs::remove_file(tmp.join("state.json")).unwrap();
    let e = resume_error(&out);
    assert!(
        e.contains("no complete checkpoint here: checkpoint.tmp without state.json")
            && e.contains("--overwrite"),
        "{e}"
    );
    // Starting afresh over the unfinished save works and leaves a complete checkpoint.
    let mut afresh = config(&out, 1);
    afresh.overwrite = true;
    train::train(&afresh, None, |_| {}).unwrap();
    assert!(out.join("checkpoint/state.json").is_file() && !tmp.exists());
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn the_checkpoint_records_the_whole_configuration_and_the_image_size() {
    let out = trained("whole-config");
    let state_path = out.join("checkpoint/state.json");
    let state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["image"], serde_json::json!([28, 28]));
    let stored = TrainConfig::from_json(&state["config"]).unwrap();
    assert_eq!(stored.to_json(), config(&out, 1).to_json());
    let (model, config) = load_model(&out).unwrap();
    assert_eq!(config["widths"], serde_json::json!([8]));
    assert_eq!(model.num_parameters(), 28 * 28 * 8 + 8 + 8 * 10 + 10);
    // A checkpoint from before the image size was recorded: read from the first layer.
    let mut older = state.clone();
    older.as_object_mut().unwrap().remove("image");
    std::fs::write(&state_path, serde_json::to_vec(&older).unwrap()).unwrap();
    assert!(load_model(&out).is_ok());
    // A recorded size that the weights do not fit is an error, not a guess.
    let mut wrong = state;
    wrong["image"] = serde_json::json!([27, 29]);
    std::fs::write(&state_path, serde_json::to_vec(&wrong).unwrap()).unwrap();
    let e = load_error(&out);
    assert!(e.contains("fc1.weight"), "{e}");
    let mut garbled = older;
    garbled["image"] = serde_json::json!("28x28");
    std::fs::write(&state_path, serde_json::to_vec(&garbled).unwrap()).unwrap();
    let e = load_error(&out);
    assert!(e.contains("state.json") && e.contains("image"), "{e}");
}
