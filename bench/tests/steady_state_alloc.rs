//! Steady-state training allocates no data buffers: after a warm-up, every activation, gradient
//! and temporary of a SimpleNN training step (batch 64, SGD with momentum) comes from the buffer
//! pool that the previous step filled (`strata_core::storage`), so strata never asks the
//! allocator for a buffer of data, and the page faults of fresh large buffers never happen.
//!
//! What remains, measured here and bounded, is not zero:
//! - bookkeeping: tensor headers (an `Arc` with shape and strides), autograd nodes with their
//!   edge lists and backward closures, backward's work lists — a fixed number of small
//!   (< 1 KiB) blocks per step (~100 for SimpleNN) that glibc's per-thread cache serves
//!   without a system call; removing them would take an arena for the graph itself;
//! - the `gemm` crate's packing scratch: it allocates one buffer per call (its
//!   `gemm_basic_generic` makes a `MemBuffer` for the packed right-hand side; no API takes one
//!   from the caller). Six per step, ~385 KB in all, the same sizes every step, so glibc hands
//!   back the blocks freed by the previous step (no page faults: `perf` shows no `clear_page`).
//!
//! The test tells these apart by the allocation's call stack: a block of ≥ 1 KiB allocated
//! anywhere but inside the `gemm` crate is a strata data buffer, and there must be none.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static SMALL: AtomicUsize = AtomicUsize::new(0);
static SMALL_BYTES: AtomicUsize = AtomicUsize::new(0);
static GEMM_SCRATCH: AtomicUsize = AtomicUsize::new(0);
static GEMM_BYTES: AtomicUsize = AtomicUsize::new(0);
static DATA: AtomicUsize = AtomicUsize::new(0);
/// Blocks at least this big count as buffers (the smallest data buffer of the step, the 64×10
/// logits, is 2.5 KiB; every bookkeeping block is well under it).
const LARGE_BYTES: usize = 1024;

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded unchanged (the caller upholds `GlobalAlloc`'s contract).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded unchanged (the caller upholds `GlobalAlloc`'s contract).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count(size: usize) {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    if size < LARGE_BYTES {
        SMALL.fetch_add(1, Ordering::Relaxed);
        SMALL_BYTES.fetch_add(size, Ordering::Relaxed);
        return;
    }
    // Who asked? Capturing the stack allocates, so counting pauses meanwhile (one thread runs
    // the step: the pool below has one thread).
    COUNTING.store(false, Ordering::Relaxed);
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    let in_gemm = trace.contains("gemm_common::") || trace.contains("gemm_f32::") || trace.contains("gemm_f64::");
    if in_gemm {
        GEMM_SCRATCH.fetch_add(1, Ordering::Relaxed);
        GEMM_BYTES.fetch_add(size, Ordering::Relaxed);
    } else {
        eprintln!("data buffer of {size} bytes allocated in steady state:\n{trace}");
        DATA.fetch_add(1, Ordering::Relaxed);
    }
    COUNTING.store(true, Ordering::Relaxed);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Per step after warm-up: (small blocks, small bytes, gemm scratch blocks, gemm bytes,
/// strata data buffers).
type Counts = (usize, usize, usize, usize, usize);

fn per_step_allocations(warmup: usize, steps: usize) -> Vec<Counts> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        let model = strata_bench::simple_nn(0).unwrap();
        let mut opt = strata_bench::sgd(&model).unwrap();
        let (x, y) = strata_bench::synthetic_data(64 * (warmup + steps), 784, 10, 7).unwrap();
        let batch = |i: usize| (x.narrow(0, 64 * i, 64).unwrap(), y.narrow(0, 64 * i, 64).unwrap());
        for i in 0..warmup {
            let (xb, yb) = batch(i);
            strata_bench::train_step(&model, &mut opt, &xb, &yb).unwrap();
        }
        (warmup..warmup + steps)
            .map(|i| {
                let (xb, yb) = batch(i);
                for c in [&SMALL, &SMALL_BYTES, &GEMM_SCRATCH, &GEMM_BYTES, &DATA] {
                    c.store(0, Ordering::SeqCst);
                }
                COUNTING.store(true, Ordering::SeqCst);
                let loss = strata_bench::train_step(&model, &mut opt, &xb, &yb).unwrap();
                drop(loss);
                COUNTING.store(false, Ordering::SeqCst);
                let get = |c: &AtomicUsize| c.load(Ordering::SeqCst);
                (get(&SMALL), get(&SMALL_BYTES), get(&GEMM_SCRATCH), get(&GEMM_BYTES), get(&DATA))
            })
            .collect()
    })
}

#[test]
fn simple_nn_training_steps_allocate_no_data_buffers() {
    let steps = per_step_allocations(3, 10);
    let (small, small_bytes, scratch, scratch_bytes, _) = steps[0];
    eprintln!(
        "per step after warm-up: {small} bookkeeping blocks ({small_bytes} bytes), \
         {scratch} gemm scratch buffers ({scratch_bytes} bytes), no data buffers"
    );
    assert!(steps.iter().all(|s| s.4 == 0), "strata allocated data buffers in steady state: {steps:?}");
    assert!(steps.iter().all(|&s| s == steps[0]), "allocations change from step to step: {steps:?}");
    // A bounded number of scratch buffers per GEMM call (8 calls per step): one each on
    // AVX-512 machines, 10 in all on an AVX2-only AMD EPYC (gemm packs more there). The
    // bookkeeping bound leaves room for small API changes but not for a per-element or per-row
    // allocation creeping back.
    assert!(scratch <= 16, "{scratch} gemm scratch buffers per step");
    assert!(small <= 150 && small_bytes <= 16 * 1024, "{small} bookkeeping blocks / {small_bytes} bytes per step");
}
