//! `gradlab lr-find`: the learning-rate range test.

use crate::csv::{num, Table};
use crate::plot::{self, LineChart, Path2};
use crate::surface_cmd::parse_point;
use anyhow::{bail, Context, Result};
use gradlab::optim::Options;
use gradlab::schedule::range_test::{Ramp, RangeTest, RangeTestResult};
use gradlab::spec;
use gradlab::surface::{replay, Surface};
use gradlab_candle::models::{ModelKind, ModelSpec};
use gradlab_candle::train::TrainConfig;
use std::path::{Path, PathBuf};

/// Arguments of `gradlab lr-find`.
#[derive(clap::Args, Debug)]
pub struct LrFindArgs {
    /// Run the test on this analytic surface (one optimizer step per iteration)...
    #[arg(long, conflicts_with = "model")]
    function: Option<String>,
    /// ...from this start point X,Y.
    #[arg(long, allow_hyphen_values = true, requires = "function")]
    start: Option<String>,
    /// ...or on a network (logreg, mlp, cnn): one training step per iteration.
    #[arg(long)]
    model: Option<String>,
    /// Hidden widths of the MLP.
    #[arg(long, default_value = "256,128", value_delimiter = ',')]
    widths: Vec<usize>,
    /// Examples per batch (networks).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Seed (networks).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A folder with full MNIST files (networks).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The optimizer whose learning rate is ramped.
    #[arg(long, default_value = "sgd(lr=0.001)")]
    optimizer: String,
    /// First learning rate.
    #[arg(long, default_value_t = 1e-7)]
    start_lr: f64,
    /// Last learning rate.
    #[arg(long, default_value_t = 10.0)]
    end_lr: f64,
    /// Iterations.
    #[arg(long, default_value_t = 100)]
    num_iter: usize,
    /// exp or linear ramp.
    #[arg(long, default_value = "exp")]
    mode: String,
    /// Write `iteration,lr,loss,smoothed_loss` here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Plot the smoothed loss against lr with the suggestions marked (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Writes a range test's CSV and plot, and prints the suggestions.
pub fn report(
    result: &RangeTestResult,
    title: &str,
    csv: Option<&Path>,
    plot_path: Option<&Path>,
) -> Result<()> {
    match result.steepest {
        Some(lr) => println!("suggested lr (steepest descent): {lr:.3e}"),
        None => println!("no suggestion: the test ran too few iterations"),
    }
    if let Some(lr) = result.valley {
        println!("fastai valley:                   {lr:.3e}");
    }
    if let Some(i) = result.diverged_at {
        println!("diverged at iteration {i} (lr {:.3e})", result.lrs[i]);
    }
    if let Some(path) = csv {
        let mut table = Table::new(&["iteration", "lr", "loss", "smoothed_loss"]);
        for i in 0..result.lrs.len() {
            table.row([
                i.to_string().as_str(),
                num(result.lrs[i]).as_str(),
                num(result.losses[i]).as_str(),
                num(result.smoothed[i]).as_str(),
            ]);
        }
        table.save(path)?;
    }
    if let Some(path) = plot_path {
        let mut markers = Vec::new();
        if let Some(lr) = result.steepest {
            markers.push((lr, format!("steepest {lr:.2e}")));
        }
        plot::line_chart(
            path,
            &LineChart {
                title,
                x_label: "learning rate",
                y_label: "smoothed loss",
                series: vec![Path2 {
                    label: "smoothed loss".into(),
                    points: result
                        .lrs
                        .iter()
                        .copied()
                        .zip(result.smoothed.iter().copied())
                        .collect(),
                }],
                log_x: true,
                secondary: None,
                markers,
                cap_blowup: true,
                bands: Vec::new(),
            },
        )?;
    }
    Ok(())
}

/// Runs the command.
pub fn run(args: LrFindArgs) -> Result<()> {
    let ramp = match args.mode.as_str() {
        "exp" => Ramp::Exponential,
        "linear" => Ramp::Linear,
        other => bail!("--mode '{other}' must be exp or linear"),
    };
    let test = RangeTest {
        start_lr: args.start_lr,
        end_lr: args.end_lr,
        num_iter: args.num_iter,
        ramp,
        ..RangeTest::default()
    };
    if let Some(model) = &args.model {
        let mut spec = ModelSpec::new(model.parse::<ModelKind>()?);
        spec.widths = args.widths.clone();
        let mut config = TrainConfig::new(spec, &args.optimizer, std::path::Path::new("."));
        config.batch_size = args.batch_size;
        config.seed = args.seed;
        config.data_dir = args.data.clone();
        let result = gradlab_candle::train::lr_find(&config, &test)?;
        let title = format!("LR range test: {} on {model}", args.optimizer);
        return report(&result, &title, args.csv.as_deref(), args.plot.as_deref());
    }
    let (Some(function), Some(start)) = (&args.function, &args.start) else {
        bail!("give --model, or --function with --start=X,Y");
    };
    let surface: Surface = function.parse()?;
    let mut xy = parse_point(start, "--start")?;
    let spec = spec::parse(&args.optimizer)
        .with_context(|| format!("--optimizer {}", gradlab::error::quote(&args.optimizer)))?;
    let mut opt = replay::optimizer_for_surface(&spec, Options::default())
        .with_context(|| format!("--optimizer {}", gradlab::error::quote(&args.optimizer)))?;
    let result = test.run(|lr| {
        opt.set_lr_all(lr);
        let loss = surface.value(xy[0], xy[1]);
        let g = surface.gradient(xy[0], xy[1]);
        if loss.is_finite() && g.iter().all(|v| v.is_finite()) {
            replay::step_once(surface, opt.as_mut(), &mut xy)?;
        }
        Ok(loss)
    })?;
    let title = format!("LR range test: {} on {}", args.optimizer, surface.name());
    report(&result, &title, args.csv.as_deref(), args.plot.as_deref())
}
