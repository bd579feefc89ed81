//! `gradlab lab` beyond the quick report: the compare and batch-size studies, Ctrl-C writing
//! the finished studies' report, and finished runs reused by a later lab.

use std::process::Command;

#[test]
fn compare_and_batch_study_write_their_reports() {
    let out = std::env::temp_dir().join(format!("gradlab-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let ok = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args([
            "compare",
            "--optimizer",
            "sgd(lr=0.05, momentum=0.9)",
            "--optimizer",
            "swats(lr=0.001)",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--train-limit",
            "300",
            "--schedule",
            "cosine(t_max=5)",
            "--out",
        ])
        .arg(out.join("cmp"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let html = std::fs::read_to_string(out.join("cmp/index.html")).unwrap();
    assert!(
        html.contains("swats(lr=0.001)")
            && html.contains("cosine(t_max=5)")
            && html.contains("<figure>")
    );
    // Two seeds: the curves carry a shaded spread.
    assert!(
        html.contains("fill-opacity") || html.contains("opacity=\"0.2"),
        "no spread band drawn"
    );
    let ok = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args([
            "batch-study",
            "--batch-sizes",
            "32,300",
            "--epochs",
            "1",
            "--train-limit",
            "300",
            "--out",
        ])
        .arg(out.join("batch"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let html = std::fs::read_to_string(out.join("batch/index.html")).unwrap();
    assert!(html.contains("ε-sharpness") && html.contains("batch_interpolation.csv"));
    let bad = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args(["compare", "--optimizer", "adamm", "--out"])
        .arg(out.join("bad"))
        .output()
        .unwrap();
    assert!(
        !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("unknown optimizer 'adamm'")
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// Ctrl-C while the second study runs: the run in progress finishes, the report of the
/// first study is written marked incomplete, and the exit status is 130.
#[cfg(unix)]
#[test]
fn ctrl_c_writes_the_report_of_the_finished_studies_and_exits_130() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let out = std::env::temp_dir().join(format!("gradlab-lab-int-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradlab"))
        .args(["lab", "--quick", "--out"])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.starts_with("[2/") {
            break;
        }
    }
    assert!(
        log.contains("[2/"),
        "the lab never reached its second study: {log}"
    );
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("interrupted: report of 1 of "), "{log}");
    assert!(!log.contains("[3/"), "a study started after Ctrl-C: {log}");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("<section id=\"optimizers\">"));
    assert!(!html.contains("<section id=\"schedules\">"));
    assert!(
        html.contains("Incomplete.") && html.contains("not run: schedules, batch size"),
        "the report does not say it is incomplete"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// A second run into the same folder reuses the finished runs of the same configuration
/// (their files untouched) and recomputes only what changed; `--fresh` recomputes all.
#[test]
fn finished_runs_of_the_same_configuration_are_reused() {
    let out = std::env::temp_dir().join(format!("gradlab-lab-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let compare = |optimizers: &[&str], fresh: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gradlab"));
        c.args(["compare", "--epochs", "1", "--train-limit", "200", "--out"])
            .arg(&out);
        for o in optimizers {
            c.args(["--optimizer", o]);
        }
        if fresh {
            c.arg("--fresh");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let sgd = out.join("runs/optimizers/sgd_lr_0_05_0/summary.json");
    let first = compare(&["sgd(lr=0.05)"], false);
    assert!(!first.contains("reused"), "{first}");
    let written = std::fs::metadata(&sgd).unwrap().modified().unwrap();
    let second = compare(&["sgd(lr=0.05)", "adam(lr=0.001)"], false);
    assert!(
        second.contains("sgd_lr_0_05_0 (same configuration)"),
        "{second}"
    );
    assert!(!second.contains("adam_lr_0_001_0 (same"), "{second}");
    assert_eq!(
        std::fs::metadata(&sgd).unwrap().modified().unwrap(),
        written
    );
    let fresh = compare(&["sgd(lr=0.05)"], true);
    assert!(!fresh.contains("reused"), "{fresh}");
    std::fs::remove_dir_all(&out).unwrap();
}
