//! What a run trains on and in which order: validation sets, class subsets, fine-tuning from
//! a checkpoint, curricula, fixed orders and raw inputs.

use gradlab_candle::checkpoint::load_model;
use gradlab_candle::models::{ModelKind, ModelSpec};
use gradlab_candle::train::{self, Curriculum, DataOrder, InputScale, TrainConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradlab-plans-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small(out: &Path, epochs: usize) -> TrainConfig {
    let mut spec = ModelSpec::new(ModelKind::Mlp);
    spec.widths = vec![32];
    let mut c = TrainConfig::new(spec, "sgd(lr=0.05, momentum=0.9)", out);
    c.epochs = epochs;
    c.batch_size = 50;
    c.train_limit = Some(400);
    c.seed = 5;
    c
}

fn lines(dir: &Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .map(|mut v| {
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

fn weights(dir: &Path) -> Vec<f32> {
    let (model, _) = load_model(dir).unwrap();
    let mut all = Vec::new();
    for (_, v) in model.params() {
        all.extend(
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
    }
    all
}

#[test]
fn a_validation_set_is_held_out_and_evaluated_each_epoch() {
    let out = scratch("validation");
    let mut c = small(&out, 2);
    c.validation = Some(300);
    let s = train::train(&c, None, |_| {}).unwrap();
    let epochs = lines(&out, "epoch");
    assert_eq!(epochs.len(), 2);
    for e in &epochs {
        let acc = e["validation_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc) && acc > 0.3, "{e}");
        assert!(e["validation_loss"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        s.json["validation_accuracy"],
        epochs[1]["validation_accuracy"]
    );
    // 400 training examples in batches of 50: the held-out examples are not trained on.
    assert_eq!(s.json["steps"], 16);
    // Without one, the fields are null.
    let plain = scratch("no-validation");
    let s = train::train(&small(&plain, 1), None, |_| {}).unwrap();
    assert!(s.json["validation_accuracy"].is_null());
}

#[test]
fn fine_tuning_starts_from_the_checkpoints_weights_on_the_chosen_classes() {
    let (pre, fine, scratch_run) = (scratch("pre"), scratch("fine"), scratch("from-scratch"));
    let mut c = small(&pre, 1);
    c.classes = Some(vec![0, 1, 2, 3, 4]);
    train::train(&c, None, |_| {}).unwrap();
    let pretrained = weights(&pre);

    // lr 0: the fine-tuned run keeps the pre-trained weights exactly.
    let mut c = small(&fine, 1);
    c.optimizer = "sgd(lr=0)".into();
    c.classes = Some(vec![5, 6, 7, 8, 9]);
    c.init = Some(pre.clone());
    let s = train::train(&c, None, |_| {}).unwrap();
    assert_eq!(weights(&fine), pretrained);
    assert!(s.json["data"]
        .as_str()
        .unwrap()
        .contains("classes 5,6,7,8,9"));
    // Its test set holds digits 5-9 only: a model trained on 0-4 gets (almost) none right.
    assert!(
        s.json["test_accuracy"].as_f64().unwrap() < 0.05,
        "{}",
        s.json
    );

    let mut c = small(&scratch_run, 1);
    c.optimizer = "sgd(lr=0)".into();
    c.classes = Some(vec![5, 6, 7, 8, 9]);
    train::train(&c, None, |_| {}).unwrap();
    assert_ne!(weights(&scratch_run), pretrained);

    // A new output layer: the hidden layer comes from the checkpoint, the output layer is
    // the fresh one of the run's seed.
    let (head, fresh) = (scratch("new-head"), scratch("fresh-head"));
    let mut c = small(&head, 1);
    c.optimizer = "sgd(lr=0)".into();
    c.init = Some(pre.clone());
    c.init_exclude = vec!["fc2.".into()];
    train::train(&c, None, |_| {}).unwrap();
    let mut c = small(&fresh, 1);
    c.optimizer = "sgd(lr=0)".into();
    train::train(&c, None, |_| {}).unwrap();
    let hidden = 784 * 32 + 32;
    let (w_head, w_fresh) = (weights(&head), weights(&fresh));
    assert_eq!(w_head[..hidden], pretrained[..hidden]);
    assert_eq!(w_head[hidden..], w_fresh[hidden..]);
    c.init = Some(pre.clone());
    c.init_exclude = vec!["head.".into()];
    let e = train::train(&c, None, |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("--init-exclude head.: no parameter's name starts with it"),
        "{e}"
    );

    // A folder without a checkpoint is named.
    let mut c = small(&scratch("bad-init"), 1);
    c.init = Some(scratch("empty"));
    let e = train::train(&c, None, |_| {}).unwrap_err().to_string();
    assert!(e.contains("no checkpoint here"), "{e}");
}

#[test]
fn a_curriculum_trains_easy_examples_first_and_resumes_exactly() {
    let dir = scratch("curriculum");
    // Difficulty = the label: digits 0 and 1 are the "easiest".
    let labels = gradlab_candle::data::bundled().unwrap().train.labels;
    let scores: String = labels.iter().map(|l| format!("{l}\n")).collect();
    let path = dir.join("difficulty.txt");
    std::fs::write(&path, scores).unwrap();
    let curriculum = Curriculum {
        difficulty: path.clone(),
        start: 0.2,
        ramp: 1.0,
    };
    let (a, b) = (dir.join("a"), dir.join("b"));
    let mut c = small(&a, 2);
    c.curriculum = Some(curriculum.clone());
    train::train(&c, None, |_| {}).unwrap();
    let mut half = small(&b, 1);
    half.curriculum = Some(curriculum);
    train::train(&half, None, |_| {}).unwrap();
    let mut rest = half.clone();
    rest.epochs = 2;
    train::train(&rest, Some(&b), |_| {}).unwrap();
    assert_eq!(
        lines(&a, "step"),
        lines(&b, "step"),
        "1 epoch + resume differs"
    );
    assert_eq!(weights(&a), weights(&b));

    // The first steps see the easiest fifth only: the loss starts lower than a shuffled
    // run's, whose batches hold all ten digits.
    let shuffled = dir.join("shuffled");
    train::train(&small(&shuffled, 1), None, |_| {}).unwrap();
    let early = |d: &Path| -> f64 {
        lines(d, "step")[1..4]
            .iter()
            .map(|s| s["loss"].as_f64().unwrap())
            .sum()
    };
    assert!(
        early(&a) < early(&shuffled),
        "{} vs {}",
        early(&a),
        early(&shuffled)
    );

    // A score file of the wrong length is refused with both counts.
    std::fs::write(&path, "1\n2\n").unwrap();
    let mut c = small(&dir.join("c"), 1);
    c.curriculum = Some(Curriculum::new(&path));
    let e = train::train(&c, None, |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("2 difficulty scores for 8000 training examples"),
        "{e}"
    );
    // A curriculum draws its own batches: a fixed order is refused with it.
    c.data_order = DataOrder::Fixed;
    let e = train::train(&c, None, |_| {}).unwrap_err().to_string();
    assert!(e.contains("--data-order fixed"), "{e}");
}

#[test]
fn a_fixed_order_repeats_each_epoch_and_raw_inputs_are_0_to_255() {
    let (a, b) = (scratch("fixed"), scratch("shuffled"));
    let mut c = small(&a, 2);
    c.data_order = DataOrder::Fixed;
    c.optimizer = "sgd(lr=0)".into();
    train::train(&c, None, |_| {}).unwrap();
    let steps = lines(&a, "step");
    // lr 0: the same batches in the same order give the same losses in both epochs.
    for i in 0..8 {
        assert_eq!(steps[i]["loss"], steps[i + 8]["loss"]);
    }
    let mut c = small(&b, 2);
    c.optimizer = "sgd(lr=0)".into();
    train::train(&c, None, |_| {}).unwrap();
    let shuffled = lines(&b, "step");
    assert!((0..8).any(|i| shuffled[i]["loss"] != shuffled[i + 8]["loss"]));

    let mut c = small(&scratch("raw"), 1);
    c.inputs = InputScale::Raw;
    let data = train::load_data(&c).unwrap();
    let max = data
        .split
        .train
        .images
        .iter()
        .copied()
        .fold(0.0f32, f32::max);
    let min = data
        .split
        .train
        .images
        .iter()
        .copied()
        .fold(0.0f32, f32::min);
    assert_eq!((min, max), (0.0, 255.0));
    assert!(data.split.train.images.iter().all(|p| p.fract() == 0.0));
}
