//! ReLU and GELU in one pass each way. ReLU's backward masks the gradient where the output is
//! positive (candle's takes four ops plus a zero-and-add, and lets x = 0 through, where
//! PyTorch does not); the mask's own derivative is the same mask. GELU (erf form) has the
//! exact derivative Φ(x) + x φ(x) (candle 0.11's backward uses 0.398942 for 1/√(2π), a
//! relative error of 7e-7 in every GELU gradient) and a second derivative φ(x)(2 − x²) from
//! candle's ops. tanh uses candle's op, whose backward `1 − y²` is exact and differentiable.

use super::{dense, dispatch, Float};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// max(x, 0) (NaN stays NaN, as in PyTorch).
struct Relu;

/// (y, dy) → dy where y > 0, else 0 (PyTorch's `threshold_backward`: 0 at x = 0).
struct ReluMask;

impl Relu {
    fn run<T: Float>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = T::values(s, l, "relu")?;
        let out = x
            .iter()
            .map(|&v| {
                if v > T::zero() || v.is_nan() {
                    v
                } else {
                    T::zero()
                }
            })
            .collect();
        Ok((T::storage(out), l.shape().clone()))
    }
}

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "gradlab-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, "relu", |T| self.run::<T>(s, l))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(mask(res, grad)?))
    }
}

impl ReluMask {
    fn run<T: Float>(
        &self,
        (sy, ly): (&CpuStorage, &Layout),
        (sg, lg): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        if ly.shape() != lg.shape() {
            candle_core::bail!("relu backward: shapes {:?} and {:?}", ly.dims(), lg.dims());
        }
        let y = T::values(sy, ly, "relu backward")?;
        let g = T::values(sg, lg, "relu backward")?;
        let out = y
            .iter()
            .zip(g)
            .map(|(&y, &g)| if y > T::zero() { g } else { T::zero() })
            .collect();
        Ok((T::storage(out), ly.shape().clone()))
    }
}

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "gradlab-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, "relu backward", |T| self.run::<T>((s1, l1), (s2, l2)))
    }

    fn bwd(
        &self,
        y: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The mask is piecewise constant in y.
        Ok((None, g.track_op().then(|| mask(y, grad)).transpose()?))
    }
}

fn mask(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    dense(y)?.apply_op2(&dense(g)?, ReluMask)
}

/// GELU, x Φ(x) with Φ the standard normal distribution function (PyTorch's default
/// `approximate='none'`).
struct Gelu;

/// (x, dy) → dy · GELU'(x).
struct GeluGrad;

const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))
}

fn gelu_derivative(x: f64) -> f64 {
    let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x * std::f64::consts::FRAC_1_SQRT_2));
    cdf + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
}

fn map<T: Float>(s: &CpuStorage, l: &Layout, op: &str, f: fn(f64) -> f64) -> Result<CpuStorage> {
    let x = T::values(s, l, op)?;
    Ok(T::storage(
        x.iter().map(|&v| T::from_f64(f(v.to_f64()))).collect(),
    ))
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gradlab-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch!(s, "gelu", |T| map::<T>(s, l, "gelu", gelu)?);
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dense(arg)?.apply_op2(&dense(grad)?, GeluGrad)?))
    }
}

impl GeluGrad {
    fn run<T: Float>(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        (sg, lg): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        if lx.shape() != lg.shape() {
            candle_core::bail!("gelu backward: shapes {:?} and {:?}", lx.dims(), lg.dims());
        }
        let x = T::values(sx, lx, "gelu backward")?;
        let g = T::values(sg, lg, "gelu backward")?;
        let out = x
            .iter()
            .zip(g)
            .map(|(&x, &g)| g * T::from_f64(gelu_derivative(x.to_f64())))
            .collect();
        Ok((T::storage(out), lx.shape().clone()))
    }
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "gradlab-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, "gelu backward", |T| self.run::<T>((s1, l1), (s2, l2)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d/dx (g · GELU'(x)) = g · φ(x) (2 − x²);  d/dg = GELU'(x).
        let dx = if x.track_op() {
            let x2 = x.sqr()?;
            let phi = ((&x2 * -0.5)?.exp()? * INV_SQRT_2PI)?;
            Some((((g * grad)? * phi)? * (x2.neg()? + 2.0)?)?)
        } else {
            None
        };
        let dg = if g.track_op() {
            Some(dense(x)?.apply_op2(&dense(grad)?, GeluGrad)?)
        } else {
            None
        };
        Ok((dx, dg))
    }
}

/// GELU (erf form), elementwise.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    dense(x)?.apply_op1(Gelu)
}

/// max(x, 0), elementwise.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    dense(x)?.apply_op1(Relu)
}
