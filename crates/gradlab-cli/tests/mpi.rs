//! `mpirun -np 2 gradlab train`: data-parallel training with sharded optimizer state over real
//! MPI processes. The test builds gradlab with the `mpi` feature (into `target/mpi`) and needs
//! Open MPI's `mpirun`; `.ci/run` installs it and sets `GRADLAB_REQUIRE_MPI`, which turns a
//! missing `mpirun` into a failure. Elsewhere, without `mpirun`, the cases are skipped with a
//! message.

use candle_core::Device;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn have_mpirun() -> bool {
    Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The gradlab binary built with `--features mpi` (once per test run).
fn mpi_gradlab() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = workspace().join("target/mpi");
        let out = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "gradlab-cli", "--features", "mpi"])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(workspace())
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building gradlab with --features mpi failed (needs libopenmpi-dev and libclang-dev):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("release/gradlab")
    })
}

fn mpirun(ranks: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", &ranks.to_string()])
        // Root in containers, and more ranks than cores on small machines.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    c
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradlab-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `gradlab train` arguments: an MLP, 50 steps of 64 examples per epoch.
fn train_args(optimizer: &str, out: &Path, epochs: usize, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--model",
        "mlp",
        "--widths",
        "32",
        "--train-limit",
        "3200",
        "--batch-size",
        "64",
        "--seed",
        "7",
        "--optimizer",
        optimizer,
        "--epochs",
        &epochs.to_string(),
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(out.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn check(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn single(args: &[String]) -> Output {
    check(
        Command::new(mpi_gradlab()).args(args).output().unwrap(),
        "gradlab train",
    )
}

fn on_ranks(ranks: usize, args: &[String]) -> Output {
    check(
        mpirun(ranks)
            .arg(mpi_gradlab())
            .args(args)
            .output()
            .unwrap(),
        "mpirun gradlab train",
    )
}

fn summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn params(out: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(out.join("checkpoint/model.safetensors"), &Device::Cpu)
        .unwrap();
    let mut named: Vec<_> = t
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Largest ‖a − b‖ / ‖b‖ over the tensors (f32 sums in another order differ by rounding).
fn relative_difference(a: &Path, b: &Path) -> f64 {
    let (a, b) = (params(a), params(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|((na, x), (nb, y))| {
            assert_eq!(na, nb);
            let d: f64 = x
                .iter()
                .zip(y)
                .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
                .sum();
            let s: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum();
            (d / s).sqrt()
        })
        .fold(0.0, f64::max)
}

macro_rules! require_mpirun {
    () => {
        if !have_mpirun() {
            assert!(
                std::env::var_os("GRADLAB_REQUIRE_MPI").is_none(),
                "GRADLAB_REQUIRE_MPI is set but mpirun is not installed"
            );
            eprintln!("SKIPPED: mpirun not found (install openmpi-bin and libopenmpi-dev)");
            return;
        }
    };
}

#[test]
fn two_ranks_equal_one_process_with_half_the_state() {
    require_mpirun!();
    for (name, optimizer, extra) in [
        ("sgd", "sgd(lr=0.05, momentum=0.9)", &[][..]),
        ("adamw", "adamw(lr=0.002, weight_decay=0.01)", &[][..]),
        ("lamb", "lamb(lr=0.01, weight_decay=0.01)", &[][..]),
        ("clip", "adamw(lr=0.002)", &["--clip-norm", "0.5"][..]),
    ] {
        let (one, two) = (scratch(&format!("{name}-1")), scratch(&format!("{name}-2")));
        single(&train_args(optimizer, &one, 1, extra));
        let out = on_ranks(2, &train_args(optimizer, &two, 1, extra));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.matches("test accuracy").count(),
            1,
            "only rank 0 reports: {stdout}"
        );
        let (s1, s2) = (summary(&one), summary(&two));
        assert_eq!(
            (s1["steps"].as_u64(), s2["steps"].as_u64()),
            (Some(50), Some(50))
        );
        assert_eq!(s2["ranks"], 2);
        let diff = relative_difference(&two, &one);
        assert!(
            diff < 1e-5,
            "{name}: 2 ranks differ from 1 process by {diff:e}"
        );
        let (b1, b2) = (
            s1["optimizer_state_bytes_per_rank"].as_u64().unwrap(),
            s2["optimizer_state_bytes_per_rank"].as_u64().unwrap(),
        );
        assert!(
            b1 > 0 && (2 * b2 as i64 - b1 as i64).abs() <= 16,
            "{name}: state {b1} vs {b2} bytes"
        );
    }
}

#[test]
fn checkpoints_resume_from_two_ranks_on_one_and_back() {
    require_mpirun!();
    let opt = "adamw(lr=0.002)";
    let reference = scratch("resume-ref");
    single(&train_args(opt, &reference, 2, &[]));
    let a = scratch("resume-2to1");
    on_ranks(2, &train_args(opt, &a, 1, &[]));
    let resume = ["--resume".to_string(), a.display().to_string()];
    single(&[train_args(opt, &a, 2, &[]), resume.to_vec()].concat());
    let b = scratch("resume-1to2");
    single(&train_args(opt, &b, 1, &[]));
    let resume = ["--resume".to_string(), b.display().to_string()];
    on_ranks(2, &[train_args(opt, &b, 2, &[]), resume.to_vec()].concat());
    for out in [&a, &b] {
        assert_eq!(summary(out)["steps"], 100);
        let diff = relative_difference(out, &reference);
        assert!(
            diff < 1e-5,
            "{}: differs from one process by {diff:e}",
            out.display()
        );
    }
}

/// The process ids of `mpirun`'s ranks, by rank (read from their environment).
fn rank_pids(launcher: u32) -> Vec<(usize, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(launcher) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in env.split(|&b| b == 0) {
            if let Some(rank) = var.strip_prefix(b"OMPI_COMM_WORLD_RANK=") {
                if let Ok(r) = String::from_utf8_lossy(rank).parse() {
                    found.push((r, pid));
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_killed_rank_ends_the_job_and_the_checkpoint_resumes() {
    require_mpirun!();
    let out = scratch("killed");
    let mut job = mpirun(2)
        .arg(mpi_gradlab())
        .args(train_args("adamw(lr=0.002)", &out, 200, &[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first checkpoint.
    let started = Instant::now();
    while !out.join("checkpoint/state.json").is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = rank_pids(job.id());
    let &(_, victim) = pids
        .iter()
        .find(|(r, _)| *r == 1)
        .expect("rank 1 is running");
    let killed = Instant::now();
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let result = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the job still runs 30 s after rank 1 died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed.elapsed();
    let output = job.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!result.success());
    assert!(
        stderr.contains("rank 1") && stderr.contains("signal 9"),
        "{stderr}"
    );
    eprintln!("the job ended {took:?} after rank 1 was killed");
    // The last complete checkpoint is intact, and the run continues from it.
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap())
            .unwrap();
    let epoch = state["epoch"].as_u64().unwrap() as usize;
    let resume = ["--resume".to_string(), out.display().to_string()];
    on_ranks(
        2,
        &[
            train_args("adamw(lr=0.002)", &out, epoch + 1, &[]),
            resume.to_vec(),
        ]
        .concat(),
    );
    assert_eq!(
        summary(&out)["steps"].as_u64(),
        Some(50 * (epoch as u64 + 1))
    );
}

#[test]
fn ranks_with_different_commands_stop_with_a_named_error() {
    require_mpirun!();
    let out = scratch("mismatch");
    let started = Instant::now();
    let result = mpirun(1)
        .arg(mpi_gradlab())
        .args(train_args("adam(lr=0.01)", &out, 1, &[]))
        .args([":", "-np", "1"])
        .arg(mpi_gradlab())
        .args(train_args("adam(lr=0.02)", &out, 1, &[]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        stderr.contains("rank 1 differs from rank 0 in optimizer"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_build_without_mpi_refuses_to_run_under_mpirun() {
    require_mpirun!();
    let out = scratch("no-mpi");
    let result = mpirun(2)
        .arg(env!("CARGO_BIN_EXE_gradlab"))
        .args(train_args("adam", &out, 1, &[]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(stderr.contains("built without MPI"), "{stderr}");
    assert!(!out.join("summary.json").exists());
}
