//! The CPU kernel behind matmul and linear: the `gemm` crate (AVX-512 kernels compiled in via its
//! `x86-v4` feature and picked at run time by CPU detection, AVX2/FMA or scalar elsewhere).
//!
//! Threading: the `gemm` crate always runs single-threaded here. A product large enough to pay
//! for a second thread is cut into a fixed number of column (or row) blocks that depends only on
//! its shape, and the blocks run as independent single-threaded GEMMs on rayon's pool. Every
//! output element is therefore computed by the same kernel call, with the same summation order,
//! whatever the thread count: 1 and N threads give bit-identical results. Measured on the 2-core
//! CI machine kind (`cargo run --release -p strata-bench --example gemm_shapes`) it matches or
//! beats the `gemm` crate's own rayon mode, which cannot promise a thread-count-free result.
//! A product cut in two blocks runs its second block on a spinning helper thread
//! (`threads::join_spin`) rather than on rayon's pool: between the large GEMMs of a training
//! step rayon's workers fall asleep, and waking one (a system call and, in a VM, an
//! inter-processor interrupt) cost ~10% of a W2 step (SimpleNN, batch 512: 1.27 → 1.08 ms
//! median); for a batch-1 matrix-vector product a rayon hand-off costs a fifth of the product.
//! Products cut in four still go to rayon.

use super::bf16;
pub(crate) use super::gemm_crate::MatRef;
use super::gemm_crate::kernel;
use crate::autocast::Precision;
use crate::storage::Float;
use std::any::TypeId;

/// Multiply-adds below which a product runs as one block. Measured in whole training steps on
/// the 2-core machine (`strata-bench --workload W1 --threads 2`): when the second block went to
/// a rayon worker, splitting SimpleNN's first-layer GEMMs (6.4 M multiply-adds at batch 64)
/// cost more than it saved (118–133k samples/s against 222–231k unsplit), and the bound was
/// 2²³. With the spin helper taking the second block, the same split gives 327–355k against
/// 200–249k, and the LSTM's recurrent GEMMs (64×128×512 = 2²² per step) gain too (W6:
/// 15.7–16.8k samples/s against 12.3–14.6k).
const SPLIT_MIN_MACS: usize = 1 << 22;

/// Multiply-adds from which a matrix-vector product (one row, as batch-1 inference) is cut in
/// two column halves, run on two cores through [`crate::threads::join_spin`]: its cost is
/// streaming the weight from cache, and two cores stream it from their own L2 caches. SimpleNN's
/// first layer (128×784, 100k) qualifies; its 128×64 second layer (8k) costs less than a
/// hand-off.
const GEMV_SPLIT_MACS: usize = 1 << 16;

/// The calling thread's share, in sixteenths, of a matrix-vector product cut in two: the helper
/// starts its half a fraction of a microsecond late, so even halves left the caller waiting
/// (10% of its time in `perf`). W3 at 2 threads (`strata-bench --workload W3 --threads 2`, six
/// runs each, alternating): 8/16 4.70–4.86 µs, 9/16 4.31–4.51 µs (10/16 no better). Results do
/// not depend on the split: every output column is computed whole by one block.
const GEMV_CALLER_SIXTEENTHS: usize = 9;

/// The fewest output rows and columns for which a product runs in bf16 under autocast. Rounding
/// the operands costs a pass over each, repaid only when each rounded value is used many times:
/// a thinner product (batch-1 inference, a 10-class output layer) runs in f32, which is also
/// the more accurate. W3 (batch 1, `strata-bench -w W3 --precision bf16`) took 25 µs through
/// the bf16 kernel against 3.9 µs in f32, re-rounding the whole weight per call for one row.
pub(crate) const BF16_MIN_SIDE: usize = 16;

/// How many blocks a product is cut into: a function of the shape alone (never of the thread
/// count), so that results do not depend on how many threads run them.
fn blocks(m: usize, n: usize, k: usize) -> usize {
    let macs = m * n * k;
    if m == 1 && n >= 32 && (GEMV_SPLIT_MACS..SPLIT_MIN_MACS).contains(&macs) {
        2
    } else if macs < SPLIT_MIN_MACS {
        1
    } else if macs < 1 << 27 {
        2
    } else {
        4
    }
}

