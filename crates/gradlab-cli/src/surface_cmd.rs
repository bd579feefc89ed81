//! `gradlab surface`: optimizers on an analytic surface.

use crate::csv::{num, Table};
use crate::plot::{self, Path2};
use anyhow::{bail, Context, Result};
use gradlab::optim::Options;
use gradlab::spec;
use gradlab::surface::replay::{self, GradientNoise};
use gradlab::surface::Function;
use std::path::PathBuf;

/// Arguments of `gradlab surface`.
#[derive(clap::Args, Debug)]
pub struct SurfaceArgs {
    /// The surface: rosenbrock, beale, himmelblau, booth, product, monkey, bowl, rastrigin.
    #[arg(
        long,
        required_unless_present = "expression",
        conflicts_with = "expression"
    )]
    function: Option<String>,
    /// A surface of your own: an expression in x and y such as '(1 - x)^2 + 3*(y - x^2)^2'
    /// (+ - * / ^, sin cos tan exp ln sqrt abs tanh sinh cosh atan, pi, e), differentiated
    /// exactly.
    #[arg(long, allow_hyphen_values = true)]
    expression: Option<String>,
    /// Start point as X,Y (write --start=-1.5,2 when X is negative).
    #[arg(long, allow_hyphen_values = true)]
    start: String,
    /// An optimizer spec such as 'adam(lr=0.02)'; repeat to compare several.
    #[arg(long = "optimizer", required = true)]
    optimizers: Vec<String>,
    /// Number of optimizer steps.
    #[arg(long)]
    steps: u64,
    /// A schedule spec such as 'cosine(t_max=200)', stepped after every optimizer step.
    #[arg(long)]
    schedule: Option<String>,
    /// Gaussian noise of this standard deviation added to every gradient (a small batch's
    /// gradient, emulated).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// Seed of the gradient noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the trajectories here (columns step,x,y,loss,lr; with several optimizers an
    /// extra first column optimizer).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the contour plot with every path here (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Parses `X,Y`.
pub fn parse_point(text: &str, what: &str) -> Result<[f64; 2]> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() != 2 {
        bail!("{what} '{text}' must be two numbers X,Y");
    }
    let mut out = [0.0; 2];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = p
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .with_context(|| format!("{what} '{text}': '{p}' is not a finite number"))?;
    }
    Ok(out)
}

/// Runs the command.
pub fn run(args: SurfaceArgs) -> Result<()> {
    let surface =
        Function::from_name_or_expression(args.function.as_deref(), args.expression.as_deref())?;
    let start = parse_point(&args.start, "--start")?;
    let specs = args
        .optimizers
        .iter()
        .map(|s| {
            spec::parse(s).with_context(|| format!("--optimizer {}", gradlab::error::quote(s)))
        })
        .collect::<Result<Vec<_>>>()?;
    let schedule = args
        .schedule
        .as_deref()
        .map(|s| spec::parse(s).with_context(|| format!("--schedule {}", gradlab::error::quote(s))))
        .transpose()?;
    let mut runs = Vec::new();
    for (text, spec) in args.optimizers.iter().zip(&specs) {
        let mut opt = replay::optimizer_for_surface(spec, Options::default())
            .with_context(|| format!("--optimizer {}", gradlab::error::quote(text)))?;
        let mut noise = GradientNoise::new(args.noise, args.seed).context("--noise")?;
        let traj = replay::run_scheduled_observed(
            &surface,
            start,
            opt.as_mut(),
            args.steps,
            schedule.as_ref(),
            Some(&mut noise),
            |_, _| {},
        )
        .with_context(|| {
            format!(
                "--schedule '{}'",
                args.schedule.as_deref().unwrap_or_default()
            )
        })?;
        if let Some(e) = &traj.stopped {
            eprintln!(
                "warning: {text} stopped after {} of {} steps: {e}",
                traj.rows.len() - 1,
                args.steps
            );
        }
        let last = traj.rows.last().expect("a trajectory has its start row");
        println!(
            "{:<40} step {:>6}  x {:>12.6}  y {:>12.6}  loss {:.6e}",
            text, last.step, last.x, last.y, last.loss
        );
        runs.push((text.clone(), traj));
    }
    if let Some(path) = &args.csv {
        let several = runs.len() > 1;
        let mut header = vec!["step", "x", "y", "loss", "lr"];
        if several {
            header.insert(0, "optimizer");
        }
        let mut table = Table::new(&header);
        for (text, traj) in &runs {
            for r in &traj.rows {
                let mut cells = vec![
                    r.step.to_string(),
                    num(r.x),
                    num(r.y),
                    num(r.loss),
                    num(r.lr),
                ];
                if several {
                    cells.insert(0, text.clone());
                }
                table.row(cells.iter().map(String::as_str));
            }
        }
        table.save(path)?;
    }
    if let Some(path) = &args.plot {
        let paths: Vec<Path2> = runs
            .iter()
            .map(|(label, t)| Path2 {
                label: label.clone(),
                points: t.rows.iter().map(|r| (r.x, r.y)).collect(),
            })
            .collect();
        let title = format!(
            "{} from ({}, {}), {} steps",
            surface.label(),
            start[0],
            start[1],
            args.steps
        );
        plot::surface_plot(path, &surface, &title, &paths, &[], true)?;
    }
    Ok(())
}
