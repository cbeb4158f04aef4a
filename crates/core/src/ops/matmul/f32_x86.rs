//! strata's own f32 product on AVX-512 CPUs: `packed.rs`'s blocking with a 12×32 FMA tile.
//! Where it runs instead of the `gemm` crate, and the measurements that chose it, are in
//! `cpu.rs` (`own_f32`).

use super::gemm_crate::MatRef;
use super::packed::{Kernel, MR, NR, Packing, Tile, kernel_run, lanes, transpose16};
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Whether this CPU has AVX512-F.
pub(super) fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// The f32 kernel for `packed::run`: a step is one k; values are packed as their bits.
pub(super) struct F32;

impl Kernel for F32 {
    fn steps(k: usize) -> usize {
        k
    }

    kernel_run!("avx512f");

    /// Step-major micro-panels (`[rows/MR][kc][MR]`: a step's MR values side by side), which
    /// the tile reads at fixed offsets from one pointer: read row-major, each of a step's MR
    /// broadcasts needed its own address arithmetic, which took issue slots from the FMAs.
    /// Rows contiguous in memory go 16 steps × MR rows at a time through a register transpose
    /// (the last steps through masked loads);
    /// rows adjacent in memory (as gᵀ in a weight gradient) are one masked load per step.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_a(
        v: MatRef<f32>,
        (row0, rows, rows_all): (usize, usize, usize),
        (p0, kc, k): (usize, usize, usize),
        out: &mut Packing,
    ) {
        let panels = rows.div_ceil(MR);
        let out = out.resized(panels * MR * kc);
        let live_k = k.saturating_sub(p0).min(kc);
        let live_rows = rows.min(rows_all - row0);
        let at = |r: usize, p: usize| v.data[v.offset + (row0 + r) * v.rs + (p0 + p) * v.cs].to_bits();
        // A step's MR values, the live ones first.
        let step_mask = lanes(MR);
        for (ip, panel) in out.chunks_exact_mut(MR * kc).enumerate() {
            let r0 = ip * MR;
            let lr = live_rows.saturating_sub(r0).min(MR);
            let mut done = 0;
            if lr > 0 && v.rs == 1 && v.cs != 1 {
                // A step's rows are adjacent: one masked load of the live rows, one store.
                let last = v.offset + row0 + r0 + lr - 1 + (p0 + live_k.max(1) - 1) * v.cs;
                assert!(live_k == 0 || last < v.data.len(), "a packed block outside its operand");
                let mask = lanes(lr);
                for p in 0..live_k {
                    // SAFETY: rows r0.. (lr of them) of step p < live_k lie inside the view
                    // (checked); MR values at step p of the panel.
                    unsafe {
                        let src = v.data.as_ptr().add(v.offset + row0 + r0 + (p0 + p) * v.cs);
                        let x = _mm512_maskz_loadu_epi32(mask, src.cast());
                        _mm512_mask_storeu_epi32(panel.as_mut_ptr().add(p * MR).cast(), step_mask, x);
                    }
                }
                done = live_k;
            } else if lr > 0 && v.cs == 1 && live_k > 0 {
                // Rows contiguous: 16 steps of each live row (fewer at the end, masked),
                // transposed into 16 steps of MR.
                let last = v.offset + (row0 + r0 + lr - 1) * v.rs + p0 + live_k - 1;
                assert!(last < v.data.len(), "a packed block outside its operand");
                for pb in (0..live_k).step_by(16) {
                    let steps = (live_k - pb).min(16);
                    let mask = lanes(steps);
                    // SAFETY: rows r0..r0 + lr, steps pb..pb + steps ≤ live_k: inside the view
                    // (checked); the stores fill those steps of the panel, MR values each.
                    unsafe {
                        let mut r = [_mm512_setzero_si512(); 16];
                        for (i, r) in r.iter_mut().enumerate().take(lr) {
                            let src = v.data.as_ptr().add(v.offset + (row0 + r0 + i) * v.rs + p0 + pb);
                            *r = _mm512_maskz_loadu_epi32(mask, src.cast());
                        }
                        for (p, t) in transpose16(r).iter().enumerate().take(steps) {
                            _mm512_mask_storeu_epi32(panel.as_mut_ptr().add((pb + p) * MR).cast(), step_mask, *t);
                        }
                    }
                }
                done = live_k;
            }
            // The rest one by one (the last steps, other layouts), zero past the live rows and
            // past k.
            for p in done..live_k {
                for r in 0..MR {
                    panel[p * MR + r] = if r < lr { at(r0 + r, p) } else { 0 };
                }
            }
            panel[live_k.max(done) * MR..].fill(0);
        }
    }

    /// Columns adjacent in memory are copied 32 at a time; k adjacent in memory (B read as Bᵀ,
    /// as linear's forward reads its weight) goes through a 16×16 register transpose. Every
    /// value of the block is written (the vector paths, then the rest one by one and the zero
    /// padding), so the buffer is not zeroed first.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_b(
        v: MatRef<f32>,
        (col0, cols, cols_all): (usize, usize, usize),
        (p0, kc, k): (usize, usize, usize),
        out: &mut Packing,
    ) {
        let panels = cols.div_ceil(NR);
        let out = out.resized(panels * kc * NR);
        let live_k = k.saturating_sub(p0).min(kc);
        let live_cols = cols.min(cols_all - col0);
        let at = |j: usize, p: usize| v.data[v.offset + (col0 + j) * v.rs + (p0 + p) * v.cs].to_bits();
        // The vector paths take the panels of NR live columns, over the first `done` steps (in
        // groups of 16 for the transposing path).
        let whole = live_cols / NR;
        let done = if whole == 0 {
            0
        } else if v.rs == 1 {
            live_k
        } else if v.cs == 1 {
            live_k / 16 * 16
        } else {
            0
        };
        if done > 0 {
            // The last value the vector paths read lies inside the view.
            let last = v.offset + (col0 + whole * NR - 1) * v.rs + (p0 + done - 1) * v.cs;
            assert!(last < v.data.len(), "a packed block outside its operand");
        }
        if done > 0 && v.rs == 1 {
            // Columns adjacent in memory: rows outer, panels inner, so that each row of B is
            // read in one sweep (as `bf16.rs`'s packing: a panel at a time walks a page per row).
            for p in 0..done {
                let row = v.data.as_ptr().wrapping_add(v.offset + col0 + (p0 + p) * v.cs);
                for pi in 0..whole {
                    // SAFETY: columns < whole·NR of step p < done: inside the view (checked
                    // above); step p of panel pi, NR values, inside `out`.
                    unsafe {
                        let d = out.as_mut_ptr().add((pi * kc + p) * NR);
                        _mm512_storeu_ps(d.cast(), _mm512_loadu_ps(row.add(pi * NR)));
                        _mm512_storeu_ps(d.add(16).cast(), _mm512_loadu_ps(row.add(pi * NR + 16)));
                    }
                }
            }
        } else if done > 0 {
            for (pi, panel) in out.chunks_exact_mut(kc * NR).take(whole).enumerate() {
                for h in 0..2 {
                    for pb in (0..done).step_by(16) {
                        // SAFETY: 16 columns × 16 values inside Bᵀ's view (checked above); the
                        // stores fill steps pb..pb+16 of 16 columns of the panel.
                        unsafe {
                            let mut r = [_mm512_setzero_si512(); 16];
                            for (c, r) in r.iter_mut().enumerate() {
                                let col = col0 + pi * NR + 16 * h + c;
                                let src = v.data.as_ptr().add(v.offset + col * v.rs + p0 + pb);
                                *r = _mm512_loadu_si512(src.cast());
                            }
                            for (p, t) in transpose16(r).iter().enumerate() {
                                _mm512_storeu_si512(panel.as_mut_ptr().add((pb + p) * NR + 16 * h).cast(), *t);
                            }
                        }
                    }
                }
            }
        }
        // The rest one by one (a partial panel, every step of other layouts), and zeros past k
        // and past the live columns.
        for (pi, panel) in out.chunks_exact_mut(kc * NR).enumerate() {
            let j0 = pi * NR;
            let live = NR.min(live_cols.saturating_sub(j0));
            let from = if pi < whole { done } else { 0 };
            panel[from * NR..].fill(0);
            for p in from..live_k {
                for j in 0..live {
                    panel[p * NR + j] = at(j0 + j, p);
                }
            }
        }
    }

    const IN_PLACE: bool = true;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile(kc: usize, a: *const u32, a_rs: usize, b: *const u32, b_rs: usize, cols: usize) -> Tile {
        // SAFETY: the caller's promise: row r's step p at a + r·a_rs + p.
        unsafe { tile_with::<false>(kc, a, a_rs, b, b_rs, cols) }
    }

    /// Step p's MR values at `a + p·MR`: the broadcasts are fixed offsets from one pointer.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_packed(
        _panel_kc: usize,
        p0: usize,
        kc: usize,
        a: *const u32,
        b: *const u32,
        b_rs: usize,
        cols: usize,
    ) -> Tile {
        // SAFETY: the caller's promise: a step-major panel from `pack_a`, steps p0.. inside it.
        unsafe { tile_with::<true>(kc, a.add(p0 * MR), 0, b, b_rs, cols) }
    }
}

