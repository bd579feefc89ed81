//! A network's Hessian as a [`HessianOperator`]: exact Hessian-vector products by double
//! backward (Pearlmutter's trick through candle's autograd), or central finite differences
//! of gradients. The two are cross-checked when the operator is built.
//!
//! candle keeps the graph of a gradient (needed to differentiate it again) only when
//! `CANDLE_GRAD_DO_NOT_DETACH` is set, and it reads that variable once per thread, at the
//! thread's first backward pass. [`second_order`] runs work on a fresh thread with the
//! variable set; without it the double-backward products would silently be wrong, which the
//! cross-check catches (the operator then falls back to finite differences).
//!
//! The loss is the mean cross-entropy over fixed batches in evaluation mode (batch norm uses
//! its running statistics, no dropout), in the model's float type (use an f64 copy of the
//! model, [`Model::to_dtype`], for accurate spectra).

use crate::models::{cross_entropy, scalar, Model};
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use gradlab::landscape::{FiniteDifferenceHessian, HessianOperator, Objective, Rng};

mod block;
mod second_order;

pub use block::Block;
pub use second_order::{second_order, with_second_order};

/// How Hessian-vector products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HvpMethod {
    /// Differentiating the gradient (exact).
    DoubleBackward,
    /// Central differences of gradients.
    FiniteDifference,
}

/// A model's parameters flattened (in f64) in the model's order.
pub fn flat_params(model: &Model) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(model.num_parameters());
    for (_, v) in model.params() {
        out.extend(
            v.as_tensor()
                .flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?,
        );
    }
    Ok(out)
}

/// The losses a [`NetworkObjective`] averages: each a scalar tensor with its weight.
type Losses<'a> = Box<dyn Fn() -> Result<Vec<(Tensor, f64)>> + 'a>;

/// A network's loss as a function of its flattened parameters: a built-in model's mean
/// cross-entropy over fixed batches ([`NetworkObjective::new`]), or any loss a closure builds
/// from the variables' current values ([`NetworkObjective::from_loss`]: a user's own model).
pub struct NetworkObjective<'a> {
    params: Vec<(String, Var)>,
    losses: Losses<'a>,
    dtype: DType,
}

impl<'a> NetworkObjective<'a> {
    /// The loss of `model` on `batches` (inputs, labels), in evaluation mode.
    pub fn new(model: &'a Model, batches: Vec<(Tensor, Tensor)>) -> Result<Self> {
        Self::in_mode(model, batches, false)
    }

    /// The loss of `model` on `batches` in training mode: batch norm normalises each batch
    /// with its own statistics (the loss the optimizer descends); dropout masks, if any, are
    /// drawn from a fixed seed, the same at every evaluation.
    pub fn in_training_mode(model: &'a Model, batches: Vec<(Tensor, Tensor)>) -> Result<Self> {
        Self::in_mode(model, batches, true)
    }

    fn in_mode(model: &'a Model, batches: Vec<(Tensor, Tensor)>, train: bool) -> Result<Self> {
        if batches.is_empty() {
            return Err(Error::Hessian {
                message: "the Hessian needs at least one batch".into(),
            });
        }
        let sizes: Vec<usize> = batches.iter().map(|(_, y)| y.dims()[0]).collect();
        let total: usize = sizes.iter().sum();
        let losses = move || -> Result<Vec<(Tensor, f64)>> {
            let mut rng = Rng::new(0);
            batches
                .iter()
                .zip(&sizes)
                .map(|((x, y), n)| {
                    let logits = model.forward(x, train, &mut rng)?;
                    Ok((cross_entropy(&logits, y)?, *n as f64 / total as f64))
                })
                .collect()
        };
        Self::with_losses(model.params().to_vec(), Box::new(losses))
    }

    /// The scalar loss that `loss` builds from the current values of `params` (named, in the
    /// order they are flattened): any model, e.g. a candle `Module` of the user's. Make the
    /// loss deterministic (no dropout, batch norm in evaluation mode): it is evaluated at
    /// many points.
    pub fn from_loss(
        params: Vec<(String, Var)>,
        loss: impl Fn() -> Result<Tensor> + 'a,
    ) -> Result<Self> {
        Self::with_losses(params, Box::new(move || Ok(vec![(loss()?, 1.0)])))
    }

    fn with_losses(params: Vec<(String, Var)>, losses: Losses<'a>) -> Result<Self> {
        let dtype = params
            .first()
            .map(|(_, v)| v.dtype())
            .ok_or_else(|| Error::Hessian {
                message: "the Hessian needs at least one parameter".into(),
            })?;
        for (name, v) in &params {
            if v.dtype() != dtype || !matches!(dtype, DType::F32 | DType::F64) {
                return Err(Error::Parameter {
                    name: name.clone(),
                    problem: format!(
                        "is {:?}: the Hessian takes parameters all f32 or all f64 (f64 for accurate spectra)",
                        v.dtype()
                    ),
                });
            }
        }
        Ok(NetworkObjective {
            params,
            losses,
            dtype,
        })
    }

