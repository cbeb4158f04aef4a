//! The bf16 matrix product behind autocast (`crate::autocast`): both operands rounded to
//! bfloat16 (to nearest, ties to even), products summed in f32.
//!
//! On CPUs with AVX512-BF16 (`vdpbf16ps`: 32 bf16 multiply-adds into 16 f32 lanes per
//! instruction, twice the f32 FMA's work) the operands are packed as bf16 pairs, rounded on the
//! way, and `packed.rs`'s blocked product runs a 12×32 `vdpbf16ps` tile over them. CPUs with
//! AMX take `amx.rs` instead (`cpu.rs` chooses), which reuses this file's packing. Elsewhere the
//! operands are rounded into f32 copies and the f32 kernel an f32 product
//! would take multiplies them (strata's own on other AVX-512 CPUs, the `gemm` crate's
//! elsewhere): the products of two bf16 values are exact in f32, so only the order of the f32
//! additions differs between the paths.
//!
//! What was looked for first: the `gemm` crate family has f32, f64, complex and f16 kernels, no
//! bf16; `half` converts slices but has no product. So the kernel is here.
//!
//! Determinism: as `packed.rs`'s, any cut of the product into blocks (`cpu.rs`) gives the same
//! bits. `vdpbf16ps` treats subnormal inputs and results as zero.

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
        unsafe {
            super::packed::run::<x86::Bf16>(m, n, k, dst, dst_rs, lhs, super::packed::Rhs::View(rhs), accumulate)
        };
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
    // The f32 kernel an f32 product of this shape would take (so bf16 is never the slower):
    // strata's own on AVX-512 CPUs without AVX512-BF16 (Skylake-X to Ice Lake), else the gemm
    // crate's.
    #[cfg(target_arch = "x86_64")]
    if super::f32_x86::available() {
        use super::{f32_x86::F32, packed};
        // SAFETY: the CPU has AVX512-F (checked); the copies are contiguous m×k and k×n; `dst`
        // is the caller's promise.
        unsafe { packed::run::<F32>(m, n, k, dst, dst_rs, a, packed::Rhs::View(b), accumulate) };
        return;
    }
    // SAFETY: the copies are contiguous m×k and k×n; `dst` is the caller's promise.
    unsafe { kernel(m, n, k, dst, dst_rs, a, b, accumulate) };
}

