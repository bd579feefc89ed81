//! Adafactor under ZeRO-1 sharding: each rank holds pieces of tensors, but the row and
//! column means, RMS(θ) and RMS(U) are sums over whole tensors. The first pass's sums (and
//! the second pass's ΣU²) of every rank are added up over the whole model's tensors, so that
//! every rank holding a piece of a tensor updates the same whole means and moves its piece
//! with the same step as one process would.

use super::kernels::{Factored, Measured};
use crate::dist::{Collective, Distributed};
use crate::optim::Layout;
use std::sync::Arc;

/// The sums a sharded Adafactor exchanges each step.
pub(super) struct Exchange {
    collective: Arc<dyn Collective>,
    /// Per local segment: where its tensor's sums lie in `sums`, and its tensor's index.
    at: Vec<usize>,
    tensor_of: Vec<usize>,
    /// Per local segment: whether its tensor is factored (2-D or more).
    factored: Vec<bool>,
    /// Per whole tensor: factored `[Σθ², Σg² per row, Σg² per column]`, else `[Σθ², ΣU²]`.
    sums: Vec<f64>,
    /// Per whole tensor: the factored ΣU².
    updates: Vec<f64>,
}

impl Exchange {
    /// The exchange of a rank holding `local` (its pieces) of `d`'s model.
    pub(super) fn new(d: &Distributed, local: &Layout) -> Self {
        let mut starts = Vec::with_capacity(d.full.segments().len());
        let mut len = 0;
        for s in d.full.segments() {
            starts.push(len);
            len += match Factored::new(&s.shape, 0..s.len) {
                Some(g) => 1 + g.batches * (g.rows + g.cols),
                None => 2,
            };
        }
        let tensor_of: Vec<usize> = (0..local.segments().len())
            .map(|i| d.tensor_of(local, i).0)
            .collect();
        Exchange {
            collective: d.collective.clone(),
            at: tensor_of.iter().map(|&t| starts[t]).collect(),
            factored: tensor_of
                .iter()
                .map(|&t| d.full.segments()[t].shape.len() >= 2)
                .collect(),
            tensor_of,
            sums: vec![0.0; len],
            updates: vec![0.0; d.full.segments().len()],
        }
    }

    /// Replaces each local tensor's first-pass sums by its whole tensor's (Σ raw g² is left:
    /// the gradients' check combines it).
    pub(super) fn combine_measured(&mut self, measured: &mut [Measured]) {
        self.sums.fill(0.0);
        for (i, m) in measured.iter().enumerate() {
            let at = self.at[i];
            for (dst, src) in self.sums[at..].iter_mut().zip(fields(m, self.factored[i])) {
                *dst = src;
            }
        }
        self.collective.all_sum(&mut self.sums);
        for (i, m) in measured.iter_mut().enumerate() {
            let (at, factored) = (self.at[i], self.factored[i]);
            m.sums[0] = self.sums[at];
            if factored {
                let (rows, cols) = (m.row_sq.len(), m.col_sq.len());
                m.row_sq.copy_from_slice(&self.sums[at + 1..at + 1 + rows]);
                m.col_sq
                    .copy_from_slice(&self.sums[at + 1 + rows..at + 1 + rows + cols]);
            } else {
                m.sums[1] = self.sums[at + 1];
            }
        }
    }

    /// Replaces each local factored tensor's ΣU² (`sums[1]`) by its whole tensor's.
    pub(super) fn combine_updates(&mut self, measured: &mut [Measured]) {
        self.updates.fill(0.0);
        for (i, m) in measured.iter().enumerate() {
            if self.factored[i] {
                self.updates[self.tensor_of[i]] = m.sums[1];
            }
        }
        self.collective.all_sum(&mut self.updates);
        for (i, m) in measured.iter_mut().enumerate() {
            if self.factored[i] {
                m.sums[1] = self.updates[self.tensor_of[i]];
            }
        }
    }
}

/// The values a local tensor contributes, in its block's order.
fn fields(m: &Measured, factored: bool) -> impl Iterator<Item = f64> + '_ {
    let head = [m.sums[0], m.sums[1]];
    head.into_iter()
        .take(if factored { 1 } else { 2 })
        .chain(m.row_sq.iter().copied())
        .chain(m.col_sq.iter().copied())
}
