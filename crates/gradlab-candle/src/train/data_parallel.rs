//! What the trainer does differently as one rank of a data-parallel group: its share of each
//! batch, evaluation split over the ranks, figures gathered by rank, and the check that every
//! rank runs the same configuration on the same data.

use super::{batch, TrainConfig};
use crate::data::{Dataset, Split};
use crate::models::{correct, cross_entropy, Network};
use crate::{Error, Result};
use gradlab::dist::Collective;
use gradlab::landscape::Rng;
use serde_json::{json, Value};

/// [`super::evaluate`] split over the ranks of `collective`: each rank evaluates its share of the
/// examples and the sums are combined (collective).
pub fn evaluate_shared(
    model: &dyn Network,
    data: &Dataset,
    collective: &dyn Collective,
) -> Result<(f64, f64)> {
    let (mut loss, mut right) = (0.0, 0usize);
    let mut rng = Rng::new(0);
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in share(&all, collective).chunks(1000) {
        let (x, y) = batch(data, chunk)?;
        let logits = model.forward(&x, false, &mut rng)?;
        loss += cross_entropy(&logits, &y)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        right += correct(&logits, &y)?;
    }
    let mut sums = [loss, right as f64];
    collective.all_sum(&mut sums);
    let n = data.len().max(1) as f64;
    Ok((sums[0] / n, sums[1] / n))
}

/// This rank's contiguous share of a global batch (shares differ by at most one example).
pub fn share<'a>(batch: &'a [usize], collective: &dyn Collective) -> &'a [usize] {
    let (n, r, k) = (batch.len(), collective.rank(), collective.size());
    &batch[r * n / k..(r + 1) * n / k]
}

/// Every rank's `value`, in rank order (collective).
pub(super) fn by_rank(collective: &dyn Collective, value: f64) -> Vec<u64> {
    let mut all = vec![0.0; collective.size()];
    all[collective.rank()] = value;
    collective.all_sum(&mut all);
    all.into_iter().map(|v| v as u64).collect()
}

/// Stops every rank at once when any rank's configuration, data or model differs from rank
/// 0's (collective; nothing to do for one process).
pub(super) fn check_ranks(
    config: &TrainConfig,
    split: &Split,
    model: &dyn Network,
    collective: &dyn Collective,
) -> Result<()> {
    if collective.size() == 1 {
        return Ok(());
    }
    let mut facts = config.to_json();
    facts["out"] = json!(config.out.display().to_string());
    facts["training data"] = json!(split.train.fingerprint());
    facts["test data"] = json!(split.test.fingerprint());
    facts["parameters"] = json!(model.num_parameters());
    facts["gradlab version"] = json!(env!("CARGO_PKG_VERSION"));
    let all = collective.all_gather_bytes(facts.to_string().as_bytes());
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
    let first = parse(&all[0]);
    for (rank, bytes) in all.iter().enumerate().skip(1) {
        let other = parse(bytes);
        let Some(fields) = first.as_object() else {
            continue;
        };
        for (key, value) in fields {
            if other[key] != *value {
                return Err(Error::Ranks {
                    message: format!(
                        "rank {rank} differs from rank 0 in {key}: {} vs {value}; every rank must \
                     run the same command on the same data",
                        other[key]
                    ),
                });
            }
        }
    }
    Ok(())
}
