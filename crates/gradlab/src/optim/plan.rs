//! How a step's work is cut into chunks and spread over threads.
//!
//! Every tensor is cut into chunks of at most [`CHUNK`] elements; consecutive small chunks
//! are batched into one task, so a thousand small tensors cost no more scheduling than one
//! large one. The cut depends only on the layout, never on the thread count, and every
//! reduction is summed chunk by chunk in a fixed order: results are bitwise identical
//! whatever the number of threads.

use std::ops::Range;

/// Elements per chunk.
pub const CHUNK: usize = 1 << 14;
/// Below this many elements a step runs on the calling thread.
const PARALLEL_THRESHOLD: usize = 1 << 16;

/// One contiguous piece of one tensor.
#[derive(Debug, Clone, Copy)]
pub struct Chunk {
    /// Segment index.
    pub seg: usize,
    /// Element range inside the segment.
    pub start: usize,
    /// End (exclusive) inside the segment.
    pub end: usize,
}

/// The fixed chunking of a layout.
#[derive(Debug, Clone)]
pub struct Plan {
    /// All chunks, segment by segment in order.
    pub chunks: Vec<Chunk>,
    /// Per segment, its range of chunk indices.
    pub seg_chunks: Vec<Range<usize>>,
    /// Tasks: ranges of chunk indices run together on one thread.
    tasks: Vec<Range<usize>>,
    total: usize,
}

impl Plan {
    /// Cuts segments of the given lengths.
    pub fn new(lens: &[usize]) -> Self {
        let mut chunks = Vec::new();
        let mut seg_chunks = Vec::with_capacity(lens.len());
        for (seg, &len) in lens.iter().enumerate() {
            let first = chunks.len();
            let mut start = 0;
            while start < len {
                let end = (start + CHUNK).min(len);
                chunks.push(Chunk { seg, start, end });
                start = end;
            }
            seg_chunks.push(first..chunks.len());
        }
        let mut tasks = Vec::new();
        let mut task_start = 0;
        let mut size = 0;
        for (i, c) in chunks.iter().enumerate() {
            let n = c.end - c.start;
            if size > 0 && size + n > CHUNK {
                tasks.push(task_start..i);
                task_start = i;
                size = 0;
            }
            size += n;
        }
        if task_start < chunks.len() {
            tasks.push(task_start..chunks.len());
        }
        Plan {
            chunks,
            seg_chunks,
            tasks,
            total: lens.iter().sum(),
        }
    }

    /// Runs `f(chunk_index)` for the chunks in `range`, in parallel when they are many.
    pub fn for_each_in<F: Fn(usize) + Sync + Send>(&self, range: Range<usize>, f: F) {
        let total: usize = self.chunks[range.clone()]
            .iter()
            .map(|c| c.end - c.start)
            .sum();
        if total < PARALLEL_THRESHOLD || crate::pool::current_threads() == 1 {
            range.for_each(f);
        } else {
            let start = range.start;
            crate::pool::run(range.len(), &|i| f(start + i));
        }
    }

    /// Runs `f(chunk_index)` for every chunk, in parallel for large layouts.
    pub fn for_each<F: Fn(usize) + Sync + Send>(&self, f: F) {
        if self.total < PARALLEL_THRESHOLD || crate::pool::current_threads() == 1 {
            (0..self.chunks.len()).for_each(f);
        } else {
            crate::pool::run(self.tasks.len(), &|t| self.tasks[t].clone().for_each(&f));
        }
    }
}

/// A raw view of a mutable buffer that chunks running on different threads write through,
/// each to its own disjoint range.
pub struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: a `Shared` is a pointer to a buffer of `T: Send` borrowed mutably for the run;
// moving it to another thread moves no `T`.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: threads reach the buffer only through `Shared`'s unsafe accessors, whose callers
// guarantee that each thread touches a range no other thread touches.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// Wraps a buffer.
    pub fn new(buf: &mut [T]) -> Self {
        Shared {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// An empty view (an unused state slot): every slice of it is empty.
    pub fn empty() -> Self {
        Shared {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
        }
    }

    /// A mutable sub-slice (empty for an empty view).
    ///
    /// # Safety
    /// No two live slices obtained from the same `Shared` may overlap, and the wrapped buffer
    /// must outlive them and not be otherwise accessed meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, range: Range<usize>) -> &mut [T] {
        if self.len == 0 {
            return &mut [];
        }
        assert!(range.end <= self.len && range.start <= range.end);
        std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.end - range.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_small_tensors_and_splits_large_ones() {
        let plan = Plan::new(&[10; 1000]);
        assert_eq!(plan.chunks.len(), 1000);
        assert!(plan.tasks.len() < 5);
        let big = Plan::new(&[CHUNK * 3 + 1, 5]);
        assert_eq!(big.chunks.len(), 5);
        assert_eq!(big.seg_chunks[0], 0..4);
        let covered: usize = big.chunks.iter().map(|c| c.end - c.start).sum();
        assert_eq!(covered, CHUNK * 3 + 6);
        let empty = Plan::new(&[0, 3]);
        assert_eq!(empty.seg_chunks[0], 0..0);
    }
}
