//! The bf16 matrix product behind autocast (`crate::autocast`): both operands rounded to
//! bfloat16 (to nearest, ties to even), products summed in f32.
//!
//! On CPUs with AVX512-BF16 (`vdpbf16ps`: 32 bf16 multiply-adds into 16 f32 lanes per
//! instruction, twice the f32 FMA's work) the operands are packed as bf16 pairs and a 12×32
//! register-blocked micro-kernel runs over them (GotoBLAS's blocking: a k-block of B packed once,
//! reused by every row block of A). AMX would be the next path on CPUs that have it; the machines
//! this was written on have AVX512-BF16 and no AMX. Elsewhere the operands are rounded into f32
//! copies and the `gemm` crate's f32 kernel multiplies them: the products of two bf16 values are
//! exact in f32, so only the order of the f32 additions differs between the two paths.
//!
//! What was looked for first: the `gemm` crate family has f32, f64, complex and f16 kernels, no
//! bf16; `half` converts slices but has no product. So the kernel is here.
//!
//! Determinism: an output element's sum is split at fixed k-blocks (`KC`), added in k order;
//! the blocking of rows and columns never changes it, so any cut of the product into blocks
//! (`cpu.rs`) gives the same bits. `vdpbf16ps` treats subnormal inputs and results as zero.

use super::gemm_crate::{MatRef, kernel};
use crate::autocast::round_bf16_bits;

/// `dst[m×n] (+)= bf16(lhs)[m×k] · bf16(rhs)[k×n]`, `dst` with row stride `dst_rs`.
///
/// # Safety
/// As `gemm_crate::kernel`: `dst` valid for writes of an m×n block with row stride `dst_rs`, the
/// operands' views inside their buffers, and m, n, k > 0.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm(
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
    if x86::available() {
        // SAFETY: the CPU has the features (checked), the rest is the caller's promise.
        unsafe { x86::gemm(m, n, k, dst, dst_rs, lhs, rhs, accumulate) };
        return;
    }
    // SAFETY: the caller's promise.
    unsafe { portable(m, n, k, dst, dst_rs, lhs, rhs, accumulate) };
}

/// The portable path: the operands rounded into contiguous f32 copies, then the f32 kernel.
///
/// # Safety
/// As [`gemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn portable(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: MatRef<f32>,
    rhs: MatRef<f32>,
    accumulate: bool,
) {
    let round = |v: MatRef<f32>, rows: usize, cols: usize| -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            let row = v.offset + i * v.rs;
            out.extend((0..cols).map(|j| f32::from_bits(round_bf16_bits(v.data[row + j * v.cs]))));
        }
        out
    };
    let (a, b) = (round(lhs, m, k), round(rhs, k, n));
    let a = MatRef { data: &a, offset: 0, rs: k, cs: 1 };
    let b = MatRef { data: &b, offset: 0, rs: n, cs: 1 };
    // SAFETY: the copies are contiguous m×k and k×n; `dst` is the caller's promise.
    unsafe { kernel(m, n, k, dst, dst_rs, a, b, accumulate) };
}

/// A pair of values as `vdpbf16ps` reads them: `lo` in the low 16 bits, `hi` in the high.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    (round_bf16_bits(lo) >> 16) | round_bf16_bits(hi)
}

