//! AVX-512 kernels of the f32 im2col / col2im rows with a column stride of 2 (a ResNet's
//! downsampling convolutions, 3×3 and 1×1). The portable loops in `cpu.rs` gather or scatter
//! every other element: rows of 7–14 outputs never fill a 16-lane vector, so they ran as
//! scalar loads and stores (a third of im2col's time, by the profile). Here a row is one or two
//! masked loads, one permute and one masked store per 16 outputs; the results are the same bits.

use crate::ops::conv::simd_x86::{EVEN, first, idx};
use std::arch::x86_64::*;

/// Lane indices that put element `i/2` of a vector at every lane `i` (the odd lanes are then
/// masked off): `0, 0, 1, 1, …, 7, 7` and `8, 8, …, 15, 15`.
const SPREAD_LO: [i32; 16] = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7];
const SPREAD_HI: [i32; 16] = [8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15];
/// The even lanes.
const EVEN_LANES: __mmask16 = 0x5555;

/// `dst[j] = src[x0 + 2j]` for every `j < dst.len()`.
#[target_feature(enable = "avx512f")]
pub(super) fn gather_stride2(src: &[f32], x0: usize, dst: &mut [f32]) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    assert!(x0 + 2 * (n - 1) < src.len());
    let even = idx(&EVEN);
    for j0 in (0..n).step_by(16) {
        let k = (n - j0).min(16);
        // The source elements x0 + 2·j0 .. + 2k − 1 (the last odd one is not needed).
        let span = 2 * k - 1;
        let at = x0 + 2 * j0;
        // SAFETY: the loads touch lanes below `span` from `at`, and at + span − 1 =
        // x0 + 2(j0 + k − 1) < src.len() (asserted); the store writes lanes j0..j0 + k ≤ n.
        unsafe {
            let lo = _mm512_maskz_loadu_ps(first(span), src.as_ptr().add(at));
            let hi = if span > 16 {
                _mm512_maskz_loadu_ps(first(span - 16), src.as_ptr().add(at + 16))
            } else {
                _mm512_setzero_ps()
            };
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(j0), first(k), _mm512_permutex2var_ps(lo, even, hi));
        }
    }
}

/// `dst[x0 + 2j] += src[j]` for every `j < src.len()` (the elements in between untouched).
#[target_feature(enable = "avx512f")]
pub(super) fn scatter_add_stride2(src: &[f32], dst: &mut [f32], x0: usize) {
    let n = src.len();
    if n == 0 {
        return;
    }
    assert!(x0 + 2 * (n - 1) < dst.len());
    let (lo_idx, hi_idx) = (idx(&SPREAD_LO), idx(&SPREAD_HI));
    for j0 in (0..n).step_by(16) {
        let k = (n - j0).min(16);
        let at = x0 + 2 * j0;
        // Destination lanes: the even ones among the first 2k − 1.
        let m_lo = EVEN_LANES & first(2 * k - 1);
        let m_hi = EVEN_LANES & first((2 * k - 1).saturating_sub(16));
        // SAFETY: the load reads src lanes j0..j0 + k ≤ n; the masked loads and stores touch
        // dst lanes below 2k − 1 from `at`, and at + 2k − 2 = x0 + 2(j0 + k − 1) < dst.len().
        unsafe {
            let v = _mm512_maskz_loadu_ps(first(k), src.as_ptr().add(j0));
            let d = dst.as_mut_ptr().add(at);
            let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(m_lo, d), _mm512_permutexvar_ps(lo_idx, v));
            _mm512_mask_storeu_ps(d, m_lo, sum);
            if m_hi != 0 {
                let d = d.add(16);
                let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(m_hi, d), _mm512_permutexvar_ps(hi_idx, v));
                _mm512_mask_storeu_ps(d, m_hi, sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the scalar definitions, for lengths around the 16-lane boundaries and every
    //! start offset parity, including signed zeros (an add of `+0` into `−0` must not happen on
    //! the untouched odd elements).

    #[test]
    fn stride2_rows_match_scalar_loops() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for n in [1, 2, 7, 8, 14, 15, 16, 17, 31, 32, 33] {
            for x0 in [0, 1, 2, 3] {
                let len = x0 + 2 * n + 3;
                let src: Vec<f32> = (0..len).map(|i| if i % 5 == 0 { -0.0 } else { i as f32 * 0.5 - 3.0 }).collect();
                let mut got = vec![9.0; n];
                // SAFETY: AVX-512F is present (checked above).
                unsafe { super::gather_stride2(&src, x0, &mut got) };
                let want: Vec<f32> = (0..n).map(|j| src[x0 + 2 * j]).collect();
                assert_eq!(bits(&got), bits(&want), "gather n={n} x0={x0}");

                let vals: Vec<f32> = (0..n).map(|j| j as f32 - 4.0).collect();
                let mut got = src.clone();
                // SAFETY: as above.
                unsafe { super::scatter_add_stride2(&vals, &mut got, x0) };
                let mut want = src.clone();
                vals.iter().enumerate().for_each(|(j, &v)| want[x0 + 2 * j] += v);
                assert_eq!(bits(&got), bits(&want), "scatter-add n={n} x0={x0}");
            }
        }
    }

    /// The bits of `v`, to compare signed zeros too.
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}
