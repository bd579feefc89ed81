//! Batch normalisation in training mode (Ioffe & Szegedy 2015; PyTorch's `F.batch_norm` with
//! `training=True`): statistics over every axis but the channel axis 1, biased variance in the
//! normalisation, `y = γ (x − μ) / √(σ² + ε) + β`.
//!
//! [`batch_norm_train`] is one op each way (statistics, normalisation and the three gradients
//! in single passes). Its backward is not differentiated again: while second-order gradients
//! are on ([`super::second_order_enabled`]) it builds [`batch_norm_reference`] instead, the
//! same math from candle's differentiable ops (tested equal), and the fused backward refuses
//! to run there rather than return a wrong second derivative.

use super::{dense, dispatch, second_order_enabled, Float};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use std::sync::{Arc, Mutex};

/// A batch's per-channel statistics (no gradient): mean and biased variance over `count`
/// values per channel.
#[derive(Debug, Clone)]
pub struct BatchStatistics {
    /// Per-channel mean.
    pub mean: Tensor,
    /// Per-channel biased variance.
    pub var: Tensor,
    /// Values per channel (N·H·W).
    pub count: usize,
}

#[derive(Debug, Default)]
struct Stats {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    var: Vec<f64>,
}

struct BatchNorm {
    eps: f64,
    stats: Arc<Mutex<Stats>>,
}

