//! Winograd F(4×4, 3×3) for f32 on AVX-512: 36 products per 4×4 output tile and input channel
//! instead of F(2×2)'s 64 (16 per 2×2 tile), so the GEMMs shrink by 44% before tile padding
//! (0.60× of F(2×2)'s work at 28×28 outputs). It is chosen only for planes of at least
//! [`MIN_TILES`] tiles: at 14×14 (20 tiles) the transforms' vectors run mostly empty, and
//! F(2×2) was faster there.
//!
//! With the 6×6 input tile `d` (rows and columns `4·ty − p ..`), one 3×3 kernel `g` and
//!
//! ```text
//! Bᵀ = [4  0 −5  0  1  0]   G = [ 1/4     0     0 ]   Aᵀ = [1  1  1  1  1  0]
//!      [0 −4 −4  1  1  0]       [−1/6  −1/6  −1/6 ]        [0  1 −1  2 −2  0]
//!      [0  4 −4 −1  1  0]       [−1/6   1/6  −1/6 ]        [0  1  1  4  4  0]
//!      [0 −2 −1  2  1  0]       [1/24  1/12   1/6 ]        [0  1 −1  8 −8  1]
//!      [0  2 −1 −2  1  0]       [1/24 −1/12   1/6 ]
//!      [0  4  0 −5  0  1]       [   0     0     1 ]
//! ```
//!
//! (Lavin & Gray's interpolation points 0, ±1, ±2, ∞) the tile's output is
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, and `winograd.rs` runs it through the same blocks, GEMMs
//! and weight-gradient identity as F(2×2). The layout generalises F(2×2)'s parity grids: the
//! padded plane is split by row and column phase mod 4 into sixteen `(th + 1)×(tw + 1)` grids,
//! and tile `q = ty·(tw + 1) + tx` reads its 36 inputs at `q`, `q + 1`, `q + tw + 1` and
//! `q + tw + 2` of those, so every transform is a pass of 16-lane vectors over all of a plane's
//! tiles (one padding tile column per row, as in F(2×2)).
//!
//! The transform constants (up to 8 in Aᵀ, 5 in Bᵀ) amplify rounding: the f32 results differ
//! from im2col's by a few parts in 10⁵ of the inputs' magnitude rather than F(2×2)'s few ulps.
//! cuDNN and oneDNN make the same trade. It is only used where the AVX-512 kernels run, so f64
//! and other CPUs keep F(2×2): an f32 convolution's last digits differ between CPUs with and
//! without AVX-512. On one machine the results are the same for any thread count, like
//! F(2×2)'s.

use super::{ConvGeom, Tiling};
use crate::ops::conv::avx512;
use crate::ops::conv::simd_x86::{EVEN, ODD, ZIP_HI, ZIP_LO, first, idx, lanes, prefetch_next, vectors};
use crate::storage::Element;
use std::arch::x86_64::*;

/// Whether F(4×4) runs `g` (the caller has checked that the type is f32): when the caller chose
/// the fast algorithm (F(4×4)'s f32 error is ~10× PyTorch's), on AVX-512, and when its GEMMs are
/// at least 10% smaller than F(2×2)'s once both tilings' padding is counted.
pub(super) fn applies(g: &ConvGeom) -> bool {
    let ((th4, tw4), (th2, tw2)) = (g.tiles_of(4), g.tiles_of(2));
    g.fast && avx512() && th4 * (tw4 + 1) >= MIN_TILES && 10 * 36 * th4 * (tw4 + 1) <= 9 * 16 * th2 * (tw2 + 1)
}

/// The fewest tiles per plane for F(4×4): its transforms are vector passes over one plane's
/// tiles, and a 14×14 output's 20 tiles (two vectors, the second mostly empty) made the ResNet
/// step 6% slower than F(2×2)'s 56; a 28×28 output's 56 made it 6% faster.
const MIN_TILES: usize = 48;

/// The F(4×4, 3×3) tiling.
pub(super) struct F4;

