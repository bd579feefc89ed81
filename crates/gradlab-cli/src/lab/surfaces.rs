//! Study: optimizers on the analytic error surfaces.

use super::report::{esc, Figure, Section};
use crate::csv::{num, Table};
use crate::plot::{self, Marker, Path2};
use anyhow::Result;
use gradlab::optim::Options;
use gradlab::spec;
use gradlab::surface::{replay, Surface};
use std::path::Path;

/// The learning-rate grid every optimizer is tuned on, on every surface: half-decades from
/// 1e-4 to 1.
const GRID: [f64; 9] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0];

/// `template` (a spec without `lr`) at the rate of [`GRID`] with the lowest final loss on
/// `surface` after `steps` steps from `start` (a run that diverges counts as infinite).
fn tuned(surface: Surface, start: [f64; 2], template: &str, steps: u64) -> Result<String> {
    let base = spec::parse(template)?;
    let mut best = (f64::INFINITY, None);
    for lr in GRID {
        let mut candidate = base.clone();
        candidate.args.retain(|(k, _)| k.as_deref() != Some("lr"));
        candidate
            .args
            .insert(0, (Some("lr".into()), spec::Value::Num(lr)));
        let mut opt = replay::optimizer_for_surface(&candidate, Options::default())?;
        let t = replay::run(surface, start, opt.as_mut(), steps, |_, _| Ok(()));
        let loss = match (&t.stopped, t.rows.last()) {
            (None, Some(last)) if last.loss.is_finite() => last.loss,
            _ => f64::INFINITY,
        };
        if loss < best.0 {
            best = (loss, Some(candidate));
        }
    }
    Ok(best.1.unwrap_or(base).to_string())
}

/// Runs optimizers on a surface, each at its best rate of [`GRID`]; the figure, CSV and one
/// line per optimizer.
#[allow(clippy::too_many_arguments)]
fn surface_figure(
    out: &Path,
    surface: Surface,
    start: [f64; 2],
    templates: &[&str],
    steps: u64,
    caption: &str,
    markers: Vec<Marker>,
    extra: Vec<Path2>,
) -> Result<(Figure, Vec<String>, String)> {
    let mut paths = Vec::new();
    let mut lines = Vec::new();
    let mut csv = Table::new(&["optimizer", "step", "x", "y", "loss"]);
    let specs = templates
        .iter()
        .map(|t| tuned(surface, start, t, steps))
        .collect::<Result<Vec<String>>>()?;
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    for s in &specs {
        let spec = spec::parse(s)?;
        let mut opt = replay::optimizer_for_surface(&spec, Options::default())?;
        let t = replay::run(surface, start, opt.as_mut(), steps, |_, _| Ok(()));
        for r in &t.rows {
            csv.row([
                *s,
                r.step.to_string().as_str(),
                num(r.x).as_str(),
                num(r.y).as_str(),
                num(r.loss).as_str(),
            ]);
        }
        let last = t.rows.last().expect("start row");
        lines.push(match &t.stopped {
            Some(_) => format!(
                "<code>{}</code> diverged after {} steps",
                esc(s),
                t.rows.len() - 1
            ),
            None => format!(
                "<code>{}</code> ended at ({:.3}, {:.3}) with loss {:.3e}",
                esc(s),
                last.x,
                last.y,
                last.loss
            ),
        });
        paths.push(Path2 {
            label: s.to_string(),
            points: t.rows.iter().map(|r| (r.x, r.y)).collect(),
        });
    }
    paths.extend(extra);
    let name = surface.name();
    csv.save(&out.join(format!("data/surface_{name}.csv")))?;
    let svg = out.join(format!("data/surface_{name}.svg"));
    plot::surface_plot(
        &svg,
        &gradlab::surface::Function::Builtin(surface),
        &format!("{name}: {steps} steps from ({}, {})", start[0], start[1]),
        &paths,
        &markers,
        true,
    )?;
    let command = format!(
        "gradlab surface --function {name} --start={},{} --steps {steps} {} --plot {name}.svg",
        start[0],
        start[1],
        specs
            .iter()
            .map(|s| format!("--optimizer '{s}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok((
        Figure {
            svg,
            caption: caption.to_string(),
            data: vec![format!("data/surface_{name}.csv")],
        },
        lines,
        command,
    ))
}

/// Study 5: the error surfaces.
pub fn surfaces(out: &Path) -> Result<Section> {
    let mut figures = Vec::new();
    let mut summary = Vec::new();
    let mut commands = Vec::new();
    // (surface, start, optimizers, steps, caption)
    type Case<'a> = (Surface, [f64; 2], Vec<&'a str>, u64, &'a str);
    let cases: Vec<Case> = vec![
        (Surface::Rosenbrock, [-1.5, 2.0], vec!["sgd(momentum=0.9)", "adam", "rmsprop", "lion"], 500, "Rosenbrock's curved valley: the minimum (1, 1) lies at the end of a long, nearly flat valley."),
        (Surface::Himmelblau, [0.0, 0.0], vec!["sgd", "sgd(momentum=0.9)", "adam", "adagrad"], 200, "Himmelblau's four minima: which one an optimizer reaches depends on its path."),
        (Surface::Bowl, [-8.0, 1.0], vec!["sgd", "sgd(momentum=0.9)", "adagrad", "adam"], 200, "A convex bowl with condition number 100: the largest rate that is stable along the steep direction crawls along the flat one; adaptive ones rescale each coordinate."),
    ];
    summary.push(format!(
        "Every optimizer runs at the rate of one grid ({}) with the lowest final loss on that surface, so the paths compare optimizers, not hand-picked rates.",
        GRID.iter().map(|l| spec::format_number(*l)).collect::<Vec<_>>().join(", ")
    ));
    for (surface, start, specs, steps, caption) in cases {
        let (fig, lines, cmd) = surface_figure(
            out,
            surface,
            start,
            &specs,
            steps,
            caption,
            Vec::new(),
            Vec::new(),
        )?;
        summary.push(format!("{}: {}.", surface.name(), lines.join("; ")));
        figures.push(fig);
        commands.push(cmd);
    }
    Ok(Section {
        id: "surfaces",
        title: "Error surfaces".into(),
        summary,
        table: None,
        figures,
        commands,
        claims: Vec::new(),
    })
}
