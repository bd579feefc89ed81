//! 2-D convolution (cross-correlation, as PyTorch's `conv2d` and candle's `Tensor::conv2d`:
//! scalar padding, stride, dilation and groups), by im2col and one gemm per image and group,
//! threaded across images on gradlab's pool.
//!
//! The forward product, its input gradient (col2im of `Wᵀ dy`) and its weight gradient
//! (`dy · colsᵀ` summed over images) are one family of bilinear ops, and each one's derivative
//! is another member: the backward of any of them is built from the others, so convolutions
//! can be differentiated any number of times (Hessian-vector products by double backward).
//! The weight gradient sums images in fixed blocks, so results do not depend on the thread
//! count.

use super::bias::channel_sum;
use super::{dense, dispatch, Float};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

mod geometry;

use geometry::Geometry;

/// Padding, stride, dilation (the same along both axes) and groups of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Zeros added on every side.
    pub padding: usize,
    /// Step between windows.
    pub stride: usize,
    /// Spacing of the kernel's taps.
    pub dilation: usize,
    /// Input and output channels split into this many independent groups.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            padding: 0,
            stride: 1,
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// No padding, stride 1, no dilation, one group, with `padding`.
    pub fn padded(padding: usize) -> Self {
        Conv2dParams {
            padding,
            ..Self::default()
        }
    }
}

fn dims4(l: &Layout, what: &str) -> Result<[usize; 4]> {
    match l.shape().dims() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        other => candle_core::bail!("conv2d: the {what} must have 4 axes, got {other:?}"),
    }
}

/// Which member of the convolution family.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// (x, w) → y.
    Forward,
    /// (dy, w) → dx, for an input of `input_hw`.
    InputGrad { input_hw: (usize, usize) },
    /// (x, dy) → dw, for a kernel of `kernel_hw`.
    WeightGrad { kernel_hw: (usize, usize) },
}

#[derive(Debug, Clone, Copy)]
struct Conv {
    p: Conv2dParams,
    mode: Mode,
}

impl Conv {
    fn geometry(&self, l1: &Layout, l2: &Layout) -> Result<Geometry> {
        match self.mode {
            Mode::Forward => Geometry::new(dims4(l1, "input")?, dims4(l2, "kernel")?, self.p),
            Mode::InputGrad { input_hw: (h, w) } => {
                let [n, _, ho, wo] = dims4(l1, "output gradient")?;
                let kernel = dims4(l2, "kernel")?;
                let g = Geometry::new([n, kernel[1] * self.p.groups, h, w], kernel, self.p)?;
                check_output(&g, n, ho, wo)?;
                Ok(g)
            }
            Mode::WeightGrad {
                kernel_hw: (kh, kw),
            } => {
                let x = dims4(l1, "input")?;
                let [n, cout, ho, wo] = dims4(l2, "output gradient")?;
                let g = Geometry::new(x, [cout, x[1] / self.p.groups.max(1), kh, kw], self.p)?;
                check_output(&g, n, ho, wo)?;
                Ok(g)
            }
        }
    }

    fn run<T: Float>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry(l1, l2)?;
        let a = T::values(s1, l1, "conv2d")?;
        let b = T::values(s2, l2, "conv2d")?;
        let (out, dims) = match self.mode {
            Mode::Forward => (g.forward(a, b, None), g.y_dims()),
            Mode::InputGrad { .. } => (g.input_grad(a, b), g.x_dims()),
            Mode::WeightGrad { .. } => (g.weight_grad(a, b), g.w_dims()),
        };
        Ok((T::storage(out), Shape::from(dims)))
    }
}

fn check_output(g: &Geometry, n: usize, ho: usize, wo: usize) -> Result<()> {
    if (g.n, g.ho, g.wo) != (n, ho, wo) {
        candle_core::bail!(
            "conv2d: an output gradient of {n}×{ho}×{wo} does not fit {}×{}×{}",
            g.n,
            g.ho,
            g.wo
        );
    }
    Ok(())
}

