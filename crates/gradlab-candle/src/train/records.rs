//! What a run writes, as types shared by the trainer and every reader (the CLI, the lab):
//! the lines of `metrics.jsonl` ([`Record`]: a [`StepRecord`] per step, an [`EpochRecord`] per
//! epoch, told apart by their `kind`) and `summary.json` ([`SummaryRecord`]).
//!
//! A number that is not finite (a diverged loss) is written as JSON's `null` and read back as
//! NaN.

use super::TrainConfig;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// After an optimizer step.
    Step(StepRecord),
    /// After an epoch (test set evaluated, checkpoint written).
    Epoch(EpochRecord),
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps taken, this one included.
    pub step: u64,
    /// The epoch (0-based).
    pub epoch: usize,
    /// The batch's mean loss.
    #[serde(deserialize_with = "number_or_nan")]
    pub loss: f64,
    /// The global gradient norm (before clipping).
    #[serde(deserialize_with = "number_or_nan")]
    pub grad_norm: f64,
    /// Whether the step was skipped for non-finite gradients.
    pub skipped: bool,
    /// Loss and gradient evaluations the step took (L-BFGS, SAM: more than one).
    pub evaluations: u32,
    /// Group 0's learning rate in this step.
    #[serde(deserialize_with = "number_or_nan")]
    pub lr: f64,
    /// Group 0's momentum or β1, if the optimizer has one.
    pub momentum: Option<f64>,
    /// Seconds since the run started.
    #[serde(deserialize_with = "number_or_nan")]
    pub seconds: f64,
    /// What the optimizer estimates as it runs, by name (Prodigy's `d`).
    #[serde(flatten, deserialize_with = "numbers_or_nan")]
    pub estimates: BTreeMap<String, f64>,
}

/// One epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch (0-based).
    pub epoch: usize,
    /// Steps taken by its end.
    pub step: u64,
    /// Mean training loss over the epoch's batches.
    #[serde(deserialize_with = "number_or_nan")]
    pub train_loss: f64,
    /// Training accuracy over the epoch's batches.
    #[serde(deserialize_with = "number_or_nan")]
    pub train_accuracy: f64,
    /// Test loss (at the evaluation point: schedule-free's average).
    #[serde(deserialize_with = "number_or_nan")]
    pub test_loss: f64,
    /// Test accuracy.
    #[serde(deserialize_with = "number_or_nan")]
    pub test_accuracy: f64,
    /// Validation loss, with a validation set.
    pub validation_loss: Option<f64>,
    /// Validation accuracy, with a validation set.
    pub validation_accuracy: Option<f64>,
    /// Test accuracy of the EMA weights, with EMA.
    pub ema_test_accuracy: Option<f64>,
    /// Group 0's learning rate at the epoch's end.
    #[serde(deserialize_with = "number_or_nan")]
    pub lr: f64,
    /// Each tensor after the epoch's last step.
    pub tensors: Vec<TensorHealth>,
    /// Seconds since the run started.
    #[serde(deserialize_with = "number_or_nan")]
    pub seconds: f64,
}

/// One tensor after a step: how large its gradient, its weights and its update were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorHealth {
    /// The parameter's name.
    pub name: String,
    /// Its gradient's norm.
    #[serde(deserialize_with = "number_or_nan")]
    pub grad_norm: f64,
    /// Its weights' norm after the step.
    #[serde(deserialize_with = "number_or_nan")]
    pub weight_norm: f64,
    /// ‖update‖ / ‖weights before‖ (0 for zero weights).
    #[serde(deserialize_with = "number_or_nan")]
    pub update_ratio: f64,
}

/// SWATS's switch from Adam to SGD for one tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwatsSwitch {
    /// The tensor.
    pub tensor: String,
    /// The step of the switch, if it happened.
    pub step: Option<u64>,
    /// The SGD learning rate it switched to.
    #[serde(deserialize_with = "number_or_nan")]
    pub sgd_lr: f64,
}

