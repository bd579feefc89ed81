//! `gradlab train`, `--resume`, `gradlab hessian` and `gradlab lr-find --model` end to end,
//! on a small slice of the bundled digits.

use serde_json::Value;
use std::process::Command;

fn gradlab(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn train_resume_and_inspect_a_network() {
    let dir = std::env::temp_dir().join(format!("gradlab-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let common = [
        "train",
        "--model",
        "mlp",
        "--widths",
        "16",
        "--train-limit",
        "500",
        "--batch-size",
        "50",
        "--optimizer",
        "adamw(lr=0.01)",
        "--schedule",
        "cosine(t_max=20)",
        "--out",
        out,
    ];
    let (ok, stdout, err) = gradlab(&[&common[..], &["--epochs", "1"]].concat());
    assert!(ok, "{err}");
    assert!(stdout.contains("test accuracy"), "{stdout}");
    let (ok, _, err) = gradlab(&[&common[..], &["--epochs", "2", "--resume", out]].concat());
    assert!(ok, "{err}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 20);
    assert!(summary["test_accuracy"].as_f64().unwrap() > 0.5);
    let (ok, stdout, err) = gradlab(&[
        "hessian",
        "--checkpoint",
        out,
        "--batches",
        "1",
        "--batch-size",
        "64",
        "--json",
        "--per-layer",
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["hvp_method"], "double-backward");
    assert!(report["top_eigenvalues"][0].as_f64().unwrap() > 0.0);
    assert_eq!(report["per_layer"].as_array().unwrap().len(), 4);
    for key in ["gradient_norm", "minimum_ratio", "kind", "trace"] {
        assert!(report.get(key).is_some(), "{key}");
    }
    assert!(report["hvp_asymmetry"].as_f64().unwrap() < 1e-10);
    let tol = report["lanczos_tolerance"].as_f64().unwrap();
    for key in ["top_relative_residuals", "bottom_relative_residuals"] {
        let residuals = report[key].as_array().unwrap();
        assert_eq!(residuals.len(), 3, "{key}");
        if report["lanczos_converged"] == true {
            assert!(
                residuals.iter().all(|r| r.as_f64().unwrap() <= tol),
                "{key}"
            );
        }
    }
    let land = dir.join("land");
    let (ok, stdout, err) = gradlab(&[
        "landscape",
        "--checkpoint",
        out,
        "--to",
        out,
        "--points",
        "5",
        "--examples",
        "100",
        "--out",
        land.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("loss at the checkpoint"), "{stdout}");
    for f in [
        "slice_1d.csv",
        "slice_1d.svg",
        "slice_2d.csv",
        "slice_2d.svg",
        "interpolation.csv",
        "interpolation.svg",
    ] {
        assert!(land.join(f).is_file(), "{f}");
    }
    let grid = std::fs::read_to_string(land.join("slice_2d.csv")).unwrap();
    assert_eq!(grid.lines().count(), 1 + 25);
    // Interpolating a checkpoint to itself is flat.
    let interp = std::fs::read_to_string(land.join("interpolation.csv")).unwrap();
    let losses: Vec<f64> = interp
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        losses.iter().all(|l| (l - losses[0]).abs() < 1e-5),
        "{losses:?}"
    );
    // Errors name the problem.
    let (ok, _, err) = gradlab(&["hessian", "--checkpoint", "/nonexistent/run"]);
    assert!(
        !ok && err.contains("/nonexistent/run") && err.contains("no checkpoint"),
        "{err}"
    );
    let (ok, _, err) = gradlab(
        &[
            &common[..],
            &["--epochs", "3", "--resume", out, "--seed", "9"],
        ]
        .concat(),
    );
    assert!(!ok && err.contains("seed"), "{err}");
    let (ok, _, err) = gradlab(&["train", "--model", "rnn", "--out", out]);
    assert!(!ok && err.contains("unknown model 'rnn'"), "{err}");
    let (ok, _, err) = gradlab(&[
        "train",
        "--data",
        "/nonexistent/mnist",
        "--out",
        out,
        "--overwrite",
    ]);
    assert!(!ok && err.contains("/nonexistent/mnist"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn lr_find_on_a_network() {
    let (ok, stdout, err) = gradlab(&[
        "lr-find",
        "--model",
        "logreg",
        "--optimizer",
        "sgd(lr=0.1)",
        "--num-iter",
        "60",
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("suggested lr"), "{stdout}");
}

#[test]
fn bench_against_times_two_optimizers_in_one_run() {
    let args = [
        "bench",
        "--optimizer",
        "adamw(state_dtype=bf16)",
        "--against",
        "adamw",
        "--params",
        "50000",
        "--steps",
        "5",
    ];
    let (ok, stdout, stderr) = gradlab(&[&args[..], &["--json"]].concat());
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["optimizer"]
        .as_str()
        .unwrap()
        .contains("state_dtype=bf16"));
    assert_eq!(v["bytes_per_param"], 20.0);
    assert_eq!(v["against"]["bytes_per_param"], 28.0);
    let (ours, theirs) = (&v["step_ms"], &v["against"]["step_ms"]);
    assert_eq!(ours.as_array().unwrap().len(), 5);
    assert_eq!(theirs.as_array().unwrap().len(), 5);
    // The speedup is the median of the rounds' ratios, within their range.
    let ratios: Vec<f64> = (0..5)
        .map(|k| theirs[k].as_f64().unwrap() / ours[k].as_f64().unwrap())
        .collect();
    let s = &v["speedup"];
    assert_eq!(s["rounds"], 5);
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(s["median"].as_f64().unwrap(), sorted[2]);
    assert_eq!(s["min"].as_f64().unwrap(), sorted[0]);
    assert_eq!(s["max"].as_f64().unwrap(), sorted[4]);
    let (ok, stdout, stderr) = gradlab(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("as fast as adamw("), "{stdout}");
    // A bad spec to compare with is refused by name.
    let (ok, _, stderr) = gradlab(&["bench", "--against", "adamw(lr=-1)", "--params", "10"]);
    assert!(!ok && stderr.contains("lr"), "{stderr}");
}

#[test]
fn bench_train_splits_a_step_into_its_phases() {
    let (ok, stdout, stderr) = gradlab(&[
        "--threads",
        "1",
        "bench",
        "--train",
        "--model",
        "cnn",
        "--train-limit",
        "256",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["model"], "cnn");
    assert_eq!(v["threads"], 1);
    assert_eq!(v["steps"], 4);
    let mean = &v["mean_ms"];
    let parts: f64 = ["data", "forward", "backward", "optimizer"]
        .iter()
        .map(|k| mean[k].as_f64().unwrap())
        .sum();
    assert!((parts - mean["total"].as_f64().unwrap()).abs() < 1e-9);
    assert!(mean["backward"].as_f64().unwrap() > 0.0);
    assert!(v["eval_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn thread_counts_out_of_range_are_refused() {
    for bad in ["0", "5000"] {
        let (ok, _, stderr) = gradlab(&[
            "--threads",
            bad,
            "schedule",
            "--schedule",
            "constant",
            "--steps",
            "3",
        ]);
        assert!(!ok);
        assert!(stderr.contains(&format!("--threads {bad}")), "{stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .env("GRADLAB_THREADS", "many")
        .args(["bench", "--params", "10", "--steps", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GRADLAB_THREADS"));
}

#[test]
fn output_paths_are_checked_before_the_work() {
    let (ok, _, stderr) = gradlab(&[
        "hessian",
        "--checkpoint",
        "/nonexistent/run",
        "--density",
        "/nonexistent/folder/density.svg",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--density") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn a_fresh_run_does_not_replace_another_without_overwrite() {
    let dir = std::env::temp_dir().join(format!("gradlab-cli-overwrite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            "logreg",
            "--train-limit",
            "100",
            "--epochs",
            "1",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        gradlab(&args)
    };
    assert!(run(&[]).0);
    let before = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let (ok, _, stderr) = run(&["--seed", "5"]);
    assert!(!ok);
    assert!(
        stderr.contains("is not empty") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap(),
        before
    );
    let (ok, _, stderr) = run(&["--seed", "5", "--overwrite"]);
    assert!(ok, "{stderr}");
    let after = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_ne!(after, before);
    assert!(after
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["config"]["seed"], 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_process_killed_between_the_checkpoint_renames_resumes() {
    let dir = std::env::temp_dir().join(format!("gradlab-cli-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let args = |epochs: &'static str, resume: bool| {
        let mut a = vec![
            "train",
            "--model",
            "logreg",
            "--train-limit",
            "100",
            "--epochs",
            epochs,
            "--out",
            out,
        ];
        if resume {
            a.extend(["--resume", out]);
        }
        a
    };
    assert!(gradlab(&args("1", false)).0);
    let crashed = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .env("GRADLAB_CRASH_AT", "checkpoint-swap")
        .args(args("2", true))
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    assert!(!dir.join("checkpoint").exists());
    assert!(dir.join("checkpoint.old").exists() && dir.join("checkpoint.tmp").exists());
    let (ok, _, stderr) = gradlab(&args("3", true));
    assert!(ok, "{stderr}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 6); // 3 epochs of 2 batches (100 examples, batch 64)
    assert!(!dir.join("checkpoint.old").exists() && !dir.join("checkpoint.tmp").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sizes_that_cannot_fit_are_refused_before_allocating() {
    let dir = std::env::temp_dir().join(format!("gradlab-cli-huge-{}", std::process::id()));
    let out = dir.to_str().unwrap();
    for (args, says) in [
        (
            vec!["train", "--widths", "100000000,100000000", "--out", out],
            "of memory is available",
        ),
        (
            vec!["bench", "--params", "100000000000"],
            "of memory is available",
        ),
        (vec!["train", "--widths", "0", "--out", out], "width 0"),
    ] {
        let (ok, _, stderr) = gradlab(&args);
        assert!(!ok && stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("memory allocation of"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn data_plan_flags_are_checked_by_name() {
    let dir = std::env::temp_dir().join(format!("gradlab-cli-plans-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    for (flags, expected) in [
        (vec!["--inputs", "pixels"], "--inputs 'pixels' is not known"),
        (
            vec!["--classes", "3,12"],
            "--classes 12: a digit class is 0–9",
        ),
        (
            vec!["--data-order", "sorted"],
            "--data-order 'sorted' is not known",
        ),
        (
            vec!["--validation", "8000"],
            "--validation 8000 is out of range",
        ),
        (
            vec!["--curriculum", "missing.txt"],
            "missing.txt: cannot read the curriculum's difficulty scores",
        ),
        (
            vec!["--curriculum", "x.txt", "--curriculum-ramp", "0"],
            "--curriculum-ramp 0 is out of range",
        ),
    ] {
        let mut args = vec!["train", "--model", "logreg", "--epochs", "1", "--out", out];
        args.extend(flags.iter().copied());
        let (ok, _, err) = gradlab(&args);
        assert!(!ok && err.contains(expected), "{flags:?}: {err}");
    }
    // --validation trains on the rest and reports the held-out accuracy.
    let (ok, _, err) = gradlab(&[
        "train",
        "--model",
        "logreg",
        "--epochs",
        "1",
        "--train-limit",
        "300",
        "--validation",
        "200",
        "--out",
        out,
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("validation accuracy"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
