//! The lecture's models: logistic regression (the convex baseline), an MLP (widths,
//! activation, optional batch norm and dropout) and a LeNet-5-like CNN (optional batch
//! norm). Initialisation is seeded and deterministic (PyTorch's default for linear and
//! convolution layers: weights and biases uniform in ±1/√fan_in).

use crate::ops::{self, Conv2dParams};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use gradlab::landscape::Rng;
use std::cell::RefCell;

mod network;
mod spec;

pub use network::{correct, cross_entropy, model_tensors, scalar, CustomModel, Network};
pub use spec::{Activation, ModelKind, ModelSpec};

enum Layer {
    Flatten,
    Linear { w: usize, b: usize },
    Conv { w: usize, b: usize, padding: usize },
    MaxPool(usize),
    Act(Activation),
    BatchNorm(BatchNorm),
    Dropout(f64),
}

/// Batch normalisation with running statistics (momentum 0.1, eps 1e-5, as PyTorch).
struct BatchNorm {
    gamma: usize,
    beta: usize,
    /// Channel axis: 1 for both (N, C) and (N, C, H, W).
    spatial: bool,
    running_mean: RefCell<Tensor>,
    running_var: RefCell<Tensor>,
    /// None: exponential average with momentum 0.1; Some(n): cumulative average of n batches
    /// (used to recompute statistics for averaged weights).
    cumulative: RefCell<Option<usize>>,
}

/// A model: named parameters and the layers that use them.
pub struct Model {
    spec: ModelSpec,
    params: Vec<(String, Var)>,
    layers: Vec<Layer>,
    dtype: DType,
}

fn uniform(rng: &mut Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n)
        .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
        .collect()
}

impl Model {
    /// Builds the model for `rows×cols` single-channel images and 10 classes, initialised
    /// from `seed`.
    pub fn new(spec: &ModelSpec, rows: usize, cols: usize, seed: u64) -> Result<Self> {
        if spec.kind == ModelKind::Custom {
            return Err(Error::unsupported(
                "a custom model is not built from a spec: train a candle Module of your own with \
                 gradlab_candle::train::Trainer",
            ));
        }
        if spec.kind == ModelKind::Mlp && spec.widths.is_empty() {
            return Err(Error::setting(
                "--widths",
                "an MLP needs at least one hidden width",
            ));
        }
        if !(0.0..1.0).contains(&spec.dropout) {
            return Err(Error::setting(
                "--dropout",
                format!("dropout {} must be in [0, 1)", spec.dropout),
            ));
        }
        check_size(spec, rows, cols)?;
        let mut m = Model {
            spec: spec.clone(),
            params: Vec::new(),
            layers: Vec::new(),
            dtype: DType::F32,
        };
        let mut rng = Rng::new(seed);
        let inputs = rows * cols;
        match spec.kind {
            ModelKind::Custom => unreachable!("refused above"),
            ModelKind::LogReg => {
                m.layers.push(Layer::Flatten);
                m.linear("fc", inputs, 10, &mut rng)?;
            }
            ModelKind::Mlp => {
                m.layers.push(Layer::Flatten);
                let mut fan_in = inputs;
                for (i, &w) in spec.widths.iter().enumerate() {
                    m.linear(&format!("fc{}", i + 1), fan_in, w, &mut rng)?;
                    if spec.batch_norm {
                        m.batch_norm(&format!("bn{}", i + 1), w, false)?;
                    }
                    m.layers.push(Layer::Act(spec.activation));
                    if spec.dropout > 0.0 {
                        m.layers.push(Layer::Dropout(spec.dropout));
                    }
                    fan_in = w;
                }
                m.linear(
                    &format!("fc{}", spec.widths.len() + 1),
                    fan_in,
                    10,
                    &mut rng,
                )?;
            }
            ModelKind::Cnn => {
                if rows < 8 || cols < 8 {
                    let size = format!("{rows}×{cols}");
                    return Err(Error::Model {
                        message: format!("the CNN needs images of at least 8×8, got {size}"),
                    });
                }
                m.conv("conv1", 1, 6, 5, 2, &mut rng)?;
                if spec.batch_norm {
                    m.batch_norm("bn1", 6, true)?;
                }
                m.layers.push(Layer::Act(spec.activation));
                m.layers.push(Layer::MaxPool(2));
                m.conv("conv2", 6, 16, 5, 0, &mut rng)?;
                if spec.batch_norm {
                    m.batch_norm("bn2", 16, true)?;
                }
                m.layers.push(Layer::Act(spec.activation));
                m.layers.push(Layer::MaxPool(2));
                m.layers.push(Layer::Flatten);
                let (h, w) = (((rows / 2) - 4) / 2, ((cols / 2) - 4) / 2);
                m.linear("fc1", 16 * h * w, 120, &mut rng)?;
                m.layers.push(Layer::Act(spec.activation));
                m.linear("fc2", 120, 84, &mut rng)?;
                m.layers.push(Layer::Act(spec.activation));
                m.linear("fc3", 84, 10, &mut rng)?;
            }
        }
        Ok(m)
    }

