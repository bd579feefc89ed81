//! Muon's state saved and loaded: the momentum of every matrix and the fallback optimizer's
//! state in the same file.

use super::*;

impl<T: Real> Muon<T> {
    /// The momentum of every matrix, the groups' specs and the fallback's state (its
    /// buffers under their own names, its scalars prefixed `fallback.`).
    pub(super) fn saved_state(&self) -> StateDict<T> {
        let mut tensors = BTreeMap::new();
        let mut scalars = BTreeMap::new();
        let mut extra = BTreeMap::new();
        let mut groups = vec![self.spec().to_string()];
        let mut optimizer = "muon".to_string();
        let mut whole = std::collections::BTreeSet::new();
        for m in &self.matrices {
            let s = &self.layout.segments()[m.seg];
            tensors.insert(
                format!("{}/{BUFFER}", s.name),
                (
                    s.shape.clone(),
                    self.momentum[s.offset..s.offset + s.len].to_vec(),
                ),
            );
        }
        if let Some((_, f)) = &self.fallback {
            let fs = f.state_dict();
            tensors.extend(fs.tensors);
            scalars.extend(fs.meta.scalars);
            for (k, v) in fs.meta.extra {
                extra.insert(format!("fallback.{k}"), v);
            }
            extra.insert("fallback.step".into(), fs.meta.step as f64);
            // Its groups with the values as they stand (handed over at its next step).
            let specs = f.group_specs().into_iter().zip(self.fallback_hypers());
            groups.extend(specs.map(|(s, h)| h.written_into(s).to_string()));
            whole = fs.meta.whole;
            optimizer = format!("muon+{}", fs.meta.optimizer);
        }
        StateDict {
            meta: StateMeta {
                version: STATE_VERSION,
                optimizer,
                groups,
                step: self.steps,
                scalars,
                extra,
                whole,
            },
            tensors,
        }
    }

    /// Loads a state written by [`Muon::saved_state`], checked before anything changes.
    pub(super) fn restore_state(&mut self, state: &StateDict<T>) -> Result<()> {
        // "muon", or "muon+" and the fallback's name, which the fallback checks itself.
        let saved = &state.meta.optimizer;
        let fallback_name = match (&self.fallback, saved.strip_prefix("muon+")) {
            (Some(_), Some(name)) => Some(name),
            (Some((_, f)), None) => {
                return crate::optim::state::check_optimizer(saved, &format!("muon+{}", f.name()))
            }
            (None, _) => {
                crate::optim::state::check_optimizer(saved, "muon")?;
                None
            }
        };
        // The hyperparameters as they stood (a schedule may have changed lr and momentum).
        let (config, hyper) = match state.meta.groups.first() {
            Some(text) => {
                let spec = crate::spec::parse(text)?;
                let args = Args::new(&spec, 0);
                let parsed = MuonConfig::parse(&args)?;
                args.finish()?;
                parsed
            }
            None => return Err(state_error(None, "has no parameter group".into())),
        };
        let mut momentum = self.momentum.clone();
        let mut own = std::collections::BTreeSet::new();
        for m in &self.matrices {
            let s = &self.layout.segments()[m.seg];
            let key = format!("{}/{BUFFER}", s.name);
            momentum[s.offset..s.offset + s.len]
                .copy_from_slice(saved_tensor(state, &key, &s.shape)?);
            own.insert(key);
        }
        if let Some((_, f)) = &mut self.fallback {
            let mut fs = StateDict {
                meta: StateMeta {
                    version: state.meta.version,
                    optimizer: fallback_name.unwrap_or_default().to_string(),
                    groups: state.meta.groups.iter().skip(1).cloned().collect(),
                    step: saved_extra(state, "fallback.step")? as u64,
                    scalars: state.meta.scalars.clone(),
                    extra: state
                        .meta
                        .extra
                        .iter()
                        .filter_map(|(k, v)| {
                            k.strip_prefix("fallback.")
                                .filter(|k| *k != "step")
                                .map(|k| (k.to_string(), *v))
                        })
                        .collect(),
                    whole: state.meta.whole.clone(),
                },
                tensors: BTreeMap::new(),
            };
            fs.tensors = state
                .tensors
                .iter()
                .filter(|(k, _)| !own.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            f.load_state_dict(&fs)?;
        } else {
            refuse_foreign(state, &own)?;
        }
        let mut hypers = vec![hyper];
        if let Some((_, f)) = &self.fallback {
            hypers.extend_from_slice(&f.hypers()[1..]);
        }
        self.momentum = momentum;
        self.steps = state.meta.step;
        self.config = config;
        self.hypers.restore(hypers);
        Ok(())
    }
}
