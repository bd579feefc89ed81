//! `gradlab critical` on the lecture's examples.

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
fn the_product_saddle_as_json() {
    let (ok, out, err) = gradlab(&["critical", "--function", "product", "--at=0,0", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "saddle");
    let eig: Vec<f64> = v["eigenvalues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!((eig[0] + 2.0).abs() < 1e-9 && (eig[1] - 2.0).abs() < 1e-9);
    let d: Vec<f64> = v["escape_direction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!((d[0] - 0.5f64.sqrt()).abs() < 1e-9 && (d[1] - 0.5f64.sqrt()).abs() < 1e-9);
    assert!(v["loss_after_escape"].as_f64().unwrap() < v["loss"].as_f64().unwrap());
    assert_eq!(v["minimum_ratio"], 0.5);
    assert!(v["gradient_norm"].as_f64().unwrap() < 1e-12);
    // A minimum has no escape direction.
    let (_, out, _) = gradlab(&["critical", "--function", "booth", "--at=1,3", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "minimum");
    assert!(v.get("escape_direction").is_none());
    let (_, out, _) = gradlab(&["critical", "--function", "monkey", "--at=0,0", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["kind"],
        "degenerate"
    );
}

#[test]
fn scanning_himmelblau_finds_its_nine_critical_points() {
    let dir = std::env::temp_dir().join(format!("gradlab-crit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("h.svg");
    let (ok, out, err) = gradlab(&[
        "critical",
        "--function",
        "himmelblau",
        "--scan=-5,5,-5,5",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: Vec<Value> = serde_json::from_str(&out).unwrap();
    let count = |k: &str| v.iter().filter(|p| p["kind"] == k).count();
    assert_eq!(
        (v.len(), count("minimum"), count("maximum"), count("saddle")),
        (9, 4, 1, 4)
    );
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.contains("maximum (-0.27, -0.92)") && plot.contains("saddle"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_critical_arguments() {
    for (args, needle) in [
        (vec!["critical", "--function", "product"], "--at"),
        (
            vec!["critical", "--function", "product", "--at=1"],
            "--at '1'",
        ),
        (
            vec!["critical", "--function", "product", "--scan=1,0,0,1"],
            "XMIN < XMAX",
        ),
        (
            vec!["critical", "--function", "product", "--scan=1,2,3"],
            "four numbers",
        ),
        (
            vec!["critical", "--function", "saddle", "--at=0,0"],
            "unknown function 'saddle'",
        ),
    ] {
        let (ok, _, err) = gradlab(&args);
        assert!(
            !ok && err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
