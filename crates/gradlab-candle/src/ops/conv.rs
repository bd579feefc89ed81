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
use super::gemm::{gemm_serial, MatRef};
use super::{dense, dispatch, for_each_chunk, Float};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

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

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    p: Conv2dParams,
}

impl Geometry {
    fn new(x: [usize; 4], kernel: [usize; 4], p: Conv2dParams) -> Result<Self> {
        let [n, cin, h, w] = x;
        let [cout, cin_g, kh, kw] = kernel;
        if p.stride == 0 || p.dilation == 0 || p.groups == 0 {
            candle_core::bail!(
                "conv2d: stride, dilation and groups must be at least 1, got {}, {}, {}",
                p.stride,
                p.dilation,
                p.groups
            );
        }
        if cin != cin_g * p.groups || cout % p.groups != 0 {
            candle_core::bail!(
                "conv2d: input {x:?} and kernel {kernel:?} do not fit {} group(s) (kernel is \
                 (out, in / groups, kh, kw))",
                p.groups
            );
        }
        let span = |k: usize| p.dilation * (k.max(1) - 1) + 1;
        if kh == 0 || kw == 0 || h + 2 * p.padding < span(kh) || w + 2 * p.padding < span(kw) {
            candle_core::bail!(
                "conv2d: kernel {kh}×{kw} (dilation {}) does not fit the {h}×{w} input with \
                 padding {}",
                p.dilation,
                p.padding
            );
        }
        Ok(Geometry {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            ho: (h + 2 * p.padding - span(kh)) / p.stride + 1,
            wo: (w + 2 * p.padding - span(kw)) / p.stride + 1,
            p,
        })
    }

    fn cin_g(&self) -> usize {
        self.cin / self.p.groups
    }
    fn cout_g(&self) -> usize {
        self.cout / self.p.groups
    }
    /// Rows of the im2col matrix of one group.
    fn k(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    /// Output positions per channel.
    fn l(&self) -> usize {
        self.ho * self.wo
    }
    fn input_len(&self) -> usize {
        self.cin * self.h * self.w
    }
    /// A 1×1 kernel at stride 1 without padding: the input already is its im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == 1 && self.p.padding == 0
    }
    fn x_dims(&self) -> Vec<usize> {
        vec![self.n, self.cin, self.h, self.w]
    }
    fn y_dims(&self) -> Vec<usize> {
        vec![self.n, self.cout, self.ho, self.wo]
    }
    fn w_dims(&self) -> Vec<usize> {
        vec![self.cout, self.cin_g(), self.kh, self.kw]
    }

