//! Loss-landscape slices of trained networks (Li et al. 2018; Goodfellow et al. 2015;
//! Keskar et al. 2017): the 1-D interpolation between two solutions, and 1-D and 2-D slices
//! through a solution along random filter-normalised directions.

use crate::checkpoint::load_model;
use crate::hessian::{flat_params, NetworkObjective};
use crate::train::batch;
use crate::{data, Error, Result};
use gradlab::landscape::slices::{
    filter_normalized_direction, interpolate, slice_1d, slice_2d, Grid,
};
use gradlab::landscape::Rng;
use gradlab::optim::Layout;
use std::path::PathBuf;

/// What to compute.
#[derive(Debug, Clone)]
pub struct LandscapeOptions {
    /// Slices reach ±span along each direction.
    pub span: f64,
    /// Points along each axis.
    pub points: usize,
    /// Examples the loss is averaged over (train and test each).
    pub examples: usize,
    /// Seed of the random directions.
    pub seed: u64,
    /// Data folder (default: the bundled digits).
    pub data_dir: Option<PathBuf>,
    /// The loss in training mode (batch norm with each batch's statistics) instead of
    /// evaluation mode.
    pub training_mode: bool,
}

impl Default for LandscapeOptions {
    fn default() -> Self {
        LandscapeOptions {
            span: 1.0,
            points: 21,
            examples: 1000,
            seed: 0,
            data_dir: None,
            training_mode: false,
        }
    }
}

/// A 1-D curve of losses.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Positions.
    pub alphas: Vec<f64>,
    /// Training loss at each.
    pub train: Vec<f64>,
    /// Test loss at each.
    pub test: Vec<f64>,
}

/// The slices of one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Landscape {
    /// Along one filter-normalised direction.
    pub slice_1d: Curve,
    /// Over the plane of two filter-normalised directions (training loss).
    pub slice_2d: Grid,
    /// From this checkpoint (α = 0) to another (α = 1), when asked.
    pub interpolation: Option<Curve>,
}

fn axis(span: f64, points: usize) -> Vec<f64> {
    let n = points.max(3);
    (0..n)
        .map(|i| -span + 2.0 * span * i as f64 / (n - 1) as f64)
        .collect()
}

/// Slices the loss around the checkpoint in `dir`; with `to`, also interpolates to that
/// checkpoint (same architecture; batch-norm statistics of the first).
pub fn landscape(
    dir: &std::path::Path,
    to: Option<&std::path::Path>,
    opts: &LandscapeOptions,
) -> Result<Landscape> {
    let (model, config) = load_model(dir)?;
    let split = crate::train::checkpoint_data(&config, opts.data_dir.as_deref())?;
    let batches = |d: &data::Dataset| -> Result<Vec<_>> {
        let idx: Vec<usize> = (0..opts.examples.min(d.len()).max(1)).collect();
        idx.chunks(500).map(|c| batch(d, c)).collect()
    };
    let objective = |set: &data::Dataset| -> Result<NetworkObjective> {
        if opts.training_mode {
            NetworkObjective::in_training_mode(&model, batches(set)?)
        } else {
            NetworkObjective::new(&model, batches(set)?)
        }
    };
    let mut train = objective(&split.train)?;
    let mut test = objective(&split.test)?;
    let center = train.point()?;
    let layout = Layout::new(
        model
            .params()
            .iter()
            .map(|(n, v)| (n.clone(), v.dims().to_vec())),
    )?;
    let mut rng = Rng::new(opts.seed);
    let d1 = filter_normalized_direction(&layout, &center, &mut rng)?;
    let d2 = filter_normalized_direction(&layout, &center, &mut rng)?;
    let alphas = axis(opts.span, opts.points);
    let slice_1d = Curve {
        train: slice_1d(&mut train, &center, &d1, &alphas)?,
        test: slice_1d(&mut test, &center, &d1, &alphas)?,
        alphas: alphas.clone(),
    };
    let grid = slice_2d(&mut train, &center, &d1, &d2, &alphas, &alphas)?;
    let interpolation = match to {
        Some(other) => {
            let (m2, _) = load_model(other)?;
            if m2.num_parameters() != model.num_parameters() {
                return Err(Error::Model {
                    message: format!(
                        "{} and {} hold different architectures ({} and {} parameters)",
                        dir.display(),
                        other.display(),
                        model.num_parameters(),
                        m2.num_parameters()
                    ),
                });
            }
            let end = flat_params(&m2)?;
            let ts: Vec<f64> = (0..opts.points.max(3))
                .map(|i| -0.5 + 2.0 * i as f64 / (opts.points.max(3) - 1) as f64)
                .collect();
            Some(Curve {
                train: interpolate(&mut train, &center, &end, &ts)?,
                test: interpolate(&mut test, &center, &end, &ts)?,
                alphas: ts,
            })
        }
        None => None,
    };
    Ok(Landscape {
        slice_1d,
        slice_2d: grid,
        interpolation,
    })
}
