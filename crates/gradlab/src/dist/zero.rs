//! ZeRO stage 1 (Rajbhandari et al. 2020): the flat parameter space cut into one [`Shard`]
//! per rank, what a sharded optimizer needs to combine its sums with the other ranks
//! ([`Distributed`]), and whole optimizer states split into shards and merged back.

use super::Collective;
use crate::optim::{Layout, StateDict};
use crate::{Error, Real, Result};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

/// One rank's part of the flat parameter space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub ranks: usize,
    /// Elements per shard: `⌈total / ranks⌉` (the flat space is padded to `ranks·len`).
    pub len: usize,
    /// The real parameters this rank owns: `rank·len .. min(total, (rank+1)·len)`.
    pub range: Range<usize>,
}

impl Shard {
    /// Rank `rank` of `ranks` over `total` parameters.
    pub fn new(total: usize, rank: usize, ranks: usize) -> Self {
        assert!(ranks > 0 && rank < ranks, "rank {rank} of {ranks}");
        let len = total.div_ceil(ranks);
        let start = (rank * len).min(total);
        let end = ((rank + 1) * len).min(total);
        Shard {
            rank,
            ranks,
            len,
            range: start..end,
        }
    }

    /// Length of the padded flat space all ranks exchange.
    pub fn padded_total(&self) -> usize {
        self.len * self.ranks
    }

    /// The pieces of `full`'s tensors inside this shard, as a layout of flat tensors named
    /// like the tensors they are cut from (a piece of a matrix is a flat `[len]` tensor).
    pub fn layout(&self, full: &Layout) -> Layout {
        Layout::new(full.segments().iter().filter_map(|s| {
            let piece = intersect(s.offset..s.offset + s.len, &self.range);
            (!piece.is_empty()).then(|| (s.name.clone(), vec![piece.len()]))
        }))
        .expect("pieces of a valid layout have unique names")
    }
}

fn intersect(a: Range<usize>, b: &Range<usize>) -> Range<usize> {
    let start = a.start.max(b.start);
    start..a.end.min(b.end).max(start)
}

/// What a sharded optimizer needs to combine its per-tensor and global sums with the other
/// ranks (set in [`Options::distributed`](crate::optim::Options::distributed)).
#[derive(Clone)]
pub struct Distributed {
    /// The group of ranks.
    pub collective: Arc<dyn Collective>,
    /// The whole model's layout.
    pub full: Arc<Layout>,
    /// Where the optimizer's (local) flat space starts in the full one.
    pub start: usize,
}

impl Distributed {
    /// The options for `shard` of `full` over `collective`.
    pub fn new(collective: Arc<dyn Collective>, full: &Layout, shard: &Shard) -> Self {
        Distributed {
            collective,
            full: Arc::new(full.clone()),
            start: shard.range.start,
        }
    }
}

impl Distributed {
    /// The whole model's sum of squared gradients and its first non-finite gradient (tensor,
    /// index in the tensor, value; the earliest in the full flat space), from this rank's:
    /// `sumsq` over its pieces and `bad` (local segment of `layout`, index in the piece,
    /// value). Every rank must call it at the same point of a step.
    pub fn combine_gradients(
        &self,
        layout: &Layout,
        sumsq: f64,
        bad: Option<(usize, usize, f64)>,
    ) -> (f64, Option<(String, usize, f64)>) {
        let c = &self.collective;
        let mut total = [sumsq, if bad.is_some() { 1.0 } else { 0.0 }];
        c.all_sum(&mut total);
        if total[1] == 0.0 {
            return (total[0], None);
        }
        // Each rank reports its first bad element in its own slot; the earliest one wins.
        let mut found = vec![0.0; 2 * c.size()];
        let r = c.rank();
        match bad {
            Some((seg, index, value)) => {
                found[2 * r] = (self.start + layout.segments()[seg].offset + index) as f64;
                found[2 * r + 1] = value;
            }
            None => found[2 * r] = f64::INFINITY,
        }
        c.all_sum(&mut found);
        let (at, value) =
            found
                .chunks(2)
                .map(|p| (p[0], p[1]))
                .fold(
                    (f64::INFINITY, f64::NAN),
                    |a, b| if b.0 < a.0 { b } else { a },
                );
        let at = at as usize;
        let seg = self
            .full
            .segments()
            .iter()
            .find(|s| (s.offset..s.offset + s.len).contains(&at))
            .expect("a bad element lies in some tensor");
        (f64::NAN, Some((seg.name.clone(), at - seg.offset, value)))
    }

    /// The padded length of every rank's piece of the flat space (what an all-gather sends).
    pub fn shard_len(&self) -> usize {
        self.full.total().div_ceil(self.collective.size())
    }

    /// The whole model's tensor that local segment `seg` of `layout` (this rank's pieces) is
    /// cut from, and where the piece starts in it.
    pub fn tensor_of(&self, layout: &Layout, seg: usize) -> (usize, usize) {
        let piece = &layout.segments()[seg];
        let t = self
            .full
            .index_of(&piece.name)
            .expect("a shard's pieces are named after the model's tensors");
        (
            t,
            self.start + piece.offset - self.full.segments()[t].offset,
        )
    }
}