/// Rows of the micro-kernel's output tile.
const MR: usize = 12;
/// Columns of the micro-kernel's output tile: two AVX-512 vectors of f32.
const NR: usize = 32;
/// k-pairs per packed block: a B micro-panel (`KC·NR` pairs, 16 KiB) stays in L1 while every
/// A micro-panel of the row block passes it.
const KC: usize = 128;
/// Rows per packed A block (60 KiB with `KC`, in L2).
const MC: usize = 120;
/// Columns per packed B block (512 KiB with `KC`).
const NC: usize = 1024;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{KC, MC, MR, MatRef, NC, NR, pair};
    use std::arch::x86_64::*;
    use std::cell::RefCell;
    use std::sync::OnceLock;

    /// Whether this CPU runs `vdpbf16ps` (and the AVX-512 around it).
    pub(super) fn available() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512bf16")
        })
    }

    thread_local! {
        /// Packing buffers (A block, B block), reused across calls on this thread.
        static PACKED: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    /// See `super::gemm`.
    ///
    /// # Safety
    /// `super::gemm`'s, and the CPU must have AVX512-F, -BW and -BF16.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn gemm(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        dst_rs: usize,
        lhs: MatRef<f32>,
        rhs: MatRef<f32>,
        accumulate: bool,
    ) {
        let kp = k.div_ceil(2);
        // B read as its transpose: row i of Bᵀ is column i of B.
        let rhs_t = MatRef { rs: rhs.cs, cs: rhs.rs, ..rhs };
        PACKED.with_borrow_mut(|(a_buf, b_buf)| {
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                for pc in (0..kp).step_by(KC) {
                    let kc = KC.min(kp - pc);
                    // SAFETY: the CPU features are this function's own.
                    unsafe { pack_b(rhs_t, (jc, nc, n), (pc, kc, k), b_buf) };
                    // The first k-block writes (or adds to what dst held, with `accumulate`);
                    // later ones add: each element's sum runs over the k-blocks in order.
                    let add = accumulate || pc > 0;
                    for ic in (0..m).step_by(MC) {
                        let mc = MC.min(m - ic);
                        // SAFETY: as for `pack_b`.
                        unsafe { pack_a(lhs, (ic, mc, m), (pc, kc, k), a_buf) };
                        for (jp, bp) in b_buf.chunks_exact(kc * NR).enumerate() {
                            let cols = NR.min(nc - jp * NR);
                            for (ip, ap) in a_buf.chunks_exact(kc * MR).enumerate() {
                                let rows = MR.min(mc - ip * MR);
                                let (i0, j0) = (ic + ip * MR, jc + jp * NR);
                                // SAFETY: the tile (i0.., j0..) of rows × cols lies inside the
                                // caller's m×n destination.
                                unsafe { micro(kc, ap, bp, dst.add(i0 * dst_rs + j0), dst_rs, rows, cols, add) };
                            }
                        }
                    }
                }
            }
        });
    }

    /// Packs rows `row0..row0 + rows` of A (`rows_all` in all), k-pairs `p0..p0 + kc`, as
    /// `[rows/MR panels][MR][kc]` pairs: each row's pairs in k order, so a row of A that is
    /// contiguous in memory converts 32 values per instruction. Zero beyond A's rows and k.
    ///
    /// # Safety
    /// The CPU must have AVX512-F and -BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_a(
        v: MatRef<f32>,
        (row0, rows, rows_all): (usize, usize, usize),
        (p0, kc, k): (usize, usize, usize),
        out: &mut Vec<u32>,
    ) {
        out.clear();
        out.resize(rows.div_ceil(MR) * MR * kc, 0);
        let live_k = k.saturating_sub(2 * p0).min(2 * kc);
        for i in 0..rows.min(rows_all - row0) {
            let dst = &mut out[i * kc..(i + 1) * kc];
            let base = v.offset + (row0 + i) * v.rs + 2 * p0 * v.cs;
            if v.cs == 1 {
                // SAFETY: the run `base..base + live_k` lies inside A's checked view.
                unsafe { convert_run(&v.data[base..base + live_k], dst) };
            } else {
                for (p, d) in dst.iter_mut().enumerate() {
                    let at = |kk: usize| if kk < live_k { v.data[base + kk * v.cs] } else { 0.0 };
                    *d = pair(at(2 * p), at(2 * p + 1));
                }
            }
        }
    }

    /// Packs columns `col0..col0 + cols` of B (`cols_all` in all; `v` is Bᵀ, so a column is a
    /// row of `v`), k-pairs `p0..p0 + kc`, as `[cols/NR panels][kc][NR]` pairs: one vector
    /// load per 16 columns of one pair. Zero beyond B's columns and k.
    ///
    /// # Safety
    /// The CPU must have AVX512-F, -BW and -BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_b(
        v: MatRef<f32>,
        (col0, cols, cols_all): (usize, usize, usize),
        (p0, kc, k): (usize, usize, usize),
        out: &mut Vec<u32>,
    ) {
        let panels = cols.div_ceil(NR);
        out.clear();
        out.resize(panels * kc * NR, 0);
        let live_k = k.saturating_sub(2 * p0).min(2 * kc);
        let live_cols = cols.min(cols_all - col0);
        let at = |j: usize, kk: usize| -> f32 {
            if kk < live_k { v.data[v.offset + (col0 + j) * v.rs + (2 * p0 + kk) * v.cs] } else { 0.0 }
        };
        for (pi, panel) in out.chunks_exact_mut(kc * NR).enumerate() {
            let j0 = pi * NR;
            let live = NR.min(live_cols.saturating_sub(j0));
            // Whole groups of 16 columns × 16 pairs go through a register transpose.
            let full_p = if live_k == 2 * kc { kc / 16 * 16 } else { 0 };
            if v.rs == 1 && live == NR && live_k == 2 * kc {
                // Columns adjacent in memory: each pair is two runs of 32 columns, interleaved.
                for p in 0..kc {
                    let b0 = v.offset + col0 + j0 + 2 * p * v.cs + 2 * p0 * v.cs;
                    let (lo, hi) = (&v.data[b0..b0 + NR], &v.data[b0 + v.cs..b0 + v.cs + NR]);
                    for h in 0..2 {
                        // SAFETY: 16 values from each run's h-th half; 16 pairs into the panel.
                        unsafe {
                            let l = _mm512_cvtneps_pbh(_mm512_loadu_ps(lo.as_ptr().add(16 * h)));
                            let u = _mm512_cvtneps_pbh(_mm512_loadu_ps(hi.as_ptr().add(16 * h)));
                            let l = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(l));
                            let u = _mm512_slli_epi32(
                                _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(u)),
                                16,
                            );
                            _mm512_storeu_si512(panel.as_mut_ptr().add(p * NR + 16 * h).cast(), _mm512_or_si512(l, u));
                        }
                    }
                }
                continue;
            }
            if v.cs == 1 && live == NR {
                // Pairs adjacent in memory (B read as Bᵀ, as linear's forward reads its
                // weight): convert 16 pairs of each of 16 columns, then transpose 16×16.
                for h in 0..2 {
                    for pb in (0..full_p).step_by(16) {
                        // SAFETY: 16 columns × 32 values inside Bᵀ's view (live == NR and the
                        // k-block is whole); the stores fill pairs pb..pb+16 of 16 columns.
                        unsafe {
                            let mut r = [_mm512_setzero_si512(); 16];
                            for (c, r) in r.iter_mut().enumerate() {
                                let src =
                                    v.data.as_ptr().add(v.offset + (col0 + j0 + 16 * h + c) * v.rs + 2 * (p0 + pb));
                                let lo = _mm512_loadu_ps(src);
                                let hi = _mm512_loadu_ps(src.add(16));
                                *r = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                            }
                            let t = transpose16(r);
                            for (p, t) in t.iter().enumerate() {
                                _mm512_storeu_si512(panel.as_mut_ptr().add((pb + p) * NR + 16 * h).cast(), *t);
                            }
                        }
                    }
                }
            } else {
                for p in 0..full_p {
                    for j in 0..live {
                        panel[p * NR + j] = pair(at(j0 + j, 2 * p), at(j0 + j, 2 * p + 1));
                    }
                }
            }
            for p in full_p..kc {
                for j in 0..live {
                    panel[p * NR + j] = pair(at(j0 + j, 2 * p), at(j0 + j, 2 * p + 1));
                }
            }
        }
    }

    /// `values` (32-value runs converted by one instruction) as pairs into `dst`; zero pairs
    /// past the values' end (an odd count pairs its last value with zero).
    ///
    /// # Safety
    /// The CPU must have AVX512-F and -BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn convert_run(values: &[f32], dst: &mut [u32]) {
        let whole = values.len() / 32;
        for c in 0..whole {
            // SAFETY: 32 values from 32·c, 16 pairs to 16·c (dst holds ⌈len/2⌉ ≥ 16·(c+1)).
            unsafe {
                let src = values.as_ptr().add(32 * c);
                let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
                _mm512_storeu_si512(dst.as_mut_ptr().add(16 * c).cast(), std::mem::transmute::<__m512bh, __m512i>(v));
            }
        }
        let rest = &values[32 * whole..];
        for (p, d) in dst[16 * whole..].iter_mut().enumerate() {
            let at = |i: usize| rest.get(i).copied().unwrap_or(0.0);
            *d = pair(at(2 * p), at(2 * p + 1));
        }
    }

    /// The transpose of a 16×16 block of 32-bit values (`r[i]` is row i): three rounds of
    /// in-lane interleaves, then two of 128-bit lane shuffles.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
        // t: rows 2i and 2i+1 interleaved by 32 bits within each 128-bit lane.
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4g + s]: lane L holds column 4L + s of rows 4g..4g+4.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let b = 4 * g;
            u[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
            u[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
            u[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
            u[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
        }
        // w[8h + 4q + s] (q = 0: lanes 0 and 2 of u; q = 1: lanes 1 and 3), rows 8h..8h+8.
        let mut w = [_mm512_setzero_si512(); 16];
        for h in 0..2 {
            for s in 0..4 {
                let (a, b) = (u[8 * h + s], u[8 * h + 4 + s]);
                w[8 * h + s] = _mm512_shuffle_i32x4::<0x88>(a, b);
                w[8 * h + 4 + s] = _mm512_shuffle_i32x4::<0xdd>(a, b);
            }
        }
        // out[c]: column c, its rows 0..8 from w[..8] and 8..16 from w[8..].
        let mut out = [_mm512_setzero_si512(); 16];
        for q in 0..2 {
            for s in 0..4 {
                let (a, b) = (w[4 * q + s], w[8 + 4 * q + s]);
                out[4 * q + s] = _mm512_shuffle_i32x4::<0x88>(a, b);
                out[8 + 4 * q + s] = _mm512_shuffle_i32x4::<0xdd>(a, b);
            }
        }
        out
    }

    /// One 12×32 tile: `acc = Σ_p a[·, p] ⊗ b[p]` over `kc` pairs, then written to the first
    /// `rows` × `cols` of `dst` (added to it when `add`).
    ///
    /// # Safety
    /// `a` holds `MR·kc` pairs (`[MR][kc]`) and `b` `kc·NR` (`[kc][NR]`); `dst` is valid for a rows × cols tile with row
    /// stride `dst_rs`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn micro(
        kc: usize,
        a: &[u32],
        b: &[u32],
        dst: *mut f32,
        dst_rs: usize,
        rows: usize,
        cols: usize,
        add: bool,
    ) {
        debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR);
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for p in 0..kc {
            // SAFETY: p < kc and r < MR, so p·NR + 32 ≤ b's length and r·kc + p < a's.
            unsafe {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR).cast()));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR + 16).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let ar: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r * kc + p) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], ar, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], ar, b1);
                }
            }
        }
        let mask = |v: usize| -> __mmask16 {
            let live = cols.saturating_sub(16 * v).min(16);
            ((1u32 << live) - 1) as __mmask16
        };
        let masks = [mask(0), mask(1)];
        for (r, acc) in acc.iter().enumerate().take(rows) {
            for (v, &mk) in masks.iter().enumerate() {
                if mk == 0 {
                    continue;
                }
                // SAFETY: row r < rows and the masked lanes are columns < cols of the tile.
                unsafe {
                    let p = dst.add(r * dst_rs + 16 * v);
                    let out = if add { _mm512_add_ps(_mm512_maskz_loadu_ps(mk, p), acc[v]) } else { acc[v] };
                    _mm512_mask_storeu_ps(p, mk, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autocast::round_bf16;

    /// The product of the bf16-rounded operands in f64: what either path must match to f32's
    /// accumulation error.
    fn reference(m: usize, n: usize, k: usize, a: MatRef<f32>, b: MatRef<f32>) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|kk| {
                        let x = round_bf16(a.data[a.offset + i * a.rs + kk * a.cs]) as f64;
                        let y = round_bf16(b.data[b.offset + kk * b.rs + j * b.cs]) as f64;
                        x * y
                    })
                    .sum();
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn both_layouts_and_odd_edges_match_the_rounded_product() {
        // Sizes straddling the tile (12×32), the k-pair (odd k) and the k-block (KC pairs).
        for &(m, n, k) in
            &[(1, 1, 1), (13, 33, 7), (12, 32, 256), (25, 70, 2 * KC + 3), (130, 40, 300), (3, NC + 70, 40)]
        {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            // Row-major operands, and each read transposed from the other layout (the strides
            // linear's forward and backward use).
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let layouts = [
                (MatRef { data: &a[..], offset: 0, rs: k, cs: 1 }, MatRef { data: &b[..], offset: 0, rs: n, cs: 1 }),
                (MatRef { data: &at[..], offset: 0, rs: 1, cs: m }, MatRef { data: &bt[..], offset: 0, rs: 1, cs: k }),
            ];
            for (lhs, rhs) in layouts {
                let want = reference(m, n, k, lhs, rhs);
                for (accumulate, path) in [(false, 0), (true, 0), (false, 1), (true, 1)] {
                    let mut dst = vec![0.5f32; m * n];
                    // SAFETY: dst is m×n contiguous; the views cover their buffers exactly.
                    unsafe {
                        match path {
                            0 => gemm(m, n, k, dst.as_mut_ptr(), n, lhs, rhs, accumulate),
                            _ => portable(m, n, k, dst.as_mut_ptr(), n, lhs, rhs, accumulate),
                        }
                    }
                    let base = if accumulate { 0.5 } else { 0.0 };
                    for (got, want) in dst.iter().zip(&want) {
                        let tol = 1e-5 * (k as f64).sqrt() * (1.0 + want.abs());
                        assert!((*got as f64 - base - want).abs() <= tol, "{m}×{n}×{k}: {got} vs {}", want + base);
                    }
                }
            }
        }
    }

    #[test]
    fn rounds_operands_to_bf16() {
        // 1 + 2⁻¹⁰ is not a bf16 value: it rounds to 1, so 3 such products sum to exactly 3.
        let a = [1.0f32 + 1.0 / 1024.0; 3];
        let b = [1.0f32; 3];
        let mut dst = [0.0f32];
        let lhs = MatRef { data: &a[..], offset: 0, rs: 3, cs: 1 };
        let rhs = MatRef { data: &b[..], offset: 0, rs: 1, cs: 1 };
        // SAFETY: a 1×1 destination, 1×3 and 3×1 views inside their buffers.
        unsafe { gemm(1, 1, 3, dst.as_mut_ptr(), 1, lhs, rhs, false) };
        assert_eq!(dst[0], 3.0);
    }
}
