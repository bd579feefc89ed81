//! Max and average pooling over `(kh, kw)` windows with stride `(sh, sw)`, no padding (as
//! candle's `max_pool2d_with_stride` / `avg_pool2d_with_stride` and PyTorch's defaults).
//!
//! Max pooling gives the whole gradient of a window to its maximum, the first one in row-major
//! order when several tie and a NaN when there is one (PyTorch's rule). candle 0.11's own
//! backward gives 1/4 of it to the maximum of a 2×2 window (`candle_notes.md`). The maxima are
//! found again from the input in the backward pass (one cheap pass; nothing is kept between
//! forward and backward). Its family: the forward *gathers* the input at each window's argmax,
//! the backward *scatters* the gradient to it, and each is the other's derivative in the
//! gradient argument (the argmax itself is piecewise constant), so double backward works.

use super::{dense, dispatch, for_each_chunk, Float};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// Window and stride of a pooling op, and the input's plane size.
#[derive(Debug, Clone, Copy)]
struct Window {
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
}

/// Sizes of one pooling.
#[derive(Debug, Clone, Copy)]
struct Planes {
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl Window {
    fn planes(&self, dims: &[usize], op: &str) -> Result<Planes> {
        let &[n, c, h, w] = dims else {
            candle_core::bail!("{op}: the input must have 4 axes (N, C, H, W), got {dims:?}");
        };
        if self.kh == 0 || self.kw == 0 || self.sh == 0 || self.sw == 0 {
            candle_core::bail!("{op}: window and stride must be at least 1");
        }
        if h < self.kh || w < self.kw {
            candle_core::bail!(
                "{op}: a {}×{} window does not fit the {h}×{w} input",
                self.kh,
                self.kw
            );
        }
        Ok(Planes {
            planes: n * c,
            h,
            w,
            ho: (h - self.kh) / self.sh + 1,
            wo: (w - self.kw) / self.sw + 1,
        })
    }

    /// Index (in the plane) of the maximum of the window at (oh, ow): the first of ties,
    /// a NaN if there is one.
    #[inline]
    fn argmax<T: Float>(&self, plane: &[T], w: usize, oh: usize, ow: usize) -> usize {
        let (r0, c0) = (oh * self.sh, ow * self.sw);
        let mut best = r0 * w + c0;
        let mut max = T::neg_infinity();
        for r in r0..r0 + self.kh {
            for c in c0..c0 + self.kw {
                let v = plane[r * w + c];
                if v > max || v.is_nan() {
                    max = v;
                    best = r * w + c;
                    if v.is_nan() {
                        return best;
                    }
                }
            }
        }
        best
    }
}

/// What a pooling op computes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// (x) → the maximum of each window.
    Max,
    /// (x, t) → t at each window's argmax of x (the derivative of a scatter).
    Gather,
    /// (x, dy) → dy added at each window's argmax of x, shaped as x.
    Scatter,
    /// (x) → the mean of each window.
    Avg,
    /// (dy) → dy / (kh·kw) spread over each window, shaped as an `input_hw` input.
    Spread { input_hw: (usize, usize) },
}

#[derive(Debug, Clone, Copy)]
struct Pool {
    win: Window,
    kind: Kind,
}

impl Pool {
    /// `out[oh, ow] = t[argmax_x(oh, ow)]` over all planes; for Max, t = x.
    fn gather<T: Float>(&self, g: Planes, x: &[T], t: &[T]) -> Vec<T> {
        let (hw, ohw) = (g.h * g.w, g.ho * g.wo);
        let mut out = vec![T::zero(); g.planes * ohw];
        for_each_chunk(&mut out, ohw * 16, |i, block| {
            for (k, out_plane) in block.chunks_exact_mut(ohw).enumerate() {
                let p = i * 16 + k;
                let (x_p, t_p) = (&x[p * hw..][..hw], &t[p * hw..][..hw]);
                for oh in 0..g.ho {
                    for ow in 0..g.wo {
                        out_plane[oh * g.wo + ow] = t_p[self.win.argmax(x_p, g.w, oh, ow)];
                    }
                }
            }
        });
        out
    }

    fn scatter<T: Float>(&self, g: Planes, x: &[T], dy: &[T]) -> Vec<T> {
        let (hw, ohw) = (g.h * g.w, g.ho * g.wo);
        let mut dx = vec![T::zero(); g.planes * hw];
        for_each_chunk(&mut dx, hw * 16, |i, block| {
            for (k, dx_p) in block.chunks_exact_mut(hw).enumerate() {
                let p = i * 16 + k;
                let (x_p, dy_p) = (&x[p * hw..][..hw], &dy[p * ohw..][..ohw]);
                for oh in 0..g.ho {
                    for ow in 0..g.wo {
                        dx_p[self.win.argmax(x_p, g.w, oh, ow)] += dy_p[oh * g.wo + ow];
                    }
                }
            }
        });
        dx
    }

    fn average<T: Float>(&self, g: Planes, x: &[T]) -> Vec<T> {
        let (hw, ohw) = (g.h * g.w, g.ho * g.wo);
        let scale = T::one() / T::from_f64((self.win.kh * self.win.kw) as f64);
        let mut out = vec![T::zero(); g.planes * ohw];
        for_each_chunk(&mut out, ohw * 16, |i, block| {
            for (k, out_p) in block.chunks_exact_mut(ohw).enumerate() {
                let x_p = &x[(i * 16 + k) * hw..][..hw];
                for oh in 0..g.ho {
                    for ow in 0..g.wo {
                        let mut acc = T::zero();
                        for r in oh * self.win.sh..oh * self.win.sh + self.win.kh {
                            let row = &x_p[r * g.w + ow * self.win.sw..][..self.win.kw];
                            for &v in row {
                                acc += v;
                            }
                        }
                        out_p[oh * g.wo + ow] = acc * scale;
                    }
                }
            }
        });
        out
    }

