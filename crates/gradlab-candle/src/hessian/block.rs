//! One tensor's diagonal block of a Hessian, as an operator of its own (per-layer curvature).

use gradlab::landscape::HessianOperator;

/// One tensor's diagonal block of a Hessian (for per-layer curvature).
pub struct Block<'o, O: HessianOperator> {
    inner: &'o mut O,
    range: std::ops::Range<usize>,
    full_v: Vec<f64>,
    full_out: Vec<f64>,
}

impl<'o, O: HessianOperator> Block<'o, O> {
    /// The block of parameters `range`.
    pub fn new(inner: &'o mut O, range: std::ops::Range<usize>) -> Self {
        let n = inner.dim();
        Block {
            inner,
            range,
            full_v: vec![0.0; n],
            full_out: vec![0.0; n],
        }
    }
}

impl<O: HessianOperator> HessianOperator for Block<'_, O> {
    fn dim(&self) -> usize {
        self.range.len()
    }
    fn hvp(&mut self, v: &[f64], out: &mut [f64]) -> gradlab::Result<()> {
        self.full_v.iter_mut().for_each(|x| *x = 0.0);
        self.full_v[self.range.clone()].copy_from_slice(v);
        self.inner.hvp(&self.full_v, &mut self.full_out)?;
        out.copy_from_slice(&self.full_out[self.range.clone()]);
        Ok(())
    }
    fn loss_grad(&mut self, grad: &mut [f64]) -> gradlab::Result<f64> {
        let mut full = vec![0.0; self.inner.dim()];
        let l = self.inner.loss_grad(&mut full)?;
        grad.copy_from_slice(&full[self.range.clone()]);
        Ok(l)
    }
}
