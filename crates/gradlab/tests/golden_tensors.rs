//! Optimizers whose step depends on tensor shapes or on sums over every tensor, against their
//! references on several tensors at once: Adafactor's factored second moment (a matrix and a
//! 4-D tensor, factored over its last two dimensions, beside vectors) and Prodigy's single
//! estimate d over all tensors, with parameter groups. `tests/golden/tensors.json` is written
//! by `scripts/make_tensor_goldens.py` (torch 2.15, prodigyopt 1.1.2), float64.

use gradlab::optim::{self, Layout, Options, ParamGroup};
use serde_json::Value;

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Replays one case; its largest deviation from the reference, relative to 1 + |reference|.
fn deviation(case: &Value) -> f64 {
    let tensors = case["tensors"].as_array().unwrap();
    let layout = Layout::new(tensors.iter().map(|t| {
        let shape: Vec<usize> = numbers(&t["shape"]).iter().map(|&x| x as usize).collect();
        (t["name"].as_str().unwrap().to_string(), shape)
    }))
    .unwrap();
    let groups: Vec<ParamGroup> = case["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let params: Vec<&str> = g["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            ParamGroup::parse(&params, g["overrides"].as_str().unwrap()).unwrap()
        })
        .collect();
    let spec = case["optimizer"].as_str().unwrap();
    let mut opt = optim::build::<f64>(spec, layout.clone(), &groups, Options::default()).unwrap();
    let field = |k: &str| -> Vec<f64> { tensors.iter().flat_map(|t| numbers(&t[k])).collect() };
    let (mut theta, a, b) = (field("theta"), field("a"), field("b"));
    let mut g = vec![0.0; theta.len()];
    let start = theta.clone();
    let mut worst: f64 = 0.0;
    for want in case["trajectory"].as_array().unwrap() {
        for i in 0..theta.len() {
            let t = theta[i];
            g[i] = a[i] * t + b[i] + 0.1 * (t * t * t);
        }
        opt.step_flat(&mut theta, &g).unwrap();
        for (got, want) in theta.iter().zip(numbers(want)) {
            worst = worst.max((got - want).abs() / (1.0 + want.abs()));
        }
    }
    let moved = theta
        .iter()
        .zip(&start)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(moved > 1e-3, "{spec}: the case hardly moves ({moved:.1e})");
    worst
}

#[test]
fn every_tensor_case_matches_its_reference() {
    let path = format!("{}/tests/golden/tensors.json", env!("CARGO_MANIFEST_DIR"));
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    let failures: Vec<String> = cases
        .iter()
        .map(|c| (c["optimizer"].as_str().unwrap(), deviation(c)))
        .inspect(|(spec, d)| eprintln!("{spec}: {d:.2e}"))
        .filter(|(_, d)| *d > 1e-9)
        .map(|(spec, d)| format!("{spec}: deviates by {d:.2e}"))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