    fn add(&mut self, name: String, values: Vec<f32>, shape: &[usize]) -> Result<usize> {
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?;
        self.params.push((name, Var::from_tensor(&t)?));
        Ok(self.params.len() - 1)
    }

    fn linear(&mut self, name: &str, fan_in: usize, out: usize, rng: &mut Rng) -> Result<()> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let w = self.add(
            format!("{name}.weight"),
            uniform(rng, out * fan_in, bound),
            &[out, fan_in],
        )?;
        let b = self.add(format!("{name}.bias"), uniform(rng, out, bound), &[out])?;
        self.layers.push(Layer::Linear { w, b });
        Ok(())
    }

    fn conv(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        padding: usize,
        rng: &mut Rng,
    ) -> Result<()> {
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        let w = self.add(
            format!("{name}.weight"),
            uniform(rng, cout * cin * k * k, bound),
            &[cout, cin, k, k],
        )?;
        let b = self.add(format!("{name}.bias"), uniform(rng, cout, bound), &[cout])?;
        self.layers.push(Layer::Conv { w, b, padding });
        Ok(())
    }

    fn batch_norm(&mut self, name: &str, channels: usize, spatial: bool) -> Result<()> {
        let gamma = self.add(format!("{name}.weight"), vec![1.0; channels], &[channels])?;
        let beta = self.add(format!("{name}.bias"), vec![0.0; channels], &[channels])?;
        self.layers.push(Layer::BatchNorm(BatchNorm {
            gamma,
            beta,
            spatial,
            running_mean: RefCell::new(Tensor::zeros(channels, DType::F32, &Device::Cpu)?),
            running_var: RefCell::new(Tensor::ones(channels, DType::F32, &Device::Cpu)?),
            cumulative: RefCell::new(None),
        }));
        Ok(())
    }

    /// The same model with parameters and statistics converted to `dtype` (f64 for exact
    /// curvature analysis); the parameters are new variables.
    pub fn to_dtype(&self, dtype: DType) -> Result<Model> {
        let params = self
            .params
            .iter()
            .map(|(n, v)| {
                Ok((
                    n.clone(),
                    Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(match l {
                    Layer::Flatten => Layer::Flatten,
                    Layer::Linear { w, b } => Layer::Linear { w: *w, b: *b },
                    Layer::Conv { w, b, padding } => Layer::Conv {
                        w: *w,
                        b: *b,
                        padding: *padding,
                    },
                    Layer::MaxPool(k) => Layer::MaxPool(*k),
                    Layer::Act(a) => Layer::Act(*a),
                    Layer::Dropout(p) => Layer::Dropout(*p),
                    Layer::BatchNorm(bn) => Layer::BatchNorm(BatchNorm {
                        gamma: bn.gamma,
                        beta: bn.beta,
                        spatial: bn.spatial,
                        running_mean: RefCell::new(bn.running_mean.borrow().to_dtype(dtype)?),
                        running_var: RefCell::new(bn.running_var.borrow().to_dtype(dtype)?),
                        cumulative: RefCell::new(None),
                    }),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Model {
            spec: self.spec.clone(),
            params,
            layers,
            dtype,
        })
    }

    /// The parameters' float type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The model's settings.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Named parameters, in construction order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Batch-norm running statistics, named `{bn}.running_mean` / `{bn}.running_var`.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for layer in &self.layers {
            if let Layer::BatchNorm(bn) = layer {
                let base = self.params[bn.gamma]
                    .0
                    .trim_end_matches(".weight")
                    .to_string();
                out.push((
                    format!("{base}.running_mean"),
                    bn.running_mean.borrow().clone(),
                ));
                out.push((
                    format!("{base}.running_var"),
                    bn.running_var.borrow().clone(),
                ));
            }
        }
        out
    }

    /// Restores buffers saved with [`Model::buffers`].
    pub fn set_buffer(&self, name: &str, value: Tensor) -> Result<()> {
        for layer in &self.layers {
            if let Layer::BatchNorm(bn) = layer {
                let base = self.params[bn.gamma].0.trim_end_matches(".weight");
                let slot = if name == format!("{base}.running_mean") {
                    &bn.running_mean
                } else if name == format!("{base}.running_var") {
                    &bn.running_var
                } else {
                    continue;
                };
                if slot.borrow().dims() != value.dims() {
                    return Err(Error::Model {
                        message: format!(
                            "buffer '{name}' has shape {:?}, expected {:?}",
                            value.dims(),
                            slot.borrow().dims()
                        ),
                    });
                }
                *slot.borrow_mut() = value;
                return Ok(());
            }
        }
        Err(Error::Model {
            message: format!("the model has no buffer '{name}'"),
        })
    }

    /// Switches batch norm to a cumulative average of the next batches' statistics
    /// (`Some` resets the statistics), or back to the running average (`None`).
    pub fn set_cumulative_batch_norm(&self, on: bool) -> Result<()> {
        for layer in &self.layers {
            if let Layer::BatchNorm(bn) = layer {
                if on {
                    let c = bn.running_mean.borrow().dims()[0];
                    *bn.running_mean.borrow_mut() = Tensor::zeros(c, DType::F32, &Device::Cpu)?;
                    *bn.running_var.borrow_mut() = Tensor::ones(c, DType::F32, &Device::Cpu)?;
                    *bn.cumulative.borrow_mut() = Some(0);
                } else {
                    *bn.cumulative.borrow_mut() = None;
                }
            }
        }
        Ok(())
    }

    /// True when the model has batch norm.
    pub fn has_batch_norm(&self) -> bool {
        self.layers.iter().any(|l| matches!(l, Layer::BatchNorm(_)))
    }

    /// Logits for a batch `(N, rows, cols)`; `train` uses batch statistics (and updates the
    /// running ones) and dropout drawn from `rng`.
    pub fn forward(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<Tensor> {
        let (n, rows, cols) = x.dims3()?;
        let x = x.to_dtype(self.dtype)?;
        let mut h = if self.spec.kind == ModelKind::Cnn {
            x.reshape((n, 1, rows, cols))?
        } else {
            x
        };
        for layer in &self.layers {
            h = match layer {
                Layer::Flatten => h.flatten_from(1)?,
                Layer::Linear { w, b } => ops::linear(
                    &h,
                    self.params[*w].1.as_tensor(),
                    Some(self.params[*b].1.as_tensor()),
                )?,
                Layer::Conv { w, b, padding } => ops::conv2d(
                    &h,
                    self.params[*w].1.as_tensor(),
                    Some(self.params[*b].1.as_tensor()),
                    Conv2dParams::padded(*padding),
                )?,
                Layer::MaxPool(k) => ops::max_pool2d(&h, *k, *k)?,
                Layer::Act(a) => a.apply(&h)?,
                Layer::Dropout(p) => {
                    if train {
                        let keep: Vec<f32> = (0..h.elem_count())
                            .map(|_| {
                                if rng.uniform() < *p {
                                    0.0
                                } else {
                                    (1.0 / (1.0 - p)) as f32
                                }
                            })
                            .collect();
                        let mask =
                            Tensor::from_vec(keep, h.shape(), h.device())?.to_dtype(self.dtype)?;
                        (h.clone() * mask)?
                    } else {
                        h
                    }
                }
                Layer::BatchNorm(bn) => self.batch_norm_forward(bn, &h, train)?,
            };
        }
        Ok(h)
    }

    fn batch_norm_forward(&self, bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = bn.running_mean.borrow().dims()[0];
        let shape: Vec<usize> = if bn.spatial {
            vec![1, c, 1, 1]
        } else {
            vec![1, c]
        };
        let gamma = self.params[bn.gamma].1.as_tensor();
        let beta = self.params[bn.beta].1.as_tensor();
        if train {
            let (y, stats) = ops::batch_norm_train(x, gamma, beta, 1e-5)?;
            let count = stats.count as f64;
            // Running variance is unbiased (PyTorch), the normalisation uses the biased one.
            let unbiased = (stats.var * (count / (count - 1.0).max(1.0)))?;
            let mut cumulative = bn.cumulative.borrow_mut();
            let weight = match cumulative.as_mut() {
                None => 0.1,
                Some(k) => {
                    *k += 1;
                    1.0 / *k as f64
                }
            };
            let blend = |old: &Tensor, new: &Tensor| -> Result<Tensor> {
                Ok(((old * (1.0 - weight))? + (new * weight)?)?)
            };
            let new_mean = blend(&bn.running_mean.borrow(), &stats.mean)?;
            let new_var = blend(&bn.running_var.borrow(), &unbiased)?;
            *bn.running_mean.borrow_mut() = new_mean;
            *bn.running_var.borrow_mut() = new_var;
            return Ok(y);
        }
        let mean = bn.running_mean.borrow().clone();
        let var = bn.running_var.borrow().clone();
        let normed = x
            .broadcast_sub(&mean.reshape(shape.as_slice())?)?
            .broadcast_div(&(var + 1e-5)?.sqrt()?.reshape(shape.as_slice())?)?;
        Ok(normed
            .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
            .broadcast_add(&beta.reshape(shape.as_slice())?)?)
    }
}

/// Refuses a model whose parameters (with their gradients and two optimizer moments, 16
/// bytes each in f32) cannot fit in memory, before anything is allocated; also zero widths.
fn check_size(spec: &ModelSpec, rows: usize, cols: usize) -> Result<()> {
    if spec.kind == ModelKind::Mlp {
        if let Some(i) = spec.widths.iter().position(|&w| w == 0) {
            return Err(Error::setting(
                "--widths",
                format!(
                    "--widths: hidden layer {} has width 0; every width must be at least 1",
                    i + 1
                ),
            ));
        }
    }
    let mut params: Option<u128> = Some(0);
    let mut fan_in = (rows as u128) * (cols as u128);
    if spec.kind == ModelKind::Mlp {
        for &w in &spec.widths {
            let w = w as u128;
            params = params.and_then(|p| p.checked_add(fan_in.checked_mul(w)?.checked_add(w)?));
            fan_in = w;
        }
    }
    params = params.and_then(|p| p.checked_add(fan_in.checked_mul(10)?.checked_add(10)?));
    gradlab::memory::check_fits(
        &format!(
            "the {} with widths {:?} ({} parameters)",
            spec.kind.name(),
            spec.widths,
            params.map_or("too many".to_string(), |p| p.to_string())
        ),
        params.and_then(|p| p.checked_mul(16)),
    )?;
    Ok(())
}