/// G, 6×3.
const G: [[f64; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Per-task buffers, sized for one plane.
pub(super) struct Scratch4 {
    /// `grid[4·row phase + column phase]`, `[th + 1][tw + 1]` plus 32 slack elements (the tile
    /// pass reads whole vectors; the slack is zeroed, because the last tile's padding column
    /// reads into it and a NaN there would reach dW through 0·NaN).
    grid: Vec<Vec<f32>>,
    /// The output tiles' values `y[4a + b]`, `[th][tw + 1]` plus 16.
    y: Vec<Vec<f32>>,
}

impl Tiling<f32> for F4 {
    const M: usize = 4;
    type Scratch = Scratch4;
    fn g_row(a: usize) -> [f64; 3] {
        G[a]
    }
    fn scratch(g: &ConvGeom) -> Scratch4 {
        let (th, tw) = g.tiles_of(4);
        let s = tw + 1;
        Scratch4 {
            grid: (0..16).map(|_| f32::zeroed_buffer((th + 1) * s + 32)).collect(),
            y: (0..16).map(|_| f32::take_buffer(th * s + 16)).collect(),
        }
    }
    fn give(sc: Scratch4) {
        sc.grid.into_iter().chain(sc.y).for_each(f32::give_buffer);
    }
    fn input_transform(plane: &[f32], g: &ConvGeom, v: &mut [f32], stride: usize, off: usize, sc: &mut Scratch4) {
        assert!(avx512());
        // SAFETY: the CPU supports AVX-512F (asserted).
        unsafe { input_transform(plane, g, v, stride, off, sc) }
    }
    fn output_transform(
        m: &[f32],
        stride: usize,
        off: usize,
        out: &mut [f32],
        g: &ConvGeom,
        bias: f32,
        sc: &mut Scratch4,
    ) {
        assert!(avx512());
        // SAFETY: the CPU supports AVX-512F (asserted).
        unsafe { output_transform(m, stride, off, out, g, bias, sc) }
    }
    fn dy_transform(plane: &[f32], g: &ConvGeom, e: &mut [f32], stride: usize, off: usize, sc: &mut Scratch4) {
        assert!(avx512());
        // SAFETY: the CPU supports AVX-512F (asserted).
        unsafe { dy_transform(plane, g, e, stride, off, sc) }
    }
}

/// Interleave pairs: `a0 a1 b0 b1 a2 a3 b2 b3 …` from the first 8 of each, then the last 8.
const PAIRS_LO: [i32; 16] = [0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23];
const PAIRS_HI: [i32; 16] = [8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31];

/// Splits one row by column phase mod 4: with `padded[x] = src[x − pad]` (zero outside `src`),
/// `out[p][k] = padded[4k + p]` for `k < s`.
#[target_feature(enable = "avx512f")]
fn split4(src: &[f32], pad: usize, mut out: [&mut [f32]; 4], s: usize) {
    assert!(out.iter().all(|o| o.len() >= s));
    let (w, pad) = (src.len() as isize, pad as isize);
    let (even, odd) = (idx(&EVEN), idx(&ODD));
    for k0 in (0..s).step_by(16) {
        let base = 4 * k0 as isize - pad;
        let m = first(s - k0);
        // SAFETY: the loads touch only lanes inside src (masked-off lanes are never accessed;
        // `wrapping_offset` only forms the address); the stores write k0.. < s ≤ out lengths.
        unsafe {
            let ld = |i: isize| {
                _mm512_maskz_loadu_ps(lanes(base + 16 * i, 0, w), src.as_ptr().wrapping_offset(base + 16 * i))
            };
            let (v0, v1, v2, v3) = (ld(0), ld(1), ld(2), ld(3));
            // padded[base + 2i] and [base + 2i + 1] for i < 32, then every fourth.
            let (a, b) = (_mm512_permutex2var_ps(v0, even, v1), _mm512_permutex2var_ps(v2, even, v3));
            let (c, d) = (_mm512_permutex2var_ps(v0, odd, v1), _mm512_permutex2var_ps(v2, odd, v3));
            let phases = [
                _mm512_permutex2var_ps(a, even, b),
                _mm512_permutex2var_ps(c, even, d),
                _mm512_permutex2var_ps(a, odd, b),
                _mm512_permutex2var_ps(c, odd, d),
            ];
            for (o, p) in out.iter_mut().zip(phases) {
                _mm512_mask_storeu_ps(o.as_mut_ptr().add(k0), m, p);
            }
        }
    }
}

/// `dst[4k + p] = y[p][k]` for `4k + p < dst.len()`; each `y[p]` needs 16 readable elements
/// past `⌈dst.len()/4⌉` rounded up to 16.
#[target_feature(enable = "avx512f")]
fn zip4(y: [&[f32]; 4], dst: &mut [f32]) {
    let n = dst.len();
    let k_end = n.div_ceil(4);
    assert!(y.iter().all(|y| y.len() >= k_end.next_multiple_of(16)));
    let (zl, zh, pl, ph) = (idx(&ZIP_LO), idx(&ZIP_HI), idx(&PAIRS_LO), idx(&PAIRS_HI));
    for k0 in (0..k_end).step_by(16) {
        // SAFETY: the loads read k0..k0 + 16 ≤ the y lengths (asserted); the stores write lanes
        // below n from 4·k0.
        unsafe {
            let ld = |p: usize| _mm512_loadu_ps(y[p].as_ptr().add(k0));
            let (y0, y1, y2, y3) = (ld(0), ld(1), ld(2), ld(3));
            // (y0 y1) and (y2 y3) interleaved, then their pairs interleaved: y0 y1 y2 y3 per k.
            let (a_lo, a_hi) = (_mm512_permutex2var_ps(y0, zl, y1), _mm512_permutex2var_ps(y0, zh, y1));
            let (b_lo, b_hi) = (_mm512_permutex2var_ps(y2, zl, y3), _mm512_permutex2var_ps(y2, zh, y3));
            let outs = [
                _mm512_permutex2var_ps(a_lo, pl, b_lo),
                _mm512_permutex2var_ps(a_lo, ph, b_lo),
                _mm512_permutex2var_ps(a_hi, pl, b_hi),
                _mm512_permutex2var_ps(a_hi, ph, b_hi),
            ];
            for (i, o) in outs.into_iter().enumerate() {
                let x0 = 4 * k0 + 16 * i;
                if x0 >= n {
                    break;
                }
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(x0), first(n - x0), o);
            }
        }
    }
}

/// `Bᵀ·d` for six vectors of tiles.
#[inline]
#[target_feature(enable = "avx512f")]
fn bt(d: [__m512; 6]) -> [__m512; 6] {
    let c = _mm512_set1_ps;
    let (s12, d12) = (_mm512_add_ps(d[1], d[2]), _mm512_sub_ps(d[1], d[2]));
    let (s34, d43) = (_mm512_add_ps(d[3], d[4]), _mm512_sub_ps(d[4], d[3]));
    let (d31, d42) = (_mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[4], d[2]));
    [
        _mm512_fmadd_ps(c(4.0), d[0], _mm512_fmadd_ps(c(-5.0), d[2], d[4])),
        _mm512_fmadd_ps(c(-4.0), s12, s34),
        _mm512_fmadd_ps(c(4.0), d12, d43),
        _mm512_fmadd_ps(c(2.0), d31, d42),
        _mm512_fmadd_ps(c(-2.0), d31, d42),
        _mm512_fmadd_ps(c(4.0), d[1], _mm512_fmadd_ps(c(-5.0), d[3], d[5])),
    ]
}

