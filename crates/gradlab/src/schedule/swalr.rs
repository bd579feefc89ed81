//! The learning rate of stochastic weight averaging, as PyTorch's `SWALR`
//! (`torch.optim.swa_utils`, Izmailov et al. 2018).
//!
//! From the learning rate `lr₀` each group has when SWA starts, the rate is annealed to
//! `swa_lr` over `anneal_epochs` steps and then held there:
//!
//! ```text
//! lr(k) = swa_lr · α(t) + lr₀ · (1 − α(t)),   t = min(1, k / max(1, anneal_epochs))
//! α(t) = (1 − cos πt) / 2   (anneal_strategy=cos)   or   t   (linear)
//! ```
//! With `anneal_epochs=0` the rate is `swa_lr` from the first step. As PyTorch does, each
//! step recovers `lr₀` from the group's current rate (`(lr − α_prev·swa_lr) / (1 − α_prev)`)
//! rather than storing it, so the values agree with PyTorch's to the last bits; the state is
//! only the step count. A "step" is whatever the caller steps it by (PyTorch's examples step
//! it per epoch; `gradlab train` steps it after every optimizer step).

use super::{load_state, save_state, Hyper, Schedule};
use crate::spec::{Args, Domain, Spec};
use crate::Result;

/// The SWA learning-rate schedule.
#[derive(Debug, Clone)]
pub struct Swalr {
    swa_lr: f64,
    anneal_epochs: u64,
    anneal_strategy: &'static str,
    /// PyTorch's `_step_count - 1`: 0 after the initial step.
    epoch: u64,
}

impl Swalr {
    /// Parses `swalr(swa_lr, anneal_epochs=10, anneal_strategy=cos)`.
    pub fn parse(args: &Args) -> Result<Self> {
        Ok(Swalr {
            swa_lr: args.required_number("swa_lr", Domain::NON_NEGATIVE)?,
            anneal_epochs: args.count("anneal_epochs", 10)?,
            anneal_strategy: args.word("anneal_strategy", "cos", &["cos", "linear"])?,
            epoch: 0,
        })
    }

    /// The schedule with its keys given directly.
    pub fn new(swa_lr: f64, anneal_epochs: u64, linear: bool) -> Self {
        Swalr {
            swa_lr,
            anneal_epochs,
            anneal_strategy: if linear { "linear" } else { "cos" },
            epoch: 0,
        }
    }

    fn anneal(&self, t: f64) -> f64 {
        match self.anneal_strategy {
            "linear" => t,
            _ => (1.0 - (std::f64::consts::PI * t).cos()) / 2.0,
        }
    }

    fn fraction(&self, step: f64) -> f64 {
        (step / self.anneal_epochs.max(1) as f64).clamp(0.0, 1.0)
    }

    /// PyTorch's `get_lr` at the current step count.
    fn apply(&self, hp: &mut [Hyper]) {
        let step = if self.anneal_epochs == 0 {
            self.epoch.max(1)
        } else {
            self.epoch
        } as f64;
        let prev_alpha = self.anneal(self.fraction(step - 1.0));
        let alpha = self.anneal(self.fraction(step));
        for h in hp.iter_mut() {
            let initial = if prev_alpha == 1.0 {
                self.swa_lr
            } else {
                (h.lr - prev_alpha * self.swa_lr) / (1.0 - prev_alpha)
            };
            h.lr = self.swa_lr * alpha + initial * (1.0 - alpha);
        }
    }
}

impl Schedule for Swalr {
    fn spec(&self) -> Spec {
        Spec::new("swalr")
            .with("swa_lr", self.swa_lr)
            .with("anneal_epochs", self.anneal_epochs as f64)
            .with("anneal_strategy", self.anneal_strategy)
    }

    fn start(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.epoch = 0;
        self.apply(hp);
        Ok(())
    }

    fn step(&mut self, hp: &mut [Hyper], _metric: Option<f64>) -> Result<()> {
        self.epoch += 1;
        self.apply(hp);
        Ok(())
    }

    fn restart(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.start(hp)
    }

    fn state(&self) -> serde_json::Value {
        save_state(&self.spec(), &self.epoch)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.epoch = load_state(&self.spec(), state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper(lr: f64) -> Vec<Hyper> {
        vec![Hyper::new(lr, None)]
    }

    fn run(s: &mut Swalr, lr0: f64, steps: usize) -> Vec<f64> {
        let mut hp = hyper(lr0);
        s.start(&mut hp).unwrap();
        let mut out = vec![hp[0].lr];
        for _ in 0..steps {
            s.step(&mut hp, None).unwrap();
            out.push(hp[0].lr);
        }
        out
    }

    #[test]
    fn anneals_from_the_starting_rate_to_swa_lr_and_holds_it() {
        let lrs = run(&mut Swalr::new(0.01, 4, false), 0.05, 6);
        for (k, lr) in lrs.iter().enumerate() {
            let t = (k as f64 / 4.0).min(1.0);
            let alpha = (1.0 - (std::f64::consts::PI * t).cos()) / 2.0;
            let want = 0.01 * alpha + 0.05 * (1.0 - alpha);
            assert!((lr - want).abs() < 1e-15, "step {k}: {lr} vs {want}");
        }
        let linear = run(&mut Swalr::new(0.0, 2, true), 0.1, 3);
        assert_eq!(linear[0], 0.1);
        assert!((linear[1] - 0.05).abs() < 1e-16);
        assert_eq!(&linear[2..], &[0.0, 0.0]);
    }

    #[test]
    fn no_annealing_gives_swa_lr_at_once() {
        assert_eq!(run(&mut Swalr::new(0.01, 0, false), 0.5, 3), vec![0.01; 4]);
    }
}
