//! `gradlab critical`: classify a point of a surface, or find every critical point in a box.

use crate::plot::{self, Marker, Path2};
use crate::surface_cmd::parse_point;
use anyhow::{bail, Context, Result};
use gradlab::landscape::critical::{analyze, Analysis, CriticalOptions, Kind};
use gradlab::landscape::{SurfaceHessian, SurfaceObjective};
use gradlab::surface::{critical_points, Surface};
use plotters::style::RGBColor;
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `gradlab critical`.
#[derive(clap::Args, Debug)]
pub struct CriticalArgs {
    /// The surface.
    #[arg(long)]
    function: String,
    /// Analyse this point X,Y.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "scan")]
    at: Option<String>,
    /// Find every critical point in XMIN,XMAX,YMIN,YMAX.
    #[arg(long, allow_hyphen_values = true)]
    scan: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Draw the points on the surface's contour plot (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub(crate) fn to_json(at: [f64; 2], a: &Analysis) -> serde_json::Value {
    let mut v = json!({
        "at": at,
        "loss": a.loss,
        "gradient_norm": a.gradient_norm,
        "eigenvalues": a.eigenvalues,
        "kind": a.kind.to_string(),
        "minimum_ratio": a.minimum_ratio,
    });
    if let Some(e) = &a.escape {
        v["escape_direction"] = json!(e.direction);
        v["escape_step"] = json!(e.step);
        v["loss_after_escape"] = json!(e.loss_after);
    }
    v
}

fn describe(at: [f64; 2], a: &Analysis) -> String {
    let mut s = format!(
        "({:>10.6}, {:>10.6})  {:<12}  loss {:<12.6}  |grad| {:<10.3e}  eigenvalues [{}]  minimum ratio {}",
        at[0],
        at[1],
        a.kind.to_string(),
        a.loss,
        a.gradient_norm,
        a.eigenvalues.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(", "),
        a.minimum_ratio
    );
    if let Some(e) = &a.escape {
        s.push_str(&format!(
            "\n    escape along ({:.6}, {:.6}) (eigenvalue {:.4})",
            e.direction[0], e.direction[1], e.eigenvalue
        ));
        if let (Some(t), Some(l)) = (e.step, e.loss_after) {
            s.push_str(&format!(": a step of {t:.4} lowers the loss to {l:.6}"));
        }
    }
    s
}

fn parse_box(text: &str) -> Result<[f64; 4]> {
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect::<Option<Vec<_>>>()
        .with_context(|| format!("--scan '{text}' must be four numbers XMIN,XMAX,YMIN,YMAX"))?;
    if parts.len() != 4 {
        bail!("--scan '{text}' must be four numbers XMIN,XMAX,YMIN,YMAX");
    }
    if parts[0] >= parts[1] || parts[2] >= parts[3] {
        bail!("--scan '{text}': need XMIN < XMAX and YMIN < YMAX");
    }
    Ok([parts[0], parts[1], parts[2], parts[3]])
}

fn kind_color(k: Kind) -> RGBColor {
    match k {
        Kind::Minimum => RGBColor(0, 158, 115),
        Kind::Maximum => RGBColor(213, 94, 0),
        Kind::Saddle => RGBColor(204, 121, 167),
        _ => RGBColor(80, 80, 80),
    }
}

/// Runs the command.
pub fn run(args: CriticalArgs) -> Result<()> {
    let surface: Surface = args.function.parse()?;
    let opts = CriticalOptions::default();
    let points: Vec<([f64; 2], Analysis)> = match (&args.at, &args.scan) {
        (Some(at), None) => {
            let at = parse_point(at, "--at")?;
            let mut op = SurfaceHessian { surface, at };
            let mut obj = SurfaceObjective(surface);
            vec![(at, analyze(&mut op, Some(&mut obj), &at, &opts)?)]
        }
        (None, Some(scan)) => critical_points::scan(surface, parse_box(scan)?, &opts)?
            .into_iter()
            .map(|p| (p.at, p.analysis))
            .collect(),
        _ => bail!("give --at=X,Y or --scan XMIN,XMAX,YMIN,YMAX"),
    };
    if args.json {
        let value = if args.at.is_some() {
            to_json(points[0].0, &points[0].1)
        } else {
            json!(points
                .iter()
                .map(|(at, a)| to_json(*at, a))
                .collect::<Vec<_>>())
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        if args.scan.is_some() {
            println!("{} critical points of {}:", points.len(), surface.name());
        }
        for (at, a) in &points {
            println!("{}", describe(*at, a));
        }
    }
    if let Some(path) = &args.plot {
        let markers: Vec<Marker> = points
            .iter()
            .map(|(at, a)| Marker {
                label: format!("{} ({:.2}, {:.2})", a.kind, at[0], at[1]),
                at: (at[0], at[1]),
                color: kind_color(a.kind),
            })
            .collect();
        let escapes: Vec<Path2> = points
            .iter()
            .filter_map(|(at, a)| {
                let e = a.escape.as_ref()?;
                let t = e.step.unwrap_or(0.5);
                Some(Path2 {
                    label: format!("escape from ({:.2}, {:.2})", at[0], at[1]),
                    points: vec![
                        (at[0], at[1]),
                        (at[0] + t * e.direction[0], at[1] + t * e.direction[1]),
                    ],
                })
            })
            .collect();
        let title = format!("critical points of {}", surface.name());
        plot::surface_plot(
            path,
            &gradlab::surface::Function::Builtin(surface),
            &title,
            &escapes,
            &markers,
            false,
        )?;
    }
    Ok(())
}