/// The 12×32 FMA tile over `kc` steps: A's row r step p at `a + p·MR + r` (`STEP_MAJOR`, a
/// packed panel) or `a + r·a_rs + p` (A read in place).
///
/// # Safety
/// As [`Kernel::tile`] for that layout of A.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile_with<const STEP_MAJOR: bool>(
    kc: usize,
    a: *const u32,
    a_rs: usize,
    b: *const u32,
    b_rs: usize,
    cols: usize,
) -> Tile {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (ap, bp) = (a.cast::<f32>(), b.cast::<f32>());
    let live = |v: usize| lanes(cols.saturating_sub(16 * v).min(16));
    let (m0, m1) = (live(0), live(1));
    let full = cols >= NR;
    for p in 0..kc {
        // SAFETY: p < kc and r < MR: A's row r step p and the masked loads' columns < cols
        // of B's step p are readable (the caller's promise).
        unsafe {
            let (b0, b1) = if full {
                (_mm512_loadu_ps(bp.add(p * b_rs)), _mm512_loadu_ps(bp.add(p * b_rs + 16)))
            } else {
                (_mm512_maskz_loadu_ps(m0, bp.add(p * b_rs)), _mm512_maskz_loadu_ps(m1, bp.add(p * b_rs + 16)))
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let ar = _mm512_set1_ps(*ap.add(if STEP_MAJOR { p * MR + r } else { r * a_rs + p }));
                acc[0] = _mm512_fmadd_ps(ar, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(ar, b1, acc[1]);
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::super::gemm_crate::TestOperands;
    use super::super::packed::{Rhs, run};
    use super::*;

    #[test]
    fn matches_the_f64_product_in_both_layouts_and_at_every_edge() {
        if !available() {
            eprintln!("f32_x86: SKIPPED: this CPU has no AVX512-F");
            return;
        }
        // Straddling the tile (12×32), the depth block (128), the row block (120), the column
        // block (1024).
        for &(m, n, k) in &[(1, 1, 1), (13, 33, 7), (12, 32, 128), (25, 70, 259), (130, 40, 300), (3, 1094, 40)] {
            let ops = TestOperands::new(m, n, k);
            let (a, b) = (&ops.a, &ops.b);
            let want: Vec<f64> =
                (0..m * n).map(|e| (0..k).map(|p| a[(e / n) * k + p] as f64 * b[p * n + e % n] as f64).sum()).collect();
            for (lhs, rhs) in ops.layouts() {
                for accumulate in [false, true] {
                    let mut dst = vec![0.5f32; m * n];
                    // SAFETY: dst is m×n contiguous; the views cover their buffers exactly.
                    unsafe { run::<F32>(m, n, k, dst.as_mut_ptr(), n, lhs, Rhs::View(rhs), accumulate) };
                    let base = if accumulate { 0.5 } else { 0.0 };
                    for (got, want) in dst.iter().zip(&want) {
                        let tol = 1e-5 * (k as f64).sqrt() * (1.0 + want.abs());
                        assert!((*got as f64 - base - want).abs() <= tol, "{m}×{n}×{k}: {got} vs {}", want + base);
                    }
                }
            }
        }
    }

    /// A wide product up to 2·KC steps deep is packed as one depth block, but each tile's sums are
    /// still stored every KC steps: the result is that of the first KC steps, then the rest
    /// accumulated onto it, bit for bit (the summation order does not depend on the blocking).
    #[test]
    fn one_deep_block_sums_as_two_kc_blocks() {
        if !available() {
            eprintln!("f32_x86: SKIPPED: this CPU has no AVX512-F");
            return;
        }
        // Wide outputs 193 to 256 deep take one packed block (with A packed, and read in place
        // for a narrow one); the others are KC blocks already.
        for &(m, n, k) in &[(13, 300, 256), (130, 260, 200), (12, 1030, 255), (25, 70, 256), (12, 1030, 129)] {
            let ops = TestOperands::new(m, n, k);
            for (lhs, rhs) in ops.layouts() {
                for accumulate in [false, true] {
                    let mut whole = vec![0.5f32; m * n];
                    let mut halves = whole.clone();
                    // SAFETY: dst is m×n contiguous; the views cover their buffers exactly, and
                    // the second half's views start at column/row 128 of A/B.
                    unsafe {
                        run::<F32>(m, n, k, whole.as_mut_ptr(), n, lhs, Rhs::View(rhs), accumulate);
                        run::<F32>(m, n, 128, halves.as_mut_ptr(), n, lhs, Rhs::View(rhs), accumulate);
                        let (lhs2, rhs2) = (
                            MatRef { offset: lhs.offset + 128 * lhs.cs, ..lhs },
                            MatRef { offset: rhs.offset + 128 * rhs.rs, ..rhs },
                        );
                        run::<F32>(m, n, k - 128, halves.as_mut_ptr(), n, lhs2, Rhs::View(rhs2), true);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&whole), bits(&halves), "{m}×{n}×{k}, accumulate {accumulate}");
                }
            }
        }
    }
}
