//! gradlab's candle ops checked against numbers: gradients against central finite differences
//! of the loss, Hessian-vector products by double backward against finite differences of
//! gradients (both in f64), forwards against candle's own ops where candle is right, and the
//! max-pool gradient against its definition (where candle 0.11 is wrong).

use candle_core::{DType, Device, Result, Tensor, Var};
use gradlab::landscape::Rng;
use gradlab_candle::hessian::second_order;
use gradlab_candle::ops::{self, Conv2dParams};

type Op = dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync;

fn random(rng: &mut Rng, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn with_element(t: &Tensor, j: usize, delta: f64) -> Tensor {
    let mut v = values(t);
    v[j] += delta;
    Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap()
}

/// Σ R ⊙ f(x)², with a fixed random R: a scalar whose gradient and curvature go through
/// the op's backward (a plain weighted sum would have no curvature for linear ops).
fn objective(f: &Op, inputs: &[Tensor], r: &Tensor) -> Result<Tensor> {
    let y = f(inputs)?;
    (y.sqr()? * r)?.sum_all()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn weights(f: &Op, inputs: &[Tensor]) -> Tensor {
    let shape = f(inputs).unwrap().dims().to_vec();
    random(&mut Rng::new(99), &shape)
}

/// Gradients of the objective at `inputs` (one per input; zeros where none flows).
fn gradients(f: &Op, inputs: &[Tensor], r: &Tensor) -> Vec<Tensor> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = objective(f, &ts, r).unwrap().backward().unwrap();
    vars.iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .cloned()
                .unwrap_or_else(|| v.as_tensor().zeros_like().unwrap())
        })
        .collect()
}

/// Elements to probe: all of a small tensor, an even spread of a large one.
fn probes(n: usize) -> Vec<usize> {
    if n <= 60 {
        (0..n).collect()
    } else {
        (0..60)
            .map(|k| k * n / 60 + (k * 7) % (n / 60).max(1))
            .collect()
    }
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * (1.0 + want.abs()),
        "{what}: {got} vs finite differences {want}"
    );
}

/// The gradient of every input matches central differences of the objective.
fn check_gradient(name: &str, f: &Op, inputs: &[Tensor], skip: &[usize]) {
    let r = weights(f, inputs);
    let grads = gradients(f, inputs, &r);
    let h = 1e-6;
    for (i, x) in inputs.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let g = values(&grads[i]);
        for j in probes(x.elem_count()) {
            let mut plus = inputs.to_vec();
            plus[i] = with_element(x, j, h);
            let mut minus = inputs.to_vec();
            minus[i] = with_element(x, j, -h);
            let fd = (scalar(&objective(f, &plus, &r).unwrap())
                - scalar(&objective(f, &minus, &r).unwrap()))
                / (2.0 * h);
            assert_close(&format!("{name}: d/d input {i} [{j}]"), g[j], fd, 1e-6);
        }
    }
}

/// Hessian-vector products by double backward match central differences of gradients.
fn check_hvp(name: &'static str, f: &'static Op, inputs: Vec<Tensor>, skip: Vec<usize>) {
    second_order(move || {
        let r = weights(f, &inputs);
        let mut rng = Rng::new(5);
        let dirs: Vec<Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let d = random(&mut rng, x.dims());
                if skip.contains(&i) {
                    d.zeros_like().unwrap()
                } else {
                    d
                }
            })
            .collect();
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let grads = objective(f, &ts, &r).unwrap().backward().unwrap();
        let mut dot = Tensor::new(0f64, &Device::Cpu).unwrap();
        for (v, d) in vars.iter().zip(&dirs) {
            if let Some(g) = grads.get(v.as_tensor()) {
                dot = (dot + (g * d).unwrap().sum_all().unwrap()).unwrap();
            }
        }
        let second = dot.backward().unwrap();
        let h = 1e-5;
        let shifted = |s: f64| -> Vec<Tensor> {
            let moved: Vec<Tensor> = inputs
                .iter()
                .zip(&dirs)
                .map(|(x, d)| (x + (d * s).unwrap()).unwrap())
                .collect();
            gradients(f, &moved, &r)
        };
        let (plus, minus) = (shifted(h), shifted(-h));
        for (i, v) in vars.iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            let hv = second
                .get(v.as_tensor())
                .map(values)
                .unwrap_or_else(|| vec![0.0; v.elem_count()]);
            let (p, m) = (values(&plus[i]), values(&minus[i]));
            for j in 0..hv.len() {
                let fd = (p[j] - m[j]) / (2.0 * h);
                assert_close(&format!("{name}: (Hv) of input {i} [{j}]"), hv[j], fd, 1e-5);
            }
        }
    });
}

