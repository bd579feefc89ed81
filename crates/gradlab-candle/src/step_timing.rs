//! Where a training step's time goes: the trainer's step, phase by phase.
//!
//! [`time_epoch`] trains one epoch exactly as [`crate::train`] does (same data, shuffling,
//! model, optimizer and batch size, without files) and times each step's four phases:
//! **data** (gathering the batch into tensors), **forward** (the model and the loss, up to
//! the scalar loss), **backward** (candle's backprop through gradlab's ops) and
//! **optimizer** (the fused step on every parameter). It then times one evaluation pass over
//! the test set. `gradlab bench --train` prints the result; `bench/peers/mnist_torch.py
//! --split` prints the same phases for PyTorch.

use crate::models::{correct, cross_entropy};
use crate::train::{batch, evaluate, setup, shuffle, step_rng, TrainConfig};
use crate::{Error, Result};
use gradlab::dist::Local;
use std::sync::Arc;
use std::time::Instant;

/// Milliseconds of each phase of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    /// Gathering the batch.
    pub data: f64,
    /// Forward pass and loss.
    pub forward: f64,
    /// Backward pass.
    pub backward: f64,
    /// Optimizer step.
    pub optimizer: f64,
}

impl Phases {
    /// The four phases together.
    pub fn total(&self) -> f64 {
        self.data + self.forward + self.backward + self.optimizer
    }
}

/// One timed epoch.
#[derive(Debug, Clone)]
pub struct EpochTiming {
    /// Steps timed (the epoch's batches, or the limit).
    pub steps: usize,
    /// Mean ms per step of each phase.
    pub mean: Phases,
    /// Median ms per step of each phase.
    pub median: Phases,
    /// Wall-clock ms of the timed steps together.
    pub train_ms: f64,
    /// Wall-clock ms of one evaluation pass over the test set.
    pub eval_ms: f64,
    /// Examples in the test set.
    pub test_examples: usize,
    /// Mean training loss over the timed steps.
    pub train_loss: f64,
}

/// Trains the first `max_steps` batches of epoch 0 (all of them when `None`) as the trainer
/// would, timing each phase, then times one evaluation of the test set.
pub fn time_epoch(config: &TrainConfig, max_steps: Option<usize>) -> Result<EpochTiming> {
    if config.batch_size == 0 {
        return Err(Error::setting(
            "--batch-size",
            "--batch-size must be at least 1",
        ));
    }
    let (split, model, mut opt) = setup(config, Arc::new(Local))?;
    let order = shuffle(split.train.len(), config.seed, 0);
    let batches: Vec<&[usize]> = order
        .chunks(config.batch_size)
        .take(max_steps.unwrap_or(usize::MAX))
        .collect();
    if batches.is_empty() {
        return Err(Error::setting(
            "--steps",
            format!(
                "nothing to time: {} training examples, {} steps asked",
                split.train.len(),
                max_steps.unwrap_or(0)
            ),
        ));
    }
    let mut steps: Vec<Phases> = Vec::with_capacity(batches.len());
    let mut loss_sum = 0.0;
    let started = Instant::now();
    for (step, idx) in batches.iter().enumerate() {
        let clock = Instant::now();
        let (x, y) = batch(&split.train, idx)?;
        let data = lap(clock);
        let clock = Instant::now();
        let mut rng = step_rng(config.seed, step as u64);
        let logits = model.forward(&x, true, &mut rng)?;
        let loss = cross_entropy(&logits, &y)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        correct(&logits, &y)?;
        let forward = lap(clock);
        let clock = Instant::now();
        let grads = loss.backward()?;
        let backward = lap(clock);
        let clock = Instant::now();
        opt.step_grads(&grads)?;
        let optimizer = lap(clock);
        steps.push(Phases {
            data,
            forward,
            backward,
            optimizer,
        });
    }
    let train_ms = lap(started);
    let clock = Instant::now();
    evaluate(&model, &split.test)?;
    let eval_ms = lap(clock);
    Ok(EpochTiming {
        steps: steps.len(),
        mean: summarise(&steps, mean),
        median: summarise(&steps, median),
        train_ms,
        eval_ms,
        test_examples: split.test.len(),
        train_loss: loss_sum / steps.len() as f64,
    })
}

fn lap(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn summarise(steps: &[Phases], reduce: fn(Vec<f64>) -> f64) -> Phases {
    let column = |f: fn(&Phases) -> f64| reduce(steps.iter().map(f).collect());
    Phases {
        data: column(|p| p.data),
        forward: column(|p| p.forward),
        backward: column(|p| p.backward),
        optimizer: column(|p| p.optimizer),
    }
}

fn mean(v: Vec<f64>) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelKind, ModelSpec};

    #[test]
    fn phases_are_timed_and_training_happens() {
        let mut config = TrainConfig::new(
            ModelSpec::new(ModelKind::Mlp),
            "sgd(lr=0.1)",
            std::path::Path::new("unused"),
        );
        config.train_limit = Some(640);
        let t = time_epoch(&config, None).unwrap();
        assert_eq!(t.steps, 10);
        assert!(t.mean.forward > 0.0 && t.mean.backward > 0.0 && t.mean.optimizer > 0.0);
        assert!(t.train_ms >= t.mean.total() * t.steps as f64 * 0.99);
        assert_eq!(t.test_examples, 2000);
        assert!(
            t.train_loss.is_finite() && t.train_loss < 2.4,
            "{}",
            t.train_loss
        );
        let limited = time_epoch(&config, Some(3)).unwrap();
        assert_eq!(limited.steps, 3);
        let mut zero = config.clone();
        zero.train_limit = Some(0);
        assert!(time_epoch(&zero, None).is_err());
    }
}
