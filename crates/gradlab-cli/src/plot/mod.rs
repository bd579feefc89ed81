//! SVG figures: the lecture's contour plot of a surface with optimizer paths.

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

mod panels;
pub use panels::{field_panels, small_multiples, Panel};

/// Draws the legend box in the upper right corner.
macro_rules! legend {
    ($chart:expr) => {
        $chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?
    };
}

mod contours;
use contours::ramp;
pub use contours::{field_plot, levels, linspace, surface_plot, Field};

/// A labelled path of points.
pub struct Path2 {
    /// Legend text.
    pub label: String,
    /// Points in order.
    pub points: Vec<(f64, f64)>,
}

/// A labelled point drawn on top (critical points, minima).
pub struct Marker {
    /// Legend text.
    pub label: String,
    /// Where.
    pub at: (f64, f64),
    /// Fill color.
    pub color: RGBColor,
}

/// Distinct colors for series: Okabe–Ito (readable by color-blind people) first, then
/// darker companions for charts with many series.
pub const PALETTE: [RGBColor; 16] = [
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(204, 121, 167),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
    RGBColor(153, 79, 0),
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
];

/// The color of series `i`.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A shaded spread: `(x, low, high)` points.
pub type Band = Vec<(f64, f64, f64)>;

/// A line chart: `series` on the left axis, an optional series on a right axis, and
/// labelled vertical markers (e.g. a suggested learning rate).
pub struct LineChart<'a> {
    /// Title.
    pub title: &'a str,
    /// x-axis label.
    pub x_label: &'a str,
    /// Left y-axis label.
    pub y_label: &'a str,
    /// Series on the left axis.
    pub series: Vec<Path2>,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// A series on the right axis, with its axis label.
    pub secondary: Option<(String, Path2)>,
    /// Vertical markers `(x, label)`.
    pub markers: Vec<(f64, String)>,
    /// Loss curves that blow up at the end: cap the y axis at twice the first value.
    pub cap_blowup: bool,
    /// Shaded spread around series `i` (e.g. the range over seeds).
    pub bands: Vec<(usize, Band)>,
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return None;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    Some((lo - pad, hi + pad))
}

type Chart<'a, 'b, X, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>;

/// Draws the left-axis series and the markers.
fn draw_lines<X, Y>(
    chart: &mut Chart<'_, '_, X, Y>,
    spec: &LineChart,
    y_range: (f64, f64),
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, s) in spec.series.iter().enumerate() {
        let color = color(i);
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!spec.log_x || *x > 0.0))
            .map(|(x, y)| (x, y.clamp(y_range.0, y_range.1)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    for (i, band) in &spec.bands {
        let c = color(*i);
        let mut ring: Vec<(f64, f64)> = band
            .iter()
            .map(|(x, lo, _)| (*x, lo.clamp(y_range.0, y_range.1)))
            .collect();
        ring.extend(
            band.iter()
                .rev()
                .map(|(x, _, hi)| (*x, hi.clamp(y_range.0, y_range.1))),
        );
        chart.draw_series(std::iter::once(Polygon::new(ring, c.mix(0.2).filled())))?;
    }
    for (x, label) in &spec.markers {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(*x, y_range.0), (*x, y_range.1)],
                RED.stroke_width(2),
            )))?
            .label(label.clone())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    Ok(())
}

fn tick(v: &f64) -> String {
    let a = v.abs();
    // Rounding noise of a tick at zero (-2e-16) reads as 0.
    if a < 1e-12 {
        return "0".into();
    }
    if a != 0.0 && !(1e-3..1e4).contains(&a) {
        format!("{v:.0e}")
    } else {
        format!("{}", (v * 1e6).round() / 1e6)
    }
}

/// The legend's entries of a [`LineChart`]: its series, the right-axis series, the markers.
fn legend_entries(spec: &LineChart) -> Vec<(String, ShapeStyle)> {
    let mut entries: Vec<(String, ShapeStyle)> = spec
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.label.clone(), color(i).stroke_width(3)))
        .collect();
    if let Some((_, s)) = &spec.secondary {
        entries.push((s.label.clone(), RGBColor(120, 120, 120).stroke_width(3)));
    }
    for (_, label) in &spec.markers {
        entries.push((label.clone(), RED.stroke_width(2)));
    }
    entries
}

