//! Data-parallel training over MPI (the `mpi` feature; rsmpi over the system's Open MPI or
//! MPICH): [`Mpi`] joins the world `mpirun` started, and [`MpiReducer`] is its
//! [`GradientReducer`] for [`crate::Trainer::distributed`].
//!
//! **The reduction, in a fixed order.** `MPI_Allreduce` may add the ranks' values in any order
//! (and does, by message size and topology), so it cannot promise the same bits as one process.
//! [`MpiReducer`] all-reduces each gradient bucket with two collectives whose results do not
//! depend on an order of additions:
//!
//! 1. the bucket (E elements) is cut into `N` chunks ([`crate::parallel::micro_batch_ranges`]
//!    of E), and `MPI_Ialltoallv` sends chunk `r` of every rank to rank `r`;
//! 2. rank `r` combines the `N` copies of its chunk with
//!    [`combine_in_order`](crate::parallel::combine_in_order), rank 0 first;
//! 3. `MPI_Iallgatherv` gives every rank every combined chunk.
//!
//! Each element is thus summed exactly as gradient accumulation sums it. Each rank sends and
//! receives `2·E·(N−1)/N` elements per step: a ring all-reduce's volume, though in `N − 1`
//! messages per collective rather than a ring's pipelined ones. The collectives are
//! non-blocking (`exchange.rs`): a bucket is started from backward's hook, advanced each time
//! backward finishes another parameter, and waited for after backward
//! ([`crate::parallel::BucketedReduction`]).

mod exchange;

use crate::error::{Error, Result};
use crate::parallel::{GradBuffer, GradientReducer, PendingReduction};
use exchange::Exchange;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};
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
        MpiReducer { world: self.world.duplicate(), gathers: self.world.duplicate() }
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
    /// The buckets' scatters (started in bucket order, from backward's hook), and the step's
    /// other collectives.
    world: SimpleCommunicator,
    /// The buckets' gathers, started as each scatter completes: in bucket order too, but
    /// interleaved with the scatters differently on each rank, hence a communicator of their own.
    gathers: SimpleCommunicator,
}

/// A bucket in flight over MPI: its f32 and its f64 gradients, each an [`Exchange`]; borrows the
/// reducer, whose communicator the requests use.
struct MpiPending<'a> {
    f32: Exchange<f32>,
    f64: Exchange<f64>,
    _comm: std::marker::PhantomData<&'a MpiReducer>,
}

impl PendingReduction for MpiPending<'_> {
    fn test(&mut self) -> Result<bool> {
        // The f64 part only once the f32 part is done: its gather is then started after the f32
        // part's on every rank (collectives on a communicator must start in the same order).
        Ok(self.f32.test() && self.f64.test())
    }

    fn wait(self: Box<Self>) -> Result<(GradBuffer, usize)> {
        let MpiPending { f32, f64, .. } = *self;
        let ((f32, b32), (f64, b64)) = (f32.wait(), f64.wait());
        Ok((GradBuffer { f32, f64 }, b32 + b64))
    }
}

impl GradientReducer for MpiReducer {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    fn start_bucket(&self, local: GradBuffer, sizes: &[usize]) -> Result<Box<dyn PendingReduction + '_>> {
        let (rank, n) = (self.rank(), self.world_size());
        if sizes.len() != n {
            return Err(Error::InvalidOption(format!("{} micro-batch sizes for {n} processes", sizes.len())));
        }
        let comms = (self.world.as_raw(), self.gathers.as_raw());
        Ok(Box::new(MpiPending {
            f32: Exchange::start(comms, rank, n, local.f32, sizes)?,
            f64: Exchange::start(comms, rank, n, local.f64, sizes)?,
            _comm: std::marker::PhantomData,
        }))
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
