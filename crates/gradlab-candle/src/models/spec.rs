//! Which model to build: its kind (logistic regression, MLP, CNN) and settings (widths,
//! activation, batch norm, dropout), parsed from the command line's words.

use crate::ops;
use crate::{Error, Result};
use candle_core::Tensor;

/// Which model, with its settings. As JSON (in a run's configuration) the kind is `model`;
/// `activation`, `batch_norm` and `dropout` came later, and a configuration without them
/// (an older checkpoint's) was trained with relu, no batch norm and no dropout.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// `logreg`, `mlp` or `cnn`.
    #[serde(rename = "model")]
    pub kind: ModelKind,
    /// Hidden widths of the MLP (default 256, 128).
    pub widths: Vec<usize>,
    /// `relu`, `tanh` or `gelu`.
    #[serde(default)]
    pub activation: Activation,
    /// Batch normalisation after each hidden linear / convolution layer.
    #[serde(default)]
    pub batch_norm: bool,
    /// Dropout probability after each hidden activation of the MLP (0 = none).
    #[serde(default)]
    pub dropout: f64,
}

/// The model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Softmax regression on the pixels.
    LogReg,
    /// Fully connected network.
    Mlp,
    /// LeNet-5-like convolutional network.
    Cnn,
    /// A model of the user's own, given to [`crate::train::Trainer`] (not built from a spec).
    Custom,
}

/// Hidden activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x).
    #[default]
    Relu,
    /// tanh.
    Tanh,
    /// GELU (erf form, PyTorch's default).
    Gelu,
}

impl std::str::FromStr for ModelKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "logreg" => Ok(ModelKind::LogReg),
            "mlp" => Ok(ModelKind::Mlp),
            "cnn" => Ok(ModelKind::Cnn),
            "custom" => Ok(ModelKind::Custom),
            other => Err(Error::setting(
                "--model",
                format!("unknown model '{other}'; known: logreg, mlp, cnn"),
            )),
        }
    }
}

impl std::str::FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "relu" => Ok(Activation::Relu),
            "tanh" => Ok(Activation::Tanh),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::setting(
                "--activation",
                format!("unknown activation '{other}'; known: relu, tanh, gelu"),
            )),
        }
    }
}

impl ModelKind {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::LogReg => "logreg",
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
            ModelKind::Custom => "custom",
        }
    }
}

impl Activation {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
        }
    }

    pub(super) fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => ops::relu(x)?,
            Activation::Tanh => x.tanh()?,
            Activation::Gelu => ops::gelu_erf(x)?,
        })
    }
}

impl ModelSpec {
    /// A model of `kind` with the default settings.
    pub fn new(kind: ModelKind) -> Self {
        ModelSpec {
            kind,
            widths: vec![256, 128],
            activation: Activation::Relu,
            batch_norm: false,
            dropout: 0.0,
        }
    }
}
