//! Every built-in model's gradient against central finite differences of its loss on real
//! digits (in f64; this is the check that catches a wrong backward such as candle 0.11's
//! max-pool one, which agrees with itself), and the CNN's exact Hessian-vector products
//! against finite differences of gradients, with and without batch norm.

use candle_core::{DType, Tensor};
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab::landscape::{HessianOperator, Rng};
use gradlab_candle::data;
use gradlab_candle::hessian::{second_order, HvpMethod, NetworkHessian, NetworkObjective};
use gradlab_candle::models::{cross_entropy, scalar, Activation, Model, ModelKind, ModelSpec};
use gradlab_candle::train::batch;

fn digits(n: usize) -> (Tensor, Tensor) {
    let split = data::bundled().unwrap();
    let idx: Vec<usize> = (0..n).collect();
    batch(&split.train, &idx).unwrap()
}

fn loss(model: &Model, x: &Tensor, y: &Tensor, train: bool) -> Tensor {
    let logits = model.forward(x, train, &mut Rng::new(0)).unwrap();
    cross_entropy(&logits, y).unwrap()
}

fn set_element(t: &Tensor, j: usize, value: f64) -> Tensor {
    let mut v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    v[j] = value;
    Tensor::from_vec(v, t.shape(), t.device()).unwrap()
}

fn check_model(name: &str, spec: &ModelSpec, train: bool) {
    let model = Model::new(spec, 28, 28, 3)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let (x, y) = digits(8);
    let grads = loss(&model, &x, &y, train).backward().unwrap();
    let h = 1e-6;
    let mut worst = 0f64;
    for (pname, var) in model.params() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let original = var.as_tensor().copy().unwrap();
        let flat = original.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let n = flat.len();
        for k in 0..8.min(n) {
            let j = (k * 7919 + 13) % n;
            var.set(&set_element(&original, j, flat[j] + h)).unwrap();
            let plus = scalar(&loss(&model, &x, &y, train)).unwrap();
            var.set(&set_element(&original, j, flat[j] - h)).unwrap();
            let minus = scalar(&loss(&model, &x, &y, train)).unwrap();
            var.set(&original).unwrap();
            let fd = (plus - minus) / (2.0 * h);
            let err = (g[j] - fd).abs() / (1e-4 + fd.abs());
            worst = worst.max(err);
            assert!(
                (g[j] - fd).abs() <= 1e-6 * (1e-3 + fd.abs()) + 1e-9,
                "{name}: d loss / d {pname}[{j}] = {} vs finite differences {fd}",
                g[j]
            );
        }
    }
    eprintln!("{name}: worst relative gradient error {worst:.2e}");
}

#[test]
fn every_model_gradient_matches_finite_differences() {
    check_model("logreg", &ModelSpec::new(ModelKind::LogReg), false);
    for act in [Activation::Relu, Activation::Tanh, Activation::Gelu] {
        let mut spec = ModelSpec::new(ModelKind::Mlp);
        spec.widths = vec![16, 12];
        spec.activation = act;
        check_model(&format!("mlp {}", act.name()), &spec, false);
        spec.batch_norm = true;
        check_model(
            &format!("mlp {} + batch norm (train)", act.name()),
            &spec,
            true,
        );
    }
    let cnn = ModelSpec::new(ModelKind::Cnn);
    check_model("cnn", &cnn, false);
    let mut bn = cnn.clone();
    bn.batch_norm = true;
    check_model("cnn + batch norm (train)", &bn, true);
    check_model("cnn + batch norm (eval)", &bn, false);
}

/// The CNN's Hessian: double backward passes its cross-check against finite differences and
/// gives the same top eigenvalue.
fn cnn_hessian(batch_norm: bool) -> (HvpMethod, f64, f64, f64) {
    second_order(move || {
        let mut spec = ModelSpec::new(ModelKind::Cnn);
        spec.batch_norm = batch_norm;
        let model = Model::new(&spec, 28, 28, 1)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let objective = NetworkObjective::new(&model, vec![digits(16)]).unwrap();
        let mut h = NetworkHessian::new(objective).unwrap();
        let (method, check) = (h.method(), h.cross_check);
        let opts = LanczosOptions {
            top: 1,
            bottom: 0,
            tol: 1e-9,
            max_iter: Some(40),
            seed: 4,
        };
        let exact = lanczos(&mut h, &opts).unwrap().top[0].value;
        h.set_method(HvpMethod::FiniteDifference).unwrap();
        let fd = lanczos(&mut h, &opts).unwrap().top[0].value;
        assert!(h.dim() > 60_000);
        (method, check, exact, fd)
    })
}

#[test]
fn cnn_hessian_vector_products_are_exact() {
    for batch_norm in [false, true] {
        let (method, check, exact, fd) = cnn_hessian(batch_norm);
        eprintln!("cnn bn={batch_norm}: cross-check {check:.2e}, top {exact} vs fd {fd}");
        assert_eq!(
            method,
            HvpMethod::DoubleBackward,
            "bn={batch_norm}: {check}"
        );
        assert!(check < 1e-6, "bn={batch_norm}: cross-check {check}");
        assert!((exact - fd).abs() <= 1e-5 * exact.abs(), "{exact} vs {fd}");
    }
}
