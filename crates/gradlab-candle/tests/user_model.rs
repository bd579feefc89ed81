//! gradlab's diagnostics on a model gradlab does not know: a candle user's own `Module`.
//! Its Hessian comes from a closure that builds the loss; double backward is used inside
//! `with_second_order` and agrees with finite differences; outside it (a thread whose
//! gradients are detached) the operator says so and falls back instead of returning zeros.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab_candle::hessian::{with_second_order, HvpMethod, NetworkHessian};

struct TwoLayer {
    a: Linear,
    b: Linear,
}

impl Module for TwoLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.b.forward(&self.a.forward(x)?.tanh()?)
    }
}

fn setup() -> (VarMap, TwoLayer, Tensor, Tensor) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let model = TwoLayer {
        a: candle_nn::linear(3, 5, vb.pp("a")).unwrap(),
        b: candle_nn::linear(5, 2, vb.pp("b")).unwrap(),
    };
    let d = Device::Cpu;
    let x: Vec<f64> = (0..24)
        .map(|i| ((i * 37 % 11) as f64) / 5.0 - 1.0)
        .collect();
    let y: Vec<f64> = (0..16).map(|i| ((i * 13 % 7) as f64) / 3.0 - 1.0).collect();
    (
        varmap,
        model,
        Tensor::from_vec(x, (8, 3), &d).unwrap(),
        Tensor::from_vec(y, (8, 2), &d).unwrap(),
    )
}

fn named(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let mut v: Vec<_> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn top(h: &mut NetworkHessian) -> f64 {
    let opts = LanczosOptions {
        top: 1,
        bottom: 0,
        tol: 1e-10,
        max_iter: None,
        seed: 3,
    };
    lanczos(h, &opts).unwrap().top[0].value
}

#[test]
fn a_users_module_has_its_hessian_by_double_backward() {
    let (varmap, model, x, y) = setup();
    let loss =
        || -> gradlab_candle::Result<Tensor> { Ok((model.forward(&x)? - &y)?.sqr()?.mean_all()?) };
    // A thread that already ran a backward pass without the flag: its double backward is
    // detached; the operator notes it and uses finite differences.
    let params = named(&varmap);
    std::thread::scope(|s| {
        s.spawn(|| {
            loss().unwrap().backward().unwrap();
            let h = NetworkHessian::of_loss(params.clone(), loss).unwrap();
            assert_eq!(h.method(), HvpMethod::FiniteDifference);
            let note = h.note.clone().unwrap_or_default();
            assert!(
                note.contains("detached") && note.contains("with_second_order"),
                "{note}"
            );
        });
    });
    let (exact, fd, cross_check) = with_second_order(|| {
        let mut h = NetworkHessian::of_loss(params.clone(), loss).unwrap();
        assert_eq!(h.method(), HvpMethod::DoubleBackward, "{:?}", h.note);
        h.check_symmetric().unwrap();
        let exact = top(&mut h);
        h.set_method(HvpMethod::FiniteDifference).unwrap();
        (exact, top(&mut h), h.cross_check)
    });
    assert!(exact > 0.0 && cross_check < 1e-6, "{exact} {cross_check}");
    assert!(
        (exact - fd).abs() <= 1e-5 * exact,
        "double backward {exact} vs finite differences {fd}"
    );
}
