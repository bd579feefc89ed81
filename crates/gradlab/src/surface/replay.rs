//! Running optimizers on a surface: the trajectory the `gradlab surface` command prints.

use super::Surface;
use crate::optim::{build_from_spec, Layout, Optimizer, Options};
use crate::spec::Spec;
use crate::Result;

/// One row of a trajectory: the point after `step` steps, its loss, and the learning rate
/// of the next step (of the last step, on the final row).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Steps taken.
    pub step: u64,
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
    /// f(x, y).
    pub loss: f64,
    /// Learning rate used by step `step + 1` (by step `step` on the last row).
    pub lr: f64,
}

/// Builds an optimizer over the surface's two coordinates, held as one tensor `xy`.
pub fn optimizer_for_surface(spec: &Spec, options: Options) -> Result<Box<dyn Optimizer<f64>>> {
    build_from_spec(spec, Layout::new([("xy", vec![2])])?, &[], options)
}

/// Runs `steps` steps from `start`; `before_step(k, opt)` runs before step `k` (1-based) and
/// may set the learning rate (schedules); it returns the learning rate the step will use.
pub fn run<F>(
    surface: Surface,
    start: [f64; 2],
    opt: &mut dyn Optimizer<f64>,
    steps: u64,
    mut before_step: F,
) -> Result<Vec<Row>>
where
    F: FnMut(u64, &mut dyn Optimizer<f64>) -> Result<()>,
{
    let mut xy = start;
    let mut rows = Vec::with_capacity(steps as usize + 1);
    let row = |xy: [f64; 2], step: u64| Row {
        step,
        x: xy[0],
        y: xy[1],
        loss: surface.value(xy[0], xy[1]),
        lr: f64::NAN,
    };
    rows.push(row(xy, 0));
    for k in 1..=steps {
        before_step(k, opt)?;
        rows.last_mut().expect("row 0 exists").lr = opt.lr(0);
        let g = surface.gradient(xy[0], xy[1]);
        opt.step(&mut [&mut xy], &[&g])?;
        rows.push(row(xy, k));
    }
    let last_lr = opt.lr(0);
    rows.last_mut().expect("row 0 exists").lr = last_lr;
    Ok(rows)
}
