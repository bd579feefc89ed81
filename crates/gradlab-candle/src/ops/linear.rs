//! The fully connected layer `y = x Wᵀ + b` (PyTorch's `nn.Linear`, weight `(out, in)`), one
//! gemm with the bias added in the same pass, and a backward that computes the input gradient
//! only when the input needs one (the first layer's input is data).

use super::bias::channel_sum;
use super::gemm::{gemm, matmul_t, MatRef};
use super::{dense, dispatch, Float};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

struct Linear;

impl Linear {
    fn run<T: Float>(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        (sw, lw): (&CpuStorage, &Layout),
        (sb, lb): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, inputs) = lx.shape().dims2()?;
        let (outputs, w_inputs) = lw.shape().dims2()?;
        let bias_len = lb.shape().dims1()?;
        if w_inputs != inputs || bias_len != outputs {
            candle_core::bail!(
                "linear: input {:?}, weight {:?} and bias {:?} do not fit (weight is (out, in))",
                lx.shape().dims(),
                lw.shape().dims(),
                lb.shape().dims()
            );
        }
        let x = T::values(sx, lx, "linear")?;
        let w = T::values(sw, lw, "linear")?;
        let b = T::values(sb, lb, "linear")?;
        let mut out = Vec::with_capacity(rows * outputs);
        for _ in 0..rows {
            out.extend_from_slice(b);
        }
        gemm(
            &mut out,
            outputs,
            MatRef::new(x, rows, inputs),
            MatRef::new(w, outputs, inputs).t(),
            true,
        );
        Ok((T::storage(out), Shape::from((rows, outputs))))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "gradlab-linear"
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
        dispatch!(s1, "linear", |T| self.run::<T>(
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
        let g = dense(grad)?;
        let dx = if x.track_op() {
            Some(matmul_t(&g, w, false, false)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(matmul_t(&g, x, true, false)?)
        } else {
            None
        };
        let db = if b.track_op() {
            Some(channel_sum(&g)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

/// `x Wᵀ + b` for `x` of shape `(…, in)`, `weight` `(out, in)`, `bias` `(out)` (none: no
/// bias), as PyTorch's `nn.Linear`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&inputs, lead)) = dims.split_last() else {
        candle_core::bail!("linear: the input needs at least one axis");
    };
    let rows: usize = lead.iter().product();
    let x2 = dense(&x.reshape((rows, inputs))?)?;
    let y = match bias {
        Some(b) => x2.apply_op3(&dense(weight)?, &dense(b)?, Linear)?,
        None => matmul_t(&x2, weight, false, true)?,
    };
    let mut out_dims = lead.to_vec();
    out_dims.push(y.dim(1)?);
    y.reshape(out_dims)
}