    /// The parameters' float type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The parameters, in the order they are flattened.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Number of parameters.
    pub fn dim(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The current parameters, flattened.
    pub fn point(&self) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.dim());
        for (_, v) in &self.params {
            out.extend(
                v.as_tensor()
                    .flatten_all()?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?,
            );
        }
        Ok(out)
    }

    fn set_point(&self, x: &[f64]) -> Result<()> {
        let mut offset = 0;
        for (_, v) in &self.params {
            let n = v.elem_count();
            let t = Tensor::from_slice(&x[offset..offset + n], v.shape(), v.device())?
                .to_dtype(v.dtype())?;
            v.set(&t)?;
            offset += n;
        }
        Ok(())
    }

    /// The losses with their weights (graphs kept).
    fn loss_tensors(&self) -> Result<Vec<(Tensor, f64)>> {
        (self.losses)()
    }

    /// Loss and flattened gradient at the model's current parameters.
    pub fn loss_grad_here(&self, grad: &mut [f64]) -> Result<f64> {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        for (l, w) in self.loss_tensors()? {
            loss += w * scalar(&l)?;
            let grads = l.backward()?;
            let mut offset = 0;
            for (name, v) in &self.params {
                let n = v.elem_count();
                let g = grads
                    .get(v.as_tensor())
                    .ok_or_else(|| Error::NoGradient { name: name.clone() })?
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec1::<f64>()?;
                for (o, gi) in grad[offset..offset + n].iter_mut().zip(g) {
                    *o += w * gi;
                }
                offset += n;
            }
        }
        Ok(loss)
    }

    /// `H v` by double backward at the current parameters.
    pub fn hvp_double_backward(&self, v: &[f64], out: &mut [f64]) -> Result<()> {
        out.iter_mut().for_each(|o| *o = 0.0);
        let params: Vec<&Var> = self.params.iter().map(|(_, v)| v).collect();
        let mut vs = Vec::with_capacity(params.len());
        let mut offset = 0;
        for p in &params {
            let n = p.elem_count();
            vs.push(
                Tensor::from_slice(&v[offset..offset + n], p.shape(), p.device())?
                    .to_dtype(p.dtype())?,
            );
            offset += n;
        }
        for (l, w) in self.loss_tensors()? {
            let grads = l.backward()?;
            let mut dot: Option<Tensor> = None;
            for (p, vt) in params.iter().zip(&vs) {
                let g = grads.get(p.as_tensor()).ok_or_else(|| Error::Hessian {
                    message: "a parameter has no gradient".into(),
                })?;
                let term = (g * vt)?.sum_all()?;
                dot = Some(match dot {
                    None => term,
                    Some(d) => (d + term)?,
                });
            }
            let second = dot.expect("at least one parameter").backward()?;
            if params.iter().all(|p| second.get(p.as_tensor()).is_none()) {
                return Err(Error::Hessian {
                    message: DETACHED.into(),
                });
            }
            let mut offset = 0;
            for p in &params {
                let n = p.elem_count();
                if let Some(h) = second.get(p.as_tensor()) {
                    let h = h
                        .flatten_all()?
                        .to_dtype(candle_core::DType::F64)?
                        .to_vec1::<f64>()?;
                    for (o, hi) in out[offset..offset + n].iter_mut().zip(h) {
                        *o += w * hi;
                    }
                }
                offset += n;
            }
        }
        Ok(())
    }
}

impl NetworkObjective<'_> {
    /// The loss at the model's current parameters (forward passes only).
    pub fn loss_here(&self) -> Result<f64> {
        self.loss_tensors()?
            .iter()
            .map(|(l, w)| Ok(w * scalar(l)?))
            .sum()
    }
}

impl Objective for NetworkObjective<'_> {
    fn dim(&self) -> usize {
        NetworkObjective::dim(self)
    }
    fn loss(&mut self, x: &[f64]) -> gradlab::Result<f64> {
        let here = self.point()?;
        self.set_point(x)?;
        let r = self.loss_here().map_err(gradlab::Error::from);
        self.set_point(&here)?;
        r
    }
    fn loss_grad(&mut self, x: &[f64], grad: &mut [f64]) -> gradlab::Result<f64> {
        let here = self.point()?;
        self.set_point(x)?;
        let r = self.loss_grad_here(grad).map_err(gradlab::Error::from);
        self.set_point(&here)?;
        r
    }
}

/// Why double backward gave nothing.
const DETACHED: &str = "double backward gave no second derivative: the gradient's graph was detached (candle keeps it only on a thread that read CANDLE_GRAD_DO_NOT_DETACH before its first backward pass; run the Hessian inside gradlab_candle::hessian::with_second_order)";

/// The Hessian of a network's loss at its current parameters.
pub struct NetworkHessian<'a> {
    /// gradlab's central-difference operator over the network's loss (also the owner of
    /// the objective that double backward uses).
    fd: FiniteDifferenceHessian<NetworkObjective<'a>>,
    method: HvpMethod,
    /// Relative disagreement of the two methods on a random vector.
    pub cross_check: f64,
    /// The operator's measured asymmetry with the method in use
    /// ([`gradlab::landscape::symmetry::asymmetry`], two random pairs).
    pub asymmetry: f64,
    /// Why finite differences are used, when double backward was not (its graph was
    /// detached, or it disagreed with finite differences).
    pub note: Option<String>,
}

