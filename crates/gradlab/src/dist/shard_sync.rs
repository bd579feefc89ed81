//! A sharded optimizer's per-tensor sums: each rank holds pieces of some tensors, and a rule
//! that needs a whole tensor's sums (LAMB's and LARS's norms, Adafactor's means) gets them
//! summed over the ranks.

use super::Distributed;
use crate::optim::layout::Layout;
use crate::optim::rule::Sums;

/// A sharded engine's link to the other ranks: the whole-model index of each local segment
/// and a buffer for the per-tensor sums of the whole model.
pub(crate) struct ShardSync {
    /// The rank's place in the group and its shard of the model.
    pub(crate) dist: Distributed,
    tensor_of: Vec<usize>,
    sums: Vec<f64>,
}

impl ShardSync {
    pub(crate) fn new(dist: &Distributed, layout: &Layout) -> Self {
        let tensor_of = layout
            .segments()
            .iter()
            .map(|s| {
                dist.full
                    .index_of(&s.name)
                    .expect("a shard's pieces are named after the model's tensors")
            })
            .collect();
        ShardSync {
            dist: dist.clone(),
            tensor_of,
            sums: vec![0.0; 4 * dist.full.segments().len()],
        }
    }

    /// Replaces each local segment's sums by its whole tensor's sums over all ranks.
    pub(crate) fn combine(&mut self, seg_sums: &mut [Sums]) {
        self.sums.fill(0.0);
        for (sums, &t) in seg_sums.iter().zip(&self.tensor_of) {
            self.sums[4 * t..4 * t + 4].copy_from_slice(sums);
        }
        self.dist.collective.all_sum(&mut self.sums);
        for (sums, &t) in seg_sums.iter_mut().zip(&self.tensor_of) {
            sums.copy_from_slice(&self.sums[4 * t..4 * t + 4]);
        }
    }
}
