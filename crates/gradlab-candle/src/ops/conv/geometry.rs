//! A convolution's sizes and its three bilinear products on raw buffers: the forward product
//! (im2col, one gemm per image and group), the input gradient (col2im of `Wᵀ dy`) and the
//! weight gradient (`dy · colsᵀ`, summed over images in fixed blocks).

use super::Conv2dParams;
use crate::ops::gemm::{gemm_serial, MatRef};
use crate::ops::{for_each_chunk, Float};
use candle_core::Result;

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) cin: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) cout: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
    pub(super) p: Conv2dParams,
}

impl Geometry {
    pub(super) fn new(x: [usize; 4], kernel: [usize; 4], p: Conv2dParams) -> Result<Self> {
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

    pub(super) fn cin_g(&self) -> usize {
        self.cin / self.p.groups
    }
    pub(super) fn cout_g(&self) -> usize {
        self.cout / self.p.groups
    }
    /// Rows of the im2col matrix of one group.
    pub(super) fn k(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    /// Output positions per channel.
    pub(super) fn l(&self) -> usize {
        self.ho * self.wo
    }
    pub(super) fn input_len(&self) -> usize {
        self.cin * self.h * self.w
    }
    /// A 1×1 kernel at stride 1 without padding: the input already is its im2col matrix.
    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == 1 && self.p.padding == 0
    }
    pub(super) fn x_dims(&self) -> Vec<usize> {
        vec![self.n, self.cin, self.h, self.w]
    }
    pub(super) fn y_dims(&self) -> Vec<usize> {
        vec![self.n, self.cout, self.ho, self.wo]
    }
    pub(super) fn w_dims(&self) -> Vec<usize> {
        vec![self.cout, self.cin_g(), self.kh, self.kw]
    }

    /// Output columns `[lo, hi)` whose input column `ow·s + j·d − p` lies inside the image.
    pub(super) fn valid(&self, j: usize, out: usize, size: usize) -> (usize, usize) {
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
    pub(super) fn im2col<T: Float>(&self, x: &[T], g: usize, cols: &mut [T]) {
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
    pub(super) fn col2im<T: Float>(&self, cols: &[T], g: usize, dx: &mut [T]) {
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
    pub(super) fn forward<T: Float>(&self, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
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
    pub(super) fn input_grad<T: Float>(&self, dy: &[T], w: &[T]) -> Vec<T> {
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
    pub(super) fn weight_grad<T: Float>(&self, x: &[T], dy: &[T]) -> Vec<T> {
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
