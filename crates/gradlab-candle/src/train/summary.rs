//! The run's summary (`summary.json`): the last epoch's figures, the averaged weights'
//! accuracy, SWATS's switch, the memory the run took, and what the run was.

use super::averages::{recompute_batch_norm, with_weights};
use super::data_parallel::{by_rank, evaluate_shared};
use super::diagnostics::{peak_rss_bytes, swats_status};
use super::records::{EpochRecord, SummaryRecord};
use super::{TrainConfig, TrainState};
use crate::data::Split;
use crate::Result;
use gradlab::dist::Collective;

impl TrainState<'_> {
    /// The summary of a run whose last epoch's record is `last_epoch`, after `wall_seconds`.
    pub(super) fn summary(
        &mut self,
        config: &TrainConfig,
        split: &Split,
        last_epoch: &EpochRecord,
        collective: &dyn Collective,
        wall_seconds: f64,
    ) -> Result<SummaryRecord> {
        let swa_accuracy = match &self.averages.swa {
            Some((weights, _)) => Some(with_weights(self.model, weights, || {
                if self.model.has_batch_norm() {
                    recompute_batch_norm(self.model, &split.train, config.batch_size)?;
                }
                let r = evaluate_shared(self.model, &split.test, collective);
                self.model.set_cumulative_batch_norm(false)?;
                r
            })?),
            None => None,
        };
        let swats = swats_status(&mut self.opt, collective);
        let state_bytes = self
            .opt
            .sharded()
            .map(|s| s.state_bytes_held())
            .unwrap_or_else(|| self.opt.with_engine(|e| e.state_bytes_held()));
        Ok(SummaryRecord {
            test_accuracy: last_epoch.test_accuracy,
            test_loss: last_epoch.test_loss,
            train_loss: last_epoch.train_loss,
            train_accuracy: last_epoch.train_accuracy,
            validation_loss: last_epoch.validation_loss,
            validation_accuracy: last_epoch.validation_accuracy,
            ema_test_accuracy: last_epoch.ema_test_accuracy,
            swa_test_accuracy: swa_accuracy.map(|r| r.1),
            swats_switched_at: swats,
            epochs: config.epochs,
            steps: self.step,
            parameters: self.model.num_parameters(),
            ranks: collective.size(),
            optimizer_state_bytes_per_rank: state_bytes,
            peak_rss_bytes: peak_rss_bytes(),
            peak_rss_bytes_by_rank: by_rank(collective, peak_rss_bytes().unwrap_or(0) as f64),
            optimizer_state_bytes_by_rank: by_rank(collective, state_bytes as f64),
            wall_seconds,
            data: split.source.clone(),
            config: config.clone(),
            optimizer_spec: self.opt.with_engine(|e| e.spec_string()),
            gradlab_version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}
