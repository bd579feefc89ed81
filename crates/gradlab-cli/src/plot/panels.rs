//! Figures of several panels: filled contours of several fields on one colour scale, and
//! small multiples of line charts sharing their y range, with legends beside the data.

use super::contours::{fill_bands, finite_or_top, isobands};
use super::{color, levels, ramp, tick, Field, Path2};
use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Filled contours of `panels` (title, field) side by side, all on one colour scale (log-scaled
/// when the values together span a large range), with the scale drawn at the right.
pub fn field_panels(path: &Path, title: &str, panels: &[(String, Field)]) -> Result<()> {
    if panels.is_empty() {
        anyhow::bail!("'{title}': no field to draw");
    }
    // Diverged points (infinite or NaN loss) take the largest finite value of all panels.
    let joined: Vec<f64> = panels
        .iter()
        .flat_map(|(_, f)| f.values.iter().copied())
        .collect();
    let mut all = finite_or_top(title, &joined)?;
    let raw = all.clone();
    let (thresholds, log) = levels(&mut all, 14);
    let mut svg = String::new();
    {
        let width = 300 * panels.len() as u32 + 110;
        let root = SVGBackend::with_string(&mut svg, (width, 380)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!("{title}{}", if log { " (log-scaled colours)" } else { "" });
        let root = root.titled(&caption, ("sans-serif", 18))?;
        let (plots, scale) = root.split_horizontally(width - 110);
        let areas = plots.split_evenly((1, panels.len()));
        let mut offset = 0;
        for ((name, field), area) in panels.iter().zip(&areas) {
            let n = field.values.len();
            contour_panel(area, name, field, &all[offset..offset + n], &thresholds)?;
            offset += n;
        }
        colour_scale(&scale, &thresholds, &raw, &all)?;
        root.present()?;
    }
    gradlab::io::write_atomic(path, svg.as_bytes())
        .with_context(|| format!("writing the plot {}", path.display()))
}

/// One panel's filled contours of `values` (already on the shared scale).
fn contour_panel(
    area: &Area,
    name: &str,
    field: &Field,
    values: &[f64],
    thresholds: &[f64],
) -> Result<()> {
    let bands = isobands(name, field, values, thresholds)?;
    let (nx, ny) = (field.xs.len(), field.ys.len());
    let (x0, x1, y0, y1) = (field.xs[0], field.xs[nx - 1], field.ys[0], field.ys[ny - 1]);
    let mut chart = ChartBuilder::on(area)
        .caption(name, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(40)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(field.labels.0)
        .y_desc(field.labels.1)
        .x_labels(5)
        .y_labels(5)
        .draw()?;
    fill_bands(&mut chart, &bands)?;
    Ok(())
}

/// The colour bar: each band's colour beside the value (in the original units) where it
/// starts.
fn colour_scale(area: &Area, thresholds: &[f64], raw: &[f64], scaled: &[f64]) -> Result<()> {
    let n_bands = thresholds.len().saturating_sub(1).max(1);
    let (_, h) = area.dim_in_pixel();
    let (top, bottom) = (40i32, h as i32 - 40);
    let step = (bottom - top) / n_bands as i32;
    // A scaled value back in original units: the raw value of the nearest scaled one.
    let original = |t: f64| -> f64 {
        scaled
            .iter()
            .zip(raw)
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .map_or(t, |p| *p.1)
    };
    for (k, threshold) in thresholds.iter().take(n_bands).enumerate() {
        let y = bottom - (k as i32 + 1) * step;
        area.draw(&Rectangle::new(
            [(10, y), (30, y + step)],
            ramp(k as f64 / n_bands as f64).filled(),
        ))?;
        if k % 2 == 0 {
            area.draw(&Text::new(
                three_digits(original(*threshold)),
                (36, y + step - 6),
                ("sans-serif", 12),
            ))?;
        }
    }
    area.draw(&Text::new("loss", (8, top - 24), ("sans-serif", 13)))?;
    Ok(())
}

/// `v` to three significant digits.
fn three_digits(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(0.01..1000.0).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = if a >= 100.0 {
            0
        } else if a >= 10.0 {
            1
        } else if a >= 1.0 {
            2
        } else {
            3
        };
        format!("{v:.decimals$}")
    }
}

/// One panel of [`small_multiples`].
pub struct Panel {
    /// Title.
    pub title: String,
    /// Series; the first `shared` are drawn in grey in every panel (the shared baseline).
    pub series: Vec<Path2>,
}

/// Small multiples: one line chart per panel in a grid of `cols` columns, all on the same x
/// and y ranges, each with its legend below its plot (never over the data). The first
/// `shared` series of each panel are the shared baseline, drawn grey and dashed-looking
/// (thin) so the panel's own series stand out.
pub fn small_multiples(
    path: &Path,
    title: &str,
    labels: (&str, &str),
    panels: &[Panel],
    cols: usize,
    shared: usize,
) -> Result<()> {
    let points = || {
        panels
            .iter()
            .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().copied()))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (x0, x1) = super::finite_range(points().map(|p| p.0)).context("nothing to plot")?;
    let (y0, y1) = super::finite_range(points().map(|p| p.1)).context("nothing to plot")?;
    let cols = cols.max(1);
    let rows = panels.len().div_ceil(cols);
    let most = panels.iter().map(|p| p.series.len()).max().unwrap_or(0) as u32;
    let legend_h = 16 * most + 10;
    let (panel_w, panel_h) = (430u32, 260 + legend_h);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(
            &mut svg,
            (panel_w * cols as u32, panel_h * rows as u32 + 40),
        )
        .into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 20))?;
        for (panel, area) in panels.iter().zip(root.split_evenly((rows, cols))) {
            let (plot, legend) = area.split_vertically(panel_h - legend_h);
            let mut chart = ChartBuilder::on(&plot)
                .caption(&panel.title, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(48)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .x_desc(labels.0)
                .y_desc(labels.1)
                .x_labels(5)
                .y_labels(5)
                .y_label_formatter(&tick)
                .draw()?;
            for (i, s) in panel.series.iter().enumerate() {
                let style = if i < shared {
                    RGBColor(150, 150, 150).stroke_width(1)
                } else {
                    color(i - shared).stroke_width(2)
                };
                let points: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                // A series of a few points (one per epoch) also gets a dot at each, so a
                // single point still shows.
                if points.len() <= 10 {
                    chart.draw_series(
                        points
                            .iter()
                            .map(|p| Circle::new(*p, 3, style.color.filled())),
                    )?;
                }
                chart.draw_series(LineSeries::new(points, style))?;
                let y = 4 + 16 * i as i32;
                legend.draw(&PathElement::new(vec![(56, y + 6), (80, y + 6)], style))?;
                legend.draw(&Text::new(s.label.clone(), (86, y), ("sans-serif", 12)))?;
            }
        }
        root.present()?;
    }
    gradlab::io::write_atomic(path, svg.as_bytes())
        .with_context(|| format!("writing the plot {}", path.display()))
}
