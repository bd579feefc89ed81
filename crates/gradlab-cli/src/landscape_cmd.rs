//! `gradlab landscape`: loss slices around a trained network.

use crate::csv::{num, Table};
use crate::plot::{self, Field, LineChart, Path2};
use anyhow::{Context, Result};
use gradlab_candle::landscape::{landscape, Curve, LandscapeOptions};
use std::path::{Path, PathBuf};

/// Arguments of `gradlab landscape`.
#[derive(clap::Args, Debug)]
pub struct LandscapeArgs {
    /// The training output folder to slice around.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Also interpolate to this checkpoint (α from -0.5 to 1.5).
    #[arg(long)]
    to: Option<PathBuf>,
    /// Slices reach ±span along each filter-normalised direction.
    #[arg(long, default_value_t = 1.0)]
    span: f64,
    /// Points per axis.
    #[arg(long, default_value_t = 21)]
    points: usize,
    /// Examples the loss is averaged over.
    #[arg(long, default_value_t = 1000)]
    examples: usize,
    /// Seed of the random directions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A folder with full MNIST files (default: the bundled digits).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The loss in training mode: batch norm normalises each batch with its own statistics
    /// (the loss the optimizer descends) instead of its running statistics.
    #[arg(long)]
    training_mode: bool,
    /// Output folder for the CSV and SVG files.
    #[arg(long)]
    out: PathBuf,
}

/// Writes a curve's CSV and plot.
pub fn write_curve(
    curve: &Curve,
    out: &Path,
    name: &str,
    title: &str,
    x_label: &str,
) -> Result<()> {
    let mut t = Table::new(&["alpha", "train_loss", "test_loss"]);
    for i in 0..curve.alphas.len() {
        t.row([
            num(curve.alphas[i]).as_str(),
            num(curve.train[i]).as_str(),
            num(curve.test[i]).as_str(),
        ]);
    }
    t.save(&out.join(format!("{name}.csv")))?;
    let series = |label: &str, ys: &[f64]| Path2 {
        label: label.into(),
        points: curve
            .alphas
            .iter()
            .copied()
            .zip(ys.iter().copied())
            .collect(),
    };
    plot::line_chart(
        &out.join(format!("{name}.svg")),
        &LineChart {
            title,
            x_label,
            y_label: "loss",
            series: vec![
                series("train loss", &curve.train),
                series("test loss", &curve.test),
            ],
            log_x: false,
            secondary: None,
            markers: Vec::new(),
            cap_blowup: false,
            bands: Vec::new(),
        },
    )
}

/// Runs the command.
pub fn run(args: LandscapeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let opts = LandscapeOptions {
        span: args.span,
        points: args.points,
        examples: args.examples,
        seed: args.seed,
        data_dir: args.data.clone(),
        training_mode: args.training_mode,
    };
    let l = landscape(&args.checkpoint, args.to.as_deref(), &opts)
        .with_context(|| format!("--checkpoint {}", args.checkpoint.display()))?;
    write_curve(
        &l.slice_1d,
        &args.out,
        "slice_1d",
        "loss along a filter-normalised direction",
        "α",
    )?;
    gradlab::io::write_atomic(
        &args.out.join("slice_2d.csv"),
        l.slice_2d.to_csv().as_bytes(),
    )?;
    let field = Field {
        labels: ("α (direction 1)", "β (direction 2)"),
        xs: l.slice_2d.xs.clone(),
        ys: l.slice_2d.ys.clone(),
        values: l.slice_2d.values.iter().flatten().copied().collect(),
        minima: vec![[0.0, 0.0]],
    };
    plot::field_plot(
        &args.out.join("slice_2d.svg"),
        &field,
        "training loss on a filter-normalised plane",
        &[],
        &[],
        false,
    )?;
    if let Some(curve) = &l.interpolation {
        write_curve(
            curve,
            &args.out,
            "interpolation",
            "loss on the line between two solutions",
            "α (0: first, 1: second)",
        )?;
    }
    let centre = l.slice_1d.alphas.len() / 2;
    println!(
        "loss at the checkpoint {:.4}; at ±{} along a direction: {:.4} / {:.4}; files in {}",
        l.slice_1d.train[centre],
        args.span,
        l.slice_1d.train[0],
        l.slice_1d.train[l.slice_1d.train.len() - 1],
        args.out.display()
    );
    Ok(())
}