/// `Aᵀ·m` for six vectors of tiles.
#[inline]
#[target_feature(enable = "avx512f")]
fn at(m: [__m512; 6]) -> [__m512; 4] {
    let c = _mm512_set1_ps;
    let (p, q) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
    let (r, t) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
    [
        _mm512_add_ps(_mm512_add_ps(m[0], p), r),
        _mm512_fmadd_ps(c(2.0), t, q),
        _mm512_fmadd_ps(c(4.0), r, p),
        _mm512_add_ps(_mm512_fmadd_ps(c(8.0), t, q), m[5]),
    ]
}

/// `A·y` (6 from 4) for four vectors of tiles.
#[inline]
#[target_feature(enable = "avx512f")]
fn a6(y: [__m512; 4]) -> [__m512; 6] {
    let c = _mm512_set1_ps;
    let (p, q) = (_mm512_add_ps(y[0], y[2]), _mm512_add_ps(y[1], y[3]));
    let p4 = _mm512_fmadd_ps(c(4.0), y[2], y[0]);
    let q2 = _mm512_fmadd_ps(c(8.0), y[3], _mm512_mul_ps(c(2.0), y[1]));
    [y[0], _mm512_add_ps(p, q), _mm512_sub_ps(p, q), _mm512_add_ps(p4, q2), _mm512_sub_ps(p4, q2), y[3]]
}

