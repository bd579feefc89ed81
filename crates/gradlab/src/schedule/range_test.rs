//! The learning-rate range test (Smith 2017, §3.3; as torch-lr-finder and fastai run it):
//! train for a few iterations while the learning rate grows from `start_lr` to `end_lr`,
//! record the smoothed loss, stop once it diverges, and suggest a learning rate.
//!
//! - lr of iteration i: `start·(end/start)^(i/(n−1))` (exponential) or
//!   `start + (end − start)·i/(n−1)` (linear).
//! - smoothed loss: exponential moving average with β = 0.98, debiased (`avg/(1 − β^(i+1))`).
//! - divergence: the smoothed loss exceeds `diverge_threshold` (5) times the best one, or a
//!   loss is not finite; the test stops there.
//! - suggestions: `steepest`, the lr at the most negative slope (`numpy.gradient` over the
//!   index) of the smoothed curve without its first 10 and last 5 points (torch-lr-finder);
//!   `valley`, fastai's default: the middle of the longest decreasing run of the smoothed
//!   curve (from n/10 to the fifth-last point).

use crate::{Error, Result};

/// How the learning rate grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ramp {
    /// Geometric steps (the default).
    Exponential,
    /// Even steps.
    Linear,
}

/// Settings of a range test.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeTest {
    /// First learning rate (default 1e-7).
    pub start_lr: f64,
    /// Last learning rate (default 10).
    pub end_lr: f64,
    /// Number of iterations (default 100).
    pub num_iter: usize,
    /// Ramp shape.
    pub ramp: Ramp,
    /// Smoothing factor β (default 0.98).
    pub beta: f64,
    /// Divergence threshold on smoothed/best (default 5).
    pub diverge_threshold: f64,
}

impl Default for RangeTest {
    fn default() -> Self {
        RangeTest {
            start_lr: 1e-7,
            end_lr: 10.0,
            num_iter: 100,
            ramp: Ramp::Exponential,
            beta: 0.98,
            diverge_threshold: 5.0,
        }
    }
}

/// What a range test measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeTestResult {
    /// Learning rate of each iteration run.
    pub lrs: Vec<f64>,
    /// Raw loss of each iteration.
    pub losses: Vec<f64>,
    /// Smoothed loss of each iteration.
    pub smoothed: Vec<f64>,
    /// The iteration at which the loss diverged, if it did.
    pub diverged_at: Option<usize>,
    /// Steepest-descent suggestion.
    pub steepest: Option<f64>,
    /// fastai's valley suggestion.
    pub valley: Option<f64>,
}

impl RangeTest {
    fn check(&self) -> Result<()> {
        let bad = |m: &str| Error::InvalidArgument {
            spec: format!("{self:?}"),
            key: "range test".into(),
            message: m.into(),
        };
        if !(self.start_lr > 0.0 && self.end_lr > self.start_lr) {
            return Err(bad("needs 0 < start_lr < end_lr"));
        }
        if self.num_iter < 2 {
            return Err(bad("needs num_iter >= 2"));
        }
        if !(0.0..1.0).contains(&self.beta) {
            return Err(bad("needs beta in [0, 1)"));
        }
        Ok(())
    }

    /// The learning rate of iteration `i`.
    pub fn lr_at(&self, i: usize) -> f64 {
        let r = i as f64 / (self.num_iter - 1) as f64;
        match self.ramp {
            Ramp::Exponential => self.start_lr * (self.end_lr / self.start_lr).powf(r),
            Ramp::Linear => self.start_lr + r * (self.end_lr - self.start_lr),
        }
    }

    /// Runs the test: `train_step(lr)` performs one training step at that learning rate and
    /// returns the loss it measured (of the batch, before the update).
    pub fn run(&self, mut train_step: impl FnMut(f64) -> Result<f64>) -> Result<RangeTestResult> {
        self.check()?;
        let mut out = RangeTestResult {
            lrs: Vec::new(),
            losses: Vec::new(),
            smoothed: Vec::new(),
            diverged_at: None,
            steepest: None,
            valley: None,
        };
        let (mut avg, mut best) = (0.0, f64::INFINITY);
        for i in 0..self.num_iter {
            let lr = self.lr_at(i);
            let loss = train_step(lr)?;
            avg = self.beta * avg + (1.0 - self.beta) * loss;
            let smooth = avg / (1.0 - self.beta.powi(i as i32 + 1));
            out.lrs.push(lr);
            out.losses.push(loss);
            out.smoothed.push(smooth);
            if !smooth.is_finite() || smooth > self.diverge_threshold * best {
                out.diverged_at = Some(i);
                break;
            }
            best = best.min(smooth);
        }
        let finite = out.smoothed.iter().take_while(|v| v.is_finite()).count();
        out.steepest = steepest(&out.lrs[..finite], &out.smoothed[..finite]);
        out.valley = valley(&out.lrs[..finite], &out.smoothed[..finite]);
        Ok(out)
    }
}

/// torch-lr-finder's suggestion: the lr of the most negative `numpy.gradient` of the losses,
/// after dropping the first 10 and last 5 points (fewer when the run is short).
pub fn steepest(lrs: &[f64], losses: &[f64]) -> Option<f64> {
    let n = losses.len();
    if n < 3 {
        return None;
    }
    let (skip_start, skip_end) = if n >= 17 { (10, 5) } else { (0, 0) };
    let l = &losses[skip_start..n - skip_end];
    let grad = |i: usize| -> f64 {
        if i == 0 {
            l[1] - l[0]
        } else if i == l.len() - 1 {
            l[i] - l[i - 1]
        } else {
            (l[i + 1] - l[i - 1]) / 2.0
        }
    };
    let idx = (0..l.len()).min_by(|&a, &b| grad(a).total_cmp(&grad(b)))?;
    Some(lrs[skip_start + idx])
}

/// fastai's `valley`: inside `losses[n/10 .. n−5]`, the longest strictly decreasing
/// subsequence; the suggestion is at `start + ⌊len/3⌋ + ⌊len/6⌋` inside it.
pub fn valley(lrs: &[f64], losses: &[f64]) -> Option<f64> {
    let n_all = losses.len();
    let from = n_all / 10;
    let to = n_all.checked_sub(5)?;
    if to <= from + 1 {
        return None;
    }
    let (lrs, losses) = (&lrs[from..to], &losses[from..to]);
    let n = losses.len();
    let mut lds = vec![1usize; n];
    let (mut max_start, mut max_end) = (0i64, 0usize);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && lds[i] < lds[j] + 1 {
                lds[i] = lds[j] + 1;
            }
            if lds[max_end] < lds[i] {
                max_end = i;
                // As fastai: one before the run's first index (may be -1).
                max_start = max_end as i64 - lds[max_end] as i64;
            }
        }
    }
    let sections = (max_end as i64 - max_start) as f64 / 3.0;
    let idx = max_start + sections as i64 + (sections / 2.0) as i64;
    Some(lrs[idx.clamp(0, n as i64 - 1) as usize])
}
