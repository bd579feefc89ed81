//! gradlab's candle ops against PyTorch 2.15 on fixed float64 inputs: each op's output, the
//! gradients of `L = Σ R ⊙ y²` and the Hessian-vector products of `L` (by double backward)
//! along a fixed direction, all to 1e-10.
//!
//! The numbers are in `tests/goldens/ops_torch.json`, written once by
//! `scripts/make_op_goldens.py` (PyTorch from PyPI in a venv; the script's doc says how).
//! The cases: conv2d padded, strided, dilated, grouped and 1×1; max-pool with exact ties
//! (PyTorch's first-maximum rule), random and overlapping; average pool; linear; ReLU with
//! inputs at 0; exact GELU; training-mode batch norm on 4-D and 2-D inputs; cross-entropy.

use candle_core::{Device, Result, Tensor, Var};
use gradlab_candle::hessian::second_order;
use gradlab_candle::ops::{self, Conv2dParams};
use serde_json::Value;

const GOLDENS: &str = include_str!("goldens/ops_torch.json");
const TOL: f64 = 1e-10;

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn usize_arg(case: &Value, key: &str) -> usize {
    case["args"][key].as_u64().unwrap() as usize
}

/// The case's op applied to `inputs` (in the order of the case's `inputs`).
fn apply(case: &Value, inputs: &[Tensor]) -> Result<Tensor> {
    let name = case["op"].as_str().unwrap();
    match name {
        "conv2d" => {
            let params = Conv2dParams {
                padding: usize_arg(case, "padding"),
                stride: usize_arg(case, "stride"),
                dilation: usize_arg(case, "dilation"),
                groups: usize_arg(case, "groups"),
            };
            ops::conv2d(&inputs[0], &inputs[1], Some(&inputs[2]), params)
        }
        "max_pool2d" => ops::max_pool2d(
            &inputs[0],
            usize_arg(case, "kernel"),
            usize_arg(case, "stride"),
        ),
        "avg_pool2d" => ops::avg_pool2d(
            &inputs[0],
            usize_arg(case, "kernel"),
            usize_arg(case, "stride"),
        ),
        "linear" => ops::linear(&inputs[0], &inputs[1], Some(&inputs[2])),
        "relu" => ops::relu(&inputs[0]),
        "gelu_erf" => ops::gelu_erf(&inputs[0]),
        "batch_norm_train" => {
            let eps = case["args"]["eps"].as_f64().unwrap();
            Ok(ops::batch_norm_train(&inputs[0], &inputs[1], &inputs[2], eps)?.0)
        }
        "cross_entropy" => {
            let labels: Vec<u32> = case["args"]["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_u64().unwrap() as u32)
                .collect();
            let n = labels.len();
            ops::cross_entropy(&inputs[0], &Tensor::from_vec(labels, n, &Device::Cpu)?)
        }
        other => panic!("no gradlab op for golden op '{other}'"),
    }
}

fn assert_matches(what: &str, got: &Tensor, want: &Value) {
    let want_t = tensor(want);
    assert_eq!(got.dims(), want_t.dims(), "{what}: shape");
    let got = got.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let want = want_t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= TOL * (1.0 + w.abs()),
            "{what}[{i}]: gradlab {g} vs PyTorch {w}"
        );
    }
}

/// The case's inputs as variables (differentiable ones) or constants, in input order.
fn inputs(case: &Value) -> (Vec<String>, Vec<Tensor>, Vec<Option<Var>>) {
    let differentiable: Vec<&str> = case["differentiable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let mut names = Vec::new();
    let mut tensors = Vec::new();
    let mut vars = Vec::new();
    for name in case["order"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let t = tensor(&case["inputs"][name]);
        if differentiable.contains(&name) {
            let v = Var::from_tensor(&t).unwrap();
            tensors.push(v.as_tensor().clone());
            vars.push(Some(v));
        } else {
            tensors.push(t);
            vars.push(None);
        }
        names.push(name.to_string());
    }
    (names, tensors, vars)
}

fn loss(case: &Value, y: &Tensor) -> Tensor {
    let r = tensor(&case["upstream"]).reshape(y.dims()).unwrap();
    (y.sqr().unwrap() * r).unwrap().sum_all().unwrap()
}

fn check_first_order(case: &Value) {
    let label = case["name"].as_str().unwrap();
    let (names, ts, vars) = inputs(case);
    let y = apply(case, &ts).unwrap();
    assert_matches(&format!("{label}: output"), &y, &case["output"]);
    let grads = loss(case, &y).backward().unwrap();
    for (name, var) in names.iter().zip(&vars) {
        if let Some(v) = var {
            let g = grads
                .get(v.as_tensor())
                .cloned()
                .unwrap_or_else(|| v.as_tensor().zeros_like().unwrap());
            assert_matches(&format!("{label}: d/d{name}"), &g, &case["grads"][name]);
        }
    }
}

fn check_second_order(case: Value) {
    second_order(move || {
        let label = case["name"].as_str().unwrap();
        let (names, ts, vars) = inputs(&case);
        let y = apply(&case, &ts).unwrap();
        let grads = loss(&case, &y).backward().unwrap();
        let mut dot = Tensor::new(0f64, &Device::Cpu).unwrap();
        for (name, var) in names.iter().zip(&vars) {
            if let Some(g) = var.as_ref().and_then(|v| grads.get(v)) {
                let d = tensor(&case["direction"][name]);
                dot = (dot + (g * d).unwrap().sum_all().unwrap()).unwrap();
            }
        }
        let second = dot.backward().unwrap();
        for (name, var) in names.iter().zip(&vars) {
            if let Some(v) = var {
                let hv = second
                    .get(v.as_tensor())
                    .cloned()
                    .unwrap_or_else(|| v.as_tensor().zeros_like().unwrap());
                assert_matches(&format!("{label}: (Hv)_{name}"), &hv, &case["hvp"][name]);
            }
        }
    });
}

fn cases() -> Vec<Value> {
    let doc: Value = serde_json::from_str(GOLDENS).unwrap();
    assert_eq!(doc["dtype"], "float64");
    doc["cases"].as_array().unwrap().clone()
}

#[test]
fn outputs_and_gradients_match_pytorch() {
    let cases = cases();
    assert!(cases.len() >= 15);
    for case in &cases {
        check_first_order(case);
    }
}

#[test]
fn hessian_vector_products_match_pytorch() {
    for case in cases() {
        check_second_order(case);
    }
}

#[test]
fn every_op_is_covered() {
    let ops: std::collections::BTreeSet<String> = cases()
        .iter()
        .map(|c| c["op"].as_str().unwrap().to_string())
        .collect();
    for op in [
        "conv2d",
        "max_pool2d",
        "avg_pool2d",
        "linear",
        "relu",
        "gelu_erf",
        "batch_norm_train",
        "cross_entropy",
    ] {
        assert!(ops.contains(op), "no PyTorch golden for {op}");
    }
}
