//! A network's Hessian: double backward agrees with finite differences of gradients.

use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab::landscape::HessianOperator;
use gradlab_candle::data;
use gradlab_candle::hessian::{second_order, Block, HvpMethod, NetworkHessian, NetworkObjective};
use gradlab_candle::models::{Activation, Model, ModelKind, ModelSpec};
use gradlab_candle::train::batch;

#[test]
fn double_backward_agrees_with_finite_differences() {
    let (method, check, top_exact, top_fd, block_top) = second_order(|| {
        let split = data::bundled().unwrap();
        let mut spec = ModelSpec::new(ModelKind::Mlp);
        spec.widths = vec![6];
        spec.activation = Activation::Tanh;
        let model = Model::new(&spec, 28, 28, 1)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        let idx: Vec<usize> = (0..64).collect();
        let objective =
            NetworkObjective::new(&model, vec![batch(&split.train, &idx).unwrap()]).unwrap();
        let mut h = NetworkHessian::new(objective).unwrap();
        let method = h.method();
        let check = h.cross_check;
        assert!(
            h.asymmetry < 1e-12,
            "exact operator: asymmetry {}",
            h.asymmetry
        );
        h.check_symmetric().unwrap();
        let measured = h.asymmetry;
        h.asymmetry = 0.126; // what the CNN's operator measured with candle's pool bug
        let refused = h.check_symmetric().unwrap_err().to_string();
        assert!(
            refused.contains("not symmetric") && refused.contains("1.260e-1"),
            "{refused}"
        );
        h.asymmetry = measured;
        let opts = LanczosOptions {
            top: 1,
            bottom: 0,
            tol: 1e-8,
            max_iter: Some(60),
            seed: 2,
        };
        let top_exact = lanczos(&mut h, &opts).unwrap().top[0].value;
        h.set_method(HvpMethod::FiniteDifference).unwrap();
        let top_fd = lanczos(&mut h, &opts).unwrap().top[0].value;
        h.set_method(HvpMethod::DoubleBackward).unwrap();
        // The block of the last layer's bias (10 parameters).
        let n = h.dim();
        let mut block = Block::new(&mut h, n - 10..n);
        let block_top = lanczos(
            &mut block,
            &LanczosOptions {
                top: 1,
                bottom: 0,
                tol: 1e-10,
                max_iter: None,
                seed: 0,
            },
        )
        .unwrap()
        .top[0]
            .value;
        (method, check, top_exact, top_fd, block_top)
    });
    assert_eq!(method, HvpMethod::DoubleBackward, "cross-check {check}");
    assert!(
        check < 1e-6,
        "double backward vs finite differences: {check}"
    );
    assert!(
        (top_exact - top_fd).abs() <= 1e-6 * top_exact.abs(),
        "{top_exact} vs {top_fd}"
    );
    // The Hessian of softmax cross-entropy in the output bias has eigenvalues in [0, 1/2].
    assert!(block_top > 0.0 && block_top <= 0.5 + 1e-9, "{block_top}");
}
