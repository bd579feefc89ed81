//! The data a run trains and evaluates on: the loaded digits cut to the classes asked for,
//! a validation set held out of the training data, and the training-set limit.

use super::TrainConfig;
use crate::data::{self, Dataset, Split, MNIST_MEAN, MNIST_STD};
use crate::{Error, Result};

/// How the pixels reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputScale {
    /// Scaled to [0, 1] and standardised with MNIST's mean and standard deviation
    /// (torchvision's `Normalize((0.1307,), (0.3081,))`).
    #[default]
    Standardized,
    /// The raw 0–255 pixel values (for studying how input scale shapes the loss surface).
    Raw,
}

impl InputScale {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            InputScale::Standardized => "standardized",
            InputScale::Raw => "raw",
        }
    }
}

impl std::str::FromStr for InputScale {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "standardized" => Ok(InputScale::Standardized),
            "raw" => Ok(InputScale::Raw),
            other => Err(Error::setting(
                "--inputs",
                format!("--inputs '{other}' is not known; known: standardized, raw"),
            )),
        }
    }
}

/// A run's data: training and test sets, and the validation set when one is held out.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Training and test sets.
    pub split: Split,
    /// The last `validation` examples of the training set, held out.
    pub validation: Option<Dataset>,
    /// How many examples the training set had after the class filter (before the validation
    /// set and the limit cut it): the count a curriculum's scores must have.
    pub filtered_train: usize,
}

/// Loads the configured data (the bundled digits or `data_dir`) and cuts it as `config` says.
pub fn load_data(config: &TrainConfig) -> Result<RunData> {
    let split = load_scaled(config.data_dir.as_deref(), config.inputs)?;
    prepare(split, config)
}

/// The digits of `data_dir` (default: the bundled ones) with their pixels as `inputs` says.
fn load_scaled(data_dir: Option<&std::path::Path>, inputs: InputScale) -> Result<Split> {
    let mut split = match data_dir {
        Some(dir) => data::load_dir(dir)?,
        None => data::bundled()?,
    };
    if inputs == InputScale::Raw {
        for set in [&mut split.train, &mut split.test] {
            for p in &mut set.images {
                *p = ((*p * MNIST_STD + MNIST_MEAN) * 255.0).round();
            }
        }
    }
    Ok(split)
}

/// The data a checkpoint's model was trained on, for analysing it: the digits of `data_dir`
/// (default: the bundled ones) with the pixel scale and classes of its configuration
/// (`state.json`'s `config`), neither cut by a validation set nor limited.
pub fn checkpoint_data(
    config: &serde_json::Value,
    data_dir: Option<&std::path::Path>,
) -> Result<Split> {
    let inputs = match config.get("inputs").and_then(|v| v.as_str()) {
        None => InputScale::Standardized,
        Some(name) => name.parse()?,
    };
    let mut split = load_scaled(data_dir, inputs)?;
    if let Some(list) = config.get("classes").and_then(|v| v.as_array()) {
        let classes: Vec<u8> = list
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u8)
            .collect();
        split.train = keep_classes(&split.train, &classes);
        split.test = keep_classes(&split.test, &classes);
    }
    Ok(split)
}

/// `split` cut as `config` says: to `classes`, the last `validation` training examples held
/// out, then the first `train_limit` of the rest; refused when a part is empty.
pub(crate) fn prepare(mut split: Split, config: &TrainConfig) -> Result<RunData> {
    if let Some(classes) = &config.classes {
        let before = split.train.len();
        split.train = keep_classes(&split.train, classes);
        split.test = keep_classes(&split.test, classes);
        if split.train.is_empty() {
            return Err(Error::setting(
                "--classes",
                format!(
                    "--classes {}: none of the {before} training examples has one of these labels",
                    class_list(classes)
                ),
            ));
        }
        split.source = format!("{} (classes {})", split.source, class_list(classes));
    }
    let filtered_train = split.train.len();
    let mut validation = None;
    if let Some(n) = config.validation {
        if n == 0 || n >= split.train.len() {
            return Err(Error::setting(
                "--validation",
                format!(
                    "--validation {n} is out of range: it must be at least 1 and leave training \
                 examples (the training set has {})",
                    split.train.len()
                ),
            ));
        }
        let cut = split.train.len() - n;
        validation = Some(split.train.slice(cut..split.train.len()));
        split.train = split.train.slice(0..cut);
    }
    if let Some(n) = config.train_limit {
        let n = n.min(split.train.len());
        split.train = split.train.slice(0..n);
    }
    if split.train.is_empty() {
        return Err(Error::setting(
            "--train-limit",
            match config.train_limit {
                Some(n) => {
                    format!("--train-limit {n} leaves no training examples: it must be at least 1")
                }
                None => format!("{}: the training set has 0 examples", split.source),
            },
        ));
    }
    if split.test.is_empty() {
        return Err(Error::setting(
            "--data",
            format!(
                "{}: the test set has 0 examples (accuracy and loss would be undefined)",
                split.source
            ),
        ));
    }
    Ok(RunData {
        split,
        validation,
        filtered_train,
    })
}

fn class_list(classes: &[u8]) -> String {
    classes
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The examples of `set` whose label is one of `classes`, in their order.
fn keep_classes(set: &Dataset, classes: &[u8]) -> Dataset {
    let p = set.pixels();
    let mut out = Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        rows: set.rows,
        cols: set.cols,
    };
    for (i, &label) in set.labels.iter().enumerate() {
        if classes.contains(&label) {
            out.images
                .extend_from_slice(&set.images[i * p..(i + 1) * p]);
            out.labels.push(label);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelKind, ModelSpec};
    use std::path::Path;

    fn digits(labels: &[u8]) -> Dataset {
        Dataset {
            images: labels.iter().map(|&l| l as f32).collect(),
            labels: labels.to_vec(),
            rows: 1,
            cols: 1,
        }
    }

    fn config() -> TrainConfig {
        TrainConfig::new(
            ModelSpec::new(ModelKind::LogReg),
            "sgd(lr=0.1)",
            Path::new("x"),
        )
    }

    #[test]
    fn classes_then_validation_then_limit() {
        let split = Split {
            train: digits(&[0, 5, 1, 6, 7, 2, 8, 9]),
            test: digits(&[5, 0, 9]),
            source: "toy".into(),
        };
        let mut c = config();
        c.classes = Some(vec![5, 6, 7, 8, 9]);
        c.validation = Some(2);
        c.train_limit = Some(2);
        let d = prepare(split, &c).unwrap();
        assert_eq!(d.filtered_train, 5);
        assert_eq!(d.split.train.labels, vec![5, 6]);
        assert_eq!(d.validation.unwrap().labels, vec![8, 9]);
        assert_eq!(d.split.test.labels, vec![5, 9]);
        assert!(d.split.source.contains("classes 5,6,7,8,9"));
    }

    #[test]
    fn bad_cuts_are_refused_with_their_numbers() {
        let split = Split {
            train: digits(&[0, 1, 2]),
            test: digits(&[0]),
            source: "toy".into(),
        };
        let mut c = config();
        c.validation = Some(3);
        let e = prepare(split.clone(), &c).unwrap_err().to_string();
        assert!(
            e.contains("--validation 3 is out of range") && e.contains("has 3"),
            "{e}"
        );
        let mut c = config();
        c.classes = Some(vec![7]);
        let e = prepare(split, &c).unwrap_err().to_string();
        assert!(e.contains("--classes 7: none of the 3"), "{e}");
    }
}
