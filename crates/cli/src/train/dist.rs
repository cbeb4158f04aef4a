//! Which process of a data-parallel run this one is (`mpirun -np N strata train …`, the `mpi`
//! feature): rank 0 leads (it alone prints, logs, and writes checkpoints and run files), the
//! others compute their micro-batches quietly. Without the feature, or outside `mpirun`, the
//! process is rank 0 of 1.

use anyhow::Result;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

/// This process's rank, set once at the start of `strata train`.
static RANK: AtomicUsize = AtomicUsize::new(0);

/// The MPI world, or nothing (a type without values) when the feature is off.
#[cfg(feature = "mpi")]
pub(super) type World = strata_train::distributed::Mpi;
/// The MPI world, or nothing (a type without values) when the feature is off.
#[cfg(not(feature = "mpi"))]
pub(super) type World = std::convert::Infallible;

/// Whether this process leads the run (rank 0, or alone): only it prints and writes files.
pub(crate) fn is_lead() -> bool {
    RANK.load(Ordering::Relaxed) == 0
}

/// The world this process was started in by `mpirun`, when it has more than one process.
#[cfg(feature = "mpi")]
pub(super) fn join() -> Result<Option<World>> {
    let world = strata_train::distributed::Mpi::init()?.filter(|w| w.size() > 1);
    if let Some(w) = &world {
        RANK.store(w.rank(), Ordering::Relaxed);
    }
    Ok(world)
}

/// The world this process was started in: none, without the `mpi` feature.
#[cfg(not(feature = "mpi"))]
pub(super) fn join() -> Result<Option<World>> {
    Ok(None)
}

/// `(rank, processes)` of the world.
#[cfg(feature = "mpi")]
pub(super) fn place(world: &World) -> (usize, usize) {
    (world.rank(), world.size())
}

/// `(rank, processes)` of the world.
#[cfg(not(feature = "mpi"))]
pub(super) fn place(world: &World) -> (usize, usize) {
    match *world {}
}

/// The gradient reducer over the world.
#[cfg(feature = "mpi")]
pub(super) fn reducer(world: &World) -> Box<dyn strata_train::parallel::GradientReducer + '_> {
    Box::new(world.reducer())
}

/// The gradient reducer over the world.
#[cfg(not(feature = "mpi"))]
pub(super) fn reducer(world: &World) -> Box<dyn strata_train::parallel::GradientReducer + '_> {
    match *world {}
}

/// Stops every rank with an error naming the first one whose `hash` differs from rank 0's.
#[cfg(feature = "mpi")]
pub(super) fn check_same(world: &World, hash: u64) -> Result<()> {
    Ok(world.check_same("run config or data", hash)?)
}

/// Stops every rank with an error naming the first one whose `hash` differs from rank 0's.
#[cfg(not(feature = "mpi"))]
pub(super) fn check_same(world: &World, _hash: u64) -> Result<()> {
    match *world {}
}

/// After an error on this rank: prints it, naming the rank, and ends every process of the
/// world (`MPI_Abort`), so none waits for this one in a collective.
#[cfg(feature = "mpi")]
pub(super) fn fail(world: &World, e: &anyhow::Error) -> ! {
    eprintln!("error on rank {} of {}: {e:#}", world.rank(), world.size());
    world.abort(1)
}

/// After an error on this rank (never without the feature).
#[cfg(not(feature = "mpi"))]
pub(super) fn fail(world: &World, _e: &anyhow::Error) -> ! {
    match *world {}
}

/// A hash of what every rank must agree on: the run config (as resolved from the run file and
/// flags) and the training, validation and test data, value by value.
pub(super) fn run_hash(config: &str, sets: &[&strata_data::Dataset]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    config.hash(&mut h);
    for d in sets {
        d.sample_shape.hash(&mut h);
        d.labels.hash(&mut h);
        d.num_classes.hash(&mut h);
        // In blocks: one `write` per value would take a second on MNIST.
        for block in d.features.chunks(4096) {
            let bytes: Vec<u8> = block.iter().flat_map(|v| v.to_le_bytes()).collect();
            h.write(&bytes);
        }
    }
    h.finish()
}