    fn spread<T: Float>(&self, g: Planes, dy: &[T]) -> Vec<T> {
        let (hw, ohw) = (g.h * g.w, g.ho * g.wo);
        let scale = T::one() / T::from_f64((self.win.kh * self.win.kw) as f64);
        let mut dx = vec![T::zero(); g.planes * hw];
        for_each_chunk(&mut dx, hw * 16, |i, block| {
            for (k, dx_p) in block.chunks_exact_mut(hw).enumerate() {
                let dy_p = &dy[(i * 16 + k) * ohw..][..ohw];
                for oh in 0..g.ho {
                    for ow in 0..g.wo {
                        let v = dy_p[oh * g.wo + ow] * scale;
                        for r in oh * self.win.sh..oh * self.win.sh + self.win.kh {
                            let row = &mut dx_p[r * g.w + ow * self.win.sw..][..self.win.kw];
                            for d in row {
                                *d += v;
                            }
                        }
                    }
                }
            }
        });
        dx
    }

    fn out_dims(&self, dims: &[usize], g: Planes) -> Vec<usize> {
        vec![dims[0], dims[1], g.ho, g.wo]
    }

    fn run1<T: Float>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.shape().dims();
        let v = T::values(s, l, self.label())?;
        let (out, out_dims) = match self.kind {
            Kind::Max => {
                let g = self.win.planes(dims, self.label())?;
                (self.gather(g, v, v), self.out_dims(dims, g))
            }
            Kind::Avg => {
                let g = self.win.planes(dims, self.label())?;
                (self.average(g, v), self.out_dims(dims, g))
            }
            Kind::Spread { input_hw: (h, w) } => {
                let x_dims = [dims[0], dims[1], h, w];
                let g = self.win.planes(&x_dims, self.label())?;
                self.check_output(dims, g)?;
                (self.spread(g, v), x_dims.to_vec())
            }
            _ => candle_core::bail!("{}: takes two arguments", self.label()),
        };
        Ok((T::storage(out), Shape::from(out_dims)))
    }

    fn run2<T: Float>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims();
        let g = self.win.planes(dims, self.label())?;
        let x = T::values(s1, l1, self.label())?;
        let t = T::values(s2, l2, self.label())?;
        let (out, out_dims) = match self.kind {
            Kind::Gather => {
                if l2.shape().dims() != dims {
                    candle_core::bail!("{}: shapes {dims:?} and {:?}", self.label(), l2.dims());
                }
                (self.gather(g, x, t), self.out_dims(dims, g))
            }
            Kind::Scatter => {
                self.check_output(l2.shape().dims(), g)?;
                (self.scatter(g, x, t), dims.to_vec())
            }
            _ => candle_core::bail!("{}: takes one argument", self.label()),
        };
        Ok((T::storage(out), Shape::from(out_dims)))
    }

    fn check_output(&self, dims: &[usize], g: Planes) -> Result<()> {
        if dims.len() != 4 || dims[0] * dims[1] != g.planes || dims[2..] != [g.ho, g.wo] {
            candle_core::bail!(
                "{}: a gradient of shape {dims:?} does not fit {}×{} outputs per plane",
                self.label(),
                g.ho,
                g.wo
            );
        }
        Ok(())
    }

    fn label(&self) -> &'static str {
        match self.kind {
            Kind::Max | Kind::Gather | Kind::Scatter => "gradlab-max-pool2d",
            Kind::Avg | Kind::Spread { .. } => "gradlab-avg-pool2d",
        }
    }

    fn with(&self, kind: Kind) -> Pool {
        Pool { kind, ..*self }
    }
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        self.label()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, self.label(), |T| self.run1::<T>(s, l))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = dense(grad)?;
        Ok(Some(match self.kind {
            Kind::Max => dense(arg)?.apply_op2(&g, self.with(Kind::Scatter))?,
            Kind::Avg => {
                let (_, _, h, w) = arg.dims4()?;
                g.apply_op1(self.with(Kind::Spread { input_hw: (h, w) }))?
            }
            Kind::Spread { .. } => g.apply_op1(self.with(Kind::Avg))?,
            _ => candle_core::bail!("{}: wrong arity", self.label()),
        }))
    }
}

impl CustomOp2 for Pool {
    fn name(&self) -> &'static str {
        self.label()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, self.label(), |T| self.run2::<T>((s1, l1), (s2, l2)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The argmax is piecewise constant in x: no gradient flows to x.
        let g = dense(grad)?;
        let dt = match self.kind {
            Kind::Gather => dense(x)?.apply_op2(&g, self.with(Kind::Scatter))?,
            Kind::Scatter => dense(x)?.apply_op2(&g, self.with(Kind::Gather))?,
            _ => candle_core::bail!("{}: wrong arity", self.label()),
        };
        Ok((None, t.track_op().then_some(dt)))
    }
}

fn pool(x: &Tensor, kernel: (usize, usize), stride: (usize, usize), kind: Kind) -> Result<Tensor> {
    let win = Window {
        kh: kernel.0,
        kw: kernel.1,
        sh: stride.0,
        sw: stride.1,
    };
    dense(x)?.apply_op1(Pool { win, kind })
}

/// Max pooling of `x` (N, C, H, W) over `kernel`-sized windows every `stride` positions, with
/// PyTorch's gradient (all of it to the window's maximum).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    pool(x, (kernel, kernel), (stride, stride), Kind::Max)
}

/// Average pooling of `x` (N, C, H, W) over `kernel`-sized windows every `stride` positions.
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    pool(x, (kernel, kernel), (stride, stride), Kind::Avg)
}
