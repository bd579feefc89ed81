//! Adafactor's state saved and loaded in torch's shapes (`[..., n, 1]` row and `[..., 1, m]`
//! column means, V for vectors), bf16 ones widened and tagged with their storage.

use super::*;

impl<T: Real> Adafactor<T> {
    /// The second-moment buffers of every tensor (factored means or V, in their stored
    /// type) and the groups' specs.
    pub(super) fn saved_state(&self) -> StateDict<T> {
        let mut tensors = BTreeMap::new();
        let mut scalars = BTreeMap::new();
        let mut whole = BTreeSet::new();
        for ((s, m), full) in self
            .layout
            .segments()
            .iter()
            .zip(&self.moments)
            .zip(&self.shapes)
        {
            for (key, shape, values) in saved_buffers(&s.shape, full, m) {
                let key = format!("{}/{key}", s.name);
                if matches!(m, Moment::Factored { .. }) {
                    whole.insert(key.clone());
                }
                tensors.insert(key, (shape, values));
            }
            scalars.insert(
                s.name.clone(),
                BTreeMap::from([("step".to_string(), self.steps as f64)]),
            );
        }
        StateDict {
            meta: StateMeta {
                version: STATE_VERSION,
                optimizer: "adafactor".into(),
                groups: self.group_specs().iter().map(|s| s.to_string()).collect(),
                step: self.steps,
                scalars,
                extra: BTreeMap::new(),
                whole,
            },
            tensors,
        }
    }

    /// Loads a state written by [`Adafactor::saved_state`], checked before anything
    /// changes.
    pub(super) fn restore_state(&mut self, state: &StateDict<T>) -> Result<()> {
        crate::optim::state::check_optimizer(&state.meta.optimizer, "adafactor")?;
        let (configs, hypers): (Vec<_>, Vec<_>) =
            load_configs(&state.meta.groups, self.configs.len())?
                .into_iter()
                .unzip();
        if configs[0].bf16_state != self.configs[0].bf16_state {
            return Err(state_error(
                None,
                format!(
                    "was saved with state_dtype={}, the optimizer has state_dtype={}",
                    dtype(configs[0].bf16_state),
                    dtype(self.configs[0].bf16_state)
                ),
            ));
        }
        let mut moments = self.moments.clone();
        let mut own = BTreeSet::new();
        for ((s, m), full) in self
            .layout
            .segments()
            .iter()
            .zip(moments.iter_mut())
            .zip(&self.shapes)
        {
            let mut saved = Vec::new();
            for (key, shape, _) in saved_buffers(&s.shape, full, m) {
                let key = format!("{}/{key}", s.name);
                saved.push(saved_tensor(state, &key, &shape)?);
                own.insert(key);
            }
            match m {
                Moment::Factored {
                    row_var, col_var, ..
                } => {
                    row_var.copy_from_slice(saved[0]);
                    col_var.copy_from_slice(saved[1]);
                }
                Moment::Full { variance } => variance.copy_from_slice(saved[0]),
                Moment::Compact { bits, .. } => {
                    for (b, v) in bits.iter_mut().zip(saved[0]) {
                        *b = to_bf16_nearest(v.to_f32());
                    }
                }
            }
        }
        refuse_foreign(state, &own)?;
        self.moments = moments;
        self.configs = configs;
        self.hypers.restore(hypers);
        self.steps = state.meta.step;
        Ok(())
    }
}

/// A tensor's saved buffers: name, shape as torch keeps it (`[..., n, 1]` and `[..., 1, m]`
/// for the factored means, from the `whole` tensor's shape; V in the `held` elements' shape)
/// and values.
fn saved_buffers<T: Real>(
    held: &[usize],
    whole: &[usize],
    m: &Moment<T>,
) -> Vec<(&'static str, Vec<usize>, Vec<T>)> {
    match m {
        Moment::Factored {
            row_var, col_var, ..
        } => {
            let d = whole.len();
            let mut rows = whole.to_vec();
            rows[d - 1] = 1;
            let mut cols = whole.to_vec();
            cols[d - 2] = 1;
            vec![(ROW, rows, row_var.clone()), (COL, cols, col_var.clone())]
        }
        Moment::Full { variance } => vec![(VARIANCE, held.to_vec(), variance.clone())],
        Moment::Compact { bits, .. } => {
            let values = bits.iter().map(|&b| T::from_f32(from_bf16(b))).collect();
            vec![(VARIANCE, held.to_vec(), values)]
        }
    }
}

fn dtype(bf16: bool) -> &'static str {
    if bf16 {
        "bf16"
    } else {
        "f32"
    }
}

/// The groups' hyperparameters as they stood when a state was saved.
fn load_configs(groups: &[String], expected: usize) -> Result<Vec<(AdafactorConfig, Hyper)>> {
    if groups.len() != expected {
        return Err(state_error(
            None,
            format!(
                "has {} parameter groups, the optimizer has {expected}",
                groups.len()
            ),
        ));
    }
    groups
        .iter()
        .map(|text| parse(&crate::spec::parse(text)?))
        .collect()
}
