//! Data-parallel training with sharded optimizer state, ranks as threads: the same run as one
//! process, half the optimizer state per rank, checkpoints that resume on another rank count,
//! and ranks that disagree stop with a named error.

use candle_core::Device;
use gradlab::dist::{Collective, ThreadGroup};
use gradlab_candle::models::{ModelKind, ModelSpec};
use gradlab_candle::train::{self, TrainConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradlab-dp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 50 steps of 64 examples (batches whose halves are 32 + 32; the last one 31 + 32 with 3199).
fn config(optimizer: &str, out: &Path) -> TrainConfig {
    let mut spec = ModelSpec::new(ModelKind::Mlp);
    spec.widths = vec![24];
    let mut c = TrainConfig::new(spec, optimizer, out);
    c.epochs = 1;
    c.batch_size = 64;
    c.train_limit = Some(3199);
    c.seed = 5;
    c
}

/// Runs `config` on `ranks` threads; returns rank 0's summary.
fn run(config: &TrainConfig, ranks: usize, resume: Option<&Path>) -> Result<Value, String> {
    run_resuming(config, ranks, |_| resume)
}

/// [`run`] with each rank's own `--resume` folder.
fn run_resuming<'a>(
    config: &TrainConfig,
    ranks: usize,
    resume_of: impl Fn(usize) -> Option<&'a Path>,
) -> Result<Value, String> {
    let results: Vec<Result<Value, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(ranks)
            .into_iter()
            .map(|g| {
                let config = config.clone();
                let resume = resume_of(g.rank());
                s.spawn(move || {
                    let g: Arc<dyn Collective> = Arc::new(g);
                    train::train_on(&config, resume, |_| {}, g)
                        .map(|s| s.json)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    results.into_iter().next().unwrap()
}

fn params(out: &Path) -> Vec<(String, Vec<f32>)> {
    let tensors =
        candle_core::safetensors::load(out.join("checkpoint/model.safetensors"), &Device::Cpu)
            .unwrap();
    let mut named: Vec<_> = tensors
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Largest ‖a − b‖ / ‖b‖ over the tensors. Two ranks sum the halves of each batch's
/// gradient in another order than one process does, so f32 rounding differs from the first
/// step on (about 1e-8 relative after one step, 3e-7 after 50 here).
fn max_relative_difference(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f64 {
    let mut worst: f64 = 0.0;
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        let diff: f64 = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        let size: f64 = vb.iter().map(|y| (*y as f64).powi(2)).sum();
        worst = worst.max((diff / size.max(f64::MIN_POSITIVE)).sqrt());
    }
    worst
}

#[test]
fn two_ranks_train_like_one_process() {
    for (name, optimizer, clip) in [
        ("sgd", "sgd(lr=0.05, momentum=0.9)", None),
        ("adamw", "adamw(lr=0.002, weight_decay=0.01)", None),
        ("lamb", "lamb(lr=0.01, weight_decay=0.01)", None),
        ("clip", "adamw(lr=0.002)", Some(0.5)),
    ] {
        let one = scratch(&format!("{name}-1"));
        let two = scratch(&format!("{name}-2"));
        let mut c1 = config(optimizer, &one);
        c1.clip_norm = clip;
        let mut c2 = c1.clone();
        c2.out = two.clone();
        let s1 = run(&c1, 1, None).unwrap();
        let s2 = run(&c2, 2, None).unwrap();
        assert_eq!(s1["steps"], 50);
        assert_eq!(s2["steps"], 50);
        let diff = max_relative_difference(&params(&two), &params(&one));
        assert!(diff < 1e-5, "{name}: 2 ranks differ from 1 by {diff:e}");
        let (a1, a2) = (
            s1["test_accuracy"].as_f64().unwrap(),
            s2["test_accuracy"].as_f64().unwrap(),
        );
        assert!((a1 - a2).abs() < 1e-3, "{name}: accuracy {a1} vs {a2}");
        // Optimizer state is split evenly (up to the padding of one element).
        let (b1, b2) = (
            s1["optimizer_state_bytes_per_rank"].as_u64().unwrap(),
            s2["optimizer_state_bytes_per_rank"].as_u64().unwrap(),
        );
        assert!(
            b1 > 0 && (b2 as i64 * 2 - b1 as i64).abs() <= 16,
            "{name}: {b1} vs {b2}"
        );
        if clip.is_some() {
            // The clipping engaged: the global gradient norm is above 0.5 at the start.
            let first: Value = serde_json::from_str(
                std::fs::read_to_string(two.join("metrics.jsonl"))
                    .unwrap()
                    .lines()
                    .next()
                    .unwrap(),
            )
            .unwrap();
            assert!(first["grad_norm"].as_f64().unwrap() > 0.5, "{first}");
        }
    }
}

#[test]
fn swats_reports_every_tensor_from_every_rank() {
    let one = scratch("swats-1");
    let two = scratch("swats-2");
    let c1 = config("swats(lr=0.01)", &one);
    let mut c2 = c1.clone();
    c2.out = two.clone();
    let s1 = run(&c1, 1, None).unwrap();
    let s2 = run(&c2, 2, None).unwrap();
    let names = |s: &Value| -> Vec<String> {
        s["swats_switched_at"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tensor"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&s1).len(), 4, "{}", s1["swats_switched_at"]);
    assert_eq!(names(&s1), names(&s2));
}

#[test]
fn checkpoints_resume_on_another_rank_count() {
    let mut base = config("adamw(lr=0.002)", &scratch("resume-ref"));
    base.epochs = 2;
    base.train_limit = Some(640);
    base.grad_noise = Some(0.001);
    let reference = run(&base, 1, None).unwrap();
    let reference_params = params(&base.out);
    // 2 ranks for one epoch, then 1 process; 1 process, then 2 ranks.
    for (first, second, name) in [(2, 1, "2to1"), (1, 2, "1to2")] {
        let out = scratch(name);
        let mut c = base.clone();
        c.out = out.clone();
        c.epochs = 1;
        run(&c, first, None).unwrap();
        c.epochs = 2;
        // Only rank 0 reads the checkpoint (the others may run where it does not exist).
        let nowhere = Path::new("/nonexistent/checkpoint");
        let s = run_resuming(&c, second, |r| Some(if r == 0 { &out } else { nowhere })).unwrap();
        assert_eq!(s["steps"], reference["steps"]);
        let diff = max_relative_difference(&params(&out), &reference_params);
        assert!(diff < 1e-5, "{name}: differs from one process by {diff:e}");
    }
}

#[test]
fn ranks_that_disagree_stop_with_a_named_error() {
    let out = scratch("mismatch");
    let results: Vec<Result<Value, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(2)
            .into_iter()
            .map(|g| {
                let lr = if g.rank() == 0 { "0.01" } else { "0.02" };
                let c = config(&format!("adam(lr={lr})"), &out);
                s.spawn(move || {
                    train::train_on(&c, None, |_| {}, Arc::new(g))
                        .map(|s| s.json)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        let e = r.unwrap_err();
        assert!(e.contains("rank 1 differs from rank 0 in optimizer"), "{e}");
    }
    // A checkpoint rank 0 cannot read stops every rank, with rank 0's reason.
    let c = config("adam", &out);
    let missing = out.join("missing");
    let results: Vec<Result<Value, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(2)
            .into_iter()
            .map(|g| {
                let (c, missing) = (c.clone(), missing.clone());
                s.spawn(move || {
                    train::train_on(&c, Some(&missing), |_| {}, Arc::new(g))
                        .map(|s| s.json)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let errors: Vec<String> = results.into_iter().map(|r| r.unwrap_err()).collect();
    assert!(errors[0].contains("no checkpoint here"), "{}", errors[0]);
    assert!(
        errors[1].contains("rank 0 could not read the checkpoint") && errors[1].contains("missing"),
        "{}",
        errors[1]
    );
    let mut c = config("adam", &out);
    c.batch_size = 1;
    let e = run(&c, 2, None).unwrap_err();
    assert!(e.contains("--batch-size 1") && e.contains("2"), "{e}");
}
