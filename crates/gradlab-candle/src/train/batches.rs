//! The order in which training examples are visited: reshuffled each epoch (the default), a
//! fixed order, or a curriculum from easy to hard.
//!
//! Every order is a function of (seed, epoch) or (seed, step) alone, so a resumed run visits
//! the same batches as the uninterrupted run, and every rank of a data-parallel group draws
//! the same global batches.

use crate::data::Dataset;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use gradlab::landscape::Rng;
use std::path::{Path, PathBuf};

/// How each epoch orders the training examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataOrder {
    /// A new random permutation each epoch (PyTorch's `DataLoader(shuffle=True)`).
    #[default]
    Shuffled,
    /// The data set's own order, every epoch (`shuffle=False`).
    Fixed,
}

impl DataOrder {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DataOrder::Shuffled => "shuffled",
            DataOrder::Fixed => "fixed",
        }
    }
}

impl std::str::FromStr for DataOrder {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "shuffled" => Ok(DataOrder::Shuffled),
            "fixed" => Ok(DataOrder::Fixed),
            other => Err(Error::setting(
                "--data-order",
                format!("--data-order '{other}' is not known; known: shuffled, fixed"),
            )),
        }
    }
}

/// Competence-based curriculum learning (Platanios et al. 2019, "square root" competence):
/// the examples are ranked by a difficulty score, and step t draws its batch uniformly from
/// the easiest fraction `c(t) = min(1, sqrt(t (1 − c0²) / T + c0²))` of them, where `c0` is
/// `start` and `T` the step at which every example is in reach (`ramp` epochs' steps). The
/// run takes as many steps as without a curriculum.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Curriculum {
    /// A text file with one difficulty per training example (in the training set's order,
    /// after `classes` and before `validation` and `train_limit` cut it); lower is easier.
    pub difficulty: PathBuf,
    /// c0: the fraction of the easiest examples in reach at the first step, in (0, 1].
    pub start: f64,
    /// The epochs (a fraction allowed) after which every example is in reach, > 0.
    pub ramp: f64,
}

impl Curriculum {
    /// A curriculum over the scores in `difficulty`, starting with the easiest 20% and
    /// reaching all examples after one epoch.
    pub fn new(difficulty: &Path) -> Self {
        Curriculum {
            difficulty: difficulty.to_path_buf(),
            start: 0.2,
            ramp: 1.0,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        if !(self.start > 0.0 && self.start <= 1.0) {
            return Err(Error::setting(
                "--curriculum-start",
                format!(
                    "--curriculum-start {} is out of range: it must be in (0, 1]",
                    self.start
                ),
            ));
        }
        if !(self.ramp.is_finite() && self.ramp > 0.0) {
            return Err(Error::setting(
                "--curriculum-ramp",
                format!(
                "--curriculum-ramp {} is out of range: it must be a finite number of epochs > 0",
                self.ramp
            ),
            ));
        }
        Ok(())
    }

    /// The fraction of examples in reach at step `step` (0-based) of a run with
    /// `steps_per_epoch` steps each epoch.
    pub fn competence(&self, step: u64, steps_per_epoch: u64) -> f64 {
        let ramp_steps = (self.ramp * steps_per_epoch as f64).max(1.0);
        let c0 = self.start;
        (step as f64 * (1.0 - c0 * c0) / ramp_steps + c0 * c0)
            .sqrt()
            .min(1.0)
    }

    /// Reads the scores and ranks `used` training examples from easy to hard; the file must
    /// hold one finite number per example of the whole (class-filtered) training set,
    /// `expected` of them.
    pub(crate) fn ranking(&self, expected: usize, used: usize) -> Result<Vec<usize>> {
        let path = &self.difficulty;
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::file(
                path,
                format!("cannot read the curriculum's difficulty scores: {e}"),
            )
        })?;
        let mut scores = Vec::with_capacity(expected);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let v: f64 = line.parse().map_err(|_| {
                Error::file(
                    path,
                    format!(
                        "line {}: '{line}' is not a number (one difficulty score per line)",
                        i + 1
                    ),
                )
            })?;
            if !v.is_finite() {
                return Err(Error::file(
                    path,
                    format!("line {}: the difficulty score {v} is not finite", i + 1),
                ));
            }
            scores.push(v);
        }
        if scores.len() != expected {
            return Err(Error::file(
                path,
                format!(
                    "{} difficulty scores for {expected} training examples (one per example, \
                     in the training set's order)",
                    scores.len()
                ),
            ));
        }
        let mut rank: Vec<usize> = (0..used).collect();
        rank.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        Ok(rank)
    }
}

/// A permutation of `0..n` that depends on (seed, epoch) only.
pub(crate) fn shuffle(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ ((epoch as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)));
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx
}

/// The batches of one epoch.
pub(crate) struct EpochPlan<'a> {
    /// Training examples.
    pub(crate) examples: usize,
    /// Examples per batch.
    pub(crate) batch_size: usize,
    /// The run's seed.
    pub(crate) seed: u64,
    /// The order without a curriculum.
    pub(crate) order: DataOrder,
    /// The curriculum and its ranking of the examples from easy to hard.
    pub(crate) curriculum: Option<(&'a Curriculum, &'a [usize])>,
    /// Steps of each epoch.
    pub(crate) steps_per_epoch: u64,
}

