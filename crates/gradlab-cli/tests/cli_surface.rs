//! `gradlab surface` replays the reference trajectories and rejects bad arguments clearly.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn gradlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gradlab"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradlab-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gradlab/tests/golden/surfaces.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + b.abs())
}

/// Checks the CSV rows of one case against the reference.
fn check_csv(csv: &str, case: &Value, label: &str) {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header, ["step", "x", "y", "loss", "lr"], "{label}");
    let traj = case["trajectory"].as_array().unwrap();
    let lrs = case["lr"].as_array().unwrap();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|c| c.parse::<f64>().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), traj.len(), "{label}");
    for (k, (row, want)) in rows.iter().zip(traj).enumerate() {
        assert_eq!(row[0], k as f64);
        for j in 0..3 {
            let w = want[j].as_f64().unwrap();
            assert!(
                close(row[1 + j], w),
                "{label}: row {k} column {j}: {} vs {w}",
                row[1 + j]
            );
        }
        if k < lrs.len() {
            assert!(
                close(row[4], lrs[k].as_f64().unwrap()),
                "{label}: lr of row {k}"
            );
        }
    }
}

#[test]
fn every_unscheduled_case_matches_through_the_cli() {
    let dir = scratch("golden");
    let mut n = 0;
    for (i, case) in golden()["cases"].as_array().unwrap().iter().enumerate() {
        if !case["schedule"].is_null() {
            continue;
        }
        let csv = dir.join(format!("case{i}.csv"));
        let start = format!("--start={},{}", case["start"][0], case["start"][1]);
        let out = gradlab()
            .args([
                "surface",
                "--function",
                case["function"].as_str().unwrap(),
                &start,
            ])
            .args(["--optimizer", case["optimizer"].as_str().unwrap()])
            .args(["--steps", &case["steps"].to_string(), "--csv"])
            .arg(&csv)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        check_csv(
            &std::fs::read_to_string(&csv).unwrap(),
            case,
            case["optimizer"].as_str().unwrap(),
        );
        n += 1;
    }
    assert_eq!(n, 24);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn several_optimizers_share_one_csv_and_one_plot() {
    let dir = scratch("several");
    let (csv, svg) = (dir.join("paths.csv"), dir.join("paths.svg"));
    let out = gradlab()
        .args([
            "surface",
            "--function",
            "himmelblau",
            "--start=0,0",
            "--steps",
            "50",
        ])
        .args([
            "--optimizer",
            "sgd(lr=0.01, momentum=0.9)",
            "--optimizer",
            "adam(lr=0.1)",
        ])
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
    assert_eq!(lines.next().unwrap(), "optimizer,step,x,y,loss,lr");
    assert_eq!(text.lines().count(), 1 + 2 * 51);
    assert!(text.contains("\"sgd(lr=0.01, momentum=0.9)\",50,"));
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("<polygon") && plot.contains("<polyline"));
    assert!(plot.contains("adam(lr=0.1)") && plot.contains("minimum") && plot.contains("start"));
    std::fs::remove_dir_all(dir).unwrap();
}

fn fails_with(args: &[&str], needle: &str) {
    let out = gradlab().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected '{needle}' in: {stderr}"
    );
}

#[test]
fn bad_arguments_get_clear_errors() {
    let base = ["surface", "--steps", "5", "--start=0,0"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    fails_with(
        &with(&["--function", "rosenbrok", "--optimizer", "sgd"]),
        "unknown function 'rosenbrok'",
    );
    fails_with(
        &with(&["--function", "beale", "--optimizer", "adamm(lr=1)"]),
        "unknown optimizer 'adamm'",
    );
    fails_with(
        &with(&["--function", "beale", "--optimizer", "adam(lr=1, foo=2)"]),
        "unknown key 'foo'",
    );
    fails_with(
        &with(&["--function", "beale", "--optimizer", "adam(lr=1"]),
        "column",
    );
    fails_with(
        &with(&["--function", "beale", "--optimizer", "sgd(lr=-1)"]),
        "'lr'",
    );
    fails_with(&with(&["--function", "beale"]), "--optimizer");
    fails_with(
        &[
            "surface",
            "--function",
            "beale",
            "--optimizer",
            "sgd",
            "--steps",
            "5",
            "--start=1",
        ],
        "--start '1'",
    );
    fails_with(
        &[
            "surface",
            "--function",
            "beale",
            "--optimizer",
            "sgd",
            "--steps",
            "5",
            "--start=a,1",
        ],
        "'a' is not a finite number",
    );
    fails_with(
        &[
            "surface",
            "--function",
            "beale",
            "--optimizer",
            "sgd",
            "--steps",
            "-3",
            "--start=1,1",
        ],
        "--steps",
    );
    fails_with(
        &with(&[
            "--function",
            "beale",
            "--optimizer",
            "sgd",
            "--csv",
            "/nonexistent/dir/x.csv",
        ]),
        "/nonexistent/dir/x.csv",
    );
}

#[test]
fn a_diverging_optimizer_is_reported_not_hidden() {
    let out = gradlab()
        .args([
            "surface",
            "--function",
            "rosenbrock",
            "--start=-1.5,2",
            "--steps",
            "100",
        ])
        .args(["--optimizer", "sgd(lr=0.1)"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped after") && stderr.contains("non-finite gradient"),
        "{stderr}"
    );
}