/// `summary.json`: the run's final figures and what the run was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummaryRecord {
    /// The last epoch's test accuracy.
    #[serde(deserialize_with = "number_or_nan")]
    pub test_accuracy: f64,
    /// The last epoch's test loss.
    #[serde(deserialize_with = "number_or_nan")]
    pub test_loss: f64,
    /// The last epoch's training loss.
    #[serde(deserialize_with = "number_or_nan")]
    pub train_loss: f64,
    /// The last epoch's training accuracy.
    #[serde(deserialize_with = "number_or_nan")]
    pub train_accuracy: f64,
    /// The last epoch's validation loss, with a validation set.
    pub validation_loss: Option<f64>,
    /// The last epoch's validation accuracy, with a validation set.
    pub validation_accuracy: Option<f64>,
    /// The last epoch's EMA test accuracy, with EMA.
    pub ema_test_accuracy: Option<f64>,
    /// The SWA average's test accuracy, with SWA.
    pub swa_test_accuracy: Option<f64>,
    /// SWATS's switches per tensor (SWATS only).
    pub swats_switched_at: Option<Vec<SwatsSwitch>>,
    /// Epochs of the run.
    pub epochs: usize,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Parameters of the model.
    pub parameters: usize,
    /// Processes of a data-parallel run (1 otherwise).
    pub ranks: usize,
    /// Bytes of optimizer state this rank held.
    pub optimizer_state_bytes_per_rank: usize,
    /// Peak resident memory of this process (Linux), if known.
    pub peak_rss_bytes: Option<u64>,
    /// Peak resident memory of each rank.
    pub peak_rss_bytes_by_rank: Vec<u64>,
    /// Optimizer state bytes of each rank.
    pub optimizer_state_bytes_by_rank: Vec<u64>,
    /// Wall-clock seconds of the run.
    #[serde(deserialize_with = "number_or_nan")]
    pub wall_seconds: f64,
    /// Where the data came from.
    pub data: String,
    /// The run's whole configuration.
    pub config: TrainConfig,
    /// The optimizer's canonical spec at the end (learning rates as they stood).
    pub optimizer_spec: String,
    /// The gradlab version that wrote it.
    pub gradlab_version: String,
}

/// A number, or NaN where JSON holds `null` (serde_json writes non-finite numbers so).
fn number_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Named numbers, NaN where JSON holds `null`.
fn numbers_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let numbers = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(numbers
        .into_iter()
        .map(|(name, value)| (name, value.unwrap_or(f64::NAN)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(loss: f64, d: f64) -> Record {
        Record::Step(StepRecord {
            step: 7,
            epoch: 1,
            loss,
            grad_norm: 2.5,
            skipped: false,
            evaluations: 1,
            lr: 0.01,
            momentum: Some(0.9),
            seconds: 1.25,
            estimates: BTreeMap::from([("d".to_string(), d)]),
        })
    }

    fn same(a: &Record, b: &Record) -> bool {
        // NaN != NaN: compare the serialised forms, where NaN is null.
        serde_json::to_string(a).unwrap() == serde_json::to_string(b).unwrap()
    }

    #[test]
    fn a_step_line_reads_back_as_written() {
        let record = step(0.5, 1e-6);
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains(r#""kind":"step""#), "{line}");
        assert!(
            line.contains(r#""d":1e-6"#),
            "estimates sit beside the fields: {line}"
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
    }

    #[test]
    fn a_diverged_step_is_null_in_the_file_and_nan_when_read() {
        let record = step(f64::NAN, f64::INFINITY);
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains(r#""loss":null"#), "{line}");
        let back = serde_json::from_str::<Record>(&line).unwrap();
        let Record::Step(s) = &back else {
            panic!("{back:?}")
        };
        assert!(s.loss.is_nan() && s.estimates["d"].is_nan());
        assert!(same(&back, &record));
    }

    #[test]
    fn an_epoch_line_reads_back_as_written() {
        let record = Record::Epoch(EpochRecord {
            epoch: 0,
            step: 120,
            train_loss: 0.4,
            train_accuracy: 0.9,
            test_loss: f64::NAN,
            test_accuracy: 0.8,
            validation_loss: None,
            validation_accuracy: Some(0.85),
            ema_test_accuracy: None,
            lr: 0.1,
            tensors: vec![TensorHealth {
                name: "fc1.weight".into(),
                grad_norm: 1.0,
                weight_norm: 3.0,
                update_ratio: 1e-3,
            }],
            seconds: 2.0,
        });
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains(r#""kind":"epoch""#), "{line}");
        assert!(same(
            &serde_json::from_str::<Record>(&line).unwrap(),
            &record
        ));
    }

    #[test]
    fn a_line_that_is_no_record_is_refused() {
        assert!(serde_json::from_str::<Record>(r#"{"kind":"step","step":3}"#).is_err());
        assert!(serde_json::from_str::<Record>(r#"{"kind":"lap","step":3}"#).is_err());
        assert!(serde_json::from_str::<Record>(r#"{"kind":"step","step":3,"epo"#).is_err());
    }
}