fn conv_case(p: Conv2dParams, x: [usize; 4], k: [usize; 4], bias: bool) -> (Box<Op>, Vec<Tensor>) {
    let mut rng = Rng::new(1);
    let mut inputs = vec![random(&mut rng, &x), random(&mut rng, &k)];
    if bias {
        inputs.push(random(&mut rng, &[k[0]]));
    }
    let f: Box<Op> = Box::new(move |t: &[Tensor]| ops::conv2d(&t[0], &t[1], t.get(2), p));
    (f, inputs)
}

fn conv_params() -> Vec<(Conv2dParams, [usize; 4], [usize; 4])> {
    let p = |padding, stride, dilation, groups| Conv2dParams {
        padding,
        stride,
        dilation,
        groups,
    };
    vec![
        (p(0, 1, 1, 1), [2, 1, 6, 6], [3, 1, 3, 3]),
        (p(2, 1, 1, 1), [2, 1, 5, 5], [2, 1, 5, 5]),
        (p(1, 2, 1, 1), [2, 2, 7, 6], [3, 2, 3, 3]),
        (p(1, 1, 2, 1), [1, 2, 7, 7], [2, 2, 3, 3]),
        (p(1, 2, 1, 2), [2, 4, 6, 6], [4, 2, 3, 2]),
        (p(0, 1, 1, 1), [2, 3, 4, 4], [5, 3, 1, 1]),
        (p(0, 3, 1, 1), [1, 2, 8, 7], [2, 2, 2, 2]),
    ]
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    for (p, x, k) in conv_params() {
        for bias in [false, true] {
            let (f, inputs) = conv_case(p, x, k, bias);
            check_gradient(&format!("conv2d {p:?} bias {bias}"), &f, &inputs, &[]);
        }
    }
}

#[test]
fn conv2d_forward_matches_candle() {
    for (p, x, k) in conv_params() {
        let (_, inputs) = conv_case(p, x, k, false);
        let ours = ops::conv2d(&inputs[0], &inputs[1], None, p).unwrap();
        let candle = inputs[0]
            .conv2d(&inputs[1], p.padding, p.stride, p.dilation, p.groups)
            .unwrap();
        assert_eq!(ours.dims(), candle.dims(), "{p:?}");
        for (a, b) in values(&ours).iter().zip(values(&candle)) {
            assert!((a - b).abs() < 1e-12, "{p:?}: {a} vs candle {b}");
        }
    }
}

#[test]
fn conv2d_double_backward_matches_finite_differences() {
    for (p, x, k) in conv_params().into_iter().take(5) {
        let (f, inputs) = conv_case(p, x, k, true);
        check_hvp("conv2d", Box::leak(f), inputs, vec![]);
    }
}

#[test]
fn the_input_gradient_is_skipped_for_data() {
    let (_, inputs) = conv_case(Conv2dParams::padded(2), [2, 1, 6, 6], [3, 1, 5, 5], true);
    let w = Var::from_tensor(&inputs[1]).unwrap();
    let b = Var::from_tensor(&inputs[2]).unwrap();
    let y = ops::conv2d(
        &inputs[0],
        w.as_tensor(),
        Some(b.as_tensor()),
        Conv2dParams::padded(2),
    );
    let grads = y.unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&inputs[0]).is_none());
    // Bias gradient of a sum: the number of output positions per channel.
    assert_eq!(values(grads.get(b.as_tensor()).unwrap()), vec![72.0; 3]);
}