/// (outer, channels, inner) of an (N, C, …) shape.
fn split(dims: &[usize]) -> Result<(usize, usize, usize)> {
    if dims.len() < 2 {
        candle_core::bail!("batch norm: needs (N, C, …), got {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

impl BatchNorm {
    fn run<T: Float>(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        (sg, lg): (&CpuStorage, &Layout),
        (sb, lb): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (outer, c, inner) = split(lx.dims())?;
        if lg.dims() != [c] || lb.dims() != [c] {
            candle_core::bail!(
                "batch norm: weight {:?} and bias {:?} must have the {c} channels of {:?}",
                lg.dims(),
                lb.dims(),
                lx.dims()
            );
        }
        let count = outer * inner;
        if count < 2 {
            candle_core::bail!(
                "batch norm: training mode needs more than one value per channel, got {:?}",
                lx.dims()
            );
        }
        let x = T::values(sx, lx, "batch norm")?;
        let gamma = T::values(sg, lg, "batch norm")?;
        let beta = T::values(sb, lb, "batch norm")?;
        let f = |v: T| v.to_f64();
        let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
        for block in x.chunks_exact(c * inner) {
            for (ch, plane) in block.chunks_exact(inner).enumerate() {
                sum[ch] += plane.iter().map(|&v| f(v)).sum::<f64>();
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / count as f64).collect();
        for block in x.chunks_exact(c * inner) {
            for (ch, plane) in block.chunks_exact(inner).enumerate() {
                sq[ch] += plane
                    .iter()
                    .map(|&v| (f(v) - mean[ch]).powi(2))
                    .sum::<f64>();
            }
        }
        let var: Vec<f64> = sq.iter().map(|s| s / count as f64).collect();
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let scale: Vec<T> = (0..c)
            .map(|ch| T::from_f64(f(gamma[ch]) * inv_std[ch]))
            .collect();
        let shift: Vec<T> = (0..c)
            .map(|ch| T::from_f64(f(beta[ch]) - f(gamma[ch]) * inv_std[ch] * mean[ch]))
            .collect();
        let mut y = Vec::with_capacity(x.len());
        for block in x.chunks_exact(c * inner) {
            for (ch, plane) in block.chunks_exact(inner).enumerate() {
                y.extend(plane.iter().map(|&v| v * scale[ch] + shift[ch]));
            }
        }
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = Stats { mean, inv_std, var };
        Ok((T::storage(y), lx.shape().clone()))
    }

    fn grads<T: Float>(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        dy: &Tensor,
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let (outer, c, inner) = split(x.dims())?;
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let x = x.flatten_all()?.to_vec1::<T>()?;
        let dy = dy.flatten_all()?.to_vec1::<T>()?;
        let gamma = gamma.to_vec1::<T>()?;
        let f = |v: T| v.to_f64();
        let xhat = |ch: usize, v: T| (f(v) - stats.mean[ch]) * stats.inv_std[ch];
        let (mut dbeta, mut dgamma) = (vec![0f64; c], vec![0f64; c]);
        for (xb, gb) in x.chunks_exact(c * inner).zip(dy.chunks_exact(c * inner)) {
            for ch in 0..c {
                let (xp, gp) = (&xb[ch * inner..][..inner], &gb[ch * inner..][..inner]);
                for (&xv, &gv) in xp.iter().zip(gp) {
                    dbeta[ch] += f(gv);
                    dgamma[ch] += f(gv) * xhat(ch, xv);
                }
            }
        }
        let m = (outer * inner) as f64;
        let mut dx = Vec::with_capacity(x.len());
        for (xb, gb) in x.chunks_exact(c * inner).zip(dy.chunks_exact(c * inner)) {
            for ch in 0..c {
                let k = f(gamma[ch]) * stats.inv_std[ch] / m;
                let (xp, gp) = (&xb[ch * inner..][..inner], &gb[ch * inner..][..inner]);
                dx.extend(xp.iter().zip(gp).map(|(&xv, &gv)| {
                    let v = k * (m * f(gv) - dbeta[ch] - xhat(ch, xv) * dgamma[ch]);
                    T::from_f64(v)
                }));
            }
        }
        let back = |v: Vec<f64>| v.into_iter().map(|s| T::from_f64(s)).collect();
        Ok((dx, back(dgamma), back(dbeta)))
    }
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "gradlab-batch-norm"
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
        dispatch!(s1, "batch norm", |T| self.run::<T>(
            (s1, l1),
            (s2, l2),
            (s3, l3)
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if second_order_enabled() {
            candle_core::bail!(
                "batch norm: the fused op's backward is differentiated once only; with \
                 second-order gradients on, batch_norm_train builds the reference formulation"
            );
        }
        let g = dense(grad)?;
        macro_rules! tensors {
            ($t:ty) => {{
                let (dx, dg, db) = self.grads::<$t>(x, gamma, &g)?;
                (
                    Tensor::from_vec(dx, x.shape(), x.device())?,
                    Tensor::from_vec(dg, gamma.shape(), x.device())?,
                    Tensor::from_vec(db, beta.shape(), x.device())?,
                )
            }};
        }
        let (dx, dg, db) = match x.dtype() {
            candle_core::DType::F32 => tensors!(f32),
            candle_core::DType::F64 => tensors!(f64),
            other => candle_core::bail!("batch norm: f32 or f64 expected, got {other:?}"),
        };
        Ok((
            x.track_op().then_some(dx),
            gamma.track_op().then_some(dg),
            beta.track_op().then_some(db),
        ))
    }
}

/// Training-mode batch norm of `x` (N, C, …) with per-channel `gamma` and `beta`: the
/// normalised output and the batch's statistics (for the running averages). Uses
/// [`batch_norm_reference`] while second-order gradients are on.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStatistics)> {
    if second_order_enabled() {
        return batch_norm_reference(x, gamma, beta, eps);
    }
    let (outer, c, inner) = split(x.dims())?;
    let stats = Arc::new(Mutex::new(Stats::default()));
    let op = BatchNorm {
        eps,
        stats: Arc::clone(&stats),
    };
    let y = dense(x)?.apply_op3(&dense(gamma)?, &dense(beta)?, op)?;
    let s = stats.lock().unwrap_or_else(|e| e.into_inner());
    let tensor = |v: &[f64]| Tensor::from_slice(v, c, x.device())?.to_dtype(x.dtype());
    let statistics = BatchStatistics {
        mean: tensor(&s.mean)?,
        var: tensor(&s.var)?,
        count: outer * inner,
    };
    Ok((y, statistics))
}

/// [`batch_norm_train`] from candle's differentiable ops (any order of derivatives).
pub fn batch_norm_reference(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStatistics)> {
    let (outer, c, inner) = split(x.dims())?;
    if outer * inner < 2 {
        candle_core::bail!(
            "batch norm: training mode needs more than one value per channel, got {:?}",
            x.dims()
        );
    }
    // (C, N·inner): statistics along the last axis.
    let per_channel = x
        .reshape((outer, c, inner))?
        .transpose(0, 1)?
        .flatten_from(1)?;
    let mean = per_channel.mean(D::Minus1)?;
    let var = per_channel
        .broadcast_sub(&mean.unsqueeze(1)?)?
        .sqr()?
        .mean(D::Minus1)?;
    let mut shape = vec![1, c];
    shape.extend(std::iter::repeat_n(1, x.rank() - 2));
    let y = x
        .broadcast_sub(&mean.reshape(shape.as_slice())?)?
        .broadcast_div(&(&var + eps)?.sqrt()?.reshape(shape.as_slice())?)?
        .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)?;
    let statistics = BatchStatistics {
        mean: mean.detach(),
        var: var.detach(),
        count: outer * inner,
    };
    Ok((y, statistics))
}
