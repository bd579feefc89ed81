//! The candle bridge: gradlab's AdamW follows candle-nn's AdamW, in place, and a saved
//! state resumes exactly.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use gradlab_candle::{GradlabOptimizer, OptimizerConfig};

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

struct Net {
    w1: Var,
    b1: Var,
    w2: Var,
}

impl Net {
    fn new() -> Net {
        let d = Device::Cpu;
        Net {
            w1: Var::from_tensor(&Tensor::from_vec(values(1, 32), (8, 4), &d).unwrap()).unwrap(),
            b1: Var::from_tensor(&Tensor::from_vec(values(2, 8), 8, &d).unwrap()).unwrap(),
            w2: Var::from_tensor(&Tensor::from_vec(values(3, 24), (3, 8), &d).unwrap()).unwrap(),
        }
    }

    fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
        let h = x
            .matmul(&self.w1.t().unwrap())
            .unwrap()
            .broadcast_add(&self.b1)
            .unwrap()
            .tanh()
            .unwrap();
        let out = h.matmul(&self.w2.t().unwrap()).unwrap();
        (out - y).unwrap().sqr().unwrap().mean_all().unwrap()
    }

    fn named(&self) -> Vec<(String, Var)> {
        vec![
            ("fc1.weight".into(), self.w1.clone()),
            ("fc1.bias".into(), self.b1.clone()),
            ("fc2.weight".into(), self.w2.clone()),
        ]
    }

    fn flat(&self) -> Vec<f32> {
        [&self.w1, &self.b1, &self.w2]
            .iter()
            .flat_map(|v| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }
}

fn data() -> (Tensor, Tensor) {
    let d = Device::Cpu;
    (
        Tensor::from_vec(values(7, 64), (16, 4), &d).unwrap(),
        Tensor::from_vec(values(8, 48), (16, 3), &d).unwrap(),
    )
}

#[test]
fn adamw_follows_candle_nn_adamw() {
    let (x, y) = data();
    let ours = Net::new();
    let theirs = Net::new();
    let mut gradlab = GradlabOptimizer::with_names(
        ours.named(),
        &OptimizerConfig::new("adamw(lr=0.01, weight_decay=0.05)"),
    )
    .unwrap();
    let params = ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.05,
        ..ParamsAdamW::default()
    };
    let mut candle = AdamW::new(
        vec![theirs.w1.clone(), theirs.b1.clone(), theirs.w2.clone()],
        params,
    )
    .unwrap();
    let before = ours.flat();
    for step in 0..20 {
        gradlab.backward_step(&ours.loss(&x, &y)).unwrap();
        candle.backward_step(&theirs.loss(&x, &y)).unwrap();
        for (a, b) in ours.flat().iter().zip(theirs.flat()) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "step {step}: {a} vs {b}"
            );
        }
    }
    assert_ne!(before, ours.flat(), "the parameters were updated in place");
}

#[test]
fn every_optimizer_runs_through_candle_and_resumes_exactly() {
    let (x, y) = data();
    let dir = std::env::temp_dir().join(format!("gradlab-candle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for spec in [
        "sgd(lr=0.1, momentum=0.9)",
        "lamb(lr=0.01)",
        "lars(lr=0.5, momentum=0.9)",
        "lookahead(radam(lr=0.01), k=3)",
        "swats(lr=0.01)",
        "lion(lr=0.001)",
    ] {
        let a = Net::new();
        let mut opt = GradlabOptimizer::with_names(a.named(), &OptimizerConfig::new(spec)).unwrap();
        for _ in 0..5 {
            opt.backward_step(&a.loss(&x, &y)).unwrap();
        }
        let path = dir.join("state.safetensors");
        opt.with_engine(|e| e.save(&path)).unwrap();
        let saved = a.flat();
        for _ in 0..5 {
            opt.backward_step(&a.loss(&x, &y)).unwrap();
        }
        let b = Net::new();
        for (v, vals) in
            [&b.w1, &b.b1, &b.w2]
                .iter()
                .zip([&saved[..32], &saved[32..40], &saved[40..]])
        {
            v.set(&Tensor::from_vec(vals.to_vec(), v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        let mut opt_b =
            GradlabOptimizer::with_names(b.named(), &OptimizerConfig::new(spec)).unwrap();
        opt_b.with_engine(|e| e.load(&path)).unwrap();
        for _ in 0..5 {
            opt_b.backward_step(&b.loss(&x, &y)).unwrap();
        }
        assert_eq!(a.flat(), b.flat(), "{spec}");
    }
    std::fs::remove_dir_all(dir).unwrap();
    // Names are sorted; under MissingGradients::Error a missing gradient is an error naming
    // the parameter (by default it sits out the step: tests/drop_in.rs).
    let n = Net::new();
    let unused = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let mut named = n.named();
    named.push(("unused".into(), unused));
    let strict = OptimizerConfig::new("sgd(lr=0.1)")
        .missing_gradients(gradlab_candle::MissingGradients::Error);
    let mut opt = GradlabOptimizer::with_names(named, &strict).unwrap();
    assert_eq!(
        opt.names(),
        ["fc1.bias", "fc1.weight", "fc2.weight", "unused"]
    );
    let err = opt.backward_step(&n.loss(&x, &y)).unwrap_err().to_string();
    assert!(err.contains("'unused'"), "{err}");
}

#[test]
fn sam_and_lbfgs_step_a_candle_model_through_a_closure() {
    let (x, y) = data();
    // SAM with radius 0 is its base optimizer, whatever path it takes.
    let (a, b) = (Net::new(), Net::new());
    let mut sam = GradlabOptimizer::with_names(
        a.named(),
        &OptimizerConfig::new("sam(adam(lr=0.01), rho=0)"),
    )
    .unwrap();
    let mut adam =
        GradlabOptimizer::with_names(b.named(), &OptimizerConfig::new("adam(lr=0.01)")).unwrap();
    assert!(sam.needs_closure() && !adam.needs_closure());
    for _ in 0..5 {
        let out = sam.step_with_loss(|| Ok(a.loss(&x, &y))).unwrap();
        assert_eq!(out.evaluations, 2);
        adam.backward_step(&b.loss(&x, &y)).unwrap();
    }
    assert_eq!(a.flat(), b.flat());
    // A plain step of a closure optimizer is refused by name.
    let err = sam.backward_step(&a.loss(&x, &y)).unwrap_err().to_string();
    assert!(err.contains("step_with_closure"), "{err}");
    // L-BFGS with a line search lowers the loss far more than one gradient step.
    let net = Net::new();
    let start = net.loss(&x, &y).to_scalar::<f32>().unwrap();
    let mut lbfgs = GradlabOptimizer::with_names(
        net.named(),
        &OptimizerConfig::new("lbfgs(max_iter=20, line_search_fn=strong_wolfe)"),
    )
    .unwrap();
    let out = lbfgs.step_with_loss(|| Ok(net.loss(&x, &y))).unwrap();
    assert_eq!(out.loss as f32, start);
    assert!(out.evaluations > 5, "{}", out.evaluations);
    let end = net.loss(&x, &y).to_scalar::<f32>().unwrap();
    assert!(end < 0.5 * start, "{start} -> {end}");
}
