//! Data parallelism with sharded optimizer state (ZeRO stage 1, Rajbhandari et al. 2020).
//!
//! N processes ("ranks") each compute the gradient of their slice of every global batch.
//! The flat parameter space (the [`Layout`](crate::optim::Layout)'s tensors back to back,
//! padded to a multiple of N) is cut into N equal contiguous [`Shard`]s (`zero.rs`, with the
//! state's split and merge); a reduce-scatter leaves each rank the summed
//! gradient of its shard only, each rank runs the optimizer on its shard only (so optimizer
//! state is held once across ranks), and an all-gather gives every rank the new parameters.
//!
//! A shard cuts through tensors. Whatever an optimizer computes over a whole tensor or over
//! all of them — the global gradient norm for clipping, LAMB's and LARS's trust ratios,
//! SWATS's projection — is summed over ranks with a small all-reduce ([`Distributed`] in the
//! optimizer's options), so the sharded run is the same algorithm as the single-process one.
//!
//! The collective operations are a trait, [`Collective`]: [`Local`] is the single process,
//! [`ThreadGroup`] runs ranks as threads of one process (for tests), and the `gradlab` binary
//! implements it over MPI (cargo feature `mpi`). The engine's side of a sharded step (its
//! sums combined over ranks) is `shard_sync.rs`; Muon, Adafactor and Prodigy exchange what
//! their whole-tensor steps need in their own files.

mod collective;
mod shard_sync;
mod threads;
mod zero;

pub use collective::{Collective, Local};
pub(crate) use shard_sync::ShardSync;
pub use threads::ThreadGroup;
pub(crate) use zero::combine_check;
pub use zero::{merge_shards, shard_state, Distributed, Shard};
