//! strata's f32 matrix-vector product on AVX-512 CPUs, for a one-row product whose right operand
//! has contiguous columns: `y[1×n] (+)= x[1×k] · Wᵀ` with W's rows contiguous, which is linear's
//! forward at batch 1 (the inference of one sample). Each output is the dot product of x with
//! one row of W; eight rows run at a time, so each 16-value load of x feeds eight FMAs, and the
//! eight independent sums keep both FMA units busy. The cost is streaming W from cache
//! (SimpleNN's 128×784 first layer is 392 KiB, in L2), which this loop does at close to L2's
//! bandwidth.
//!
//! Measured against the `gemm` crate's matrix-vector kernel: see `cpu.rs`'s `own_gemv`.
//!
//! Determinism: every output's sum is the same chain (16 lane sums over k in order, the masked
//! tail, then one horizontal reduction) whether its row runs in a group of eight or alone, so
//! any cut of the columns into blocks (`cpu.rs`) gives the same bits.

use super::gemm_crate::MatRef;
use super::packed::lanes;
use std::arch::x86_64::*;

/// Rows of W per group: eight sums in flight, one x load for eight W loads.
const ROWS: usize = 8;

/// `dst[j] (+)= Σ_p x[p]·W[j][p]` for j < n: `lhs` is x (1×k, contiguous), `rhs` is Wᵀ (k×n)
/// read with `rs == 1` (W's rows contiguous, `cs` apart).
///
/// # Safety
/// The CPU has AVX512-F; `lhs.cs == 1` and `rhs.rs == 1`; `dst` valid for n writes (and reads
/// with `accumulate`); the views' k×n elements inside their buffers.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dots(n: usize, k: usize, dst: *mut f32, lhs: MatRef<f32>, rhs: MatRef<f32>, accumulate: bool) {
    debug_assert!(lhs.cs == 1 && rhs.rs == 1);
    let x = lhs.data[lhs.offset..].as_ptr();
    let w = rhs.data[rhs.offset..].as_ptr();
    let mut j = 0;
    while j + ROWS <= n {
        // SAFETY: rows j..j+8 < n of W, k values each, and dst[j..j+8]: the caller's promise.
        unsafe { group::<ROWS>(k, x, w.add(j * rhs.cs), rhs.cs, dst.add(j), accumulate) };
        j += ROWS;
    }
    while j < n {
        // SAFETY: as above, one row.
        unsafe { group::<1>(k, x, w.add(j * rhs.cs), rhs.cs, dst.add(j), accumulate) };
        j += 1;
    }
}

/// `R` consecutive outputs: `dst[r] (+)= x · W row r`, rows `w_rs` apart from `w`.
///
/// # Safety
/// As [`dots`], for R rows from `w` and R outputs from `dst`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn group<const R: usize>(k: usize, x: *const f32, w: *const f32, w_rs: usize, dst: *mut f32, accumulate: bool) {
    let mut acc = [_mm512_setzero_ps(); R];
    let whole = k / 16;
    // SAFETY: chunks c < k/16 are 16 values inside x and inside each row; the tail's masked
    // lanes past k are not read.
    unsafe {
        for c in 0..whole {
            let xv = _mm512_loadu_ps(x.add(16 * c));
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(r * w_rs + 16 * c)), xv, *acc);
            }
        }
        let rest = k % 16;
        if rest > 0 {
            let mask = lanes(rest);
            let xv = _mm512_maskz_loadu_ps(mask, x.add(16 * whole));
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w.add(r * w_rs + 16 * whole)), xv, *acc);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let s = _mm512_reduce_add_ps(*acc);
            *dst.add(r) = if accumulate { *dst.add(r) + s } else { s };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm_crate::TestOperands;
    use super::*;

    #[test]
    fn equals_the_f64_product_at_every_edge_and_under_any_cut() {
        if !super::super::f32_x86::available() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        // Around the group of 8 rows (n 7, 8, 9, 17) and the 16-value chunk (k 15, 16, 17),
        // and SimpleNN's first layer (128×784).
        for &(n, k) in &[(1, 1), (7, 15), (8, 16), (9, 17), (17, 33), (128, 784)] {
            let ops = TestOperands::new(1, n, k);
            // x as 1×k, Wᵀ read with rs == 1: the second layout's right operand (W stored n×k).
            let [(x, _), (_, wt)] = ops.layouts();
            for accumulate in [false, true] {
                let mut got = vec![0.5f32; n];
                // SAFETY: AVX-512 checked; x is contiguous (cs 1), Wᵀ has rs 1; dst holds n.
                unsafe { dots(n, k, got.as_mut_ptr(), x, wt, accumulate) };
                for (j, g) in got.iter().enumerate() {
                    let dot: f64 = (0..k).map(|p| ops.a[p] as f64 * ops.b[p * n + j] as f64).sum();
                    let want = dot + if accumulate { 0.5 } else { 0.0 };
                    assert!(
                        (*g as f64 - want).abs() <= 1e-5 * (k as f64).sqrt() * (1.0 + want.abs()),
                        "{n}×{k}: {g} vs {want}"
                    );
                }
                // The columns cut in two at 5 (groups shift against the rows): the same bits.
                if n > 5 {
                    let mut cut = vec![0.5f32; n];
                    let tail = MatRef { offset: wt.offset + 5 * wt.cs, ..wt };
                    // SAFETY: as above, columns 0..5 and 5..n.
                    unsafe {
                        dots(5, k, cut.as_mut_ptr(), x, wt, accumulate);
                        dots(n - 5, k, cut.as_mut_ptr().add(5), x, tail, accumulate);
                    }
                    assert_eq!(got, cut, "{n}×{k}");
                }
            }
        }
    }
}
