//! The trainer around a candle user's own model (`Trainer`): the same metrics, checkpoints
//! and exact resume as the built-in models, and the trained model's top Hessian eigenvalue by
//! double backward, cross-checked against finite differences.

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{Linear, VarBuilder, VarMap};
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab_candle::data::{self, Split};
use gradlab_candle::hessian::{with_second_order, HvpMethod, NetworkHessian};
use gradlab_candle::models::{ModelKind, ModelSpec};
use gradlab_candle::train::{TrainConfig, Trainer};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A user's network: not one of gradlab's models (its own layer names, a residual tanh
/// block), written against candle only.
struct Residual {
    embed: Linear,
    block: Linear,
    head: Linear,
}

impl Residual {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Residual {
            embed: candle_nn::linear(28 * 28, 24, vb.pp("embed"))?,
            block: candle_nn::linear(24, 24, vb.pp("block"))?,
            head: candle_nn::linear(24, 10, vb.pp("head"))?,
        })
    }
}

impl ModuleT for Residual {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let h = self.embed.forward(&x.flatten_from(1)?)?.tanh()?;
        let h = (&h + self.block.forward(&h)?.tanh()?)?;
        self.head.forward(&h)
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradlab-trainer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn split() -> Split {
    let mut s = data::bundled().unwrap();
    s.test = s.test.slice(0..400);
    s
}

fn config(out: &Path, epochs: usize) -> TrainConfig {
    // The model part is the trainer's to set: a built-in spec given here is replaced.
    let mut c = TrainConfig::new(
        ModelSpec::new(ModelKind::Cnn),
        "adamw(lr=0.003, weight_decay=0.01)",
        out,
    );
    c.epochs = epochs;
    c.batch_size = 50;
    c.train_limit = Some(1500);
    c.schedule = Some("cosine(t_max=90)".into());
    c.clip_norm = Some(5.0);
    c.ema = Some(0.9);
    c.seed = 11;
    c
}

/// A fresh model whose weights are `weights` (by name), or candle's random initialisation.
fn model(weights: Option<&HashMap<String, Tensor>>) -> (Residual, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = Residual::new(vb).unwrap();
    if let Some(w) = weights {
        for (name, var) in varmap.data().lock().unwrap().iter() {
            var.set(&w[name]).unwrap();
        }
    }
    (net, varmap)
}

fn weights(varmap: &VarMap) -> HashMap<String, Tensor> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
        .collect()
}

/// Metrics without wall-clock times.
fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

fn top(h: &mut NetworkHessian) -> f64 {
    let opts = LanczosOptions {
        top: 1,
        bottom: 0,
        tol: 1e-8,
        max_iter: None,
        seed: 5,
    };
    lanczos(h, &opts).unwrap().top[0].value
}

#[test]
fn a_users_module_trains_resumes_exactly_and_has_its_hessian() {
    let (full_dir, part_dir) = (scratch("full"), scratch("part"));
    let (net, full_varmap) = model(None);
    let start = weights(&full_varmap);

    // Two epochs in one go.
    let trainer = Trainer::from_varmap(net, &full_varmap, split(), config(&full_dir, 2)).unwrap();
    assert_eq!(trainer.config().model.kind, ModelKind::Custom);
    let mut steps = 0;
    let full = trainer
        .run(None, |e| {
            if let gradlab_candle::train::Event::Step { .. } = e {
                steps += 1
            }
        })
        .unwrap();
    assert_eq!(steps, 60);
    assert_eq!(full.json["steps"], 60);
    let accuracy = full.json["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "a user's MLP reached {accuracy} only");
    assert_eq!(full.json["config"]["model"], "custom");
    let lines = metrics(&full_dir);
    let epochs: Vec<&Value> = lines.iter().filter(|v| v["kind"] == "epoch").collect();
    assert_eq!(epochs.len(), 2);
    assert!(epochs[1]["ema_test_accuracy"].as_f64().is_some());
    let tensor_names: Vec<&str> = epochs[0]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(tensor_names.contains(&"block.weight"), "{tensor_names:?}");
    assert!(full_dir
        .join("checkpoint")
        .join("model.safetensors")
        .exists());
    let trained = weights(&full_varmap);

    // One epoch, then a new model (other random weights) resumed from the checkpoint.
    let (net, varmap) = model(Some(&start));
    Trainer::from_varmap(net, &varmap, split(), config(&part_dir, 1))
        .unwrap()
        .run(None, |_| {})
        .unwrap();
    let (net, varmap) = model(None);
    let resumed = Trainer::from_varmap(net, &varmap, split(), config(&part_dir, 2))
        .unwrap()
        .run(Some(&part_dir), |_| {})
        .unwrap();
    assert_eq!(
        metrics(&full_dir),
        metrics(&part_dir),
        "1 epoch + resume differs from 2 epochs"
    );
    assert_eq!(full.json["test_accuracy"], resumed.json["test_accuracy"]);
    let again = weights(&varmap);
    for (name, t) in &trained {
        let (a, b) = (
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            again[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(a == b, "{name} differs after the resume");
    }

    // A checkpoint of another architecture is refused by name, not loaded into the wrong shape.
    let varmap_other = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap_other, DType::F32, &Device::Cpu);
    let other = Residual {
        embed: candle_nn::linear(28 * 28, 16, vb.pp("embed")).unwrap(),
        block: candle_nn::linear(16, 16, vb.pp("block")).unwrap(),
        head: candle_nn::linear(16, 10, vb.pp("head")).unwrap(),
    };
    let refused = Trainer::from_varmap(other, &varmap_other, split(), config(&part_dir, 3))
        .unwrap()
        .run(Some(&part_dir), |_| {})
        .unwrap_err()
        .to_string();
    assert!(refused.contains("block."), "{refused}");
    // The CLI's loader cannot rebuild a user's model and says so.
    let err = gradlab_candle::checkpoint::load_model(&full_dir)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("custom"), "{err}");

    // The trained model's top Hessian eigenvalue (cross-entropy on 200 training digits).
    let train = split().train.slice(0..200);
    let idx: Vec<usize> = (0..train.len()).collect();
    let (x, y) = gradlab_candle::train::batch(&train, &idx).unwrap();
    let net = trainer.module();
    let params: Vec<(String, Var)> = {
        let mut p: Vec<_> = full_varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        p.sort_by(|a, b| a.0.cmp(&b.0));
        p
    };
    let loss = || -> gradlab_candle::Result<Tensor> {
        let logits = net.forward_t(&x, false)?;
        gradlab_candle::models::cross_entropy(&logits, &y)
    };
    let (exact, fd) = with_second_order(|| {
        let mut h = NetworkHessian::of_loss(params.clone(), loss).unwrap();
        assert_eq!(h.method(), HvpMethod::DoubleBackward, "{:?}", h.note);
        let exact = top(&mut h);
        h.set_method(HvpMethod::FiniteDifference).unwrap();
        (exact, top(&mut h))
    });
    assert!(exact > 0.0, "{exact}");
    assert!(
        (exact - fd).abs() <= 5e-3 * exact,
        "double backward {exact} vs finite differences {fd}"
    );
    for d in [full_dir, part_dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
