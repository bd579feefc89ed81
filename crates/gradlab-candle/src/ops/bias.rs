//! The bias gradient: the sum of a gradient over every axis but the channel axis (axis 1),
//! in one pass (candle's generic reduction over axes 0, 2, 3 took 4.5 ms of a CNN step).

use super::{dense, dispatch, Float};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Sums `(outer, channels, inner)` values into `channels`.
struct ChannelSum {
    outer: usize,
    channels: usize,
    inner: usize,
}

impl ChannelSum {
    fn run<T: Float>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = T::values(s, l, "channel sum")?;
        let mut sums = vec![0f64; self.channels];
        for block in x.chunks_exact(self.channels * self.inner) {
            for (sum, plane) in sums.iter_mut().zip(block.chunks_exact(self.inner)) {
                let mut acc = T::zero();
                for &v in plane {
                    acc += v;
                }
                *sum += acc.to_f64();
            }
        }
        let out = sums.into_iter().map(|s| T::from_f64(s)).collect();
        Ok((T::storage(out), Shape::from(self.channels)))
    }
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "gradlab-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, "channel sum", |T| self.run::<T>(s, l))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let spread = grad
            .reshape((1, self.channels, 1))?
            .broadcast_as((self.outer, self.channels, self.inner))?
            .reshape(arg.shape())?;
        Ok(Some(spread))
    }
}

/// The sum of `t` over every axis but axis 1 (for a 2-D `t`: the column sums).
pub(crate) fn channel_sum(t: &Tensor) -> Result<Tensor> {
    let dims = t.dims();
    if dims.len() < 2 {
        candle_core::bail!("channel sum: needs at least 2 axes, got {dims:?}");
    }
    let op = ChannelSum {
        outer: dims[0],
        channels: dims[1],
        inner: dims[2..].iter().product(),
    };
    dense(t)?.apply_op1(op)
}
