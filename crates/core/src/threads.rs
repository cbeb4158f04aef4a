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
//!
//! Batch-1 inference is too short even for that: a forward pass of SimpleNN takes ~5 µs, most of
//! it streaming the first layer's weights from L2. [`join_spin`] runs half of such a product on
//! a helper thread that spins between jobs (as OpenMP's threads do), so the hand-off costs
//! ~0.4 µs round trip and the two halves stream from two cores' caches.

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

// ------------------------------------------------------------------ spin helper

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long the helper thread spins on `PAUSE` for a next job: a job posted within this reaches
/// it in about one cache-line transfer (batch-1 inference posts one every ~5 µs).
const SPIN_HOT: Duration = Duration::from_micros(50);

/// How long the helper keeps looking for a next job, yielding its core to any other runnable
/// thread between looks, before it parks. OpenMP runtimes spin likewise (Intel's
/// `KMP_BLOCKTIME` defaults to 200 ms); this is far shorter. Waking a parked thread costs a
/// system call and, in a VM, an inter-processor interrupt: measured at ~10% of a W2 training
/// step when rayon's workers fell asleep between the two large GEMMs of each step.
const SPIN: Duration = Duration::from_millis(2);

/// One thread that runs half of a latency-critical op while the caller runs the other half.
///
/// A rayon job costs a wake-up or a steal, ~1 µs or more, next to a whole batch-1 forward pass
/// of ~5 µs; this thread instead spins on a counter after each job ([`SPIN_HOT`], then yielding
/// until [`SPIN`]), so a job reaches it in about one cache-line transfer. It serves one caller at
/// a time; a second concurrent caller runs both halves itself. A job the helper has not claimed
/// by the time the caller finishes its own half is taken back and run by the caller, so a
/// helper that the OS has not scheduled (more threads than cores) never holds the caller up.
struct Helper {
    /// Number of jobs posted; the helper runs job `seq` when it sees it change.
    seq: AtomicU64,
    /// The last job finished by the helper.
    done: AtomicU64,
    /// The last job claimed, by the helper (which then runs it) or by its poster (taking it back).
    claim: AtomicU64,
    /// The posted job: a pointer to the caller's [`Job`] and its trampoline.
    job: AtomicUsize,
    call: AtomicUsize,
    /// Whether the last job panicked.
    panicked: AtomicBool,
    /// Set while the helper is parked (or about to park): the poster must unpark it.
    sleeping: AtomicBool,
    /// Taken by the one caller using the helper.
    busy: AtomicBool,
    thread: std::thread::Thread,
}

fn helper() -> Option<&'static Helper> {
    static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();
    *HELPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<&'static Helper>();
        let spawned = std::thread::Builder::new().name("strata-spin".into()).spawn(move || {
            let h: &'static Helper = Box::leak(Box::new(Helper {
                seq: AtomicU64::new(0),
                done: AtomicU64::new(0),
                claim: AtomicU64::new(0),
                job: AtomicUsize::new(0),
                call: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
                busy: AtomicBool::new(false),
                thread: std::thread::current(),
            }));
            if tx.send(h).is_ok() {
                helper_loop(h);
            }
        });
        spawned.ok().and_then(|_| rx.recv().ok())
    })
}

fn helper_loop(h: &Helper) {
    let mut seen = 0u64;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        let next = loop {
            let s = h.seq.load(Ordering::Acquire);
            if s != seen {
                break s;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                let idle = since.elapsed();
                if idle > SPIN {
                    h.sleeping.store(true, Ordering::SeqCst);
                    if h.seq.load(Ordering::SeqCst) == seen {
                        std::thread::park();
                    }
                    h.sleeping.store(false, Ordering::SeqCst);
                    since = Instant::now();
                } else if idle > SPIN_HOT {
                    std::thread::yield_now();
                }
            }
            std::hint::spin_loop();
        };
        seen = next;
        if h.claim.compare_exchange(next - 1, next, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            // The poster took the job back.
            continue;
        }
        let (job, call) = (h.job.load(Ordering::Acquire), h.call.load(Ordering::Acquire));
        // SAFETY: `call` is the trampoline `run_job::<A>` for the `Job<A>` at `job`, which the
        // poster keeps alive until it sees `done == next`.
        let call: unsafe fn(usize) = unsafe { std::mem::transmute::<usize, unsafe fn(usize)>(call) };
        // SAFETY: this thread claimed job `next` (the compare-exchange above), so its poster
        // neither runs it nor returns (which would free the `Job<A>`) until `done == next`,
        // stored below; nothing else touches the job meanwhile.
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { call(job) })).is_ok();
        h.panicked.store(!ok, Ordering::Relaxed);
        h.done.store(next, Ordering::Release);
    }
}

