//! The collective operations of a group of ranks ([`Collective`]) and the single process
//! ([`Local`]); [`ThreadGroup`](super::ThreadGroup) runs ranks as threads, the `gradlab`
//! binary runs them over MPI.

/// The collective operations of a group of ranks. Every rank must call the same operations
/// in the same order with buffers of the same lengths (as in MPI).
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Element-wise sum over ranks, in place; every rank gets the same result.
    fn all_sum(&self, values: &mut [f64]);
    /// `recv ← Σ_ranks send[rank·n .. (rank+1)·n]` with `n = recv.len()`
    /// (`send.len() == size·n`).
    fn reduce_scatter(&self, send: &[f32], recv: &mut [f32]);
    /// `recv[r·n .. (r+1)·n] ← send of rank r` with `n = send.len()`.
    fn all_gather(&self, send: &[f32], recv: &mut [f32]);
    /// Every rank's bytes (of any length), in rank order, on every rank.
    fn all_gather_bytes(&self, mine: &[u8]) -> Vec<Vec<u8>>;
    /// Every rank's bytes in rank order on rank 0 (`None` elsewhere).
    fn gather_bytes(&self, mine: &[u8]) -> Option<Vec<Vec<u8>>>;
}

/// The single process: rank 0 of 1; every operation is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_sum(&self, _values: &mut [f64]) {}
    fn reduce_scatter(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        vec![mine.to_vec()]
    }
    fn gather_bytes(&self, mine: &[u8]) -> Option<Vec<Vec<u8>>> {
        Some(vec![mine.to_vec()])
    }
}