fn apply(a: &Tensor, b: &Tensor, p: Conv2dParams, mode: Mode) -> Result<Tensor> {
    dense(a)?.apply_op2(&dense(b)?, Conv { p, mode })
}

fn hw(t: &Tensor) -> Result<(usize, usize)> {
    let (_, _, h, w) = t.dims4()?;
    Ok((h, w))
}

/// The input gradient `dx` of `conv(x, w)` for the output gradient `dy`.
fn input_grad(dy: &Tensor, w: &Tensor, x: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let input_hw = hw(x)?;
    apply(dy, w, p, Mode::InputGrad { input_hw })
}

/// The weight gradient `dw` of `conv(x, w)` for the output gradient `dy`.
fn weight_grad(x: &Tensor, dy: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let kernel_hw = hw(w)?;
    apply(x, dy, p, Mode::WeightGrad { kernel_hw })
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "gradlab-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, "conv2d", |T| self.run::<T>((s1, l1), (s2, l2)))
    }

    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let p = self.p;
        let d = dense(grad)?;
        let need = |t: &Tensor| t.track_op();
        Ok(match self.mode {
            // y = F(x, w): dx = IG(dy, w), dw = WG(x, dy).
            Mode::Forward => (
                need(a1).then(|| input_grad(&d, a2, a1, p)).transpose()?,
                need(a2).then(|| weight_grad(a1, &d, a2, p)).transpose()?,
            ),
            // z = IG(g, w), ⟨z, D⟩ = ⟨g, F(D, w)⟩: dg = F(D, w), dw = WG(D, g).
            Mode::InputGrad { .. } => (
                need(a1)
                    .then(|| apply(&d, a2, p, Mode::Forward))
                    .transpose()?,
                need(a2).then(|| weight_grad(&d, a1, a2, p)).transpose()?,
            ),
            // z = WG(x, g), ⟨z, D⟩ = ⟨g, F(x, D)⟩: dx = IG(g, D), dg = F(x, D).
            Mode::WeightGrad { .. } => (
                need(a1).then(|| input_grad(a2, &d, a1, p)).transpose()?,
                need(a2)
                    .then(|| apply(a1, &d, p, Mode::Forward))
                    .transpose()?,
            ),
        })
    }
}

/// The forward product with the bias added in the same pass.
struct ConvBias(Conv2dParams);

impl ConvBias {
    fn run<T: Float>(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        (sw, lw): (&CpuStorage, &Layout),
        (sb, lb): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(dims4(lx, "input")?, dims4(lw, "kernel")?, self.0)?;
        if lb.shape().dims() != [g.cout] {
            candle_core::bail!(
                "conv2d: bias {:?} does not fit {} output channels",
                lb.shape().dims(),
                g.cout
            );
        }
        let x = T::values(sx, lx, "conv2d")?;
        let w = T::values(sw, lw, "conv2d")?;
        let b = T::values(sb, lb, "conv2d")?;
        Ok((
            T::storage(g.forward(x, w, Some(b))),
            Shape::from(g.y_dims()),
        ))
    }
}

impl CustomOp3 for ConvBias {
    fn name(&self) -> &'static str {
        "gradlab-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, "conv2d", |T| self.run::<T>(
            (s1, l1),
            (s2, l2),
            (s3, l3)
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (p, d) = (self.0, dense(grad)?);
        Ok((
            x.track_op().then(|| input_grad(&d, w, x, p)).transpose()?,
            w.track_op().then(|| weight_grad(x, &d, w, p)).transpose()?,
            b.track_op().then(|| channel_sum(&d)).transpose()?,
        ))
    }
}

/// `conv2d(x, weight) + bias` for `x` (N, C_in, H, W) and `weight` (C_out, C_in / groups, kh,
/// kw), as PyTorch's `F.conv2d` (and candle's `Tensor::conv2d`, which has no bias).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    params: Conv2dParams,
) -> Result<Tensor> {
    match bias {
        Some(b) => dense(x)?.apply_op3(&dense(weight)?, &dense(b)?, ConvBias(params)),
        None => apply(x, weight, params, Mode::Forward),
    }
}
