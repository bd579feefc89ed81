//! The optimizers after the lecture against their references, in float64: every case of
//! `tests/golden/modern.json` (the shared trajectories: torch 2.15, schedulefree 1.4.1,
//! prodigyopt 1.1.2, pytorch-optimizer 4.1.0) whose optimizer gradlab has, and every case of
//! `tests/golden/modern_options.json` (other hyperparameters, written by
//! `scripts/make_modern_goldens.py` from the same references), each row to 1e-6 relative.

use gradlab::optim::Options;
use gradlab::spec;
use gradlab::surface::{replay, Surface};
use serde_json::Value;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + b.abs())
}

fn cases(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    golden["cases"].as_array().unwrap().clone()
}

/// Replays one case; the first row that differs, if any.
fn mismatch(case: &Value) -> Option<String> {
    let surface: Surface = case["function"].as_str().unwrap().parse().unwrap();
    let start = [
        case["start"][0].as_f64().unwrap(),
        case["start"][1].as_f64().unwrap(),
    ];
    let spec_text = case["optimizer"].as_str().unwrap();
    let spec = spec::parse(spec_text).unwrap();
    let mut opt = replay::optimizer_for_surface(&spec, Options::default()).unwrap();
    let steps = case["steps"].as_u64().unwrap();
    let traj = replay::run(surface, start, opt.as_mut(), steps, |_, _| Ok(()));
    assert!(traj.stopped.is_none(), "{spec_text}: {:?}", traj.stopped);
    let expected = case["trajectory"].as_array().unwrap();
    assert_eq!(traj.rows.len(), expected.len(), "{spec_text}");
    for (row, want) in traj.rows.iter().zip(expected) {
        let want: Vec<f64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        if !(close(row.x, want[0]) && close(row.y, want[1]) && close(row.loss, want[2])) {
            return Some(format!(
                "{} {spec_text}: step {}: got ({}, {}, {}), want {want:?}",
                surface.name(),
                row.step,
                row.x,
                row.y,
                row.loss
            ));
        }
    }
    None
}

fn check_all(file: &str, pending: &[&str]) -> Vec<String> {
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for case in cases(file) {
        let spec_text = case["optimizer"].as_str().unwrap();
        let name = spec::parse(spec_text).unwrap().name;
        if pending.contains(&name.as_str()) {
            continue;
        }
        failures.extend(mismatch(&case));
        checked.push(name);
    }
    assert!(
        failures.is_empty(),
        "{file}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    checked
}

#[test]
fn every_modern_case_of_an_implemented_optimizer_matches_its_reference() {
    let mut checked = check_all("modern.json", &[]);
    checked.sort();
    assert_eq!(
        checked,
        [
            "adafactor",
            "adafactor",
            "adamw_schedulefree",
            "ademamix",
            "adopt",
            "asgd",
            "lbfgs",
            "lbfgs",
            "muon",
            "muon",
            "prodigy",
            "prodigy",
            "rprop",
            "sam",
            "sam",
            "sgd_schedulefree"
        ]
    );
}

#[test]
fn other_hyperparameters_match_the_references_too() {
    let checked = check_all("modern_options.json", &[]);
    assert_eq!(checked.len(), 23);
}
