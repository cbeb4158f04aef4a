//! Data-parallel training over MPI (the `mpi` feature; rsmpi over the system's Open MPI or
//! MPICH): [`Mpi`] joins the world `mpirun` started, and [`MpiReducer`] is its
//! [`GradientReducer`] for [`crate::Trainer::distributed`].
//!
//! **The reduction, in a fixed order.** `MPI_Allreduce` may add the ranks' values in any order
//! (and does, by message size and topology), so it cannot promise the same bits as one process.
//! [`MpiReducer::reduce`] is an all-reduce built from two collectives whose results do not
//! depend on an order of additions:
//!
//! 1. the gradient (E elements) is cut into `N` chunks ([`crate::parallel::micro_batch_ranges`]
//!    of E), and `MPI_Alltoallv` sends chunk `r` of every rank to rank `r`;
//! 2. rank `r` combines the `N` copies of its chunk with [`combine_in_order`], rank 0 first;
//! 3. `MPI_Allgatherv` gives every rank every combined chunk.
//!
//! Each element is thus summed exactly as gradient accumulation sums it. Each rank sends and
//! receives `2·E·(N−1)/N` elements per step: a ring all-reduce's volume, though in `N − 1`
//! messages per collective rather than a ring's pipelined ones.

use crate::error::{Error, Result};
use crate::parallel::{GradBuffer, GradientReducer, coefficients, combine_in_order, micro_batch_ranges};
use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence};
use std::rc::Rc;
use strata_core::Collective;

/// Environment variables a launcher sets for its processes (Open MPI's, PMIx's, MPICH's Hydra
/// and Slurm's PMI): without one, the process was not started by `mpirun` and stays alone.
const LAUNCHER_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"];

/// This process's place in an MPI world; MPI is finalized when it is dropped.
pub struct Mpi {
    /// Held for its `Drop` (`MPI_Finalize`).
    _universe: mpi::environment::Universe,
    world: SimpleCommunicator,
}

impl Mpi {
    /// Joins the world when the process was started by an MPI launcher (`mpirun`, `srun`);
    /// `None` otherwise, so a binary built with the feature still runs alone as before.
    ///
    /// # Errors
    /// The launcher's environment is there but MPI does not start.
    pub fn init() -> Result<Option<Mpi>> {
        if !LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return Ok(None);
        }
        let universe = mpi::initialize().ok_or_else(|| {
            Error::InvalidOption("MPI could not be initialised (was it initialised twice in this process?)".into())
        })?;
        let world = universe.world();
        Ok(Some(Mpi { _universe: universe, world }))
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// The reducer for [`crate::Trainer::distributed`].
    pub fn reducer(&self) -> MpiReducer {
        MpiReducer { world: self.world.duplicate() }
    }

    /// Refuses to go on when the ranks disagree on `hash` (of the run's config and data): every
    /// rank learns every rank's hash, so all of them stop with the same error naming the first
    /// rank that differs from rank 0, instead of training different things or hanging.
    ///
    /// # Errors
    /// A rank's hash differs from rank 0's.
    pub fn check_same(&self, what: &str, hash: u64) -> Result<()> {
        let mut all = vec![0u64; self.size()];
        self.world.all_gather_into(&hash, &mut all[..]);
        match all.iter().position(|&h| h != all[0]) {
            None => Ok(()),
            Some(r) => Err(Error::InvalidOption(format!(
                "rank {r} of {} was started with another {what} than rank 0 (hash {:016x}, rank 0: {:016x}): every rank must get the same run file, flags and data",
                all.len(),
                all[r],
                all[0]
            ))),
        }
    }

