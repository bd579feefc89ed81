//! Errors come as kinds a program can act on — the setting, the file, the tensor — not only
//! as words: each kind is reached here the way a user reaches it.

use candle_core::{DType, Device, Tensor, Var};
use gradlab_candle::checkpoint::load_tensors;
use gradlab_candle::models::{Model, ModelKind, ModelSpec};
use gradlab_candle::train::{self, TrainConfig};
use gradlab_candle::{Error, GradlabOptimizer, OptimizerConfig};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradlab-kinds-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(out: &Path) -> TrainConfig {
    let mut spec = ModelSpec::new(ModelKind::Mlp);
    spec.widths = vec![8];
    let mut c = TrainConfig::new(spec, "adam(lr=0.01)", out);
    c.epochs = 1;
    c.train_limit = Some(100);
    c.batch_size = 50;
    c
}

#[test]
fn a_setting_out_of_range_names_the_setting() {
    let out = scratch("setting");
    let mut c = config(&out);
    c.ema = Some(1.5);
    match train::train(&c, None, |_| {}) {
        Err(Error::Setting { setting, message }) => {
            assert_eq!(setting, "--ema");
            assert!(message.contains("1.5"), "{message}");
        }
        other => panic!("{:?}", other.err()),
    }
    let mut c = config(&out);
    c.swa_start = Some(0);
    match train::train(&c, None, |_| {}) {
        Err(Error::Setting { setting, .. }) => assert_eq!(setting, "--swa-start"),
        other => panic!("{:?}", other.err()),
    }
    assert!(!out.exists(), "nothing is written for a refused setting");
}

#[test]
fn a_file_that_is_not_what_it_should_be_names_the_file() {
    let dir = scratch("file");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    match load_tensors(&path) {
        Err(Error::File { path: p, .. }) => assert_eq!(p, path),
        other => panic!("{:?}", other.err()),
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_folder_that_cannot_be_read_is_an_io_error_with_its_path() {
    let missing = scratch("io").join("absent");
    match gradlab_candle::run_dir::RunLock::acquire(&missing) {
        Err(Error::Io { path, error }) => {
            assert!(path.starts_with(&missing), "{}", path.display());
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{:?}", other.err().map(|e| e.to_string())),
    }
}

#[test]
fn what_a_model_or_optimizer_does_not_do_is_unsupported() {
    let spec = ModelSpec::new(ModelKind::Custom);
    match Model::new(&spec, 28, 28, 0) {
        Err(Error::Unsupported { message }) => assert!(message.contains("Trainer"), "{message}"),
        other => panic!("{:?}", other.err()),
    }
    let w = Var::from_tensor(&Tensor::ones(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let named = vec![("w".to_string(), w)];
    let mut opt =
        GradlabOptimizer::with_names(named, &OptimizerConfig::new("sgd(lr=0.1)")).unwrap();
    match opt.schedule_step(1.0) {
        Err(Error::Unsupported { message }) => assert!(message.contains("schedule"), "{message}"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn the_core_kinds_come_through_the_bridge() {
    let w = Var::from_tensor(&Tensor::ones(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let named = vec![("w".to_string(), w.clone())];
    let mut opt = GradlabOptimizer::with_names(named, &OptimizerConfig::new("lbfgs")).unwrap();
    let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
    match opt.backward_step(&loss) {
        Err(Error::Gradlab(gradlab::Error::Unsupported { what, reason })) => {
            assert_eq!(what, "lbfgs");
            assert!(reason.contains("step_with_closure"), "{reason}");
        }
        other => panic!("{:?}", other.err()),
    }
}
