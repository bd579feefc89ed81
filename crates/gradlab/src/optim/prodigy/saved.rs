//! Prodigy's state saved and loaded: the four element buffers of every tensor and the
//! optimizer-wide estimate of the distance to the solution.

use super::*;

impl<T: Real> Prodigy<T> {
    /// The four element buffers per tensor, the estimate and the groups' specs.
    pub(super) fn saved_state(&self) -> StateDict<T> {
        let mut tensors = BTreeMap::new();
        let mut scalars = BTreeMap::new();
        for s in self.layout.segments() {
            for (key, buf) in self.named_buffers() {
                tensors.insert(
                    format!("{}/{key}", s.name),
                    (s.shape.clone(), buf[s.offset..s.offset + s.len].to_vec()),
                );
            }
            scalars.insert(
                s.name.clone(),
                BTreeMap::from([("step".to_string(), self.estimate.k as f64)]),
            );
        }
        let e = &self.estimate;
        StateDict {
            meta: StateMeta {
                version: STATE_VERSION,
                optimizer: "prodigy".into(),
                groups: self.group_specs().iter().map(|s| s.to_string()).collect(),
                step: e.k,
                scalars,
                extra: BTreeMap::from([
                    (D.to_string(), e.d),
                    (D_MAX.to_string(), e.d_max),
                    (D_NUMERATOR.to_string(), e.d_numerator),
                    (K.to_string(), e.k as f64),
                    (STARTED.to_string(), if e.started { 1.0 } else { 0.0 }),
                ]),
                whole: Default::default(),
            },
            tensors,
        }
    }

    /// Loads a state written by [`Prodigy::saved_state`], checked before anything changes.
    pub(super) fn restore_state(&mut self, state: &StateDict<T>) -> Result<()> {
        crate::optim::state::check_optimizer(&state.meta.optimizer, "prodigy")?;
        let groups = &state.meta.groups;
        if groups.len() != self.configs.len() {
            return Err(state_error(
                None,
                format!(
                    "has {} parameter groups, the optimizer has {}",
                    groups.len(),
                    self.configs.len()
                ),
            ));
        }
        let (configs, hypers): (Vec<_>, Vec<_>) = groups
            .iter()
            .map(|text| parse(&crate::spec::parse(text)?))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let extra = |key: &str| saved_extra(state, key);
        let estimate = Estimate {
            d: extra(D)?,
            d_max: extra(D_MAX)?,
            d_numerator: extra(D_NUMERATOR)?,
            k: state.meta.step,
            started: extra(STARTED)? != 0.0,
        };
        if extra(K)? != estimate.k as f64 || !(estimate.d > 0.0 && estimate.d.is_finite()) {
            return Err(state_error(
                None,
                format!(
                    "has an inconsistent estimate (d = {}, k = {}, step = {})",
                    estimate.d,
                    extra(K)?,
                    estimate.k
                ),
            ));
        }
        let n = self.layout.total();
        let mut loaded = Buffers {
            s: vec![T::ZERO; n],
            p0: vec![T::ZERO; n],
            exp_avg: vec![T::ZERO; n],
            exp_avg_sq: vec![T::ZERO; n],
        };
        let mut own = BTreeSet::new();
        for s in self.layout.segments() {
            for (key, buf) in loaded.named_mut() {
                let key = format!("{}/{key}", s.name);
                buf[s.offset..s.offset + s.len]
                    .copy_from_slice(saved_tensor(state, &key, &s.shape)?);
                own.insert(key);
            }
        }
        refuse_foreign(state, &own)?;
        self.buffers = loaded;
        self.estimate = estimate;
        self.configs = configs;
        self.hypers.restore(hypers);
        Ok(())
    }

    fn named_buffers(&self) -> [(&'static str, &Vec<T>); 4] {
        let b = &self.buffers;
        [
            (S, &b.s),
            (P0, &b.p0),
            (EXP_AVG, &b.exp_avg),
            (EXP_AVG_SQ, &b.exp_avg_sq),
        ]
    }
}

impl<T> Buffers<T> {
    fn named_mut(&mut self) -> [(&'static str, &mut Vec<T>); 4] {
        [
            (S, &mut self.s),
            (P0, &mut self.p0),
            (EXP_AVG, &mut self.exp_avg),
            (EXP_AVG_SQ, &mut self.exp_avg_sq),
        ]
    }
}