/// A posted closure, taken (run once) by the helper.
struct Job<A>(Option<A>);

/// Runs the `Job<A>` at address `job`.
///
/// # Safety
/// `job` must point to a live `Job<A>` that nothing else touches until this returns.
unsafe fn run_job<A: FnOnce()>(job: usize) {
    // SAFETY: forwarded from the caller.
    let job = unsafe { &mut *(job as *mut Job<A>) };
    if let Some(f) = job.0.take() {
        f();
    }
}

/// Runs `a` on the spin helper thread while the caller runs `b`, and returns when both are
/// done; both run on the caller when the pool has one thread ([`set_num_threads`]`(1)`), when
/// another caller is using the helper, or when it cannot be started. `a` and `b` must not
/// depend on which thread runs them: results are the same either way.
///
/// For work of tens to hundreds of microseconds between other parallel work, where a rayon
/// join would first have to wake a sleeping worker (the optimizers' updates use it).
pub fn join_spin<A: FnOnce() + Send, B: FnOnce()>(a: A, b: B) {
    let h = if rayon::current_num_threads() > 1 { helper() } else { None };
    let Some(h) = h.filter(|h| h.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok())
    else {
        a();
        b();
        return;
    };
    let mut job = Job(Some(a));
    h.job.store(&mut job as *mut Job<A> as usize, Ordering::Relaxed);
    h.call.store(run_job::<A> as unsafe fn(usize) as usize, Ordering::Relaxed);
    let posted = h.seq.fetch_add(1, Ordering::SeqCst) + 1;
    if h.sleeping.load(Ordering::SeqCst) {
        h.thread.unpark();
    }
    // Releases the helper. If `b` panics, a job the helper has not claimed is claimed here (and
    // dropped unrun); one it has claimed is waited for, since it uses `job`.
    struct Wait<'a>(&'a Helper, u64);
    impl Drop for Wait<'_> {
        fn drop(&mut self) {
            let (h, posted) = (self.0, self.1);
            if h.claim.compare_exchange(posted - 1, posted, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                h.done.store(posted, Ordering::Release);
            }
            wait_done(h, posted);
            h.busy.store(false, Ordering::Release);
        }
    }
    let wait = Wait(h, posted);
    b();
    // A plain load first: when the helper has claimed the job (the usual case) this leaves its
    // cache line shared instead of taking it away from the helper just before it writes `done`.
    if h.claim.load(Ordering::Acquire) == posted - 1
        && h.claim.compare_exchange(posted - 1, posted, Ordering::AcqRel, Ordering::Acquire).is_ok()
    {
        // Not started: run it here (the helper will skip it).
        h.done.store(posted, Ordering::Release);
        drop(wait);
        if let Some(a) = job.0.take() {
            a();
        }
        return;
    }
    wait_done(h, posted);
    let panicked = h.panicked.load(Ordering::Relaxed);
    drop(wait);
    assert!(!panicked, "a task on the strata-spin thread panicked");
}

/// Waits until the helper has finished job `posted`: spinning first (the usual wait is the
/// other half's few microseconds), then yielding, so that with more threads than cores a helper
/// preempted mid-job gets a core back rather than waiting out a time slice.
fn wait_done(h: &Helper, posted: u64) {
    let mut spins = 0u32;
    while h.done.load(Ordering::Acquire) != posted {
        spins = spins.saturating_add(1);
        if spins > 4096 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::join_spin;

    #[test]
    fn join_spin_runs_both_halves() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            for i in 0..1000u64 {
                let (mut x, mut y) = (0, 0);
                join_spin(|| x = i * 2, || y = i * 3);
                assert_eq!((x, y), (i * 2, i * 3));
            }
            // After the helper parks, a job still runs: on the helper, or taken back by the caller.
            std::thread::sleep(std::time::Duration::from_millis(10));
            let mut x = 0;
            join_spin(|| x = 7, || {});
            assert_eq!(x, 7);
        });
        // Concurrent callers: one uses the helper, the others run inline.
        std::thread::scope(|s| {
            for t in 0..4u64 {
                s.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
                    pool.install(|| {
                        for i in 0..500 {
                            let mut x = 0;
                            join_spin(|| x = t * 1000 + i, || {});
                            assert_eq!(x, t * 1000 + i);
                        }
                    })
                });
            }
        });
    }
}
