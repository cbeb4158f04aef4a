//! One single-threaded call of the `gemm` family's f32 or f64 kernel on strided operands: what
//! every CPU matrix product ends in (`cpu.rs` cuts products into such calls; `bf16.rs` falls back
//! to it on CPUs without AVX512-BF16).

use crate::storage::Float;
use std::any::TypeId;

/// A strided matrix inside a buffer: element (i, j) is `data[offset + i*rs + j*cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

/// One single-threaded `gemm` crate call: `dst` (row stride `dst_rs`, column stride 1).
///
/// # Safety
/// `dst` must be valid for writes of an m×n block with row stride `dst_rs`, and the operands'
/// m×k and k×n views must lie inside their buffers.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    accumulate: bool,
) {
    // The `gemm` family's f32 and f64 crates, called as the `gemm` facade calls them; depending
    // on them directly leaves out its complex-number kernels (gemm-c32, gemm-c64), which strata
    // never uses and which were a sizeable part of the first build.
    let (lhs_ptr, rhs_ptr) = (lhs.data.as_ptr(), rhs.data.as_ptr());
    // SAFETY: forwarded from the caller; `T` is exactly f32 or f64 in each branch (TypeId), so
    // the pointer casts and the reads of `T::ONE` as that type are the identity.
    unsafe {
        let (lhs_ptr, rhs_ptr) = (lhs_ptr.add(lhs.offset), rhs_ptr.add(rhs.offset));
        let (lcs, lrs, rcs, rrs) = (lhs.cs as isize, lhs.rs as isize, rhs.cs as isize, rhs.rs as isize);
        let none = gemm_common::Parallelism::None;
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            gemm_f32::gemm::f32::get_gemm_fn()(
                m,
                n,
                k,
                dst as *mut f32,
                1,
                dst_rs as isize,
                accumulate,
                lhs_ptr as *const f32,
                lcs,
                lrs,
                rhs_ptr as *const f32,
                rcs,
                rrs,
                1.0,
                1.0,
                false,
                false,
                false,
                none,
            );
        } else if TypeId::of::<T>() == TypeId::of::<f64>() {
            gemm_f64::gemm::f64::get_gemm_fn()(
                m,
                n,
                k,
                dst as *mut f64,
                1,
                dst_rs as isize,
                accumulate,
                lhs_ptr as *const f64,
                lcs,
                lrs,
                rhs_ptr as *const f64,
                rcs,
                rrs,
                1.0,
                1.0,
                false,
                false,
                false,
                none,
            );
        } else {
            unreachable!("Float is implemented for f32 and f64 only");
        }
    }
}

/// Test operands: `len` values in [-1, 1] with 2001 levels, spread by a multiplicative hash of the
/// index and `seed` (the kernels' tests in this folder share them).
#[cfg(test)]
pub(super) fn test_values(len: usize, seed: u32) -> Vec<f32> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0).collect()
}

/// An m×k and a k×n test operand ([`test_values`], seeds 1 and 2), each also stored transposed,
/// so that a kernel's test reads them in both layouts the products of linear take.
#[cfg(test)]
pub(super) struct TestOperands {
    /// A, row-major m×k.
    pub a: Vec<f32>,
    /// B, row-major k×n.
    pub b: Vec<f32>,
    at: Vec<f32>,
    bt: Vec<f32>,
    m: usize,
    n: usize,
    k: usize,
}

#[cfg(test)]
impl TestOperands {
    /// The operands of an m×n×k product.
    pub(super) fn new(m: usize, n: usize, k: usize) -> TestOperands {
        let (a, b) = (test_values(m * k, 1), test_values(k * n, 2));
        let at = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        TestOperands { a, b, at, bt, m, n, k }
    }

    /// (A, B) row-major, then each read through a transposed copy (column-major strides).
    pub(super) fn layouts(&self) -> [(MatRef<'_, f32>, MatRef<'_, f32>); 2] {
        let (m, n, k) = (self.m, self.n, self.k);
        [
            (MatRef { data: &self.a, offset: 0, rs: k, cs: 1 }, MatRef { data: &self.b, offset: 0, rs: n, cs: 1 }),
            (MatRef { data: &self.at, offset: 0, rs: 1, cs: m }, MatRef { data: &self.bt, offset: 0, rs: 1, cs: k }),
        ]
    }
}
