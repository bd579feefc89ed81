//! Filled contour plots: a surface or any field of values on a grid, with paths, minima and
//! markers on top.

use super::{color, Marker, Path2};
use anyhow::{Context, Result};
use gradlab::surface::{Function, SurfaceFunction};
use plotters::prelude::*;
use std::path::Path;

/// A perceptually ordered color ramp (light to dark blue-grey), for filled contours that
/// stay behind the colored paths.
pub(super) fn ramp(t: f64) -> RGBColor {
    let anchors = [
        (0.0, (247.0, 251.0, 255.0)),
        (0.35, (198.0, 219.0, 239.0)),
        (0.65, (107.0, 174.0, 214.0)),
        (1.0, (33.0, 81.0, 140.0)),
    ];
    let t = t.clamp(0.0, 1.0);
    let i = anchors
        .iter()
        .rposition(|(s, _)| *s <= t)
        .unwrap_or(0)
        .min(anchors.len() - 2);
    let (s0, c0) = anchors[i];
    let (s1, c1) = anchors[i + 1];
    let u = (t - s0) / (s1 - s0);
    let mix = |a: f64, b: f64| (a + (b - a) * u).round() as u8;
    RGBColor(mix(c0.0, c1.0), mix(c0.1, c1.1), mix(c0.2, c1.2))
}

/// The plotting box: the surface's default box, grown (at most threefold) to hold the paths.
fn plot_box(surface: &Function, paths: &[Path2]) -> [f64; 4] {
    let [mut x0, mut x1, mut y0, mut y1] = surface.default_box();
    let (w, h) = (x1 - x0, y1 - y0);
    let limit = [x0 - w, x1 + w, y0 - h, y1 + h];
    for (x, y) in paths.iter().flat_map(|p| p.points.iter()) {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(*x).max(limit[0]);
            x1 = x1.max(*x).min(limit[1]);
            y0 = y0.min(*y).max(limit[2]);
            y1 = y1.max(*y).min(limit[3]);
        }
    }
    [x0, x1, y0, y1]
}

/// `n ≥ 2` evenly spaced points from `a` to `b`.
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
}

/// Grid values and contour thresholds; log-scaled when the values span a large range.
pub fn levels(values: &mut [f64], bands: usize) -> (Vec<f64>, bool) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let log = hi - lo > 10.0 * (median - lo + 1e-300);
    if log {
        let shift = (hi - lo) * 1e-5 + 1e-12;
        for v in values.iter_mut() {
            *v = (*v - lo + shift).ln();
        }
    }
    let lo2 = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi2 = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let step = (hi2 - lo2) / bands as f64;
    let thresholds = (0..=bands)
        .map(|i| lo2 + step * i as f64)
        .map(|t| if t == hi2 { hi2 + step * 1e-6 } else { t })
        .collect();
    (thresholds, log)
}

/// Turns a polygon with holes into one ring (a "keyhole" joining each hole to the outer
/// ring), so that a plain SVG polygon shows the holes.
pub(super) fn keyhole(poly: &geo_types::Polygon<f64>) -> Vec<(f64, f64)> {
    let mut ring: Vec<(f64, f64)> = poly.exterior().0.iter().map(|c| (c.x, c.y)).collect();
    let anchor = ring.first().copied();
    for hole in poly.interiors() {
        let pts: Vec<(f64, f64)> = hole.0.iter().map(|c| (c.x, c.y)).collect();
        if let (Some(a), Some(h0)) = (anchor, pts.first().copied()) {
            ring.extend(pts);
            ring.push(h0);
            ring.push(a);
        }
    }
    ring
}

/// A field of values on a regular grid: `values[j * xs.len() + i]` at `(xs[i], ys[j])`.
pub struct Field<'a> {
    /// Axis names.
    pub labels: (&'a str, &'a str),
    /// Grid coordinates along x (evenly spaced).
    pub xs: Vec<f64>,
    /// Grid coordinates along y (evenly spaced).
    pub ys: Vec<f64>,
    /// Values, row by row.
    pub values: Vec<f64>,
    /// Points marked as minima.
    pub minima: Vec<[f64; 2]>,
}

/// Draws filled contours of `surface` (built-in or typed), the paths (their common start marked when
/// `mark_start`), the known minima, and the markers on top.
pub fn surface_plot(
    path: &Path,
    surface: &Function,
    title: &str,
    paths: &[Path2],
    markers: &[Marker],
    mark_start: bool,
) -> Result<()> {
    let [x0, x1, y0, y1] = plot_box(surface, paths);
    let (nx, ny) = (160usize, 140usize);
    let (xs, ys) = (linspace(x0, x1, nx), linspace(y0, y1, ny));
    let values = ys
        .iter()
        .flat_map(|y| xs.iter().map(move |x| surface.value(*x, *y)))
        .collect();
    let field = Field {
        labels: ("x", "y"),
        xs,
        ys,
        values,
        minima: match surface {
            Function::Builtin(s) => s.minima(),
            Function::Typed(_) => Vec::new(),
        },
    };
    field_plot(path, &field, title, paths, markers, mark_start)
}

