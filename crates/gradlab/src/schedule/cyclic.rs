//! Cyclical learning rates (Smith 2017, arXiv:1506.01186), as PyTorch's `CyclicLR`,
//! including its default momentum cycling (momentum or beta1 moves opposite to the lr).
//!
//! ```text
//! cycle = ⌊1 + e/(up + down)⌋,   x = 1 + e/(up + down) − cycle
//! s = x/r if x ≤ r else (x − 1)/(r − 1),          r = up/(up + down)
//! lr = base_lr + (max_lr − base_lr) · s · f
//! momentum = max_momentum − (max_momentum − base_momentum) · s · f
//! f = 1 (triangular), 1/2^(cycle−1) (triangular2), γ^e (exp_range)
//! ```
//! Starting the schedule sets the lr to `base_lr` and momentum to `max_momentum`, as PyTorch's
//! constructor does (overwriting, for SGD, even a momentum of 0).

use super::{load_state, require_momentum, save_state, Hyper, Progress, Schedule};
use crate::spec::Domain;
use crate::spec::{Args, Spec};
use crate::Result;

/// The cyclic schedule.
#[derive(Debug, Clone)]
pub struct Cyclic {
    base_lr: f64,
    max_lr: f64,
    step_size_up: u64,
    step_size_down: Option<u64>,
    mode: &'static str,
    gamma: f64,
    cycle_momentum: bool,
    base_momentum: f64,
    max_momentum: f64,
    progress: Progress,
}

impl Cyclic {
    /// Parses `cyclic(base_lr, max_lr, step_size_up=2000, step_size_down=step_size_up,
    /// mode=triangular, gamma=1, cycle_momentum=true, base_momentum=0.8, max_momentum=0.9)`.
    pub fn parse(args: &Args) -> Result<Self> {
        let step_size_up = args.count("step_size_up", 2000)?;
        let step_size_down = args.opt_count("step_size_down")?;
        if step_size_up + step_size_down.unwrap_or(step_size_up) == 0 {
            return Err(args.invalid("step_size_up", "the cycle must have at least one step"));
        }
        let base_lr = args.required_number("base_lr", Domain::NON_NEGATIVE)?;
        let max_lr = args.required_number("max_lr", Domain::NON_NEGATIVE)?;
        if max_lr < base_lr {
            return Err(args.invalid(
                "max_lr",
                format!(
                    "is {max_lr}, below base_lr = {base_lr}: the cycle runs from base_lr up to \
                     max_lr, so max_lr must be at least base_lr"
                ),
            ));
        }
        Ok(Cyclic {
            base_lr,
            max_lr,
            step_size_up,
            step_size_down,
            mode: args.word(
                "mode",
                "triangular",
                &["triangular", "triangular2", "exp_range"],
            )?,
            gamma: args.number("gamma", 1.0, Domain::NON_NEGATIVE)?,
            cycle_momentum: args.bool("cycle_momentum", true)?,
            base_momentum: args.number("base_momentum", 0.8, Domain::DECAY)?,
            max_momentum: args.number("max_momentum", 0.9, Domain::DECAY)?,
            progress: Progress::default(),
        })
    }

    fn apply(&self, hp: &mut [Hyper]) {
        let e = self.progress.epoch as f64;
        let up = self.step_size_up as f64;
        let total = up + self.step_size_down.unwrap_or(self.step_size_up) as f64;
        let ratio = up / total;
        let cycle = (1.0 + e / total).floor();
        let x = 1.0 + e / total - cycle;
        let scale = if x <= ratio {
            x / ratio
        } else {
            (x - 1.0) / (ratio - 1.0)
        };
        let f = match self.mode {
            "triangular" => 1.0,
            "triangular2" => 1.0 / 2f64.powf(cycle - 1.0),
            _ => self.gamma.powf(e),
        };
        for h in hp.iter_mut() {
            h.lr = self.base_lr + (self.max_lr - self.base_lr) * scale * f;
        }
        if self.cycle_momentum {
            let m = self.max_momentum - (self.max_momentum - self.base_momentum) * scale * f;
            hp.iter_mut().for_each(|h| h.momentum = Some(m));
        }
    }
}

impl Schedule for Cyclic {
    fn spec(&self) -> Spec {
        let mut s = Spec::new("cyclic")
            .with("base_lr", self.base_lr)
            .with("max_lr", self.max_lr)
            .with("step_size_up", self.step_size_up as f64);
        if let Some(down) = self.step_size_down {
            s = s.with("step_size_down", down as f64);
        }
        s.with("mode", self.mode)
            .with("gamma", self.gamma)
            .with("cycle_momentum", self.cycle_momentum)
            .with("base_momentum", self.base_momentum)
            .with("max_momentum", self.max_momentum)
    }

    fn start(&mut self, hp: &mut [Hyper]) -> Result<()> {
        if self.cycle_momentum {
            require_momentum(&self.spec(), hp)?;
        }
        self.progress = Progress {
            epoch: 0,
            base_lrs: vec![self.base_lr; hp.len()],
        };
        self.apply(hp);
        Ok(())
    }

    fn step(&mut self, hp: &mut [Hyper], _metric: Option<f64>) -> Result<()> {
        self.progress.epoch += 1;
        self.apply(hp);
        Ok(())
    }

    fn restart(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.progress.epoch = 0;
        self.apply(hp);
        Ok(())
    }

    fn state(&self) -> serde_json::Value {
        save_state(&self.spec(), &self.progress)
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        self.progress = load_state(&self.spec(), state)?;
        Ok(())
    }
}
