//! Replays every reference trajectory of `tests/golden/surfaces.json` (PyTorch, float64)
//! that has no schedule, and checks every row to 1e-6 relative.

use gradlab::optim::Options;
use gradlab::spec;
use gradlab::surface::{replay, Surface};
use serde_json::Value;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + b.abs())
}

#[test]
fn every_unscheduled_surface_case_matches_pytorch() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/surfaces.json"
    ))
    .unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in golden["cases"].as_array().unwrap() {
        if !case["schedule"].is_null() {
            continue;
        }
        let surface: Surface = case["function"].as_str().unwrap().parse().unwrap();
        let start = [
            case["start"][0].as_f64().unwrap(),
            case["start"][1].as_f64().unwrap(),
        ];
        let spec_text = case["optimizer"].as_str().unwrap();
        let spec = spec::parse(spec_text).unwrap();
        let steps = case["steps"].as_u64().unwrap();
        let mut opt = replay::optimizer_for_surface(&spec, Options::default()).unwrap();
        let traj = replay::run(surface, start, opt.as_mut(), steps, |_, _| Ok(()));
        assert!(traj.stopped.is_none(), "{spec_text}: {:?}", traj.stopped);
        let rows = traj.rows;
        let expected = case["trajectory"].as_array().unwrap();
        assert_eq!(rows.len(), expected.len());
        for (row, want) in rows.iter().zip(expected) {
            let want: Vec<f64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            if !(close(row.x, want[0]) && close(row.y, want[1]) && close(row.loss, want[2])) {
                failures.push(format!(
                    "{} {spec_text}: step {}: got ({}, {}, {}), want {want:?}",
                    surface.name(),
                    row.step,
                    row.x,
                    row.y,
                    row.loss
                ));
                break;
            }
        }
        for (k, lr) in case["lr"].as_array().unwrap().iter().enumerate() {
            assert!(
                close(rows[k].lr, lr.as_f64().unwrap()),
                "{spec_text}: lr of step {}",
                k + 1
            );
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, 24);
}