impl<'a> NetworkHessian<'a> {
    /// Builds the operator; double backward is used when it agrees with finite differences
    /// (relative difference below 1e-4 in f64, 1e-2 in f32), else finite differences.
    pub fn new(objective: NetworkObjective<'a>) -> Result<Self> {
        let point = objective.point()?;
        let f64_model = objective.dtype() == DType::F64;
        let unit_roundoff = if f64_model {
            f64::EPSILON / 2.0
        } else {
            f32::EPSILON as f64 / 2.0
        };
        let mut h = NetworkHessian {
            fd: FiniteDifferenceHessian::new(objective, point, unit_roundoff)?,
            method: HvpMethod::FiniteDifference,
            cross_check: f64::NAN,
            asymmetry: f64::NAN,
            note: None,
        };
        let n = h.fd.dim();
        let mut rng = Rng::new(17);
        let v = gradlab::landscape::random_unit(n, &mut rng);
        let (mut exact, mut fd) = (vec![0.0; n], vec![0.0; n]);
        let double = h.fd.objective_mut().hvp_double_backward(&v, &mut exact);
        h.fd.hvp(&v, &mut fd)?;
        let diff: f64 = exact
            .iter()
            .zip(&fd)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let scale: f64 = fd
            .iter()
            .map(|b| b * b)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        h.cross_check = diff / scale;
        let tolerance = if f64_model { 1e-4 } else { 1e-2 };
        match double {
            Ok(()) if h.cross_check <= tolerance => h.method = HvpMethod::DoubleBackward,
            Ok(()) => {
                h.note = Some(format!(
                    "double backward disagreed with finite differences by {:.2e} (more than {tolerance:.0e}); using finite differences",
                    h.cross_check
                ))
            }
            Err(e) => h.note = Some(format!("{e}; using finite differences")),
        }
        h.asymmetry = gradlab::landscape::symmetry::asymmetry(&mut h, 2, 23)?;
        Ok(h)
    }

    /// The method in use.
    pub fn method(&self) -> HvpMethod {
        self.method
    }

    /// Forces a method (for comparisons), measuring its asymmetry anew.
    pub fn set_method(&mut self, method: HvpMethod) -> Result<()> {
        self.method = method;
        self.asymmetry = gradlab::landscape::symmetry::asymmetry(self, 2, 23)?;
        Ok(())
    }

    /// The largest asymmetry accepted before eigenvalues are computed: 1e-4 in f64, 1e-2 in
    /// f32, the cross-check's tolerances (an exact operator measures about 1e-15 in f64).
    pub fn asymmetry_tolerance(&self) -> f64 {
        if self.fd.objective_ref().dtype() == DType::F64 {
            1e-4
        } else {
            1e-2
        }
    }

    /// An error when the operator is not symmetric within [`Self::asymmetry_tolerance`]:
    /// eigenvalues, traces and densities of a non-symmetric operator mean nothing.
    pub fn check_symmetric(&self) -> Result<()> {
        if self.asymmetry.is_finite() && self.asymmetry <= self.asymmetry_tolerance() {
            return Ok(());
        }
        Err(Error::Hessian {
            message: format!(
                "the Hessian operator ({}) is not symmetric: |v·Hw − w·Hv| is {:.3e} of ‖Hv‖ on \
             random pairs (at most {:.0e} allowed; double backward vs finite differences \
             {:.3e}), so some gradient in the model is not the derivative of its loss; \
             refusing to compute eigenvalues from it",
                match self.method {
                    HvpMethod::DoubleBackward => "double backward",
                    HvpMethod::FiniteDifference => "finite differences",
                },
                self.asymmetry,
                self.asymmetry_tolerance(),
                self.cross_check
            ),
        })
    }

    /// The Hessian of the scalar loss that `loss` builds from `params` (any model; see
    /// [`NetworkObjective::from_loss`]); exact products need [`with_second_order`].
    pub fn of_loss(
        params: Vec<(String, Var)>,
        loss: impl Fn() -> Result<Tensor> + 'a,
    ) -> Result<Self> {
        Self::new(NetworkObjective::from_loss(params, loss)?)
    }

    /// The loss objective.
    pub fn objective(&mut self) -> &mut NetworkObjective<'a> {
        self.fd.objective_mut()
    }
}

impl HessianOperator for NetworkHessian<'_> {
    fn dim(&self) -> usize {
        self.fd.dim()
    }
    fn hvp(&mut self, v: &[f64], out: &mut [f64]) -> gradlab::Result<()> {
        match self.method {
            HvpMethod::DoubleBackward => self
                .fd
                .objective_mut()
                .hvp_double_backward(v, out)
                .map_err(gradlab::Error::from),
            HvpMethod::FiniteDifference => self.fd.hvp(v, out),
        }
    }
    fn loss_grad(&mut self, grad: &mut [f64]) -> gradlab::Result<f64> {
        self.fd
            .objective_mut()
            .loss_grad_here(grad)
            .map_err(gradlab::Error::from)
    }
}
