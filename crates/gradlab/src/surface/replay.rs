//! Running optimizers on a surface: the trajectory the `gradlab surface` command prints.

use super::SurfaceFunction;
use crate::landscape::Rng;
use crate::optim::{build_from_spec, Layout, Optimizer, Options, ParamAccess};
use crate::schedule::Scheduler;
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
/// Muon, which updates matrices only, sees the point as a 2×1 matrix (a column), as the
/// shared references do.
pub fn optimizer_for_surface(spec: &Spec, options: Options) -> Result<Box<dyn Optimizer<f64>>> {
    let shape = if spec.name == "muon" {
        vec![2, 1]
    } else {
        vec![2]
    };
    build_from_spec(spec, Layout::new([("xy", shape)])?, &[], options)
}

/// A trajectory, and why it stopped early if it did (a diverging optimizer reaches a
/// non-finite gradient; a schedule may refuse to step past its end).
#[derive(Debug)]
pub struct Trajectory {
    /// Row 0 is the start, row k the point after k steps.
    pub rows: Vec<Row>,
    /// The error that ended the run before the requested number of steps.
    pub stopped: Option<crate::Error>,
}

/// Gaussian noise added to every gradient, emulating the gradient of a small batch:
/// g + σ·N(0, I), drawn from a seeded generator (the same seed, the same path).
#[derive(Debug, Clone)]
pub struct GradientNoise {
    sigma: f64,
    rng: Rng,
}

impl GradientNoise {
    /// Noise of standard deviation `sigma` (finite, ≥ 0) per coordinate.
    pub fn new(sigma: f64, seed: u64) -> Result<Self> {
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(crate::Error::InvalidArgument {
                spec: format!("noise={sigma}"),
                key: "noise".into(),
                message: format!("the gradient noise must be a finite number >= 0, got {sigma}"),
            });
        }
        Ok(GradientNoise {
            sigma,
            rng: Rng::new(seed),
        })
    }

    fn add(&mut self, g: &mut [f64]) {
        if self.sigma > 0.0 {
            g.iter_mut()
                .for_each(|v| *v += self.sigma * self.rng.normal());
        }
    }
}

/// Runs `steps` steps from `start`; `before_step(k, opt)` runs before step `k` (1-based) and
/// may set the learning rate and momentum (schedules).
pub fn run<S, F>(
    surface: S,
    start: [f64; 2],
    opt: &mut dyn Optimizer<f64>,
    steps: u64,
    before_step: F,
) -> Trajectory
where
    S: SurfaceFunction + Copy,
    F: FnMut(u64, &mut dyn Optimizer<f64>) -> Result<()>,
{
    run_observed(surface, start, opt, steps, None, before_step, |_, _| {})
}

/// [`run`] with optional gradient noise and `after_step(k, opt)` called after each step
/// that succeeded (to read the optimizer's state along the path).
pub fn run_observed<S, F, O>(
    surface: S,
    start: [f64; 2],
    opt: &mut dyn Optimizer<f64>,
    steps: u64,
    mut noise: Option<&mut GradientNoise>,
    mut before_step: F,
    mut after_step: O,
) -> Trajectory
where
    S: SurfaceFunction + Copy,
    F: FnMut(u64, &mut dyn Optimizer<f64>) -> Result<()>,
    O: FnMut(u64, &dyn Optimizer<f64>),
{
    let mut xy = start;
    let mut rows = Vec::with_capacity(steps.min(1 << 20) as usize + 1);
    let row = |xy: [f64; 2], step: u64| Row {
        step,
        x: xy[0],
        y: xy[1],
        loss: surface.value(xy[0], xy[1]),
        lr: f64::NAN,
    };
    rows.push(row(xy, 0));
    let mut stopped = None;
    for k in 1..=steps {
        if let Err(e) = before_step(k, opt) {
            stopped = Some(e);
            break;
        }
        rows.last_mut().expect("row 0 exists").lr = opt.lr(0);
        let shown = step_once_noisy(surface, opt, &mut xy, noise.as_deref_mut());
        match shown {
            Ok(shown) => {
                rows.push(row(shown, k));
                after_step(k, opt);
            }
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    let last_lr = opt.lr(0);
    rows.last_mut().expect("row 0 exists").lr = last_lr;
    Trajectory { rows, stopped }
}

/// One step at `xy` (with a closure for the optimizers that evaluate the surface more than
/// once per step); returns the point to show: the optimizer's evaluation point (schedule-free:
/// x, while `xy` keeps the gradient point y).
pub fn step_once<S: SurfaceFunction>(
    surface: S,
    opt: &mut dyn Optimizer<f64>,
    xy: &mut [f64; 2],
) -> Result<[f64; 2]> {
    step_once_noisy(surface, opt, xy, None)
}

/// [`step_once`] with `noise` added to every gradient the optimizer sees.
pub fn step_once_noisy<S: SurfaceFunction>(
    surface: S,
    opt: &mut dyn Optimizer<f64>,
    xy: &mut [f64; 2],
    mut noise: Option<&mut GradientNoise>,
) -> Result<[f64; 2]> {
    let mut held: [&mut [f64]; 1] = [xy];
    let mut params: &mut [&mut [f64]] = &mut held;
    if opt.needs_closure() {
        let mut closure = |access: &mut dyn ParamAccess<f64>, grads: &mut [Vec<f64>]| {
            let mut loss = f64::NAN;
            access.read(0, &mut |p: &[f64]| {
                grads[0].copy_from_slice(&surface.gradient(p[0], p[1]));
                if let Some(n) = noise.as_deref_mut() {
                    n.add(&mut grads[0]);
                }
                loss = surface.value(p[0], p[1]);
            })?;
            Ok(loss)
        };
        opt.step_with_closure(&mut params, &mut closure)?;
    } else {
        let mut g = surface.gradient(params[0][0], params[0][1]);
        if let Some(n) = noise {
            n.add(&mut g);
        }
        opt.step_with(&[&g], &mut params)?;
    }
    opt.eval_mode(&mut params)?;
    let shown = [params[0][0], params[0][1]];
    opt.train_mode(&mut params)?;
    Ok(shown)
}

/// Runs `steps` steps with an optional schedule stepped after every optimizer step, as
/// PyTorch does (the schedule's first values are set when it is attached).
pub fn run_scheduled<S: SurfaceFunction + Copy>(
    surface: S,
    start: [f64; 2],
    opt: &mut dyn Optimizer<f64>,
    steps: u64,
    schedule: Option<&Spec>,
) -> Result<Trajectory> {
    run_scheduled_observed(surface, start, opt, steps, schedule, None, |_, _| {})
}

/// [`run_scheduled`] with optional gradient noise and an observer of each step
/// ([`run_observed`]).
pub fn run_scheduled_observed<S, O>(
    surface: S,
    start: [f64; 2],
    opt: &mut dyn Optimizer<f64>,
    steps: u64,
    schedule: Option<&Spec>,
    noise: Option<&mut GradientNoise>,
    after_step: O,
) -> Result<Trajectory>
where
    S: SurfaceFunction + Copy,
    O: FnMut(u64, &dyn Optimizer<f64>),
{
    let mut scheduler = match schedule {
        Some(spec) => Some(Scheduler::from_schedule(
            crate::schedule::build_from_spec(spec)?,
            opt,
        )?),
        None => None,
    };
    Ok(run_observed(
        surface,
        start,
        opt,
        steps,
        noise,
        |k, opt| match scheduler.as_mut() {
            Some(s) if k > 1 => s.step(opt),
            _ => Ok(()),
        },
        after_step,
    ))
}
