//! candle's `mnist-training` example (a user's own MLP on MNIST with a `VarMap`) trained
//! with a gradlab optimizer instead of candle-nn's: groups, a schedule, clipping, an exact
//! resume from one file, and the Hessian of the user's model at the end.
//!
//! ```sh
//! cargo run --release -p gradlab-candle --example candle_user
//! ```

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{loss, ops, Linear, VarBuilder, VarMap};
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab_candle::hessian::{with_second_order, NetworkHessian};
use gradlab_candle::train::batch;
use gradlab_candle::{GradlabOptimizer, OptimizerConfig};

/// candle's example MLP: 784 → 100 → 10.
struct Mlp {
    ln1: Linear,
    ln2: Linear,
}

impl Mlp {
    fn new(vs: VarBuilder) -> candle_core::Result<Self> {
        Ok(Mlp {
            ln1: candle_nn::linear(784, 100, vs.pp("ln1"))?,
            ln2: candle_nn::linear(100, 10, vs.pp("ln2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let xs = xs.flatten_from(1)?;
        self.ln2.forward(&self.ln1.forward(&xs)?.relu()?)
    }
}

fn accuracy(model: &Mlp, x: &Tensor, y: &Tensor) -> candle_core::Result<f32> {
    let right = model
        .forward(x)?
        .argmax(D::Minus1)?
        .eq(y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(right / y.dims()[0] as f32)
}

fn main() -> gradlab_candle::Result<()> {
    let split = gradlab_candle::data::bundled()?;
    let all = |n: usize| (0..n).collect::<Vec<_>>();
    let (test_x, test_y) = batch(&split.test, &all(split.test.len()))?;
    let mut varmap = VarMap::new();
    let model = Mlp::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let (epochs, batch_size) = (3, 64);
    let steps = epochs * split.train.len().div_ceil(batch_size);
    // The two lines that change from candle's example: the optimizer and its config.
    let config = OptimizerConfig::new("adamw(lr=3e-3, weight_decay=0.05)")
        .schedule(format!(
            "warmup_cosine(warmup_steps=100, total_steps={steps})"
        ))
        .group(["*.bias"], "weight_decay=0")
        .clip_norm(1.0);
    let mut opt = GradlabOptimizer::from_varmap(&varmap, &config)?;
    let dir = std::env::temp_dir().join(format!("gradlab-candle-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|error| gradlab_candle::Error::Io {
        path: dir.clone(),
        error,
    })?;
    for epoch in 0..epochs {
        if epoch == 2 {
            // Stop and resume as a new process would: weights and optimizer from files.
            varmap.save(dir.join("model.safetensors"))?;
            opt.save(dir.join("optimizer.safetensors"))?;
            varmap.load(dir.join("model.safetensors"))?;
            opt = GradlabOptimizer::load(dir.join("optimizer.safetensors"), &varmap)?;
        }
        let mut order = all(split.train.len());
        // A fixed shuffle per epoch, without a random-number crate.
        order.sort_by_key(|&i| (i * 7919 + epoch * 104_729) % split.train.len());
        let mut sum_loss = 0.0;
        for idx in order.chunks(batch_size) {
            let (x, y) = batch(&split.train, idx)?;
            let loss = loss::nll(&ops::log_softmax(&model.forward(&x)?, D::Minus1)?, &y)?;
            let outcome = opt.backward_step(&loss)?;
            sum_loss += loss.to_scalar::<f32>()? as f64 * idx.len() as f64;
            debug_assert!(!outcome.skipped);
        }
        println!(
            "{epoch:4} train loss {:8.5} test acc: {:5.2}%  {opt}",
            sum_loss / split.train.len() as f64,
            100.0 * accuracy(&model, &test_x, &test_y)?
        );
    }
    // The curvature of the trained model, on 500 training digits, in f64 by double backward.
    let (x, y) = batch(&split.train, &all(500))?;
    let top = with_second_order(|| -> gradlab_candle::Result<f64> {
        // An f64 copy of the model: the same names, so the VarBuilder finds the copies.
        let f64_map = VarMap::new();
        for (name, v) in varmap.data().lock().unwrap().iter() {
            let copy = candle_core::Var::from_tensor(&v.as_tensor().to_dtype(DType::F64)?)?;
            f64_map.data().lock().unwrap().insert(name.clone(), copy);
        }
        let exact = Mlp::new(VarBuilder::from_varmap(&f64_map, DType::F64, &Device::Cpu))?;
        let mut named: Vec<_> = f64_map.data().lock().unwrap().clone().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let loss = || -> gradlab_candle::Result<Tensor> {
            let logits = exact.forward(&x.to_dtype(DType::F64)?)?;
            Ok(loss::nll(&ops::log_softmax(&logits, D::Minus1)?, &y)?)
        };
        let mut h = NetworkHessian::of_loss(named, loss)?;
        let opts = LanczosOptions {
            top: 1,
            bottom: 0,
            tol: 1e-6,
            max_iter: Some(60),
            seed: 0,
        };
        Ok(lanczos(&mut h, &opts)?.top[0].value)
    })?;
    println!("top Hessian eigenvalue of the trained model (500 digits): {top:.4}");
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