    /// Output columns `[lo, hi)` whose input column `ow·s + j·d − p` lies inside the image.
    fn valid(&self, j: usize, out: usize, size: usize) -> (usize, usize) {
        let (s, offset) = (self.p.stride, j * self.p.dilation);
        let p = self.p.padding;
        let lo = if p > offset {
            (p - offset).div_ceil(s)
        } else {
            0
        };
        let hi = if size + p > offset {
            (size + p - offset).div_ceil(s).min(out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// The im2col matrix (K × L) of group `g` of one image `x` (cin × h × w).
    fn im2col<T: Float>(&self, x: &[T], g: usize, cols: &mut [T]) {
        let (l, s, d, p) = (self.l(), self.p.stride, self.p.dilation, self.p.padding);
        for ci in 0..self.cin_g() {
            let plane = &x[(g * self.cin_g() + ci) * self.h * self.w..][..self.h * self.w];
            for i in 0..self.kh {
                let (oh_lo, oh_hi) = self.valid(i, self.ho, self.h);
                for j in 0..self.kw {
                    let row = &mut cols[((ci * self.kh + i) * self.kw + j) * l..][..l];
                    let (ow_lo, ow_hi) = self.valid(j, self.wo, self.w);
                    for oh in 0..self.ho {
                        let dst = &mut row[oh * self.wo..][..self.wo];
                        if oh < oh_lo || oh >= oh_hi || ow_lo >= ow_hi {
                            dst.fill(T::zero());
                            continue;
                        }
                        let src = &plane[(oh * s + i * d - p) * self.w..][..self.w];
                        dst[..ow_lo].fill(T::zero());
                        dst[ow_hi..].fill(T::zero());
                        let first = ow_lo * s + j * d - p;
                        if s == 1 {
                            dst[ow_lo..ow_hi].copy_from_slice(&src[first..first + ow_hi - ow_lo]);
                        } else {
                            for (k, v) in dst[ow_lo..ow_hi].iter_mut().enumerate() {
                                *v = src[first + k * s];
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds the im2col-shaped `cols` of group `g` back into the image gradient `dx`.
    fn col2im<T: Float>(&self, cols: &[T], g: usize, dx: &mut [T]) {
        let (l, s, d, p) = (self.l(), self.p.stride, self.p.dilation, self.p.padding);
        for ci in 0..self.cin_g() {
            let plane = &mut dx[(g * self.cin_g() + ci) * self.h * self.w..][..self.h * self.w];
            for i in 0..self.kh {
                let (oh_lo, oh_hi) = self.valid(i, self.ho, self.h);
                for j in 0..self.kw {
                    let row = &cols[((ci * self.kh + i) * self.kw + j) * l..][..l];
                    let (ow_lo, ow_hi) = self.valid(j, self.wo, self.w);
                    if ow_lo >= ow_hi {
                        continue;
                    }
                    for oh in oh_lo..oh_hi {
                        let src = &row[oh * self.wo..][..self.wo];
                        let dst = &mut plane[(oh * s + i * d - p) * self.w..][..self.w];
                        let first = ow_lo * s + j * d - p;
                        for (k, &v) in src[ow_lo..ow_hi].iter().enumerate() {
                            dst[first + k * s] += v;
                        }
                    }
                }
            }
        }
    }

    /// `y = conv(x, w) (+ bias)`, y of shape (n, cout, ho, wo).
    fn forward<T: Float>(&self, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
        let (k, l, cog) = (self.k(), self.l(), self.cout_g());
        let mut y = vec![T::zero(); self.n * self.cout * l];
        for_each_chunk(&mut y, self.cout * l, |n, y_n| {
            let x_n = &x[n * self.input_len()..][..self.input_len()];
            if let Some(b) = bias {
                for (plane, &bc) in y_n.chunks_exact_mut(l).zip(b) {
                    plane.fill(bc);
                }
            }
            for g in 0..self.p.groups {
                let w_g = MatRef::new(&w[g * cog * k..][..cog * k], cog, k);
                let y_g = &mut y_n[g * cog * l..][..cog * l];
                if self.pointwise() {
                    let cols = MatRef::new(&x_n[g * k * l..][..k * l], k, l);
                    gemm_serial(y_g, l, w_g, cols, bias.is_some());
                } else {
                    T::with_scratch(k * l, |cols| {
                        self.im2col(x_n, g, cols);
                        gemm_serial(y_g, l, w_g, MatRef::new(cols, k, l), bias.is_some());
                    });
                }
            }
        });
        y
    }

    /// `dx` for the output gradient `dy`: per image and group, col2im(W_gᵀ dy_g).
    fn input_grad<T: Float>(&self, dy: &[T], w: &[T]) -> Vec<T> {
        let (k, l, cog) = (self.k(), self.l(), self.cout_g());
        let mut dx = vec![T::zero(); self.n * self.input_len()];
        for_each_chunk(&mut dx, self.input_len(), |n, dx_n| {
            let dy_n = &dy[n * self.cout * l..][..self.cout * l];
            for g in 0..self.p.groups {
                let w_gt = MatRef::new(&w[g * cog * k..][..cog * k], cog, k).t();
                let dy_g = MatRef::new(&dy_n[g * cog * l..][..cog * l], cog, l);
                if self.pointwise() {
                    gemm_serial(&mut dx_n[g * k * l..][..k * l], l, w_gt, dy_g, false);
                } else {
                    T::with_scratch(k * l, |cols| {
                        gemm_serial(cols, l, w_gt, dy_g, false);
                        self.col2im(cols, g, dx_n);
                    });
                }
            }
        });
        dx
    }

    /// `dw` for the output gradient `dy`: Σ over images of dy_g · colsᵀ, summed in fixed
    /// blocks of images (the same result for any thread count).
    fn weight_grad<T: Float>(&self, x: &[T], dy: &[T]) -> Vec<T> {
        const BLOCK: usize = 8;
        let (k, l, cog) = (self.k(), self.l(), self.cout_g());
        let w_len = self.cout * k;
        let blocks = self.n.div_ceil(BLOCK).max(1);
        let mut partial = vec![T::zero(); blocks * w_len];
        for_each_chunk(&mut partial, w_len, |b, dw| {
            for n in b * BLOCK..((b + 1) * BLOCK).min(self.n) {
                let x_n = &x[n * self.input_len()..][..self.input_len()];
                let dy_n = &dy[n * self.cout * l..][..self.cout * l];
                for g in 0..self.p.groups {
                    let dy_g = MatRef::new(&dy_n[g * cog * l..][..cog * l], cog, l);
                    let dw_g = &mut dw[g * cog * k..][..cog * k];
                    if self.pointwise() {
                        let cols = MatRef::new(&x_n[g * k * l..][..k * l], k, l);
                        gemm_serial(dw_g, k, dy_g, cols.t(), true);
                    } else {
                        T::with_scratch(k * l, |cols| {
                            self.im2col(x_n, g, cols);
                            gemm_serial(dw_g, k, dy_g, MatRef::new(cols, k, l).t(), true);
                        });
                    }
                }
            }
        });
        let (first, rest) = partial.split_at_mut(w_len);
        for block in rest.chunks_exact(w_len) {
            for (a, &b) in first.iter_mut().zip(block) {
                *a += b;
            }
        }
        partial.truncate(w_len);
        partial
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
