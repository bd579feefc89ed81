//! The LR range test on a network (Smith 2017; fastai's `lr_find`).

use super::{batch, setup, shuffle, step_rng, TrainConfig};
use crate::models::cross_entropy;
use crate::{Error, Result};
use gradlab::dist::Local;
use std::sync::Arc;

/// Runs the LR range test on the network: one training step per iteration on successive
/// batches, with a fresh model and optimizer.
pub fn lr_find(
    config: &TrainConfig,
    test: &gradlab::schedule::range_test::RangeTest,
) -> Result<gradlab::schedule::range_test::RangeTestResult> {
    config.check()?;
    let (split, model, mut opt) = setup(config, Arc::new(Local))?;
    let mut epoch = 0;
    let mut order = shuffle(split.train.len(), config.seed, epoch);
    let mut pos = 0;
    let mut step = 0u64;
    let result = test.run(|lr| {
        if pos + config.batch_size > order.len() {
            epoch += 1;
            order = shuffle(split.train.len(), config.seed, epoch);
            pos = 0;
        }
        let idx = &order[pos..(pos + config.batch_size).min(order.len())];
        pos += config.batch_size;
        let (x, y) = batch(&split.train, idx)?;
        let mut rng = step_rng(config.seed, step);
        step += 1;
        let logits = model.forward(&x, true, &mut rng)?;
        let loss = cross_entropy(&logits, &y)?;
        let value = loss.to_scalar::<f32>().map_err(Error::from)? as f64;
        if !value.is_finite() {
            return Ok(value);
        }
        opt.with_engine(|e| e.hypers_mut().iter_mut().for_each(|h| h.lr = lr));
        let grads = loss.backward().map_err(Error::from)?;
        let stepped = if opt.needs_closure() {
            // SAM, L-BFGS: the first evaluation is the one just made; more redo the batch.
            let mut first = Some(grads);
            opt.step_with_closure(|| {
                if let Some(store) = first.take() {
                    return Ok((value, store));
                }
                let logits = model.forward(&x, true, &mut step_rng(config.seed, step - 1))?;
                let loss = cross_entropy(&logits, &y)?;
                Ok((loss.to_scalar::<f32>()? as f64, loss.backward()?))
            })
            .map(|o| o.step)
        } else {
            opt.step_grads(&grads)
        };
        if let Err(e) = stepped {
            if let Error::Gradlab(gradlab::Error::NonFiniteGradient { .. }) = e {
                return Ok(f64::INFINITY);
            }
            return Err(e.into());
        }
        Ok(value)
    })?;
    Ok(result)
}
