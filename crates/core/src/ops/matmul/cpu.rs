//! The CPU kernel behind matmul and linear: the `gemm` crate (AVX-512 kernels compiled in via its
//! `x86-v4` feature and picked at run time by CPU detection, AVX2/FMA or scalar elsewhere), and
//! on AVX-512 CPUs strata's own packed kernels for products with at least 16 output rows and
//! columns: f32 (`f32_x86.rs`, faster than the `gemm` crate's where measured; see `own_f32`)
//! and bf16 under autocast (`bf16.rs`, `amx.rs`), and its own matrix-vector product for
//! batch-1 inference (`gemv_x86.rs`; see `own_gemv`).
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
//! Products cut in four still go to rayon. On AMX the column blocks of a bf16 product share one
//! packing of the left operand, made by the calling thread before the blocks start
//! (`amx::with_shared_lhs`): the same packed values each block would make, so the same bits.

use super::bf16;
pub(crate) use super::gemm_crate::MatRef;
use super::gemm_crate::kernel;
#[cfg(target_arch = "x86_64")]
use super::{amx, bf16::x86::Bf16, f32_x86::F32, packed::Rhs, packed::pack_whole, packed::run};
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

/// The fewest terms per output (the inner dimension k) for which a product runs in bf16 under
/// autocast, for the same reason: a product only a few terms deep uses each rounded value of
/// its long operand for few multiply-adds, and in f32 strata's kernel reads that operand in
/// place while bf16 must round and pack all of it. A ResNet's stem convolution (one input
/// channel, 3×3: k = 9, the im2col matrix 9×784 per sample) ran slower in bf16 than in f32:
/// forward 1.49 against 0.73 ms, backward 1.67 against 0.90 ms at batch 128, 2 threads
/// (`cargo run --release -p strata-bench --example conv_layers -- bf16`, 2026-12-04, AMD EPYC
/// with AVX512-BF16).
pub(crate) const BF16_MIN_DEPTH: usize = 16;

/// Whether an f32 product of this shape runs on strata's own AVX-512 kernel (`f32_x86.rs`)
/// rather than the `gemm` crate's: on AVX-512 CPUs, for every product with at least 16 output
/// rows and columns. Measured on a 2-core AMD EPYC with AVX-512 (2026-12-02, one thread,
/// `cargo run --release -p strata-bench --example matmul_precision`), the `gemm` crate's
/// kernel against strata's, GFLOP/s: W4's 256×2048×2048 48 → 172, its weight gradient
/// 2048×2048×256 40 → 132; W2's 512×128×784 171 → 185; W6's LSTM input product
/// 1792×512×28 8 → 192 and recurrent 64×512×128 31 → 161; SimpleNN's 64×128×784 147 → 144
/// (level). Whole workloads, f32, 2 threads: W4 2,650 → 6,000 samples/s, W6 5,100 → 9,500,
/// W1, W2 and W5 level within the machine's noise. Thinner products keep the `gemm` crate's
/// kernel, except batch-1 inference's ([`own_gemv`]).
fn own_f32(m: usize, n: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::f32_x86::available() && m.min(n) >= OWN_F32_MIN_SIDE
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n);
        false
    }
}

/// Whether an f32 product of this shape and layout runs on strata's own matrix-vector kernel
/// (`gemv_x86.rs`) rather than the `gemm` crate's: one row (batch-1 inference) times a right
/// operand whose columns are contiguous (linear's `x·Wᵀ`), on AVX-512 CPUs. Measured on a
/// 2-core Intel Xeon with AMX (2026-12-03, `strata-bench --workload W3`, SimpleNN at batch 1,
/// three runs each, alternating), the `gemm` crate's `hx1x4` kernel against this one: 5.89 →
/// 5.65 µs at one thread, 4.38 → 4.10 µs at two (PyTorch: ~25 µs). What bounds it: the kernel
/// is 82% of the forward and streams SimpleNN's 432 KB of weights at ~94 GB/s, close to L2's
/// bandwidth; four rows a group were slower, sixteen no better, and prefetching the next
/// group's rows cost ~25%.
fn own_gemv(m: usize, lhs_cs: usize, rhs_rs: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::f32_x86::available() && m == 1 && lhs_cs == 1 && rhs_rs == 1
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, lhs_cs, rhs_rs);
        false
    }
}

