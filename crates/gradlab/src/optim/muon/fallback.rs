//! Muon's fallback optimizer (for the tensors that are not matrices) in a sharded run.

use crate::dist::Distributed;
use crate::optim::{Layout, Segment};

/// The fallback's sharding: the whole model without its matrices (`others`, in order), in
/// which this rank's pieces are again one contiguous range, as in one process the fallback
/// sees the tensors that are not matrices.
pub(super) fn shard(d: &Distributed, others: &[&Segment]) -> Distributed {
    let full = Layout::new(others.iter().map(|s| (s.name.clone(), s.shape.clone())))
        .expect("a valid layout's tensors form a valid layout");
    let start = others
        .iter()
        .map(|s| d.start.clamp(s.offset, s.offset + s.len) - s.offset)
        .sum();
    Distributed {
        collective: d.collective.clone(),
        full: std::sync::Arc::new(full),
        start,
    }
}