#[test]
fn max_pool_gives_the_whole_gradient_to_the_maximum() {
    let x =
        Var::from_tensor(&Tensor::new(&[[[[1f64, 2.], [3., 4.]]]], &Device::Cpu).unwrap()).unwrap();
    let g = ops::max_pool2d(x.as_tensor(), 2, 2)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(g.get(x.as_tensor()).unwrap()), [0.0, 0.0, 0.0, 1.0]);
    // candle 0.11's own backward gives 0.25 there (kept as a record of why this op exists).
    let gc = x
        .as_tensor()
        .max_pool2d(2)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let candle = values(gc.get(x.as_tensor()).unwrap());
    assert!(
        candle[3] != 1.0,
        "candle's max-pool gradient was fixed: {candle:?}"
    );
    // Ties: the first maximum in row-major order takes it (PyTorch).
    let tie =
        Var::from_tensor(&Tensor::new(&[[[[5f64, 5.], [5., 5.]]]], &Device::Cpu).unwrap()).unwrap();
    let g = ops::max_pool2d(tie.as_tensor(), 2, 2)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(
        values(g.get(tie.as_tensor()).unwrap()),
        [1.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn pooling_gradients_match_finite_differences() {
    let mut rng = Rng::new(3);
    for (k, s, dims) in [
        (2, 2, [2, 3, 6, 6]),
        (3, 2, [1, 2, 7, 8]),
        (2, 1, [1, 1, 5, 4]),
    ] {
        let x = vec![random(&mut rng, &dims)];
        let max: Box<Op> = Box::new(move |t: &[Tensor]| ops::max_pool2d(&t[0], k, s));
        check_gradient(&format!("max_pool2d {k}/{s}"), &max, &x, &[]);
        let avg: Box<Op> = Box::new(move |t: &[Tensor]| ops::avg_pool2d(&t[0], k, s));
        check_gradient(&format!("avg_pool2d {k}/{s}"), &avg, &x, &[]);
        let f: &'static Op = Box::leak(max);
        check_hvp("max_pool2d", f, x.clone(), vec![]);
        let f: &'static Op = Box::leak(avg);
        check_hvp("avg_pool2d", f, x, vec![]);
    }
}

#[test]
fn avg_pool_forward_matches_candle() {
    let x = random(&mut Rng::new(8), &[2, 3, 7, 6]);
    let ours = values(&ops::avg_pool2d(&x, 3, 2).unwrap());
    let candle = values(&x.avg_pool2d_with_stride(3, 2).unwrap());
    assert_eq!(ours.len(), candle.len());
    for (a, b) in ours.iter().zip(candle) {
        assert!((a - b).abs() < 1e-14);
    }
}

fn linear_case(bias: bool) -> (Box<Op>, Vec<Tensor>) {
    let mut rng = Rng::new(4);
    let mut inputs = vec![random(&mut rng, &[5, 7]), random(&mut rng, &[4, 7])];
    if bias {
        inputs.push(random(&mut rng, &[4]));
    }
    (
        Box::new(|t: &[Tensor]| ops::linear(&t[0], &t[1], t.get(2))),
        inputs,
    )
}

#[test]
fn linear_and_matmul_gradients_match_finite_differences() {
    for bias in [false, true] {
        let (f, inputs) = linear_case(bias);
        check_gradient(&format!("linear bias {bias}"), &f, &inputs, &[]);
        check_hvp("linear", Box::leak(f), inputs, vec![]);
    }
    let mut rng = Rng::new(6);
    let inputs = vec![random(&mut rng, &[3, 5]), random(&mut rng, &[5, 2])];
    let f: Box<Op> = Box::new(|t: &[Tensor]| ops::matmul(&t[0], &t[1]));
    check_gradient("matmul", &f, &inputs, &[]);
    let want = inputs[0].matmul(&inputs[1]).unwrap();
    for (a, b) in values(&f(&inputs).unwrap()).iter().zip(values(&want)) {
        assert!((a - b).abs() < 1e-14);
    }
    check_hvp("matmul", Box::leak(f), inputs, vec![]);
}

#[test]
fn linear_takes_leading_axes() {
    let (_, inputs) = linear_case(true);
    let x3 = inputs[0].reshape((1, 5, 7)).unwrap();
    let y = ops::linear(&x3, &inputs[1], Some(&inputs[2])).unwrap();
    assert_eq!(y.dims(), [1, 5, 4]);
    let want = inputs[0]
        .matmul(&inputs[1].t().unwrap())
        .unwrap()
        .broadcast_add(&inputs[2])
        .unwrap();
    for (a, b) in values(&y).iter().zip(values(&want)) {
        assert!((a - b).abs() < 1e-14);
    }
}

#[test]
fn relu_gradients_match_finite_differences() {
    let x = vec![random(&mut Rng::new(7), &[4, 9])];
    let f: Box<Op> = Box::new(|t: &[Tensor]| ops::relu(&t[0]));
    check_gradient("relu", &f, &x, &[]);
    check_hvp("relu", Box::leak(f), x, vec![]);
    let nan = Tensor::new(&[f64::NAN, -1.0, 2.0], &Device::Cpu).unwrap();
    let y = values(&ops::relu(&nan).unwrap());
    assert!(y[0].is_nan() && y[1] == 0.0 && y[2] == 2.0);
}

fn labels() -> Tensor {
    Tensor::new(&[2u32, 0, 3, 3, 1], &Device::Cpu).unwrap()
}

#[test]
fn cross_entropy_matches_candle_and_finite_differences() {
    let z = random(&mut Rng::new(9), &[5, 4]);
    let ours = scalar(&ops::cross_entropy(&z, &labels()).unwrap());
    let candle = scalar(&candle_nn::loss::cross_entropy(&z, &labels()).unwrap());
    assert!((ours - candle).abs() < 1e-14, "{ours} vs {candle}");
    // As a scalar op: the objective squares it (curvature through the softmax).
    let f: Box<Op> = Box::new(|t: &[Tensor]| ops::cross_entropy(&t[0], &labels()));
    check_gradient("cross entropy", &f, std::slice::from_ref(&z), &[]);
    check_hvp("cross entropy", Box::leak(f), vec![z.clone()], vec![]);
    let bad = Tensor::new(&[2u32, 0, 4, 3, 1], &Device::Cpu).unwrap();
    let err = ops::cross_entropy(&z, &bad).unwrap_err().to_string();
    assert!(err.contains("label 4"), "{err}");
}

#[test]
fn batch_norm_matches_its_reference_and_finite_differences() {
    let mut rng = Rng::new(10);
    for dims in [vec![6, 3], vec![3, 2, 4, 3]] {
        let c = dims[1];
        let inputs = vec![
            random(&mut rng, &dims),
            (random(&mut rng, &[c]) + 1.5).unwrap(),
            random(&mut rng, &[c]),
        ];
        let fused: Box<Op> =
            Box::new(|t: &[Tensor]| Ok(ops::batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0));
        let reference: Box<Op> =
            Box::new(|t: &[Tensor]| Ok(ops::batch_norm_reference(&t[0], &t[1], &t[2], 1e-5)?.0));
        check_gradient("batch norm", &fused, &inputs, &[]);
        let (a, b) = (fused(&inputs).unwrap(), reference(&inputs).unwrap());
        for (x, y) in values(&a).iter().zip(values(&b)) {
            assert!((x - y).abs() < 1e-12);
        }
        let r = weights(&fused, &inputs);
        for (ga, gb) in gradients(&fused, &inputs, &r)
            .iter()
            .zip(gradients(&reference, &inputs, &r))
        {
            for (x, y) in values(ga).iter().zip(values(&gb)) {
                assert!((x - y).abs() < 1e-10, "{x} vs reference {y}");
            }
        }
        let (_, stats) = ops::batch_norm_train(&inputs[0], &inputs[1], &inputs[2], 1e-5).unwrap();
        let (_, want) =
            ops::batch_norm_reference(&inputs[0], &inputs[1], &inputs[2], 1e-5).unwrap();
        for (x, y) in values(&stats.var).iter().zip(values(&want.var)) {
            assert!((x - y).abs() < 1e-14);
        }
        // With second-order gradients on, batch_norm_train is the reference formulation.
        check_hvp("batch norm", Box::leak(fused), inputs, vec![]);
    }
}

#[test]
fn bad_shapes_are_named() {
    let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((3, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let err = ops::conv2d(&x, &w, None, Conv2dParams::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("group"), "{err}");
    let big = Tensor::zeros((3, 2, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let err = ops::conv2d(&x, &big, None, Conv2dParams::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit"), "{err}");
    let err = ops::max_pool2d(&x, 5, 5).unwrap_err().to_string();
    assert!(err.contains("window"), "{err}");
    let half = Tensor::zeros((1, 2, 4, 4), DType::F16, &Device::Cpu).unwrap();
    let err = ops::relu(&half).unwrap_err().to_string();
    assert!(err.contains("f32 or f64"), "{err}");
}

#[test]
fn f32_and_f64_agree() {
    let (f, inputs) = conv_case(Conv2dParams::padded(1), [2, 2, 6, 6], [3, 2, 3, 3], true);
    let single: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F32).unwrap())
        .collect();
    let a = values(&f(&inputs).unwrap());
    let b = values(&f(&single).unwrap().to_dtype(DType::F64).unwrap());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5);
    }
}

#[test]
fn gelu_is_exact_and_twice_differentiable() {
    let x = vec![(random(&mut Rng::new(11), &[3, 7]) * 3.0).unwrap()];
    let f: Box<Op> = Box::new(|t: &[Tensor]| ops::gelu_erf(&t[0]));
    check_gradient("gelu", &f, &x, &[]);
    let candle = values(&x[0].gelu_erf().unwrap());
    for (a, b) in values(&f(&x).unwrap()).iter().zip(candle) {
        assert!((a - b).abs() < 1e-15);
    }
    check_hvp("gelu", Box::leak(f), x, vec![]);
}
