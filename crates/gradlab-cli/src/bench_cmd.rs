//! `gradlab bench`: optimizer step time against the memory-bandwidth roofline.

use anyhow::{bail, Result};
use gradlab::bench::{bench_together, median, BenchResult};
use serde_json::json;
use std::time::Instant;

/// Arguments of `gradlab bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Optimizer spec (default: adam; with --train, adamw(lr=0.001) as `gradlab train`).
    #[arg(long)]
    optimizer: Option<String>,
    /// Time a training epoch of --model instead: ms per step split into data, forward,
    /// backward and optimizer, the epoch, and one evaluation of the test set.
    #[arg(long)]
    train: bool,
    /// With --train: the model, data and batch flags of `gradlab train`.
    #[command(flatten)]
    model: crate::train_cmd::ModelArgs,
    /// With --train: time only the first N steps of the epoch (default: all).
    #[arg(long)]
    train_steps: Option<usize>,
    /// Number of parameters.
    #[arg(long, default_value_t = 16_000_000)]
    params: usize,
    /// Split them into this many tensors.
    #[arg(long, default_value_t = 1)]
    tensors: usize,
    /// f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Also time this optimizer spec, its steps alternating with --optimizer's in the same
    /// run, and print how many times faster --optimizer is, round by round (e.g.
    /// --optimizer 'adamw(state_dtype=bf16)' --against adamw).
    #[arg(long)]
    against: Option<String>,
    /// Also time the same AdamW step through candle: gradlab's in-place bridge and candle-nn's
    /// own AdamW (one f32 tensor).
    #[arg(long)]
    candle: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Median ms per step of candle-nn's AdamW and of gradlab's bridge on one f32 tensor.