/// `V_ξ[off + q] = (Bᵀ d B)_ξ` for every tile of one input plane.
#[target_feature(enable = "avx512f")]
fn input_transform(plane: &[f32], g: &ConvGeom, v: &mut [f32], stride: usize, off: usize, sc: &mut Scratch4) {
    let (h, w, (ph, pw)) = (g.h, g.w, g.padding);
    let (th, tw) = g.tiles_of(4);
    let (s, t) = (tw + 1, th * (tw + 1));
    prefetch_next::<_MM_HINT_T0>(plane);
    for r in 0..4 * (th + 1) {
        let at = (r / 4) * s..(r / 4 + 1) * s;
        let [g0, g1, g2, g3] = &mut sc.grid[4 * (r % 4)..4 * (r % 4) + 4] else { unreachable!("four grids") };
        let out = [&mut g0[at.clone()], &mut g1[at.clone()], &mut g2[at.clone()], &mut g3[at]];
        match r.checked_sub(ph).filter(|&iy| iy < h) {
            Some(iy) => split4(&plane[iy * w..(iy + 1) * w], pw, out, s),
            None => out.into_iter().for_each(|o| o.fill(0.0)),
        }
    }
    let grid = &sc.grid;
    assert!(grid.iter().all(|g| g.len() >= t + s + 17));
    assert!(t == 0 || v.len() >= 35 * stride + off + t);
    let vp = v.as_mut_ptr();
    for (q, m) in vectors(vp.wrapping_add(off), t) {
        // SAFETY: loads read below q + 16 + s + 1 ≤ t + s + 17 ≤ grid lengths; stores write
        // lanes below t at ξ·stride + off + q, inside v (both asserted above).
        unsafe {
            // Input element (i, j) of the tiles: grid (i mod 4, j mod 4), offset (i/4)·s + j/4.
            let ld =
                |i: usize, j: usize| _mm512_loadu_ps(grid[(i % 4) * 4 + j % 4].as_ptr().add(q + (i / 4) * s + j / 4));
            // u = Bᵀ·d column by column, then V = u·B row by row. (Plain loops: a closure
            // handed to `array::from_fn` is not inlined into this AVX-512 function, and every
            // load became a call.)
            let zero = _mm512_setzero_ps();
            let mut cols = [[zero; 6]; 6];
            for (j, col) in cols.iter_mut().enumerate() {
                let mut d = [zero; 6];
                for (i, d) in d.iter_mut().enumerate() {
                    *d = ld(i, j);
                }
                *col = bt(d);
            }
            // `a` picks the second index of `cols` (a transpose), which no iterator gives.
            #[allow(clippy::needless_range_loop)]
            for a in 0..6 {
                let row = bt([cols[0][a], cols[1][a], cols[2][a], cols[3][a], cols[4][a], cols[5][a]]);
                for (b, val) in row.into_iter().enumerate() {
                    _mm512_mask_storeu_ps(vp.add((a * 6 + b) * stride + off + q), m, val);
                }
            }
        }
    }
}