impl EpochPlan<'_> {
    /// The batches of `epoch`, whose first step is `first_step` (0-based): as many as
    /// `examples.div_ceil(batch_size)`, the last one short when the size does not divide.
    pub(crate) fn batches(&self, epoch: usize, first_step: u64) -> Vec<Vec<usize>> {
        let n = self.examples;
        let Some((curriculum, ranking)) = self.curriculum else {
            let order = match self.order {
                DataOrder::Shuffled => shuffle(n, self.seed, epoch),
                DataOrder::Fixed => (0..n).collect(),
            };
            return order
                .chunks(self.batch_size)
                .map(<[usize]>::to_vec)
                .collect();
        };
        (0..n.div_ceil(self.batch_size))
            .map(|b| {
                let size = self.batch_size.min(n - b * self.batch_size);
                let step = first_step + b as u64;
                let reach = ((curriculum.competence(step, self.steps_per_epoch) * n as f64).ceil()
                    as usize)
                    .clamp(size, n);
                sample_without_replacement(reach, size, self.seed, step)
                    .into_iter()
                    .map(|i| ranking[i])
                    .collect()
            })
            .collect()
    }
}

/// `k` distinct numbers drawn uniformly from `0..n` (partial Fisher–Yates), depending on
/// (seed, step) only.
fn sample_without_replacement(n: usize, k: usize, seed: u64, step: u64) -> Vec<usize> {
    let mut rng = super::step_rng(seed ^ 0x6375_7272_6963, step);
    let mut pool: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(k.min(n));
    pool
}

/// A batch as tensors.
pub fn batch(data: &Dataset, indices: &[usize]) -> Result<(Tensor, Tensor)> {
    let p = data.pixels();
    let mut x = Vec::with_capacity(indices.len() * p);
    for &i in indices {
        x.extend_from_slice(&data.images[i * p..(i + 1) * p]);
    }
    let y: Vec<u32> = indices.iter().map(|&i| data.labels[i] as u32).collect();
    Ok((
        Tensor::from_vec(x, (indices.len(), data.rows, data.cols), &Device::Cpu)?,
        Tensor::from_vec(y, indices.len(), &Device::Cpu)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn competence_starts_at_c0_and_reaches_one_at_the_ramp() {
        let c = Curriculum {
            difficulty: PathBuf::new(),
            start: 0.2,
            ramp: 0.5,
        };
        assert!((c.competence(0, 100) - 0.2).abs() < 1e-12);
        assert!((c.competence(50, 100) - 1.0).abs() < 1e-12);
        assert_eq!(c.competence(80, 100), 1.0);
        assert!(Curriculum {
            ramp: 0.0,
            ..c.clone()
        }
        .check()
        .is_err());
        assert!(Curriculum {
            start: 1.5,
            ..c.clone()
        }
        .check()
        .is_err());
        assert!(c.competence(10, 100) < c.competence(20, 100));
    }

    #[test]
    fn curriculum_batches_come_from_the_easiest_examples_first() {
        let c = Curriculum {
            difficulty: PathBuf::new(),
            start: 0.1,
            ramp: 1.0,
        };
        // Example i has rank i: the easiest are the lowest numbers.
        let ranking: Vec<usize> = (0..1000).collect();
        let plan = EpochPlan {
            examples: 1000,
            batch_size: 10,
            seed: 3,
            order: DataOrder::Shuffled,
            curriculum: Some((&c, &ranking)),
            steps_per_epoch: 100,
        };
        let batches = plan.batches(0, 0);
        assert_eq!(batches.len(), 100);
        assert!(batches[0].iter().all(|&i| i < 100), "{:?}", batches[0]);
        assert!(batches[99].iter().any(|&i| i >= 500));
        for b in &batches {
            let mut s = b.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), b.len(), "no example twice in a batch");
        }
        // The same steps give the same batches (exact resume).
        assert_eq!(plan.batches(0, 0), batches);
    }

    #[test]
    fn fixed_order_is_the_data_sets_order_every_epoch() {
        let plan = EpochPlan {
            examples: 7,
            batch_size: 3,
            seed: 1,
            order: DataOrder::Fixed,
            curriculum: None,
            steps_per_epoch: 3,
        };
        assert_eq!(
            plan.batches(1, 3),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
        let shuffled = EpochPlan {
            order: DataOrder::Shuffled,
            ..plan
        };
        assert_ne!(shuffled.batches(0, 0), shuffled.batches(1, 3));
    }

    #[test]
    fn ranking_refuses_a_wrong_count_and_bad_numbers() {
        let dir = std::env::temp_dir().join(format!("gradlab-curriculum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("scores.txt");
        std::fs::write(&path, "0.5\n0.1\n0.9\n").unwrap();
        let c = Curriculum::new(&path);
        assert_eq!(c.ranking(3, 3).unwrap(), vec![1, 0, 2]);
        assert_eq!(c.ranking(3, 2).unwrap(), vec![1, 0]);
        let e = c.ranking(4, 4).unwrap_err().to_string();
        assert!(
            e.contains("3 difficulty scores for 4 training examples"),
            "{e}"
        );
        std::fs::write(&path, "0.5\nabc\n").unwrap();
        let e = c.ranking(2, 2).unwrap_err().to_string();
        assert!(e.contains("line 2: 'abc' is not a number"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
