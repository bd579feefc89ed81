//! Schedules one after another, as PyTorch's `SequentialLR`, and `warmup_cosine`, the
//! warm-up-then-cosine recipe written as such a sequence.
//!
//! `sequential(s1, s2, ..., milestones=[m1, ...])` runs `s1` until step `m1`, then `s2`, ...
//! PyTorch quirks that are matched: every child's base learning rate is the optimizer's
//! learning rate when the sequence starts (not what the previous child left), and at a
//! milestone the next child restarts at epoch 0 with its closed form (`scheduler.step(0)`),
//! so the hand-over may jump.

use super::chainable::Chained;
use super::{build_from_spec, load_state, save_state, schedule_error, Hyper, Schedule};
use super::{cosine::Cosine, linear::Linear};
use crate::spec::Domain;
use crate::spec::{Args, Spec, Value};
use crate::Result;
use serde::{Deserialize, Serialize};

/// A sequence of schedules.
pub struct Sequential {
    children: Vec<Box<dyn Schedule>>,
    milestones: Vec<u64>,
    /// The spec this sequence was written as, when it is a named recipe (`warmup_cosine`).
    alias: Option<Spec>,
    epoch: u64,
}

#[derive(Serialize, Deserialize)]
struct SequentialState {
    epoch: u64,
    children: Vec<serde_json::Value>,
}

impl Sequential {
    /// A sequence; `milestones` must be strictly increasing, one fewer than `children`.
    pub fn new(
        children: Vec<Box<dyn Schedule>>,
        milestones: Vec<u64>,
        spec_for_errors: &Args,
    ) -> Result<Self> {
        if children.is_empty() {
            return Err(spec_for_errors.invalid("(schedules)", "needs at least one schedule"));
        }
        if milestones.len() + 1 != children.len() {
            return Err(spec_for_errors.invalid(
                "milestones",
                format!(
                    "{} schedules need {} milestones, got {}",
                    children.len(),
                    children.len() - 1,
                    milestones.len()
                ),
            ));
        }
        if milestones.first() == Some(&0) || milestones.windows(2).any(|w| w[1] <= w[0]) {
            return Err(
                spec_for_errors.invalid("milestones", "must be positive and strictly increasing")
            );
        }
        if children.iter().any(|c| c.needs_metric()) {
            return Err(
                spec_for_errors.invalid("(schedules)", "plateau cannot be part of a sequence")
            );
        }
        Ok(Sequential {
            children,
            milestones,
            alias: None,
            epoch: 0,
        })
    }

    /// Parses `sequential(s1, s2, ..., milestones=[...])`.
    pub fn parse(args: &Args) -> Result<Self> {
        let mut children = Vec::new();
        let mut i = 0;
        while let Some(v) = args.positional(i) {
            let spec = match v {
                Value::Spec(s) => s.clone(),
                Value::Word(w) => Spec::new(w.clone()),
                other => {
                    return Err(args.invalid(
                        "(schedules)",
                        format!("expected a schedule spec, got {other}"),
                    ))
                }
            };
            children.push(build_from_spec(&spec)?);
            i += 1;
        }
        let milestones = args.counts("milestones")?.unwrap_or_default();
        Sequential::new(children, milestones, args)
    }

    fn active(&self, epoch: u64) -> usize {
        self.milestones.iter().filter(|m| **m <= epoch).count()
    }
}

/// `warmup_cosine(warmup_steps, total_steps, eta_min=0, warmup_start_factor=0.01)`: exactly
/// `sequential(linear(start_factor=warmup_start_factor, end_factor=1, total_iters=warmup_steps),
/// cosine(t_max=total_steps − warmup_steps, eta_min=eta_min), milestones=[warmup_steps])`.
pub fn warmup_cosine(args: &Args) -> Result<Sequential> {
    let warmup = args
        .opt_count("warmup_steps")?
        .ok_or_else(|| args.invalid("warmup_steps", "is required"))?;
    let total = args
        .opt_count("total_steps")?
        .ok_or_else(|| args.invalid("total_steps", "is required"))?;
    let eta_min = args.number("eta_min", 0.0, Domain::NON_NEGATIVE)?;
    let start_factor = args.number("warmup_start_factor", 0.01, Domain::UNIT_OPEN_LOW)?;
    if warmup == 0 {
        return Err(args.invalid("warmup_steps", "must be at least 1"));
    }
    if total <= warmup {
        return Err(args.invalid("total_steps", "must be larger than warmup_steps"));
    }
    let linear = Chained::new(Linear {
        start_factor,
        end_factor: 1.0,
        total_iters: warmup,
    });
    let cosine = Chained::new(Cosine {
        t_max: total - warmup,
        eta_min,
    });
    let mut seq = Sequential::new(vec![Box::new(linear), Box::new(cosine)], vec![warmup], args)?;
    seq.alias = Some(
        Spec::new("warmup_cosine")
            .with("warmup_steps", warmup as f64)
            .with("total_steps", total as f64)
            .with("eta_min", eta_min)
            .with("warmup_start_factor", start_factor),
    );
    Ok(seq)
}

impl Schedule for Sequential {
    fn spec(&self) -> Spec {
        if let Some(alias) = &self.alias {
            return alias.clone();
        }
        let mut spec = Spec::new("sequential");
        for c in &self.children {
            spec = spec.with_positional(c.spec());
        }
        spec.with(
            "milestones",
            Value::List(
                self.milestones
                    .iter()
                    .map(|m| Value::Num(*m as f64))
                    .collect(),
            ),
        )
    }

    fn start(&mut self, hp: &mut [Hyper]) -> Result<()> {
        // Each child is built on the optimizer in turn (PyTorch's constructors): base lrs are
        // the optimizer's, momentum changes made by constructors carry over.
        let mut scratch = hp.to_vec();
        for child in &mut self.children {
            for (s, h) in scratch.iter_mut().zip(hp.iter()) {
                s.lr = h.lr;
            }
            child.start(&mut scratch)?;
        }
        for (h, s) in hp.iter_mut().zip(&scratch) {
            h.momentum = s.momentum;
        }
        self.epoch = 0;
        self.children[0].start(hp)
    }

    fn step(&mut self, hp: &mut [Hyper], metric: Option<f64>) -> Result<()> {
        self.epoch += 1;
        let idx = self.active(self.epoch);
        if idx > 0 && self.milestones[idx - 1] == self.epoch {
            self.children[idx].restart(hp)
        } else {
            self.children[idx].step(hp, metric)
        }
    }

    fn restart(&mut self, hp: &mut [Hyper]) -> Result<()> {
        self.epoch = 0;
        self.children[0].restart(hp)
    }

    fn state(&self) -> serde_json::Value {
        save_state(
            &self.spec(),
            &SequentialState {
                epoch: self.epoch,
                children: self.children.iter().map(|c| c.state()).collect(),
            },
        )
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let s: SequentialState = load_state(&self.spec(), state)?;
        if s.children.len() != self.children.len() {
            return Err(schedule_error(
                &self.spec(),
                "the saved state has a different number of schedules",
            ));
        }
        for (child, st) in self.children.iter_mut().zip(&s.children) {
            child.load_state(st)?;
        }
        self.epoch = s.epoch;
        Ok(())
    }
}