/// A step's gradient check over ranks when `dist` is given (see
/// [`Distributed::combine_gradients`]), or on this process alone: the sum of squares, and the
/// first non-finite gradient by tensor name.
pub(crate) fn combine_check(
    layout: &Layout,
    dist: Option<&Distributed>,
    sumsq: f64,
    bad: Option<(usize, usize, f64)>,
) -> (f64, Option<(String, usize, f64)>) {
    match dist {
        Some(d) => d.combine_gradients(layout, sumsq, bad),
        None => (
            sumsq,
            bad.map(|(seg, i, v)| (layout.segments()[seg].name.clone(), i, v)),
        ),
    }
}

impl std::fmt::Debug for Distributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Distributed(rank {} of {}, from {})",
            self.collective.rank(),
            self.collective.size(),
            self.start
        )
    }
}

impl PartialEq for Distributed {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.collective, &other.collective)
            && self.full == other.full
            && self.start == other.start
    }
}

/// The full state of `full` from the states of its shards (in rank order), as one process
/// would hold it: pieces concatenated into whole tensors, scalars and whole-tensor state
/// ([`StateMeta::whole`](crate::optim::StateMeta)) from the first rank that holds each tensor.
pub fn merge_shards<T: Real>(full: &Layout, parts: Vec<StateDict<T>>) -> Result<StateDict<T>> {
    let mut parts = parts.into_iter();
    let mut merged = parts.next().ok_or_else(|| Error::OutOfRange {
        key: "shard states to merge".into(),
        value: 0.0,
        range: "at least 1".into(),
    })?;
    for part in parts {
        for (key, (shape, values)) in part.tensors {
            if part.meta.whole.contains(&key) {
                // The same whole-tensor state on every rank that holds a piece: one copy.
                merged.tensors.entry(key).or_insert((shape, values));
                continue;
            }
            merged
                .tensors
                .entry(key)
                .or_insert_with(|| (Vec::new(), Vec::new()))
                .1
                .extend(values);
        }
        merged.meta.whole.extend(part.meta.whole);
        for (tensor, scalars) in part.meta.scalars {
            merged.meta.scalars.entry(tensor).or_insert(scalars);
        }
    }
    for (key, (shape, values)) in merged.tensors.iter_mut() {
        let seg = tensor_of_key(full, key)?;
        if merged.meta.whole.contains(key) {
            continue;
        }
        if values.len() != seg.len {
            return Err(Error::Length {
                what: format!("the shards of '{key}'"),
                got: values.len(),
                unit: "elements",
                expected: seg.len,
            });
        }
        *shape = seg.shape.clone();
    }
    Ok(merged)
}

/// The part of a full state (saved by one process or merged) that `shard` holds: pieces of
/// element buffers, and whole-tensor state of every tensor it holds a piece of.
pub fn shard_state<T: Real>(
    full_state: &StateDict<T>,
    full: &Layout,
    shard: &Shard,
) -> Result<StateDict<T>> {
    let mut tensors = BTreeMap::new();
    let mut whole = std::collections::BTreeSet::new();
    for (key, (shape, values)) in &full_state.tensors {
        let seg = tensor_of_key(full, key)?;
        let piece = intersect(seg.offset..seg.offset + seg.len, &shard.range);
        if full_state.meta.whole.contains(key) {
            if !piece.is_empty() {
                tensors.insert(key.clone(), (shape.clone(), values.clone()));
                whole.insert(key.clone());
            }
            continue;
        }
        if values.len() != seg.len {
            // Shapes are checked by the optimizer; keep the message there.
            return Err(Error::State {
                source_name: None,
                message: format!(
                    "tensor '{key}' has {} elements, the parameter has {}",
                    values.len(),
                    seg.len
                ),
            });
        }
        if !piece.is_empty() {
            let local = piece.start - seg.offset..piece.end - seg.offset;
            tensors.insert(key.clone(), (vec![piece.len()], values[local].to_vec()));
        }
    }
    let pieces = shard.layout(full);
    let mut meta = full_state.meta.clone();
    meta.scalars
        .retain(|tensor, _| pieces.index_of(tensor).is_some());
    meta.whole = whole;
    Ok(StateDict { meta, tensors })
}

/// The tensor a state key `"{tensor}/{slot}"` belongs to.
fn tensor_of_key<'a>(full: &'a Layout, key: &str) -> Result<&'a crate::optim::Segment> {
    key.rsplit_once('/')
        .and_then(|(tensor, _)| full.index_of(tensor))
        .map(|i| &full.segments()[i])
        .ok_or_else(|| Error::State {
            source_name: None,
            message: format!("tensor '{key}' does not belong to this optimizer's parameters"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_space_once() {
        let full = Layout::new([("a", vec![3, 2]), ("b", vec![5]), ("c", vec![1])]).unwrap();
        for ranks in 1..=14 {
            let mut covered = 0;
            for rank in 0..ranks {
                let s = Shard::new(full.total(), rank, ranks);
                assert_eq!(s.range.start, covered.min(full.total()));
                covered = s.range.end;
                let pieces = s.layout(&full);
                assert_eq!(pieces.total(), s.range.len());
                assert!(s.padded_total() >= full.total());
            }
            assert_eq!(covered, full.total());
        }
        let s = Shard::new(12, 1, 2);
        assert_eq!(s.range, 6..12);
        let pieces = s.layout(&full);
        let names: Vec<_> = pieces.segments().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        let s = Shard::new(12, 0, 3);
        let pieces = s.layout(&full);
        assert_eq!(pieces.segments()[0].shape, [4]);
    }
}