/// Draws filled contours of a [`Field`] (log-scaled levels when the values span a large
/// range), the paths, the field's minima and the markers.
pub fn field_plot(
    path: &Path,
    field: &Field,
    title: &str,
    paths: &[Path2],
    markers: &[Marker],
    mark_start: bool,
) -> Result<()> {
    let (nx, ny) = (field.xs.len(), field.ys.len());
    let mut values = finite_or_top(title, &field.values)?;
    let (thresholds, log) = levels(&mut values, 14);
    let bands = isobands(title, field, &values, &thresholds)?;
    let (x0, x1, y0, y1) = (field.xs[0], field.xs[nx - 1], field.ys[0], field.ys[ny - 1]);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 720)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!("{title}{}", if log { " (log-scaled contours)" } else { "" });
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(field.labels.0)
            .y_desc(field.labels.1)
            .draw()?;
        fill_bands(&mut chart, &bands)?;
        for (i, p) in paths.iter().enumerate() {
            let color = color(i);
            let pts: Vec<(f64, f64)> = p
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| (x.clamp(x0, x1), y.clamp(y0, y1)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(p.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            if let Some(end) = pts.last() {
                chart.draw_series(std::iter::once(Circle::new(*end, 4, color.filled())))?;
            }
        }
        if let Some(start) = paths
            .first()
            .and_then(|p| p.points.first())
            .filter(|_| mark_start)
        {
            chart
                .draw_series(std::iter::once(Circle::new(*start, 6, BLACK.filled())))?
                .label("start")
                .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.filled()));
        }
        let minima = &field.minima;
        if !minima.is_empty() {
            chart
                .draw_series(
                    minima
                        .iter()
                        .map(|m| Cross::new((m[0], m[1]), 7, RED.stroke_width(3))),
                )?
                .label("minimum")
                .legend(|(x, y)| Cross::new((x + 10, y), 5, RED.stroke_width(3)));
        }
        for m in markers {
            let color = m.color;
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    m.at,
                    7,
                    color.filled(),
                )))?
                .label(m.label.clone())
                .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, color.filled()));
        }
        legend!(chart);
        root.present()?;
    }
    gradlab::io::write_atomic(path, svg.as_bytes())
        .with_context(|| format!("writing the plot {}", path.display()))
}

/// `values` with diverged points (infinite or NaN loss) set to the largest finite value;
/// refused when there is none.
pub(super) fn finite_or_top(title: &str, values: &[f64]) -> Result<Vec<f64>> {
    let top = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        anyhow::bail!("'{title}': no finite value to contour");
    }
    Ok(values
        .iter()
        .map(|v| if v.is_finite() { *v } else { top })
        .collect())
}

/// The filled bands between `thresholds` of `values` laid out on `field`'s grid (at least
/// 2×2, evenly spaced).
pub(super) fn isobands(
    title: &str,
    field: &Field,
    values: &[f64],
    thresholds: &[f64],
) -> Result<Vec<contour::Band>> {
    let (nx, ny) = (field.xs.len(), field.ys.len());
    if nx < 2 || ny < 2 || values.len() != nx * ny {
        anyhow::bail!("'{title}': a contour plot needs at least a 2×2 grid of values");
    }
    let (x0, y0) = (field.xs[0], field.ys[0]);
    contour::ContourBuilder::new(nx, ny, true)
        .x_origin(x0)
        .y_origin(y0)
        .x_step((field.xs[nx - 1] - x0) / (nx - 1) as f64)
        .y_step((field.ys[ny - 1] - y0) / (ny - 1) as f64)
        .isobands(values, thresholds)
        .map_err(|e| anyhow::anyhow!("contouring '{title}': {e:?}"))
}

/// Fills each band with its colour of the ramp, lightest (lowest) first.
pub(super) fn fill_bands(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    bands: &[contour::Band],
) -> Result<()> {
    let n_bands = bands.len().max(1);
    for (k, band) in bands.iter().enumerate() {
        let c = ramp(k as f64 / n_bands as f64);
        chart.draw_series(
            band.geometry()
                .0
                .iter()
                .map(|poly| Polygon::new(keyhole(poly), c.filled())),
        )?;
    }
    Ok(())
}
