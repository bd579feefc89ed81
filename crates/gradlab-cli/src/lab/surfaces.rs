//! Study: optimizers on the analytic error surfaces.

use super::report::{esc, Figure, Section};
use crate::csv::{num, Table};
use crate::plot::{self, Marker, Path2};
use anyhow::Result;
use gradlab::optim::Options;
use gradlab::spec;
use gradlab::surface::{replay, Surface};
use std::path::Path;

/// Runs optimizers on a surface; the figure, CSV and one line per optimizer.
#[allow(clippy::too_many_arguments)]
fn surface_figure(
    out: &Path,
    surface: Surface,
    start: [f64; 2],
    specs: &[&str],
    steps: u64,
    caption: &str,
    markers: Vec<Marker>,
    extra: Vec<Path2>,
) -> Result<(Figure, Vec<String>, String)> {
    let mut paths = Vec::new();
    let mut lines = Vec::new();
    let mut csv = Table::new(&["optimizer", "step", "x", "y", "loss"]);
    for s in specs {
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
        (Surface::Rosenbrock, [-1.5, 2.0], vec!["sgd(lr=0.0005, momentum=0.9)", "adam(lr=0.02)", "rmsprop(lr=0.01)", "lion(lr=0.005)"], 500, "Rosenbrock's curved valley: the minimum (1, 1) lies at the end of a long, nearly flat valley."),
        (Surface::Himmelblau, [0.0, 0.0], vec!["sgd(lr=0.01)", "sgd(lr=0.01, momentum=0.9)", "adam(lr=0.1)", "adagrad(lr=0.5)"], 200, "Himmelblau's four minima: which one an optimizer reaches depends on its path."),
        (Surface::Bowl, [-8.0, 1.0], vec!["sgd(lr=0.19)", "sgd(lr=0.05)", "adagrad(lr=0.5)", "adam(lr=0.1)"], 200, "A convex bowl with condition number 100: a fixed learning rate small enough for the steep direction crawls along the flat one; adaptive ones rescale each coordinate."),
    ];
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