/// Pixels for the legend column: enough for the longest label at 12 px.
fn legend_width(spec: &LineChart) -> u32 {
    let longest = legend_entries(spec)
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0) as u32;
    (40 + 7 * longest).clamp(120, 420)
}

/// A legend in its own area beside the plot (never over the data): one line per entry.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    entries: &[(String, ShapeStyle)],
) -> Result<()> {
    let (_, h) = area.dim_in_pixel();
    let row = if entries.len() as u32 * 18 + 60 > h {
        14
    } else {
        18
    };
    for (k, (label, style)) in entries.iter().enumerate() {
        let y = 50 + row * k as i32;
        area.draw(&PathElement::new(vec![(4, y + 6), (28, y + 6)], *style))?;
        area.draw(&Text::new(label.clone(), (34, y), ("sans-serif", 12)))?;
    }
    Ok(())
}

/// Draws a [`LineChart`] to `path` (SVG, written atomically), its legend at the right of the
/// plot.
pub fn line_chart(path: &Path, spec: &LineChart) -> Result<()> {
    let xs = || {
        spec.series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
    };
    let (mut x0, mut x1) = finite_range(xs()).context("nothing to plot: no finite x values")?;
    if spec.log_x {
        x0 = xs().filter(|x| *x > 0.0).fold(f64::INFINITY, f64::min);
        x1 = xs().fold(f64::NEG_INFINITY, f64::max);
    }
    let first = spec
        .series
        .first()
        .and_then(|s| s.points.first())
        .map(|p| p.1);
    let cap = match first {
        Some(f) if spec.cap_blowup && f.is_finite() && f > 0.0 => 2.0 * f,
        _ => f64::INFINITY,
    };
    let (y0, y1) = finite_range(
        spec.series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1.min(cap))),
    )
    .context("nothing to plot: no finite y values")?;
    let mut svg = String::new();
    {
        let legend_width = legend_width(spec);
        let root = SVGBackend::with_string(&mut svg, (860 + legend_width, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(860);
        draw_legend(&legend, &legend_entries(spec))?;
        let mut builder = ChartBuilder::on(&plot);
        builder
            .caption(spec.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .right_y_label_area_size(if spec.secondary.is_some() { 70 } else { 0 });
        if spec.log_x {
            let mut chart = builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?;
            chart
                .configure_mesh()
                .x_desc(spec.x_label)
                .y_desc(spec.y_label)
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .draw()?;
            draw_lines(&mut chart, spec, (y0, y1))?;
        } else if let Some((axis_label, s)) = &spec.secondary {
            let (m0, m1) = finite_range(s.points.iter().map(|p| p.1)).unwrap_or((0.0, 1.0));
            let mut chart = builder
                .build_cartesian_2d(x0..x1, y0..y1)?
                .set_secondary_coord(x0..x1, m0..m1);
            chart
                .configure_mesh()
                .x_desc(spec.x_label)
                .y_desc(spec.y_label)
                .y_label_formatter(&tick)
                .draw()?;
            chart
                .configure_secondary_axes()
                .y_desc(axis_label.as_str())
                .y_label_formatter(&tick)
                .draw()?;
            draw_lines(&mut chart, spec, (y0, y1))?;
            let color = RGBColor(120, 120, 120);
            chart
                .draw_secondary_series(LineSeries::new(
                    s.points
                        .iter()
                        .copied()
                        .filter(|(x, y)| x.is_finite() && y.is_finite()),
                    color.stroke_width(2),
                ))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        } else {
            let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .x_desc(spec.x_label)
                .y_desc(spec.y_label)
                .y_label_formatter(&tick)
                .draw()?;
            draw_lines(&mut chart, spec, (y0, y1))?;
        }
        root.present()?;
    }
    gradlab::io::write_atomic(path, svg.as_bytes())
        .with_context(|| format!("writing the plot {}", path.display()))
}