fn candle_comparison(n: usize, steps: usize) -> Result<(f64, f64)> {
    use candle_core::{Device, Tensor, Var};
    use candle_nn::Optimizer;
    let make = || -> Result<(Var, candle_core::backprop::GradStore)> {
        let v = Var::from_tensor(&Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?)?;
        let grads = (v.as_tensor() * 1e-3)?.sum_all()?.backward()?;
        Ok((v, grads))
    };
    let time = |step: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let mut t = Vec::new();
        for k in 0..steps + 2 {
            let t0 = Instant::now();
            step()?;
            if k >= 2 {
                t.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(median(t))
    };
    let (v, grads) = make()?;
    let mut theirs = candle_nn::AdamW::new(vec![v], candle_nn::ParamsAdamW::default())?;
    let candle_ms = time(&mut || Ok(theirs.step(&grads)?))?;
    let (v, grads) = make()?;
    let mut ours = gradlab_candle::GradlabOptimizer::with_names(
        vec![("w".into(), v)],
        &gradlab_candle::OptimizerConfig::new("adamw"),
    )?;
    let ours_ms = time(&mut || {
        ours.step_grads(&grads)?;
        Ok(())
    })?;
    Ok((candle_ms, ours_ms))
}

/// Runs the command on `threads` threads (the global `--threads`).
pub fn run(args: BenchArgs, threads: usize) -> Result<()> {
    if args.train {
        return train_bench(&args, threads);
    }
    let optimizer = args.optimizer.as_deref().unwrap_or("adam");
    if args.params == 0 {
        bail!("--params must be at least 1");
    }
    let mut specs = vec![optimizer];
    specs.extend(args.against.as_deref());
    let mut results: Vec<BenchResult> = match args.dtype.as_str() {
        "f32" => bench_together::<f32>(&specs, args.params, args.tensors, threads, args.steps)?,
        "f64" => bench_together::<f64>(&specs, args.params, args.tensors, threads, args.steps)?,
        other => bail!("--dtype '{other}' must be f32 or f64"),
    };
    let r = results.remove(0);
    let against = results.pop().map(|other| {
        let speedup = Speedup::of(&r, &other);
        (other, speedup)
    });
    let candle = if args.candle {
        Some(candle_comparison(args.params, args.steps.min(10))?)
    } else {
        None
    };
    if args.json {
        let mut v = result_json(&r);
        if let Some((c, g)) = candle {
            v["candle_nn_adamw_ms"] = json!(c);
            v["gradlab_candle_adamw_ms"] = json!(g);
        }
        if let Some((other, speedup)) = &against {
            v["against"] = result_json(other);
            v["speedup"] = json!({
                "median": speedup.median,
                "min": speedup.min,
                "max": speedup.max,
                "rounds": speedup.rounds,
            });
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_result(&r);
        if let Some((c, g)) = candle {
            println!("  candle-nn AdamW: {c:.2} ms/step; gradlab's AdamW on candle Vars: {g:.2} ms/step ({:.1}x)", c / g);
        }
        if let Some((other, s)) = &against {
            print_result(other);
            println!(
                "{} is {:.2}x as fast as {} (median of {} same-run rounds; range {:.2}-{:.2}x)",
                r.optimizer, s.median, other.optimizer, s.rounds, s.min, s.max
            );
        }
    }
    Ok(())
}

/// How many times faster one optimizer's steps were than another's, round by round.
struct Speedup {
    median: f64,
    min: f64,
    max: f64,
    rounds: usize,
}

impl Speedup {
    /// `slow`'s step time over `fast`'s, per round of [`bench_together`].
    fn of(fast: &BenchResult, slow: &BenchResult) -> Speedup {
        let ratios: Vec<f64> = fast
            .step_ms
            .iter()
            .zip(&slow.step_ms)
            .map(|(f, s)| s / f)
            .collect();
        Speedup {
            median: median(ratios.clone()),
            min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            max: ratios.iter().copied().fold(0.0, f64::max),
            rounds: ratios.len(),
        }
    }
}

/// A result as JSON.
fn result_json(r: &BenchResult) -> serde_json::Value {
    json!({
            "optimizer": r.optimizer,
            "params": r.params,
            "tensors": r.tensors,
            "dtype": r.dtype,
            "threads": r.threads,
            "ms_per_step": r.ms_per_step,
            "params_per_second": r.params_per_second,
            "bytes_per_param": r.bytes_per_param,
            "effective_gbps": r.effective_gbps,
            "roofline_gbps": r.roofline_gbps,
            "fraction_of_roofline": r.fraction_of_roofline,
            "roofline_kernel": r.roofline_kernel,
            "roofline_elements": r.roofline_elements,
            "step_ms": r.step_ms,
    })
}

/// A result as text.
fn print_result(r: &BenchResult) {
    println!(
        "{} on {} {} parameters in {} tensor(s), {} thread(s)",
        r.optimizer, r.params, r.dtype, r.tensors, r.threads
    );
    println!(
        "  {:.3} ms/step, {:.3e} params/s",
        r.ms_per_step, r.params_per_second
    );
    println!(
        "  {:.1} GB/s effective ({} bytes/param) of a {:.1} GB/s roofline: {:.0}%",
        r.effective_gbps,
        r.bytes_per_param,
        r.roofline_gbps,
        100.0 * r.fraction_of_roofline
    );
    println!(
        "  roofline: a[i] += s*b[i], the fastest of its variants here ({})",
        r.roofline_kernel
    );
}

/// `gradlab bench --train`: one epoch of the trainer, phase by phase.
fn train_bench(args: &BenchArgs, threads: usize) -> Result<()> {
    let optimizer = args.optimizer.as_deref().unwrap_or("adamw(lr=0.001)");
    let mut config = gradlab_candle::train::TrainConfig::new(
        args.model.spec()?,
        optimizer,
        std::path::Path::new("."),
    );
    config.batch_size = args.model.batch_size;
    config.seed = args.model.seed;
    config.data_dir = args.model.data.clone();
    config.train_limit = args.model.train_limit;
    let t = gradlab_candle::step_timing::time_epoch(&config, args.train_steps)?;
    let phases = |p: &gradlab_candle::step_timing::Phases| {
        json!({"data": p.data, "forward": p.forward, "backward": p.backward,
               "optimizer": p.optimizer, "total": p.total()})
    };
    if args.json {
        let v = json!({
            "model": args.model.model,
            "optimizer": optimizer,
            "batch_size": config.batch_size,
            "threads": threads,
            "steps": t.steps,
            "mean_ms": phases(&t.mean),
            "median_ms": phases(&t.median),
            "train_ms": t.train_ms,
            "eval_ms": t.eval_ms,
            "test_examples": t.test_examples,
            "train_loss": t.train_loss,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} with {optimizer}, batch {}, {threads} thread(s): {} steps in {:.0} ms, \
         evaluation of {} examples {:.0} ms",
        args.model.model, config.batch_size, t.steps, t.train_ms, t.test_examples, t.eval_ms
    );
    println!("  ms/step     data  forward backward optimizer   total");
    for (name, p) in [("mean", &t.mean), ("median", &t.median)] {
        println!(
            "  {name:<8} {:>7.3} {:>8.3} {:>8.3} {:>9.3} {:>7.3}",
            p.data,
            p.forward,
            p.backward,
            p.optimizer,
            p.total()
        );
    }
    Ok(())
}
