//! The CPU kernel behind matmul and linear: the `gemm` crate (AVX-512 kernels compiled in via its
//! `x86-v4` feature and picked at run time by CPU detection, AVX2/FMA or scalar elsewhere).

use crate::storage::Float;

/// A strided matrix inside a buffer: element (i, j) is `data[offset + i*rs + j*cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

/// Below this many multiply-adds, the `gemm` crate's own threading costs more than it gains
/// (DESIGN.md: SimpleNN's batch-64 GEMMs run faster on one core).
const GEMM_PAR_THRESHOLD: usize = 1 << 22;

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`; `dst` is row-major contiguous. With `accumulate` the
/// product is added to what `dst` holds (used to fold a bias in, or to accumulate gradients).
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
    let parallelism = if m * n * k >= GEMM_PAR_THRESHOLD && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every element the kernel reads inside `lhs.data` and
    // `rhs.data`, and `dst` holds m·n elements with row stride n and column stride 1.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}