/// The fewest output rows and columns for [`own_f32`]: its 12×32 tile and packing need some
/// reuse of each packed value (the same bound as bf16's, [`BF16_MIN_SIDE`]).
const OWN_F32_MIN_SIDE: usize = 16;

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
    let choice = Choice::of::<T>(m, n, k, lhs.cs, rhs.rs);
    let dst = DstPtr(dst.as_mut_ptr());
    // `shared_a`: A packed once for every column block (AMX; see `amx::PackedA`).
    let run_blocks = |shared_a: Option<&SharedLhs>| {
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
                // `T` is f32 for strata's own kernels (`Choice::of`).
                match choice {
                    #[cfg(target_arch = "x86_64")]
                    Choice::Bf16 if let Some(a) = shared_a => {
                        amx::run(mb, nb, k, d as *mut f32, n, amx::Lhs::Packed(a), Rhs::View(f32_view(r)), accumulate)
                    }
                    Choice::Bf16 => bf16_gemm(mb, nb, k, d as *mut f32, n, f32_view(l), f32_view(r), accumulate),
                    #[cfg(target_arch = "x86_64")]
                    Choice::OwnF32 => {
                        run::<F32>(mb, nb, k, d as *mut f32, n, f32_view(l), Rhs::View(f32_view(r)), accumulate)
                    }
                    #[cfg(target_arch = "x86_64")]
                    Choice::OwnGemv => {
                        super::gemv_x86::dots(nb, k, d as *mut f32, f32_view(l), f32_view(r), accumulate)
                    }
                    _ => kernel(mb, nb, k, d, n, l, r, accumulate),
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
    };
    #[cfg(target_arch = "x86_64")]
    if choice == Choice::Bf16 && split_cols && parts > 1 && amx::available() {
        // SAFETY: AMX checked; `T` is f32 for `Choice::Bf16`; lhs was bounds-checked above.
        unsafe { amx::with_shared_lhs(f32_view(lhs), m, k, run_blocks) };
        return;
    }
    run_blocks(None);
}

/// A left operand packed once for the column blocks of a product.
#[cfg(target_arch = "x86_64")]
type SharedLhs = amx::PackedA;
/// (No packed left operands off x86-64.)
#[cfg(not(target_arch = "x86_64"))]
type SharedLhs = ();

/// A bf16 product (`dst[m×n] (+)= bf16(lhs) · bf16(rhs)`, row stride `dst_rs`) on the fastest
/// kernel this CPU has: AMX tiles (`amx.rs`), else `bf16.rs`'s (AVX512-BF16, or portable).
///
/// # Safety
/// As `bf16::gemm`.
#[allow(clippy::too_many_arguments)]
unsafe fn bf16_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: MatRef<f32>,
    rhs: MatRef<f32>,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if amx::available() {
        // SAFETY: the CPU has AMX and the OS granted it (checked); the rest is the caller's promise.
        unsafe { amx::run(m, n, k, dst, dst_rs, amx::Lhs::View(lhs), Rhs::View(rhs), accumulate) };
        return;
    }
    // SAFETY: the caller's promise.
    unsafe { bf16::gemm(m, n, k, dst, dst_rs, lhs, rhs, accumulate) };
}

/// Which kernel a product runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Choice {
    /// The `gemm` crate's (f64, thin products, CPUs without AVX-512).
    GemmCrate,
    /// strata's own f32 kernel ([`own_f32`]).
    OwnF32,
    /// bf16 under autocast (`bf16.rs`).
    Bf16,
    /// strata's own f32 matrix-vector product ([`own_gemv`]).
    OwnGemv,
}

