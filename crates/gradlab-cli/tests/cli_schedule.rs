//! `gradlab schedule`, `gradlab surface --schedule` and `gradlab lr-find` against the
//! references.

use serde_json::Value;
use std::process::Command;

fn gradlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gradlab"))
}

fn golden(name: &str) -> Value {
    let path = format!(
        "{}/../gradlab/tests/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

fn scratch() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gradlab-cli-sched-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_schedule_case_matches_through_the_cli() {
    let dir = scratch();
    for (i, case) in golden("schedules.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let csv = dir.join(format!("s{i}.csv"));
        let svg = dir.join(format!("s{i}.svg"));
        let out = gradlab()
            .args(["schedule", "--schedule", case["schedule"].as_str().unwrap()])
            .args(["--optimizer", case["optimizer"].as_str().unwrap()])
            .args(["--steps", &case["steps"].to_string()])
            .arg("--csv")
            .arg(&csv)
            .arg("--plot")
            .arg(&svg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), "step,lr,momentum");
        let rows: Vec<Vec<f64>> = lines
            .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
            .collect();
        assert_eq!(rows.len() as u64, case["steps"].as_u64().unwrap());
        for (k, row) in rows.iter().enumerate() {
            assert_eq!(row[0], k as f64);
            assert!(
                close(row[1], case["lr"][k].as_f64().unwrap(), 1e-9),
                "{}: lr row {k}",
                case["schedule"]
            );
            assert!(
                close(row[2], case["momentum"][k].as_f64().unwrap(), 1e-9),
                "{}: momentum row {k}",
                case["schedule"]
            );
        }
        let plot = std::fs::read_to_string(&svg).unwrap();
        assert!(plot.contains("<polyline") && plot.contains("momentum / beta1"));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn scheduled_surface_cases_match_through_the_cli() {
    let dir = scratch();
    let mut n = 0;
    for (i, case) in golden("surfaces.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let Some(schedule) = case["schedule"].as_str() else {
            continue;
        };
        let csv = dir.join(format!("c{i}.csv"));
        let out = gradlab()
            .args(["surface", "--function", case["function"].as_str().unwrap()])
            .arg(format!("--start={},{}", case["start"][0], case["start"][1]))
            .args([
                "--optimizer",
                case["optimizer"].as_str().unwrap(),
                "--schedule",
                schedule,
            ])
            .args(["--steps", &case["steps"].to_string(), "--csv"])
            .arg(&csv)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&csv).unwrap();
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
            .collect();
        for (k, (row, want)) in rows
            .iter()
            .zip(case["trajectory"].as_array().unwrap())
            .enumerate()
        {
            for j in 0..3 {
                assert!(
                    close(row[1 + j], want[j].as_f64().unwrap(), 1e-6),
                    "{schedule}: row {k}"
                );
            }
        }
        for (k, lr) in case["lr"].as_array().unwrap().iter().enumerate() {
            assert!(
                close(rows[k][4], lr.as_f64().unwrap(), 1e-9),
                "{schedule}: lr row {k}"
            );
        }
        n += 1;
    }
    assert_eq!(n, 3);
    std::fs::remove_dir_all(dir).unwrap();
}

fn fails_with(args: &[&str], needle: &str) {
    let out = gradlab().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected '{needle}' in {stderr}"
    );
}

#[test]
fn bad_schedule_arguments_get_clear_errors() {
    fails_with(
        &["schedule", "--schedule", "cosine", "--steps", "5"],
        "'t_max'",
    );
    fails_with(
        &["schedule", "--schedule", "cosin(t_max=3)", "--steps", "5"],
        "unknown schedule 'cosin'",
    );
    fails_with(
        &["schedule", "--schedule", "plateau", "--steps", "5"],
        "driven by a metric",
    );
    fails_with(
        &[
            "schedule",
            "--schedule",
            "onecycle(max_lr=0.1, total_steps=10)",
            "--steps",
            "12",
        ],
        "total_steps is 10",
    );
    fails_with(
        &[
            "schedule",
            "--schedule",
            "cyclic(base_lr=0.01, max_lr=0.1)",
            "--optimizer",
            "adagrad",
            "--steps",
            "5",
        ],
        "cycle_momentum",
    );
    fails_with(
        &[
            "surface",
            "--function",
            "booth",
            "--start=0,0",
            "--optimizer",
            "sgd",
            "--steps",
            "3",
            "--schedule",
            "step(gamma=2)",
        ],
        "'step_size'",
    );
}

#[test]
fn lr_find_suggests_a_rate_below_the_divergence_threshold() {
    let dir = scratch();
    let (csv, svg) = (dir.join("lr.csv"), dir.join("lr.svg"));
    // bowl's largest curvature is 10: plain gradient descent diverges above 0.2.
    let out = gradlab()
        .args(["lr-find", "--function", "bowl", "--start=-8,1", "--csv"])
        .arg(&csv)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("suggested lr"))
        .unwrap();
    let lr: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(lr > 0.0 && lr < 0.2, "{stdout}");
    assert!(std::fs::read_to_string(&csv)
        .unwrap()
        .starts_with("iteration,lr,loss,smoothed_loss\n"));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("steepest"));
    std::fs::remove_dir_all(dir).unwrap();
}
