//! How many threads strata's ops use, PyTorch's `torch.set_num_threads`.
//!
//! Ops split large work across rayon's global pool. Called from a thread outside the pool, every
//! such op hands its work to the pool's threads and sleeps until they are done: a wake-up each
//! way, measured at 10–70 µs per op on the 2-core CI machine kind, which at SimpleNN's sizes is
//! as long as the op itself. [`set_num_threads`] instead makes the calling thread one of the
//! pool's workers (`use_current_thread`), so an op called from it runs its first block itself
//! and the other threads take the rest, as OpenMP does for PyTorch. On the W2 training step
//! (SimpleNN, batch 512, 2 threads) this took the median from ~300k to ~345k samples/s
//! (`crates/nn/examples`-style phase timing, 5 runs each).

use crate::error::{Error, Result};

/// Sets up rayon's global pool with `n` threads (at least 1), the calling thread being one of
/// them: call it once, early, from the thread that will run the training loop. Results do not
/// depend on `n` (every split is a function of the shape alone).
///
/// With `n = 1` the pool has one thread of its own and every op runs serially on the caller.
///
/// # Errors
/// When the global pool already exists (rayon builds it on first use, so call this before any
/// op that may run in parallel), or when the threads cannot be started.
pub fn set_num_threads(n: usize) -> Result<()> {
    let builder = rayon::ThreadPoolBuilder::new().num_threads(n.max(1));
    // With a single thread the caller must not be the pool's only worker: work injected from
    // another thread (a data loader's) would then wait for the caller to yield to rayon.
    let builder = if n >= 2 { builder.use_current_thread() } else { builder };
    builder.build_global().map_err(|e| Error::InvalidArgument {
        op: "set_num_threads",
        message: format!("cannot set up {n} threads: {e} (call it once, before the first tensor op)"),
    })
}

/// The number of threads ops may use: the global pool's size.
pub fn get_num_threads() -> usize {
    rayon::current_num_threads()
}