impl Choice {
    /// The kernel of an m×n product, k deep, of `T` under this thread's autocast precision.
    fn of<T: 'static>(m: usize, n: usize, k: usize, lhs_cs: usize, rhs_rs: usize) -> Choice {
        if TypeId::of::<T>() != TypeId::of::<f32>() {
            Choice::GemmCrate
        } else if crate::autocast::precision() == Precision::Bf16 && m.min(n) >= BF16_MIN_SIDE && k >= BF16_MIN_DEPTH {
            Choice::Bf16
        } else if own_f32(m, n) {
            Choice::OwnF32
        } else if own_gemv(m, lhs_cs, rhs_rs) {
            Choice::OwnGemv
        } else {
            Choice::GemmCrate
        }
    }
}

/// The kernels this CPU's matrix products run on, chosen at run time from its features (what
/// `strata devices` reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuKernels {
    /// f32 products of at least 16 output rows and columns: `"AVX-512"` (strata's own) or
    /// `"gemm crate"` (AVX2/FMA or scalar).
    pub f32: &'static str,
    /// Products under bf16 autocast: `"AMX tiles"`, `"AVX512-BF16"` (with the reason when the
    /// CPU has AMX: `STRATA_NO_AMX`, or the OS refused it), or `"f32 kernel"` (the operands rounded to bf16,
    /// multiplied by the f32 kernel: same numbers, no speed-up).
    pub bf16: &'static str,
}

/// The kernels this CPU's products run on (see [`CpuKernels`]); asks the OS for the AMX tile
/// state on first use, as a bf16 product would.
pub fn cpu_kernels() -> CpuKernels {
    #[cfg(target_arch = "x86_64")]
    {
        let f32 = if super::f32_x86::available() { "AVX-512" } else { "gemm crate" };
        let bf16 = if amx::available() {
            "AMX tiles"
        } else if !bf16::x86::available() {
            "f32 kernel"
        } else if !amx::cpu_has_amx() {
            "AVX512-BF16"
        } else if amx::turned_off() {
            "AVX512-BF16 (the CPU has AMX, turned off by STRATA_NO_AMX)"
        } else {
            "AVX512-BF16 (the CPU has AMX, but the OS refused its tile state: Linux 5.16 or later grants it)"
        };
        CpuKernels { f32, bf16 }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        CpuKernels { f32: "gemm crate", bf16: "f32 kernel" }
    }
}

/// A right operand prepared for many products with it, each of `m` rows (an LSTM's recurrent
/// weight, multiplied at every time step): packed once where those products run on strata's
/// own kernels in one block, so that [`gemm_prepared`] skips the packing each product would
/// repeat. The products give exactly [`gemm`]'s results.
pub(crate) struct PreparedRhs<'a, T> {
    rhs: MatRef<'a, T>,
    n: usize,
    k: usize,
    #[cfg(target_arch = "x86_64")]
    packed: Option<(Choice, super::packed::PackedB)>,
}

