//! Ranks as threads of one process: the same collective semantics as MPI, for tests and for
//! trying data parallelism without an MPI installation.

use super::Collective;
use std::any::Any;
use std::sync::{Arc, Barrier, Mutex};

type Deposit = Arc<dyn Any + Send + Sync>;

struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Option<Deposit>>>,
}

/// One rank of a group of threads; make the group with [`ThreadGroup::new`] and move each
/// member to its own thread.
pub struct ThreadGroup {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// The `size` members of a new group, rank 0 first.
    pub fn new(size: usize) -> Vec<ThreadGroup> {
        assert!(size > 0, "a group needs at least one rank");
        let shared = Arc::new(Shared {
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![None; size]),
        });
        (0..size)
            .map(|rank| ThreadGroup {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Every rank's value, in rank order.
    fn exchange<V: Any + Send + Sync>(&self, mine: V) -> Vec<Deposit> {
        self.shared.slots.lock().expect("no rank panicked")[self.rank] = Some(Arc::new(mine));
        self.shared.barrier.wait();
        let all: Vec<Deposit> = self
            .shared
            .slots
            .lock()
            .expect("no rank panicked")
            .iter()
            .map(|s| s.clone().expect("every rank deposited"))
            .collect();
        // Nobody deposits the next value before everyone has read this one.
        self.shared.barrier.wait();
        all
    }
}

fn get<V: 'static>(d: &Deposit) -> &V {
    d.downcast_ref::<V>()
        .expect("every rank calls the same operation")
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_sum(&self, values: &mut [f64]) {
        let all = self.exchange(values.to_vec());
        values.fill(0.0);
        for d in &all {
            for (v, x) in values.iter_mut().zip(get::<Vec<f64>>(d)) {
                *v += x;
            }
        }
    }

    fn reduce_scatter(&self, send: &[f32], recv: &mut [f32]) {
        let n = recv.len();
        assert_eq!(send.len(), n * self.size, "reduce_scatter buffer sizes");
        let all = self.exchange(send.to_vec());
        recv.fill(0.0);
        for d in &all {
            let part = &get::<Vec<f32>>(d)[self.rank * n..(self.rank + 1) * n];
            for (v, x) in recv.iter_mut().zip(part) {
                *v += x;
            }
        }
    }

    fn all_gather(&self, send: &[f32], recv: &mut [f32]) {
        let n = send.len();
        assert_eq!(recv.len(), n * self.size, "all_gather buffer sizes");
        let all = self.exchange(send.to_vec());
        for (r, d) in all.iter().enumerate() {
            recv[r * n..(r + 1) * n].copy_from_slice(get::<Vec<f32>>(d));
        }
    }

    fn all_gather_bytes(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        self.exchange(mine.to_vec())
            .iter()
            .map(|d| get::<Vec<u8>>(d).clone())
            .collect()
    }

    fn gather_bytes(&self, mine: &[u8]) -> Option<Vec<Vec<u8>>> {
        let all = self.all_gather_bytes(mine);
        (self.rank == 0).then_some(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectives_agree_with_their_definitions() {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadGroup::new(3)
                .into_iter()
                .map(|g| {
                    s.spawn(move || {
                        let r = g.rank() as f32;
                        let mut sum = [r as f64, 1.0];
                        g.all_sum(&mut sum);
                        let send: Vec<f32> = (0..6).map(|i| i as f32 * (r + 1.0)).collect();
                        let mut recv = [0.0f32; 2];
                        g.reduce_scatter(&send, &mut recv);
                        let mut gathered = [0.0f32; 3];
                        g.all_gather(&[r], &mut gathered);
                        let bytes = g.gather_bytes(&vec![g.rank() as u8; g.rank()]);
                        (sum, recv, gathered, bytes)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, (sum, recv, gathered, bytes)) in results.into_iter().enumerate() {
            assert_eq!(sum, [3.0, 3.0]);
            // Σ_r (r+1)·i = 6i for i = 2·rank, 2·rank+1.
            let i = 2.0 * rank as f32;
            assert_eq!(recv, [6.0 * i, 6.0 * (i + 1.0)]);
            assert_eq!(gathered, [0.0, 1.0, 2.0]);
            match rank {
                0 => assert_eq!(bytes.unwrap(), vec![vec![], vec![1], vec![2, 2]]),
                _ => assert!(bytes.is_none()),
            }
        }
    }
}
