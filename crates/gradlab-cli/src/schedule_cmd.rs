//! `gradlab schedule`: a schedule's learning rate and momentum, step by step.

use crate::csv::{num, Table};
use crate::plot::{self, LineChart, Path2};
use anyhow::{bail, Context, Result};
use gradlab::optim::{self, Layout, Options};
use gradlab::schedule::Scheduler;
use std::path::PathBuf;

/// Arguments of `gradlab schedule`.
#[derive(clap::Args, Debug)]
pub struct ScheduleArgs {
    /// A schedule spec such as 'onecycle(max_lr=0.1, total_steps=100)'.
    #[arg(long)]
    schedule: String,
    /// The optimizer the schedule drives (its lr is the base lr; momentum or beta1 is cycled
    /// by cyclic and onecycle).
    #[arg(long, default_value = "sgd(lr=0.1, momentum=0.9)")]
    optimizer: String,
    /// Number of optimizer steps.
    #[arg(long)]
    steps: u64,
    /// Write `step,lr,momentum` here: row k holds what optimizer step k+1 uses.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Plot lr (and momentum on a second axis) here (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// The lr and momentum of each of `steps` steps.
pub fn trace(schedule: &str, optimizer: &str, steps: u64) -> Result<Vec<(f64, Option<f64>)>> {
    let mut opt = optim::build::<f64>(optimizer, Layout::single("w", 1), &[], Options::default())
        .with_context(|| format!("--optimizer {}", gradlab::error::quote(optimizer)))?;
    let mut sched = Scheduler::new(schedule, opt.as_mut())
        .with_context(|| format!("--schedule {}", gradlab::error::quote(schedule)))?;
    if sched.needs_metric() {
        bail!("--schedule {} is driven by a metric (e.g. the validation loss), so it has no fixed course to print; use it with 'gradlab train'", gradlab::error::quote(schedule));
    }
    let mut out = Vec::with_capacity(steps as usize);
    for k in 0..steps {
        out.push((opt.lr(0), opt.momentum(0)));
        if k + 1 < steps {
            sched.step(opt.as_mut()).with_context(|| {
                format!(
                    "--schedule {} at step {}",
                    gradlab::error::quote(schedule),
                    k + 2
                )
            })?;
        }
    }
    Ok(out)
}

/// Runs the command.
pub fn run(args: ScheduleArgs) -> Result<()> {
    let values = trace(&args.schedule, &args.optimizer, args.steps)?;
    if let Some(path) = &args.csv {
        let mut table = Table::new(&["step", "lr", "momentum"]);
        for (k, (lr, m)) in values.iter().enumerate() {
            let m = m.map(num).unwrap_or_default();
            table.row([k.to_string().as_str(), num(*lr).as_str(), m.as_str()]);
        }
        table.save(path)?;
    }
    if let Some(path) = &args.plot {
        let lr = Path2 {
            label: "learning rate".into(),
            points: values
                .iter()
                .enumerate()
                .map(|(k, (lr, _))| ((k + 1) as f64, *lr))
                .collect(),
        };
        let momentum = values.iter().all(|(_, m)| m.is_some()).then(|| {
            (
                "momentum / beta1".to_string(),
                Path2 {
                    label: "momentum".into(),
                    points: values
                        .iter()
                        .enumerate()
                        .map(|(k, (_, m))| ((k + 1) as f64, m.unwrap_or(f64::NAN)))
                        .collect(),
                },
            )
        });
        let title = format!("{} on {}", args.schedule, args.optimizer);
        plot::line_chart(
            path,
            &LineChart {
                title: &title,
                x_label: "optimizer step",
                y_label: "learning rate",
                series: vec![lr],
                log_x: false,
                secondary: momentum,
                markers: Vec::new(),
                cap_blowup: false,
                bands: Vec::new(),
            },
        )?;
    }
    if args.csv.is_none() && args.plot.is_none() {
        for (k, (lr, m)) in values.iter().enumerate() {
            println!(
                "{:>6}  lr {:<24}  momentum {}",
                k + 1,
                num(*lr),
                m.map(num).unwrap_or_else(|| "-".into())
            );
        }
    }
    Ok(())
}