/// `rhs` (k×n) prepared for products of `m` rows (see [`PreparedRhs`]), under this thread's
/// autocast precision.
pub(crate) fn prepare_rhs<T: Float>(m: usize, n: usize, k: usize, rhs: MatRef<'_, T>) -> PreparedRhs<'_, T> {
    #[cfg(target_arch = "x86_64")]
    {
        let fits = m > 0 && n > 0 && k > 0 && blocks(m, n, k) == 1 && {
            let last = rhs.offset + (k - 1) * rhs.rs + (n - 1) * rhs.cs;
            last < rhs.data.len()
        };
        // The left operands' layout is not known yet: contiguous rows, as the LSTM's.
        let choice = Choice::of::<T>(m, n, k, 1, rhs.rs);
        // SAFETY: `T` is f32 for these choices; the view was bounds-checked (`fits`); each
        // kernel's CPU features are checked before it packs.
        let packed = unsafe {
            match choice {
                Choice::OwnF32 if fits => Some((choice, pack_whole::<F32>(f32_view(rhs), n, k))),
                Choice::Bf16 if fits && amx::available() => Some((choice, amx::pack_whole(f32_view(rhs), n, k))),
                Choice::Bf16 if fits && bf16::x86::available() => {
                    Some((choice, pack_whole::<Bf16>(f32_view(rhs), n, k)))
                }
                _ => None,
            }
        };
        PreparedRhs { rhs, n, k, packed }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = m;
        PreparedRhs { rhs, n, k }
    }
}

/// [`gemm`] with a prepared right operand: `dst[m×n] (+)= lhs[m×k] · rhs`.
pub(crate) fn gemm_prepared<T: Float>(m: usize, dst: &mut [T], lhs: MatRef<T>, rhs: &PreparedRhs<T>, accumulate: bool) {
    let (n, k) = (rhs.n, rhs.k);
    #[cfg(target_arch = "x86_64")]
    if let Some((choice, packed)) = &rhs.packed
        && m > 0
        && blocks(m, n, k) == 1
        && Choice::of::<T>(m, n, k, lhs.cs, rhs.rhs.rs) == *choice
    {
        assert!(dst.len() >= m * n, "gemm: destination too small");
        assert!(lhs.offset + (m - 1) * lhs.rs + (k - 1) * lhs.cs < lhs.data.len(), "gemm: lhs view out of bounds");
        // SAFETY: `T` is f32 (the choice says so); dst holds m×n; lhs was bounds-checked; the
        // packing was made for this n, k and kernel (checked again by `run`), whose CPU
        // features were checked when it packed.
        unsafe {
            let (d, l, r) = (dst.as_mut_ptr() as *mut f32, f32_view(lhs), Rhs::Packed(packed));
            match choice {
                Choice::OwnF32 => run::<F32>(m, n, k, d, n, l, r, accumulate),
                _ if packed.packed_by(TypeId::of::<amx::Amx>()) => {
                    amx::run(m, n, k, d, n, amx::Lhs::View(l), r, accumulate)
                }
                _ => run::<Bf16>(m, n, k, d, n, l, r, accumulate),
            }
        }
        return;
    }
    gemm(m, n, k, dst, lhs, rhs.rhs, accumulate);
}

/// A left operand rounded to bf16 ahead of its products (see [`gemm_rounded_lhs`]): what the
/// caller builds where it can make the rounded matrix more cheaply than the product would pack
/// it from f32 — a convolution's weight gradient, whose im2col matrix repeats each input value
/// kH·kW times, rounds the input once and copies 16-bit values.
#[cfg(target_arch = "x86_64")]
pub(crate) mod rounded_lhs {
    use super::{Choice, MatRef, amx, bf16};

    /// Rows of the rounded operand that [`gemm`] reads for an `m`-row product: `m` rounded up
    /// to the kernel's tile (the extra rows are read, never used).
    pub(crate) fn rows(m: usize) -> usize {
        m.div_ceil(super::super::packed::MR) * super::super::packed::MR
    }

    /// Whether an m×n product k deep, under this thread's precision now, is one [`gemm`] runs:
    /// bf16 autocast would give it to the AVX512-BF16 kernel (not AMX, whose tiles pack their
    /// own layout; not f32), and it is narrower than the kernel's wide products (256 columns).
    pub(crate) fn applies(m: usize, n: usize, k: usize) -> bool {
        Choice::of::<f32>(m, n, k, 1, 1) == Choice::Bf16 && n < 256 && !amx::available() && bf16::x86::available()
    }

    /// `values` rounded to bf16, two to a word (value 2p in the low half of word p), the words
    /// of `dst` past ⌈len/2⌉ zeroed. Panics without AVX512-BF16.
    pub(crate) fn round_into(values: &[f32], dst: &mut [u32]) {
        bf16::x86::round_into(values, dst)
    }

    /// `dst[m×n] (+)= A · bf16(rhs)` with A rounded already: row i's pair p (k = 2p, 2p + 1)
    /// at `a[i·a_rs + p]`, [`rows`]`(m)` rows. The same bits as [`super::gemm`] under bf16
    /// autocast of the f32 matrix that rounds to A. Panics unless [`applies`] holds or when a
    /// view lies outside its buffer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        m: usize,
        n: usize,
        k: usize,
        dst: &mut [f32],
        a: &[u32],
        a_rs: usize,
        rhs: MatRef<f32>,
        accumulate: bool,
    ) {
        assert!(applies(m, n, k), "rounded_lhs::gemm: not a product of the AVX512-BF16 kernel");
        assert!(dst.len() >= m * n, "gemm: destination too small");
        assert!(a_rs >= k.div_ceil(2) && a.len() >= rows(m) * a_rs, "gemm: rounded lhs too small");
        assert!(rhs.offset + (k - 1) * rhs.rs + (n - 1) * rhs.cs < rhs.data.len(), "gemm: rhs view out of bounds");
        // SAFETY: the CPU has the kernel's features (`applies`); dst holds m×n (row stride n);
        // `a` holds rows(m) rows of a_rs ≥ ⌈k/2⌉ words and rhs lies in its buffer (asserted);
        // n < 256.
        unsafe { bf16::x86::run_rounded_lhs(m, n, k, dst.as_mut_ptr(), n, a, a_rs, rhs, accumulate) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autocast::autocast;

    #[test]
    fn cpu_kernels_names_documented_kernels() {
        let k = cpu_kernels();
        assert!(["AVX-512", "gemm crate"].contains(&k.f32), "{k:?}");
        assert!(["AMX tiles", "AVX512-BF16", "f32 kernel"].iter().any(|n| k.bf16.starts_with(n)), "{k:?}");
    }

    #[test]
    fn shallow_and_thin_products_stay_f32_under_bf16() {
        let values = super::super::gemm_crate::test_values;
        // (m, n, k, whether bf16 rounds): a stem convolution's 32×784×9 stays f32, 16 deep
        // rounds; fewer than 16 rows or columns stay f32 whatever the depth.
        for &(m, n, k, rounds) in &[(32, 784, 9, false), (32, 784, 15, false), (32, 784, 16, true), (15, 64, 64, false)]
        {
            let (a, b) = (values(m * k, 3), values(k * n, 4));
            let lhs = MatRef { data: &a[..], offset: 0, rs: k, cs: 1 };
            let rhs = MatRef { data: &b[..], offset: 0, rs: n, cs: 1 };
            let (mut f32_out, mut bf16_out) = (vec![0f32; m * n], vec![0f32; m * n]);
            gemm(m, n, k, &mut f32_out, lhs, rhs, false);
            autocast(Precision::Bf16, || gemm(m, n, k, &mut bf16_out, lhs, rhs, false));
            assert_eq!(bf16_out != f32_out, rounds, "{m}×{n}×{k}");
        }
    }

    #[test]
    fn prepared_products_equal_plain_ones_bit_for_bit() {
        let values = super::super::gemm_crate::test_values;
        // Packed (one block, at least 16 rows and columns), thin (not packed), and k odd.
        for precision in [Precision::F32, Precision::Bf16] {
            for &(m, n, k) in &[(32, 512, 128), (20, 40, 301), (8, 64, 64), (40, 1100, 24)] {
                let (a, b) = (values(m * k, 1), values(k * n, 2));
                let lhs = MatRef { data: &a[..], offset: 0, rs: k, cs: 1 };
                for rhs in
                    [MatRef { data: &b[..], offset: 0, rs: n, cs: 1 }, MatRef { data: &b[..], offset: 0, rs: 1, cs: k }]
                {
                    autocast(precision, || {
                        let prepared = prepare_rhs(m, n, k, rhs);
                        for accumulate in [false, true] {
                            let (mut want, mut got) = (vec![0.25f32; m * n], vec![0.25f32; m * n]);
                            gemm(m, n, k, &mut want, lhs, rhs, accumulate);
                            gemm_prepared(m, &mut got, lhs, &prepared, accumulate);
                            assert_eq!(got, want, "{precision} {m}×{n}×{k} accumulate {accumulate}");
                        }
                    });
                }
            }
        }
    }
}