/// A pair of values as `vdpbf16ps` reads them: `lo` in the low 16 bits, `hi` in the high.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    (round_bf16_bits(lo) >> 16) | round_bf16_bits(hi)
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::super::packed::{KC, Kernel, MR, NC, NR, Packing, Tile, kernel_run, lanes, store, transpose16};
    use super::{MatRef, pair};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    /// 16-bit lanes of two 16-value runs side by side (lanes 0–15 and 16–31) taken so that
    /// lane 2j is the first run's j-th value and lane 2j + 1 the second's: 16 pairs.
    const INTERLEAVE: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut j = 0;
        while j < 16 {
            idx[2 * j] = j as u16;
            idx[2 * j + 1] = 16 + j as u16;
            j += 1;
        }
        idx
    };

    /// Whether this CPU runs `vdpbf16ps` (and the AVX-512 around it).
    pub(in super::super) fn available() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512bf16")
        })
    }

    /// The bf16 kernel for `packed::run`: a step is a pair of k, packed as one 32-bit value
    /// (the first of the pair in the low half), `vdpbf16ps` in the tile.
    pub(in super::super) struct Bf16;

    impl Kernel for Bf16 {
        fn steps(k: usize) -> usize {
            k.div_ceil(2)
        }

        /// Both operands are always packed: their f32 values become bf16 pairs.
        const IN_PLACE: bool = false;

        kernel_run!("avx512f,avx512bw,avx512bf16");

        /// A row of A that is contiguous in memory converts 32 values per instruction; rows
        /// adjacent in memory convert 16 rows × 16 pairs at a time through a register transpose.
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        unsafe fn pack_a(
            v: MatRef<f32>,
            (row0, rows, rows_all): (usize, usize, usize),
            (p0, kc, k): (usize, usize, usize),
            out: &mut Packing,
        ) {
            // Every live row is written whole below (its pairs past k as zeros); the rows past
            // them are zeroed here, not the whole buffer first (that pass was a fifth of W5's
            // bf16 A packing).
            let out = out.resized(rows.div_ceil(MR) * MR * kc);
            let live_k = k.saturating_sub(2 * p0).min(2 * kc);
            let live_rows = rows.min(rows_all - row0);
            out[live_rows * kc..].fill(0);
            // Pairs in whole groups of 16 that the transposed path (rows adjacent, as gᵀ in a
            // weight gradient) converts; the rest, and every pair of other layouts, one by one.
            let grouped = if v.rs == 1 && v.cs != 1 { live_k / 32 * 16 } else { 0 };
            for g in (0..live_rows).step_by(16).filter(|_| grouped > 0) {
                let live = (live_rows - g).min(16);
                let mask = lanes(live);
                for pb in (0..grouped).step_by(16) {
                    // SAFETY: rows row0+g.. (`live` of them, the masked lanes unread) at k
                    // 2·(p0+pb+c) and the next, all < live_k, inside A's view; the stores fill
                    // pairs pb..pb+16 (≤ kc) of those rows.
                    unsafe {
                        let mut r = [_mm512_setzero_si512(); 16];
                        for (c, r) in r.iter_mut().enumerate() {
                            let src = v.data.as_ptr().add(v.offset + row0 + g + 2 * (p0 + pb + c) * v.cs);
                            let lo = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src));
                            let hi = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src.add(v.cs)));
                            let lo = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(lo));
                            let hi = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(hi));
                            *r = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
                        }
                        for (i, t) in transpose16(r).iter().enumerate().take(live) {
                            _mm512_storeu_si512(out.as_mut_ptr().add((g + i) * kc + pb).cast(), *t);
                        }
                    }
                }
            }
            for i in 0..live_rows {
                let dst = &mut out[i * kc..(i + 1) * kc];
                let base = v.offset + (row0 + i) * v.rs + 2 * p0 * v.cs;
                if v.cs == 1 {
                    // SAFETY: the run `base..base + live_k` lies inside A's checked view.
                    unsafe { convert_run(&v.data[base..base + live_k], dst) };
                } else {
                    for (p, d) in dst.iter_mut().enumerate().skip(grouped) {
                        let at = |kk: usize| if kk < live_k { v.data[base + kk * v.cs] } else { 0.0 };
                        *d = pair(at(2 * p), at(2 * p + 1));
                    }
                }
            }
        }

        /// Columns adjacent in memory interleave two rows; pairs adjacent in memory (B read as
        /// Bᵀ, as linear's forward reads its weight) go through a 16×16 register transpose.
        /// Every value of the block is written (the vector paths, then the rest one by one and
        /// the zero padding), so the buffer is not zeroed first (a pass over the block that
        /// bought nothing).
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        unsafe fn pack_b(
            v: MatRef<f32>,
            (col0, cols, cols_all): (usize, usize, usize),
            (p0, kc, k): (usize, usize, usize),
            out: &mut Packing,
        ) {
            let panels = cols.div_ceil(NR);
            let out = out.resized(panels * kc * NR);
            let live_k = k.saturating_sub(2 * p0).min(2 * kc);
            let live_cols = cols.min(cols_all - col0);
            let at = |j: usize, kk: usize| -> f32 {
                if kk < live_k { v.data[v.offset + (col0 + j) * v.rs + (2 * p0 + kk) * v.cs] } else { 0.0 }
            };
            // Columns adjacent in memory (`v.rs == 1`) take the vector path whole: every panel,
            // the last one's missing columns and a last pair's missing value read as zeros
            // through masked loads. The transposing path takes the panels of NR live columns
            // over the pairs in whole groups of 16. `whole` panels are vector-packed over their
            // first `done` pairs.
            let rows_path = v.rs == 1 && live_cols > 0 && live_k > 0;
            let whole = if rows_path { panels } else { live_cols / NR };
            let done = if rows_path {
                live_k.div_ceil(2)
            } else if whole > 0 && v.cs == 1 {
                live_k / 32 * 16
            } else {
                0
            };
            // The last value the vector paths read lies inside the view.
            if rows_path {
                let last = v.offset + col0 + live_cols - 1 + (2 * p0 + live_k - 1) * v.cs;
                assert!(last < v.data.len(), "a packed block outside its operand");
            } else if done > 0 {
                let last = v.offset + (col0 + whole * NR - 1) * v.rs + (2 * (p0 + done) - 1) * v.cs;
                assert!(last < v.data.len(), "a packed block outside its operand");
            }
            if rows_path {
                // Pair p is rows 2p and 2p + 1, converted 32 values at a time and interleaved by
                // one permutation. Rows outer, panels inner, so that each row is read in one
                // sweep: a panel at a time walked a page per row, and W4's input-gradient
                // product (`dY·W`, `examples/w4_products`, one thread) ran at ~490 GFLOP/s
                // against ~600 now. Masked (the last panel, a row past k) rather than one by
                // one: the scalar rounding of those was half of W5's bf16 packing.
                // SAFETY: 32 lanes of 16 bits.
                let interleave = unsafe { _mm512_loadu_si512(INTERLEAVE.as_ptr().cast()) };
                for p in 0..done {
                    let lo = v.data.as_ptr().wrapping_add(v.offset + col0 + (2 * (p0 + p)) * v.cs);
                    let hi = lo.wrapping_add(v.cs);
                    let has_hi = 2 * p + 1 < live_k;
                    for pi in 0..panels {
                        for h in 0..2 {
                            let c = pi * NR + 16 * h;
                            let mask = lanes(live_cols.saturating_sub(c).min(16));
                            // SAFETY: the masked loads read columns < live_cols of rows < 2·p0
                            // + live_k: inside the view (checked above); pair p of panel pi, 16
                            // columns, inside `out`.
                            unsafe {
                                let l = _mm512_maskz_loadu_ps(mask, lo.wrapping_add(c));
                                let u = if has_hi {
                                    _mm512_maskz_loadu_ps(mask, hi.wrapping_add(c))
                                } else {
                                    _mm512_setzero_ps()
                                };
                                let b = _mm512_cvtne2ps_pbh(u, l);
                                let r =
                                    _mm512_permutexvar_epi16(interleave, std::mem::transmute::<__m512bh, __m512i>(b));
                                _mm512_storeu_si512(out.as_mut_ptr().add((pi * kc + p) * NR + 16 * h).cast(), r);
                            }
                        }
                    }
                }
            } else if done > 0 {
                // Pairs adjacent in memory (B read as Bᵀ, as linear's forward reads its
                // weight): convert 16 pairs of each of 16 columns, then transpose 16×16.
                for (pi, panel) in out.chunks_exact_mut(kc * NR).take(whole).enumerate() {
                    for h in 0..2 {
                        for pb in (0..done).step_by(16) {
                            // SAFETY: 16 columns × 32 values inside Bᵀ's view (checked above); the
                            // stores fill pairs pb..pb+16 of 16 columns.
                            unsafe {
                                let mut r = [_mm512_setzero_si512(); 16];
                                for (c, r) in r.iter_mut().enumerate() {
                                    let col = col0 + pi * NR + 16 * h + c;
                                    let src = v.data.as_ptr().add(v.offset + col * v.rs + 2 * (p0 + pb));
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
                }
            }
            // The rest one by one (a partial pair, a partial panel, every pair of other
            // layouts), and zeros past k and past the live columns.
            for (pi, panel) in out.chunks_exact_mut(kc * NR).enumerate() {
                let j0 = pi * NR;
                let live = NR.min(live_cols.saturating_sub(j0));
                let from = if pi < whole { done } else { 0 };
                panel[from * NR..].fill(0);
                for p in from..live_k.div_ceil(2) {
                    for j in 0..live {
                        panel[p * NR + j] = pair(at(j0 + j, 2 * p), at(j0 + j, 2 * p + 1));
                    }
                }
            }
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        unsafe fn tile(kc: usize, a: *const u32, a_rs: usize, b: *const u32, b_rs: usize, cols: usize) -> Tile {
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            let ap = a;
            let live = |v: usize| lanes(cols.saturating_sub(16 * v).min(16));
            let (m0, m1) = (live(0), live(1));
            for p in 0..kc {
                // SAFETY: p < kc and r < MR: A's row r step p and the masked loads' pairs < cols
                // of B's step p are readable (the caller's promise).
                unsafe {
                    let b0: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi32(m0, b.add(p * b_rs).cast()));
                    let b1: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi32(m1, b.add(p * b_rs + 16).cast()));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let ar: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r * a_rs + p) as i32));
                        acc[0] = _mm512_dpbf16_ps(acc[0], ar, b0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], ar, b1);
                    }
                }
            }
            acc
        }
    }

    /// `values` rounded to bf16, two to a 32-bit word as `vdpbf16ps` reads them (value 2p in
    /// the low half of word p); the words of `dst` past ⌈len/2⌉ are zeroed.
    pub(in super::super) fn round_into(values: &[f32], dst: &mut [u32]) {
        assert!(available(), "round_into needs AVX512-BF16");
        assert!(dst.len() >= values.len().div_ceil(2), "a run longer than its destination");
        // SAFETY: the CPU has the features (asserted).
        unsafe { convert_run(values, dst) }
    }

    thread_local! {
        /// The B block packing of [`run_rounded_lhs`], reused across calls on this thread.
        static B_BLOCK: std::cell::RefCell<Packing> = const { std::cell::RefCell::new(Packing::new()) };
    }

    /// `dst[m×n] (+)= A · bf16(rhs)[k×n]` for a left operand already rounded: row i's pair p
    /// (k = 2p and 2p + 1, as [`round_into`] lays them) at `a[i·a_rs + p]`, read in place by
    /// the tile instead of packed. The blocking, and so every sum, is `packed::run`'s for this
    /// kernel at widths below its wide-product depth (`depth_block`): the same bits as the
    /// product of the f32 operand that rounds to A.
    ///
    /// # Safety
    /// The CPU has AVX512-F, -BW and -BF16; `dst` valid for an m×n block with row stride
    /// `dst_rs`; `a` holds ⌈m/MR⌉·MR rows (the tile reads whole micro-panels) of `a_rs ≥
    /// ⌈k/2⌉` words; `rhs` inside its buffer; n < 256 (one depth block size: `KC`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(in super::super) unsafe fn run_rounded_lhs(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        dst_rs: usize,
        a: &[u32],
        a_rs: usize,
        rhs: MatRef<f32>,
        accumulate: bool,
    ) {
        let steps = k.div_ceil(2);
        // B read as its transpose: row j of Bᵀ is column j of B.
        let rhs_t = MatRef { rs: rhs.cs, cs: rhs.rs, ..rhs };
        // Taken out of the thread-local rather than borrowed in a closure, which would be
        // compiled without this function's features (see `packed::run_body`).
        let mut b_block = B_BLOCK.with_borrow_mut(std::mem::take);
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..steps).step_by(KC) {
                let kc = KC.min(steps - pc);
                // SAFETY: the CPU features and the view are the caller's promise.
                unsafe { Bf16::pack_b(rhs_t, (jc, nc, n), (pc, kc, k), &mut b_block) };
                for jp in 0..nc.div_ceil(NR) {
                    let cols = NR.min(nc - jp * NR);
                    let bp = b_block[jp * kc * NR..].as_ptr();
                    for ip in 0..m.div_ceil(MR) {
                        let rows = MR.min(m - ip * MR);
                        // SAFETY: A's micro-panel ip (MR rows, steps pc..pc + kc ≤ a_rs) lies
                        // in `a` (the caller's promise); B's packed panel holds kc steps of NR;
                        // the tile (ip·MR.., jc + jp·NR..) of rows × cols is inside dst.
                        unsafe {
                            let acc = Bf16::tile(kc, a.as_ptr().add(ip * MR * a_rs + pc), a_rs, bp, NR, NR);
                            let at = dst.add(ip * MR * dst_rs + jc + jp * NR);
                            store(&acc, at, dst_rs, rows, cols, accumulate || pc > 0);
                        }
                    }
                }
            }
        }
        B_BLOCK.with_borrow_mut(|b| *b = b_block);
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
        // The last partial run through masked loads and a masked store (the missing values
        // read as zeros), then zero pairs: one by one, these were most of W5's bf16 A packing.
        let rest = &values[32 * whole..];
        let pairs = rest.len().div_ceil(2);
        if pairs > 0 {
            let from = |first: usize| lanes(rest.len().saturating_sub(first).min(16));
            assert!(dst.len() >= 16 * whole + pairs, "a run longer than its destination");
            // SAFETY: the masked loads read rest's values only; the masked store writes `pairs`
            // ≤ 16 values from 16·whole, inside dst (checked).
            unsafe {
                let lo = _mm512_maskz_loadu_ps(from(0), rest.as_ptr());
                let hi = _mm512_maskz_loadu_ps(from(16), rest.as_ptr().wrapping_add(16));
                let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(16 * whole).cast(), lanes(pairs), v);
            }
        }
        dst[16 * whole + pairs..].fill(0);
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

    use super::super::gemm_crate::TestOperands;

    #[test]
    fn both_layouts_and_odd_edges_match_the_rounded_product() {
        // Sizes straddling the tiles (12×32, AMX's 32×32), the k-pair (odd k), the depth blocks
        // (128 pairs: 259; AMX's 512: 1027, 16-pair tiles: 45) and the column block (1024: 1094).
        // A smaller block after a larger one reuses the packing buffers unzeroed.
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 33, 7),
            (12, 32, 256),
            (25, 70, 259),
            (130, 40, 300),
            (3, 1094, 40),
            (33, 48, 1027),
            (40, 64, 45),
        ] {
            // Row-major operands, and each read transposed from the other layout (the strides
            // linear's forward and backward use).
            let ops = TestOperands::new(m, n, k);
            for (lhs, rhs) in ops.layouts() {
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