/// The raw destination pointer shared by the blocks, which write disjoint parts of it.
#[derive(Clone, Copy)]
struct DstPtr<T>(*mut T);
// SAFETY: the blocks that share a `DstPtr` write disjoint elements (see `gemm`), each `T` from
// one thread, and `T: Send` lets those values be written from another thread.
unsafe impl<T: Send> Send for DstPtr<T> {}
// SAFETY: as for `Send`: shared between the blocks, whose writes are disjoint.
unsafe impl<T: Send> Sync for DstPtr<T> {}

impl<T> DstPtr<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not its field).
    fn at(self, offset: usize) -> *mut T {
        self.0.wrapping_add(offset)
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`; `dst` is row-major contiguous. With `accumulate` the
/// product is added to what `dst` holds (used to fold a bias in, or to accumulate gradients);
/// without it `dst` is only written, so it may hold anything beforehand.
pub(crate) fn gemm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    accumulate: bool,
) {
    assert!(dst.len() >= m * n, "gemm: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::ZERO);
        }
        return;
    }
    // The last element each operand can touch must lie inside its buffer: this bounds every
    // pointer the kernel forms.
    let last = |r: &MatRef<T>, rows: usize, cols: usize| r.offset + (rows - 1) * r.rs + (cols - 1) * r.cs;
    assert!(last(&lhs, m, k) < lhs.data.len(), "gemm: lhs view out of bounds");
    assert!(last(&rhs, k, n) < rhs.data.len(), "gemm: rhs view out of bounds");
    let parts = blocks(m, n, k);
    // Cut the dimension whose other operand is smaller: every block re-packs that operand.
    let split_cols = m * k <= k * n;
    let len = if split_cols { n } else { m };
    // Block boundaries on multiples of 16 (one AVX-512 vector of f32) where the size allows.
    let bound = |p: usize| {
        if p == parts {
            len
        } else if m == 1 && parts == 2 && p == 1 {
            // Block 0 runs on the caller (see `join_spin` below).
            (len * GEMV_CALLER_SIXTEENTHS / 16).div_ceil(8) * 8
        } else {
            (len * p / parts).div_ceil(16) * 16
        }
        .min(len)
    };
    // Read on the calling thread: the blocks may run on others (see `autocast`).
    let bf16 = TypeId::of::<T>() == TypeId::of::<f32>()
        && crate::autocast::precision() == Precision::Bf16
        && m.min(n) >= BF16_MIN_SIDE;
    let dst = DstPtr(dst.as_mut_ptr());
    let block = |p: usize| {
        let (start, end) = (bound(p), bound(p + 1));
        if start >= end {
            return;
        }
        // SAFETY: block p covers columns (or rows) start..end of dst, disjoint from every other
        // block's; lhs/rhs sub-views stay inside the ranges checked above.
        unsafe {
            let (mb, nb, d, l, r) = if split_cols {
                (m, end - start, dst.at(start), lhs, MatRef { offset: rhs.offset + start * rhs.cs, ..rhs })
            } else {
                (end - start, n, dst.at(start * n), MatRef { offset: lhs.offset + start * lhs.rs, ..lhs }, rhs)
            };
            if bf16 {
                // `T` is f32 here (checked where `bf16` is set).
                bf16::gemm(mb, nb, k, d as *mut f32, n, f32_view(l), f32_view(r), accumulate);
            } else {
                kernel(mb, nb, k, d, n, l, r, accumulate);
            }
        }
    };
    if parts == 1 || rayon::current_num_threads() == 1 {
        (0..parts).for_each(block);
    } else if parts == 2 {
        crate::threads::join_spin(|| block(1), || block(0));
    } else {
        use rayon::prelude::*;
        (0..parts).into_par_iter().for_each(block);
    }
}

/// `v` as the f32 matrix it is.
///
/// # Safety
/// `T` must be `f32`.
unsafe fn f32_view<T>(v: MatRef<T>) -> MatRef<f32> {
    // SAFETY: T is f32 (the caller's promise): same pointer, length and lifetime.
    let data = unsafe { std::slice::from_raw_parts(v.data.as_ptr().cast::<f32>(), v.data.len()) };
    MatRef { data, offset: v.offset, rs: v.rs, cs: v.cs }
}