/// `E_ξ[off + q] = (A dY Aᵀ)_ξ` for every tile of one output-gradient plane (zero past its
/// edges and in the padding column).
#[target_feature(enable = "avx512f")]
fn dy_transform(plane: &[f32], g: &ConvGeom, e: &mut [f32], stride: usize, off: usize, sc: &mut Scratch4) {
    let (oh, ow) = (g.oh, g.ow);
    let (th, tw) = g.tiles_of(4);
    let (s, t) = (tw + 1, th * (tw + 1));
    prefetch_next::<_MM_HINT_T0>(plane);
    for oy in 0..4 * th {
        let at = (oy / 4) * s..(oy / 4 + 1) * s;
        let [g0, g1, g2, g3] = &mut sc.grid[4 * (oy % 4)..4 * (oy % 4) + 4] else { unreachable!("four grids") };
        let out = [&mut g0[at.clone()], &mut g1[at.clone()], &mut g2[at.clone()], &mut g3[at]];
        if oy < oh {
            split4(&plane[oy * ow..(oy + 1) * ow], 0, out, s);
        } else {
            out.into_iter().for_each(|o| o.fill(0.0));
        }
    }
    let grid = &sc.grid;
    assert!(grid.iter().all(|g| g.len() >= t + 16));
    assert!(t == 0 || e.len() >= 35 * stride + off + t);
    let ep = e.as_mut_ptr();
    for (q, m) in vectors(ep.wrapping_add(off), t) {
        // SAFETY: loads read below q + 16 ≤ t + 16 ≤ grid lengths; stores write lanes below t
        // at ξ·stride + off + q, inside e (both asserted above).
        unsafe {
            let ld = |a: usize, b: usize| _mm512_loadu_ps(grid[a * 4 + b].as_ptr().add(q));
            // A·dY column by column, then ·Aᵀ row by row.
            let col = |b: usize| a6([ld(0, b), ld(1, b), ld(2, b), ld(3, b)]);
            let cols = [col(0), col(1), col(2), col(3)];
            // `i` picks the second index of `cols` (a transpose), which no iterator gives.
            #[allow(clippy::needless_range_loop)]
            for i in 0..6 {
                let row = a6([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
                for (j, val) in row.into_iter().enumerate() {
                    _mm512_mask_storeu_ps(ep.add((i * 6 + j) * stride + off + q), m, val);
                }
            }
        }
    }
}

/// One output plane `(OH, OW)` from its tiles' GEMM results, `Y = Aᵀ M A + bias`.
#[target_feature(enable = "avx512f")]
fn output_transform(m: &[f32], stride: usize, off: usize, out: &mut [f32], g: &ConvGeom, bias: f32, sc: &mut Scratch4) {
    let (th, tw) = g.tiles_of(4);
    let (s, t) = (tw + 1, th * (tw + 1));
    // The next output plane, with intent to write (its lines are in no cache yet).
    prefetch_next::<_MM_HINT_ET0>(out);
    assert!(t == 0 || m.len() >= 35 * stride + off + t);
    assert!(sc.y.len() == 16 && sc.y.iter().all(|y| y.len() >= t + 16));
    let mut ys = [std::ptr::null_mut::<f32>(); 16];
    for (p, y) in ys.iter_mut().zip(&mut sc.y) {
        *p = y.as_mut_ptr();
    }
    let mp = m.as_ptr();
    for (q, mask) in vectors(mp.wrapping_add(off), t) {
        // SAFETY: masked loads read lanes below t at ξ·stride + off + q, inside m; stores write
        // q..q + 16 ≤ t + 16 ≤ the y lengths through `ys`, whose 16 pointers all come from the
        // 16 y buffers (all asserted above).
        unsafe {
            let ld = |xi: usize| _mm512_maskz_loadu_ps(mask, mp.add(xi * stride + off + q));
            let b = _mm512_set1_ps(bias);
            // Aᵀ·M column by column, then ·A row by row.
            let zero = _mm512_setzero_ps();
            let mut cols = [[zero; 4]; 6];
            for (col, c) in cols.iter_mut().enumerate() {
                *c = at([ld(col), ld(6 + col), ld(12 + col), ld(18 + col), ld(24 + col), ld(30 + col)]);
            }
            for k in 0..4 {
                let row = at([cols[0][k], cols[1][k], cols[2][k], cols[3][k], cols[4][k], cols[5][k]]);
                for (l, val) in row.into_iter().enumerate() {
                    _mm512_storeu_ps(ys[k * 4 + l].add(q), _mm512_add_ps(val, b));
                }
            }
        }
    }
    for (oy, dst) in out.chunks_exact_mut(g.ow).take(g.oh).enumerate() {
        let (a, at) = (oy % 4, (oy / 4) * s);
        let y = &sc.y;
        zip4([&y[4 * a][at..], &y[4 * a + 1][at..], &y[4 * a + 2][at..], &y[4 * a + 3][at..]], dst);
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConvGeom;

    fn geom(hw: usize, c: usize) -> ConvGeom {
        let (kh, kw, stride, padding, dilation, groups) = (3, 3, (1, 1), (1, 1), (1, 1), 1);
        ConvGeom { n: 4, c, h: hw, w: hw, o: c, kh, kw, stride, padding, dilation, groups, oh: hw, ow: hw, fast: true }
    }

    /// F(4×4) takes a ResNet's 28×28 planes on AVX-512 (where the accuracy test in
    /// `conv/tests.rs` then exercises it) and larger ones, and leaves 14×14 planes (too few
    /// tiles) and 2×2 outputs (tiles mostly padding) to F(2×2).
    #[test]
    fn chosen_where_it_pays() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        assert!(super::applies(&geom(28, 32)));
        assert!(super::applies(&geom(56, 64)));
        assert!(!super::applies(&geom(14, 64)));
        assert!(!super::applies(&geom(2, 64)));
    }
}
