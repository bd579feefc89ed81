//! The group of processes `gradlab train` runs in: MPI's world when the binary was built with
//! the `mpi` feature and started by `mpirun`, else the single process.

use anyhow::{bail, Result};
use gradlab::dist::{Collective, Local};
use std::sync::Arc;

/// The processes of this run; dropping it ends MPI.
pub struct Group {
    collective: Arc<dyn Collective>,
    #[cfg(feature = "mpi")]
    world: Option<mpi_world::World>,
}

/// The rank count a launcher announced in the environment (Open MPI, MPICH/Hydra, PMIx).
fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

impl Group {
    /// Joins the group this process was started in.
    pub fn join() -> Result<Group> {
        let size = launched_size().unwrap_or(1);
        #[cfg(feature = "mpi")]
        if launched_size().is_some() {
            let world = mpi_world::World::init()?;
            return Ok(Group {
                collective: world.collective(),
                world: Some(world),
            });
        }
        if size > 1 {
            bail!(
                "started by an MPI launcher with {size} ranks, but this gradlab was built \
                 without MPI; rebuild with `cargo build --release -p gradlab-cli --features mpi`"
            );
        }
        Ok(Group {
            collective: Arc::new(Local),
            #[cfg(feature = "mpi")]
            world: None,
        })
    }

    /// The collective operations of the group.
    pub fn collective(&self) -> Arc<dyn Collective> {
        self.collective.clone()
    }

    /// Ends every process of the group at once (after an error on this rank, so that no
    /// other rank waits forever for it); returns with one process.
    pub fn abort_others(&self) {
        #[cfg(feature = "mpi")]
        if let Some(world) = &self.world {
            world.abort(1);
        }
    }
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use anyhow::{bail, Result};
    use gradlab::dist::Collective;
    use mpi::collective::SystemOperation;
    use mpi::datatype::PartitionMut;
    use mpi::environment::{Threading, Universe};
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    use mpi::Count;
    use std::sync::{Arc, Mutex};

    /// MPI, initialised for the life of the run.
    pub struct World {
        collective: Arc<MpiCollective>,
        _universe: Universe,
    }

    impl World {
        pub fn init() -> Result<World> {
            let Some((universe, level)) = mpi::initialize_with_threading(Threading::Serialized)
            else {
                bail!("MPI was already initialised");
            };
            if level < Threading::Serialized {
                bail!("the MPI library offers thread level {level:?}; gradlab needs Serialized");
            }
            let comm = universe.world();
            Ok(World {
                collective: Arc::new(MpiCollective {
                    rank: comm.rank() as usize,
                    size: comm.size() as usize,
                    comm: Mutex::new(comm),
                }),
                _universe: universe,
            })
        }

        pub fn collective(&self) -> Arc<dyn Collective> {
            self.collective.clone()
        }

        pub fn abort(&self, code: i32) {
            let comm = self
                .collective
                .comm
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            comm.abort(code)
        }
    }

    /// `MPI_COMM_WORLD` behind a mutex: MPI is initialised with `MPI_THREAD_SERIALIZED`, which
    /// allows calls from any thread as long as no two run at once.
    struct MpiCollective {
        comm: Mutex<SimpleCommunicator>,
        rank: usize,
        size: usize,
    }

    // SAFETY: every use of the communicator goes through the mutex, and MPI was initialised
    // with (at least) MPI_THREAD_SERIALIZED, so calls from different threads never overlap.
    unsafe impl Send for MpiCollective {}
    // SAFETY: as above.
    unsafe impl Sync for MpiCollective {}

    fn count(n: usize) -> Count {
        Count::try_from(n).expect("an MPI message holds fewer than 2^31 elements")
    }

    impl MpiCollective {
        fn with<R>(&self, f: impl FnOnce(&SimpleCommunicator) -> R) -> R {
            f(&self.comm.lock().unwrap_or_else(|e| e.into_inner()))
        }

        fn byte_counts(&self, c: &SimpleCommunicator, len: usize) -> (Vec<Count>, Vec<Count>) {
            let mut counts = vec![0 as Count; self.size];
            c.all_gather_into(&count(len), &mut counts[..]);
            let displs = displacements(&counts);
            (counts, displs)
        }
    }

    impl Collective for MpiCollective {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn all_sum(&self, values: &mut [f64]) {
            let send = values.to_vec();
            self.with(|c| c.all_reduce_into(&send[..], values, SystemOperation::sum()));
        }

        fn reduce_scatter(&self, send: &[f32], recv: &mut [f32]) {
            assert_eq!(send.len(), recv.len() * self.size, "reduce_scatter sizes");
            self.with(|c| c.reduce_scatter_block_into(send, recv, SystemOperation::sum()));
        }

        fn all_gather(&self, send: &[f32], recv: &mut [f32]) {
            assert_eq!(send.len() * self.size, recv.len(), "all_gather sizes");
            self.with(|c| c.all_gather_into(send, recv));
        }

        fn all_gather_bytes(&self, mine: &[u8]) -> Vec<Vec<u8>> {
            self.with(|c| {
                let (counts, displs) = self.byte_counts(c, mine.len());
                let total = counts.iter().map(|&n| n as usize).sum();
                let mut buf = vec![0u8; total];
                {
                    let mut parts = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                    c.all_gather_varcount_into(mine, &mut parts);
                }
                split(&buf, &counts)
            })
        }

        fn gather_bytes(&self, mine: &[u8]) -> Option<Vec<Vec<u8>>> {
            self.with(|c| {
                let root = c.process_at_rank(0);
                let mut counts = vec![0 as Count; self.size];
                if self.rank == 0 {
                    root.gather_into_root(&count(mine.len()), &mut counts[..]);
                    let displs = displacements(&counts);
                    let mut buf = vec![0u8; counts.iter().map(|&n| n as usize).sum()];
                    {
                        let mut parts = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                        root.gather_varcount_into_root(mine, &mut parts);
                    }
                    Some(split(&buf, &counts))
                } else {
                    root.gather_into(&count(mine.len()));
                    root.gather_varcount_into(mine);
                    None
                }
            })
        }
    }

    /// Where each rank's part starts in the concatenation.
    fn displacements(counts: &[Count]) -> Vec<Count> {
        counts
            .iter()
            .scan(0, |acc, &n| {
                let at = *acc;
                *acc += n;
                Some(at)
            })
            .collect()
    }

    fn split(buf: &[u8], counts: &[Count]) -> Vec<Vec<u8>> {
        let mut at = 0;
        counts
            .iter()
            .map(|&n| {
                let part = buf[at..at + n as usize].to_vec();
                at += n as usize;
                part
            })
            .collect()
    }
}