    /// Ends every process of the world with `code` (`MPI_Abort`): what a rank does after an
    /// error, so the others do not wait for it in a collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// The [`GradientReducer`] over an MPI communicator (see the module docs for the algorithm).
pub struct MpiReducer {
    world: SimpleCommunicator,
}

impl MpiReducer {
    /// The fixed-order all-reduce of one element type's buffer; returns the bytes sent and
    /// received.
    fn reduce_typed<T>(&self, local: &mut [T], sizes: &[usize]) -> Result<usize>
    where
        T: crate::parallel::Float + Equivalence + Default,
    {
        let (n, rank) = (self.world_size(), self.rank());
        if local.is_empty() || n == 1 {
            if n == 1 {
                let (c, d) = coefficients(sizes);
                let copy = local.to_vec();
                combine_in_order(&[Some(&copy[..])], &c, d, local);
            }
            return Ok(0);
        }
        let chunks = micro_batch_ranges(local.len(), n);
        let count = |v: usize| {
            i32::try_from(v).map_err(|_| {
                Error::InvalidOption(format!("a gradient chunk of {v} elements is beyond MPI's 32-bit counts"))
            })
        };
        let counts: Vec<i32> = chunks.iter().map(|r| count(r.len())).collect::<Result<_>>()?;
        let displs: Vec<i32> = chunks.iter().map(|r| count(r.start)).collect::<Result<_>>()?;
        let mine = chunks[rank].len();
        // 1. Chunk r of every rank to rank r: recv holds rank 0's copy of my chunk, rank 1's, …
        let mut recv = vec![T::default(); mine * n];
        let recv_counts = vec![count(mine)?; n];
        let recv_displs: Vec<i32> = (0..n).map(|k| count(k * mine)).collect::<Result<_>>()?;
        {
            let send = Partition::new(&local[..], &counts[..], &displs[..]);
            let mut into = PartitionMut::new(&mut recv[..], &recv_counts[..], &recv_displs[..]);
            self.world.all_to_all_varcount_into(&send, &mut into);
        }
        // 2. My chunk combined, rank 0 first.
        let (c, d) = coefficients(sizes);
        let parts: Vec<Option<&[T]>> =
            (0..n).map(|k| (sizes[k] > 0).then(|| &recv[k * mine..(k + 1) * mine])).collect();
        let mut combined = vec![T::default(); mine];
        combine_in_order(&parts, &c, d, &mut combined);
        // 3. Every combined chunk to every rank.
        {
            let mut into = PartitionMut::new(&mut local[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(&combined[..], &mut into);
        }
        let elem = std::mem::size_of::<T>();
        // Sent and received: all but my chunk out and N − 1 copies of it in, then the reverse.
        Ok(2 * elem * ((local.len() - mine) + (n - 1) * mine))
    }
}

impl GradientReducer for MpiReducer {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    fn reduce(&mut self, local: &mut GradBuffer, sizes: &[usize]) -> Result<usize> {
        if sizes.len() != self.world_size() {
            return Err(Error::InvalidOption(format!(
                "{} micro-batch sizes for {} processes",
                sizes.len(),
                self.world_size()
            )));
        }
        Ok(self.reduce_typed(&mut local.f32, sizes)? + self.reduce_typed(&mut local.f64, sizes)?)
    }

    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        let mut out = vec![0.0; values.len() * self.world_size()];
        self.world.all_gather_into(values, &mut out[..]);
        Ok(out)
    }

    fn collective(&self) -> Option<Rc<dyn Collective>> {
        Some(Rc::new(MpiCollective { world: self.world.duplicate() }))
    }
}

/// sync_bn's [`Collective`] over MPI: every rank's values gathered (`MPI_Allgather`), which the
/// trait's `sum` adds in rank order (the values are per-channel statistics, a few hundred
/// numbers, where a gather costs no more than `MPI_Allreduce`).
struct MpiCollective {
    world: SimpleCommunicator,
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_gather(&self, values: &[f64]) -> std::result::Result<Vec<f64>, String> {
        let mut all = vec![0.0; values.len() * self.size()];
        self.world.all_gather_into(values, &mut all[..]);
        Ok(all)
    }
}
