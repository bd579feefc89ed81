//! The engine's state saved and loaded: element buffers by `tensor/slot` (bfloat16 ones
//! widened), per-tensor scalars, the groups' specs, the evaluation point.

use super::{parse_config, Engine, EVAL_MODE};
use crate::optim::rule::Rule;
use crate::optim::state::{
    check_version, refuse_foreign, saved_tensor, state_error, StateDict, StateMeta, STATE_VERSION,
};
use crate::optim::Optimizer;
use crate::{Real, Result};
use std::collections::BTreeMap;

impl<T: Real, R: Rule> Engine<T, R> {
    /// The element buffers by `tensor/slot`, the per-tensor scalars and the groups' specs.
    pub(super) fn saved_state(&self) -> StateDict<T> {
        let mut tensors = BTreeMap::new();
        let mut scalars = BTreeMap::new();
        for (i, seg) in self.layout.segments().iter().enumerate() {
            for (slot, name) in self.slot_names.iter().enumerate() {
                let values = self.slot_values(slot, seg.offset..seg.offset + seg.len);
                tensors.insert(
                    format!("{}/{}", seg.name, name),
                    (seg.shape.clone(), values),
                );
            }
            let named = R::SCALARS
                .iter()
                .zip(self.scalars[i].iter())
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            scalars.insert(seg.name.clone(), named);
        }
        StateDict {
            meta: StateMeta {
                version: STATE_VERSION,
                optimizer: self.name().to_string(),
                groups: self.group_specs().iter().map(|s| s.to_string()).collect(),
                step: self.step,
                scalars,
                extra: if R::EVAL_POINT {
                    BTreeMap::from([(EVAL_MODE.to_string(), if self.eval { 1.0 } else { 0.0 })])
                } else {
                    BTreeMap::new()
                },
                whole: Default::default(),
            },
            tensors,
        }
    }

    /// Loads a state written by [`Engine::saved_state`], checked whole before anything
    /// changes.
    pub(super) fn restore_state(&mut self, state: &StateDict<T>) -> Result<()> {
        let meta = &state.meta;
        check_version(meta)?;
        crate::optim::state::check_optimizer(&meta.optimizer, self.name())?;
        if meta.groups.len() != self.configs.len() {
            return Err(state_error(
                None,
                format!(
                    "has {} parameter groups, the optimizer has {}",
                    meta.groups.len(),
                    self.configs.len()
                ),
            ));
        }
        // Check everything before changing anything.
        let mut expected = std::collections::BTreeSet::new();
        for seg in self.layout.segments() {
            for name in &self.slot_names {
                let key = format!("{}/{}", seg.name, name);
                saved_tensor(state, &key, &seg.shape)?;
                expected.insert(key);
            }
            let s = meta.scalars.get(&seg.name).ok_or_else(|| {
                state_error(
                    None,
                    format!("scalars of tensor '{}' are missing", seg.name),
                )
            })?;
            for k in R::SCALARS {
                if !s.contains_key(*k) {
                    return Err(state_error(
                        None,
                        format!("scalar '{k}' of tensor '{}' is missing", seg.name),
                    ));
                }
            }
        }
        refuse_foreign(state, &expected)?;
        if let Some(extra) = meta
            .scalars
            .keys()
            .find(|k| self.layout.index_of(k).is_none())
        {
            return Err(state_error(
                None,
                format!("scalars for unknown tensor '{extra}'"),
            ));
        }
        let eval = match meta.extra.get(EVAL_MODE) {
            None => false,
            Some(v) if *v == 0.0 || *v == 1.0 => R::EVAL_POINT && *v == 1.0,
            Some(v) => {
                return Err(state_error(
                    None,
                    format!("scalar '{EVAL_MODE}' is {v}; it must be 0 (train) or 1 (eval)"),
                ))
            }
        };
        let configs = meta
            .groups
            .iter()
            .map(|g| crate::spec::parse(g).and_then(|s| parse_config::<R>(&s)))
            .map(|r| r.map(|(cfg, hyper, _)| (cfg, hyper)))
            .collect::<Result<Vec<_>>>()?;
        let (configs, hypers): (Vec<_>, Vec<_>) = configs.into_iter().unzip();
        let segments = self.layout.segments().to_vec();
        for (i, seg) in segments.iter().enumerate() {
            for slot in 0..self.slot_names.len() {
                let key = format!("{}/{}", seg.name, self.slot_names[slot]);
                let (_, values) = &state.tensors[&key];
                self.set_slot_values(slot, seg.offset..seg.offset + seg.len, values);
            }
            let s = &meta.scalars[&seg.name];
            for (k, name) in R::SCALARS.iter().enumerate() {
                self.scalars[i][k] = s[*name];
            }
        }
        self.configs = configs;
        self.hypers.restore(hypers);
        self.step = meta.step;
        self.failed = None;
        self.eval = eval;
        Ok(())
    }
}
