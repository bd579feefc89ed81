//! L-BFGS's memory saved and loaded (direction, previous gradient, curvature pairs, step
//! length and counters), so a resumed run continues exactly.

use super::{Lbfgs, LbfgsConfig, Memory, SLOTS};
use crate::optim::state::{
    saved_extra, saved_tensor, state_error, StateDict, StateMeta, STATE_VERSION,
};
use crate::spec::Args;
use crate::{Real, Result};
use std::collections::{BTreeMap, VecDeque};

impl<T: Real> Lbfgs<T> {
    /// The memory as a state dict: the direction and previous gradient per tensor, the
    /// curvature pairs stacked per tensor, the scalars by name.
    pub(super) fn saved_state(&self) -> StateDict<T> {
        let m = &self.memory;
        let mut tensors = BTreeMap::new();
        let mut extra = BTreeMap::new();
        extra.insert("lbfgs_func_evals".into(), m.func_evals as f64);
        extra.insert("lbfgs_n_iter".into(), m.n_iter as f64);
        extra.insert("lbfgs_t".into(), m.t);
        extra.insert("lbfgs_h_diag".into(), m.h_diag);
        extra.insert("lbfgs_prev_loss".into(), m.prev_loss);
        extra.insert("lbfgs_history".into(), m.pairs.len() as f64);
        for (i, (_, _, ro)) in m.pairs.iter().enumerate() {
            extra.insert(format!("lbfgs_ro_{i}"), *ro);
        }
        let k = m.pairs.len();
        for seg in self.layout.segments() {
            let range = seg.offset..seg.offset + seg.len;
            tensors.insert(
                format!("{}/{}", seg.name, SLOTS[0]),
                (seg.shape.clone(), m.d[range.clone()].to_vec()),
            );
            tensors.insert(
                format!("{}/{}", seg.name, SLOTS[1]),
                (seg.shape.clone(), m.prev_flat_grad[range.clone()].to_vec()),
            );
            let mut shape = vec![k];
            shape.extend(&seg.shape);
            let ys: Vec<T> = m
                .pairs
                .iter()
                .flat_map(|(y, _, _)| y[range.clone()].to_vec())
                .collect();
            let ss: Vec<T> = m
                .pairs
                .iter()
                .flat_map(|(_, s, _)| s[range.clone()].to_vec())
                .collect();
            tensors.insert(format!("{}/lbfgs_old_dirs", seg.name), (shape.clone(), ys));
            tensors.insert(format!("{}/lbfgs_old_stps", seg.name), (shape, ss));
        }
        StateDict {
            meta: StateMeta {
                version: STATE_VERSION,
                optimizer: "lbfgs".into(),
                groups: vec![self.config.to_spec(self.hypers.group(0)).to_string()],
                step: self.steps,
                scalars: BTreeMap::new(),
                extra,
                whole: Default::default(),
            },
            tensors,
        }
    }

    /// Loads a state written by [`Lbfgs::saved_state`], checked whole before anything changes.
    pub(super) fn restore_state(&mut self, state: &StateDict<T>) -> Result<()> {
        crate::optim::state::check_optimizer(&state.meta.optimizer, "lbfgs")?;
        let get = |k: &str| saved_extra(state, k);
        // The hyperparameters as they stood (a schedule may have changed lr).
        let (config, hyper) = match state.meta.groups.as_slice() {
            [text] => {
                let spec = crate::spec::parse(text)?;
                let args = Args::new(&spec, 0);
                let parsed = LbfgsConfig::parse(&args)?;
                args.finish()?;
                parsed
            }
            other => {
                return Err(state_error(
                    None,
                    format!("has {} parameter groups; lbfgs has one", other.len()),
                ))
            }
        };
        let k = get("lbfgs_history")?;
        if k < 0.0 || k.fract() != 0.0 || k > config.history_size as f64 {
            return Err(state_error(
                None,
                format!(
                    "scalar 'lbfgs_history' is {k}; it must be a whole number up to history_size = {}",
                    config.history_size
                ),
            ));
        }
        let k = k as usize;
        let n = self.layout.total();
        let mut d = vec![T::ZERO; n];
        let mut prev = vec![T::ZERO; n];
        let mut ys = vec![vec![T::ZERO; n]; k];
        let mut ss = vec![vec![T::ZERO; n]; k];
        for seg in self.layout.segments() {
            let range = seg.offset..seg.offset + seg.len;
            let tensor = |slot: &str, shape: &[usize]| {
                saved_tensor(state, &format!("{}/{slot}", seg.name), shape)
            };
            d[range.clone()].copy_from_slice(tensor(SLOTS[0], &seg.shape)?);
            prev[range.clone()].copy_from_slice(tensor(SLOTS[1], &seg.shape)?);
            let mut shape = vec![k];
            shape.extend(&seg.shape);
            let y = tensor("lbfgs_old_dirs", &shape)?;
            let s = tensor("lbfgs_old_stps", &shape)?;
            for i in 0..k {
                ys[i][range.clone()].copy_from_slice(&y[i * seg.len..(i + 1) * seg.len]);
                ss[i][range.clone()].copy_from_slice(&s[i * seg.len..(i + 1) * seg.len]);
            }
        }
        let mut pairs = VecDeque::with_capacity(k);
        for (i, (y, s)) in ys.into_iter().zip(ss).enumerate() {
            pairs.push_back((y, s, get(&format!("lbfgs_ro_{i}"))?));
        }
        let count = |k: &str| -> Result<u64> {
            let v = get(k)?;
            if v < 0.0 || v.fract() != 0.0 {
                return Err(state_error(
                    None,
                    format!("scalar '{k}' is {v}, not a count"),
                ));
            }
            Ok(v as u64)
        };
        self.memory = Memory {
            func_evals: count("lbfgs_func_evals")?,
            n_iter: count("lbfgs_n_iter")?,
            d,
            t: get("lbfgs_t")?,
            h_diag: get("lbfgs_h_diag")?,
            prev_flat_grad: prev,
            prev_loss: get("lbfgs_prev_loss")?,
            pairs,
        };
        self.steps = state.meta.step;
        self.failed = None;
        self.config = config;
        self.hypers.restore(vec![hyper]);
        Ok(())
    }
}
