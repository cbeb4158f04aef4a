//! AVX-512 kernels of the f32 Winograd transforms (`winograd.rs` has the maths and the portable
//! versions, which these must match bit for bit).
//!
//! The portable versions make five passes over a plane: row copies into a zero-padded buffer
//! (one `memcpy` call per image row of 14 or 28 floats), a parity split, row transforms into
//! scratch, column transforms, and scalar loops for the last `t mod 16` tiles of every pass.
//! Here each transform is two passes: the parity split straight from the image rows (masked
//! loads, one two-source permute per 32 padded columns), then one pass over the tiles that keeps
//! all sixteen values of a tile in registers and writes the sixteen outputs with masked stores.
//! The arithmetic is the same operations in the same order, so the results are identical.
//!
//! Two memory effects were worth more than the pass count (W5 step at 2 threads, 172 → 157 ms
//! for all three together): the tile rows start wherever the tile counts put them, so every
//! 16-lane store of a long pass spanned two cache lines until the first vector was cut short to
//! reach a line boundary ([`vectors`]); and each plane (3 KB at 28×28) is a new short stream for
//! the hardware prefetchers, so the next one is prefetched while this one is transformed.

use super::ConvGeom;
use crate::ops::conv::simd_x86::{EVEN, ODD, ZIP_HI, ZIP_LO, first, idx, lanes, prefetch_next, vectors};
use std::arch::x86_64::*;

/// The grid buffers of one parity row `pr`: `grid[2·pr]` and `grid[2·pr + 1]`.
fn pair<'a>(grid: &'a mut [&mut [f32]; 4], pr: usize) -> (&'a mut [f32], &'a mut [f32]) {
    let [g0, g1, g2, g3] = grid;
    if pr == 0 { (g0, g1) } else { (g2, g3) }
}

/// `winograd::input_transform` for f32: `V_ξ[off + q] = (Bᵀ d B)_ξ` for every tile of one input
/// plane, through the parity grids `grid` (each at least `(th + 1)·(tw + 1) + 32` long).
#[target_feature(enable = "avx512f")]
pub(super) fn input_transform(
    plane: &[f32],
    g: &ConvGeom,
    v: &mut [f32],
    stride: usize,
    off: usize,
    mut grid: [&mut [f32]; 4],
) {
    let (h, w, (ph, pw)) = (g.h, g.w, g.padding);
    let (th, tw) = g.tiles();
    let s = tw + 1;
    prefetch_next::<_MM_HINT_T0>(plane);
    for r in 0..2 * (th + 1) {
        let (e, o) = pair(&mut grid, r % 2);
        let at = (r / 2) * s..(r / 2 + 1) * s;
        let (e, o) = (&mut e[at.clone()], &mut o[at]);
        match r.checked_sub(ph).filter(|&iy| iy < h) {
            Some(iy) => split_row(&plane[iy * w..(iy + 1) * w], pw, e, o, s),
            None => {
                e.fill(0.0);
                o.fill(0.0);
            }
        }
    }
    let [g0, g1, g2, g3] = grid;
    input_tiles([&*g0, &*g1, &*g2, &*g3], s, th * s, v, stride, off);
}

/// `winograd::dy_transform` for f32: `E_ξ[off + q] = (A dY Aᵀ)_ξ` for every tile of one
/// output-gradient plane, through the parity grids `grid` (each at least `th·(tw + 1) + 16`).
#[target_feature(enable = "avx512f")]
pub(super) fn dy_transform(
    plane: &[f32],
    g: &ConvGeom,
    e: &mut [f32],
    stride: usize,
    off: usize,
    mut grid: [&mut [f32]; 4],
) {
    let (oh, ow) = (g.oh, g.ow);
    let (th, tw) = g.tiles();
    let s = tw + 1;
    prefetch_next::<_MM_HINT_T0>(plane);
    for oy in 0..2 * th {
        let (ge, go) = pair(&mut grid, oy % 2);
        let at = (oy / 2) * s..(oy / 2 + 1) * s;
        let (ge, go) = (&mut ge[at.clone()], &mut go[at]);
        if oy < oh {
            split_row(&plane[oy * ow..(oy + 1) * ow], 0, ge, go, s);
        } else {
            ge.fill(0.0);
            go.fill(0.0);
        }
    }
    let [g0, g1, g2, g3] = grid;
    dy_tiles([&*g0, &*g1, &*g2, &*g3], th * s, e, stride, off);
}

/// `winograd::output_transform` for f32: one output plane `(OH, OW)` from its tiles' GEMM
/// results, `Y = Aᵀ M A + bias`, through the tile buffers `y` (each at least
/// `th·(tw + 1) + 16` long).
#[target_feature(enable = "avx512f")]
pub(super) fn output_transform(
    m: &[f32],
    stride: usize,
    off: usize,
    out: &mut [f32],
    g: &ConvGeom,
    bias: f32,
    y: [&mut [f32]; 4],
) {
    let (th, tw) = g.tiles();
    let s = tw + 1;
    // The next output plane, with intent to write (its lines are not in any cache yet).
    prefetch_next::<_MM_HINT_ET0>(out);
    let [y0, y1, y2, y3] = y;
    output_tiles(m, stride, off, th * s, bias, [&mut *y0, &mut *y1, &mut *y2, &mut *y3]);
    let y = [&*y0, &*y1, &*y2, &*y3];
    for (oy, dst) in out.chunks_exact_mut(g.ow).take(g.oh).enumerate() {
        let (a, at) = (oy % 2, (oy / 2) * s);
        zip_row(&y[2 * a][at..], &y[2 * a + 1][at..], dst);
    }
}

/// Splits one row by column parity: with `padded[x] = src[x − pad]` (zero outside `src`),
/// `even[k] = padded[2k]` and `odd[k] = padded[2k + 1]` for `k < s`.
#[target_feature(enable = "avx512f")]
fn split_row(src: &[f32], pad: usize, even: &mut [f32], odd: &mut [f32], s: usize) {
    assert!(even.len() >= s && odd.len() >= s);
    let (w, pad) = (src.len() as isize, pad as isize);
    let (ie, io) = (idx(&EVEN), idx(&ODD));
    for k0 in (0..s).step_by(16) {
        let base = 2 * k0 as isize - pad;
        let (m_lo, m_hi) = (lanes(base, 0, w), lanes(base + 16, 0, w));
        let m_out = first(s - k0);
        // SAFETY: the loads touch only lanes with 0 ≤ index < src.len() (masked-off lanes are
        // never accessed, and `wrapping_offset` only forms the address); the stores write
        // lanes k0.. < s ≤ even.len(), odd.len().
        unsafe {
            let lo = _mm512_maskz_loadu_ps(m_lo, src.as_ptr().wrapping_offset(base));
            let hi = _mm512_maskz_loadu_ps(m_hi, src.as_ptr().wrapping_offset(base + 16));
            _mm512_mask_storeu_ps(even.as_mut_ptr().add(k0), m_out, _mm512_permutex2var_ps(lo, ie, hi));
            _mm512_mask_storeu_ps(odd.as_mut_ptr().add(k0), m_out, _mm512_permutex2var_ps(lo, io, hi));
        }
    }
}

/// Interleaves `even[k]`, `odd[k]` into `dst[2k]`, `dst[2k + 1]` for `2k + 1 < dst.len()`
/// (and `dst[2k] = even[k]` for the last one of an odd length). `even` and `odd` need 16
/// readable elements past `dst.len() / 2`.
#[target_feature(enable = "avx512f")]
fn zip_row(even: &[f32], odd: &[f32], dst: &mut [f32]) {
    let n = dst.len();
    assert!(even.len() >= n.div_ceil(2).next_multiple_of(16) && odd.len() >= n.div_ceil(2).next_multiple_of(16));
    let (zl, zh) = (idx(&ZIP_LO), idx(&ZIP_HI));
    for k0 in (0..n.div_ceil(2)).step_by(16) {
        let x0 = 2 * k0;
        // SAFETY: the loads read k0..k0 + 16 ≤ even.len(), odd.len() (asserted); the stores
        // write lanes x0.. < n = dst.len().
        unsafe {
            let e = _mm512_loadu_ps(even.as_ptr().add(k0));
            let o = _mm512_loadu_ps(odd.as_ptr().add(k0));
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(x0), first(n - x0), _mm512_permutex2var_ps(e, zl, o));
            if n > x0 + 16 {
                _mm512_mask_storeu_ps(
                    dst.as_mut_ptr().add(x0 + 16),
                    first(n - x0 - 16),
                    _mm512_permutex2var_ps(e, zh, o),
                );
            }
        }
    }
}

/// The fused row and column transforms of the input transform, `V = Bᵀ d B`, for tiles
/// `q < t`: `grid[2·pr + pc]` are the parity grids with row length `s` (readable up to
/// `t + s + 17`), and position ξ's outputs go to `v[ξ·stride + off + q]`.
#[target_feature(enable = "avx512f")]
fn input_tiles(grid: [&[f32]; 4], s: usize, t: usize, v: &mut [f32], stride: usize, off: usize) {
    assert!(grid.iter().all(|g| g.len() >= t + s + 17));
    assert!(t == 0 || v.len() >= 15 * stride + off + t);
    let vp = v.as_mut_ptr();
    for (q, m) in vectors(vp.wrapping_add(off), t) {
        // SAFETY: loads read below q + 16 + s + 1 ≤ t + s + 17 ≤ grid lengths; stores write
        // lanes below t at ξ·stride + off + q, inside v (both asserted above).
        unsafe {
            let ld = |g: &[f32], i: usize| _mm512_loadu_ps(g.as_ptr().add(i));
            // Tile rows 0..4 are parity rows (0, q), (1, q), (0, q + s), (1, q + s); d·B of
            // each (columns e[q], o[q], e[q + 1], o[q + 1]).
            let row = |pr: usize, at: usize| {
                let (e, o) = (grid[2 * pr], grid[2 * pr + 1]);
                let (d0, d1, d2, d3) = (ld(e, at), ld(o, at), ld(e, at + 1), ld(o, at + 1));
                [_mm512_sub_ps(d0, d2), _mm512_add_ps(d1, d2), _mm512_sub_ps(d2, d1), _mm512_sub_ps(d1, d3)]
            };
            let (h0, h1, h2, h3) = (row(0, q), row(1, q), row(0, q + s), row(1, q + s));
            for j in 0..4 {
                let at = |i: usize| vp.add((i * 4 + j) * stride + off + q);
                _mm512_mask_storeu_ps(at(0), m, _mm512_sub_ps(h0[j], h2[j]));
                _mm512_mask_storeu_ps(at(1), m, _mm512_add_ps(h1[j], h2[j]));
                _mm512_mask_storeu_ps(at(2), m, _mm512_sub_ps(h2[j], h1[j]));
                _mm512_mask_storeu_ps(at(3), m, _mm512_sub_ps(h1[j], h3[j]));
            }
        }
    }
}

/// The fused `E = A dY Aᵀ` of the weight gradient for tiles `q < t`: `grid[2a + b][q]` holds
/// `dY[2ty + a, 2tx + b]` (readable up to `t + 16`), and position ξ's outputs go to
/// `e[ξ·stride + off + q]`.
#[target_feature(enable = "avx512f")]
fn dy_tiles(grid: [&[f32]; 4], t: usize, e: &mut [f32], stride: usize, off: usize) {
    assert!(grid.iter().all(|g| g.len() >= t + 16));
    assert!(t == 0 || e.len() >= 15 * stride + off + t);
    let ep = e.as_mut_ptr();
    for (k, m) in vectors(ep.wrapping_add(off), t) {
        // SAFETY: loads read below k + 16 ≤ t + 16 ≤ grid lengths; stores write lanes below t
        // at ξ·stride + off + k, inside e (both asserted above).
        unsafe {
            let ld = |i: usize| _mm512_loadu_ps(grid[i].as_ptr().add(k));
            let (p, q, r, w) = (ld(0), ld(1), ld(2), ld(3));
            // −x as a sign flip, like the portable version's negation (0 − x would turn −0
            // into +0).
            let sign = _mm512_set1_epi32(i32::MIN);
            let neg = |x: __m512| _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), sign));
            let rows = [
                (p, q),
                (_mm512_add_ps(p, r), _mm512_add_ps(q, w)),
                (_mm512_sub_ps(p, r), _mm512_sub_ps(q, w)),
                (neg(r), neg(w)),
            ];
            for (i, (u, v)) in rows.into_iter().enumerate() {
                let at = |j: usize| ep.add((4 * i + j) * stride + off + k);
                _mm512_mask_storeu_ps(at(0), m, u);
                _mm512_mask_storeu_ps(at(1), m, _mm512_add_ps(u, v));
                _mm512_mask_storeu_ps(at(2), m, _mm512_sub_ps(u, v));
                _mm512_mask_storeu_ps(at(3), m, neg(v));
            }
        }
    }
}

/// The fused `Y = Aᵀ M A + bias` of the output transform for tiles `q < t`, with position ξ's
/// GEMM results at `m[ξ·stride + off + q]`: `y[2a + b][q]` (writable up to `t + 16`) gets the
/// tile's output `(a, b)`.
#[target_feature(enable = "avx512f")]
fn output_tiles(m: &[f32], stride: usize, off: usize, t: usize, bias: f32, y: [&mut [f32]; 4]) {
    assert!(t == 0 || m.len() >= 15 * stride + off + t);
    assert!(y.iter().all(|y| y.len() >= t + 16));
    let [y0, y1, y2, y3] = y;
    let ys = [y0.as_mut_ptr(), y1.as_mut_ptr(), y2.as_mut_ptr(), y3.as_mut_ptr()];
    let mp = m.as_ptr();
    for (q, mask) in vectors(mp.wrapping_add(off), t) {
        // SAFETY: masked loads read lanes below t at ξ·stride + off + q, inside m; stores write
        // q..q + 16 ≤ t + 16 ≤ y lengths (both asserted above).
        unsafe {
            let ld = |xi: usize| _mm512_maskz_loadu_ps(mask, mp.add(xi * stride + off + q));
            let b = _mm512_set1_ps(bias);
            // Aᵀ·M: r_a[j] = m0j + m1j + m2j (a = 0), m1j − m2j − m3j (a = 1).
            let col = |j: usize| {
                let (m0, m1, m2, m3) = (ld(j), ld(4 + j), ld(8 + j), ld(12 + j));
                (_mm512_add_ps(_mm512_add_ps(m0, m1), m2), _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3))
            };
            let cols = [col(0), col(1), col(2), col(3)];
            let r = [cols.map(|c| c.0), cols.map(|c| c.1)];
            for (a, r) in r.iter().enumerate() {
                let ya = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]), b);
                let yb = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]), b);
                _mm512_storeu_ps(ys[2 * a].add(q), ya);
                _mm512_storeu_ps(ys[2 * a + 1].add(q), yb);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The AVX-512 transforms against the portable ones, bit for bit, on planes whose rows
    //! span one, two and three 16-lane chunks, every padding, and odd and even outputs.

    use super::super::{Scratch, dy_transform_wide, input_transform_wide, output_transform_wide};
    use super::ConvGeom;

    fn geom(h: usize, w: usize, padding: (usize, usize)) -> ConvGeom {
        let (oh, ow) = (h + 2 * padding.0 - 2, w + 2 * padding.1 - 2);
        let (kh, kw, stride, dilation, groups) = (3, 3, (1, 1), (1, 1), 1);
        ConvGeom { n: 1, c: 8, h, w, o: 8, kh, kw, stride, padding, dilation, groups, oh, ow, fast: false }
    }

    /// Deterministic values with signed zeros among them (the negations must keep their sign).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                match i % 11 {
                    3 => 0.0,
                    7 => -0.0,
                    _ => (state % 2001) as f32 / 1000.0 - 1.0,
                }
            })
            .collect()
    }

    #[test]
    fn avx512_transforms_match_the_portable_ones_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let sizes = [(3, 3), (4, 5), (7, 6), (14, 14), (28, 28), (31, 9), (40, 33), (5, 70)];
        let mut checked = 0;
        for (h, w) in sizes {
            for padding in [(0, 0), (1, 1), (2, 1), (0, 2)] {
                let g = geom(h, w, padding);
                if g.oh == 0 || g.ow == 0 || g.h + 2 * g.padding.0 < 3 || g.w + 2 * g.padding.1 < 3 {
                    continue;
                }
                let (th, tw) = g.tiles();
                let t = th * (tw + 1);
                // Rows of 16 positions with a gap, at an offset, inside a longer buffer: the
                // kernels must write exactly the tiles and nothing around them, and the offsets
                // move the rows' alignment (the kernels cut their first vector short to reach a
                // cache-line boundary).
                let (stride, off) = (t + 5, [3, 0, 13, 8, 1][checked % 5]);
                let plane = values(h * w, (h * 100 + w) as u32);
                let (mut sa, mut sb) = (Scratch::<f32>::new(&g), Scratch::<f32>::new(&g));

                let mut va = values(16 * stride + 9, 1);
                let mut vb = va.clone();
                let grid = super::super::f32s4(&mut sa.grid).unwrap();
                // SAFETY: AVX-512F is present (checked at the top).
                unsafe { super::input_transform(&plane, &g, &mut va, stride, off, grid) };
                input_transform_wide(&plane, &g, &mut vb, stride, off, &mut sb);
                assert_eq!(
                    first_difference(&va, &vb),
                    None,
                    "input transform, {h}×{w}, padding {padding:?}, stride {stride}"
                );

                let dy = values(g.oh * g.ow, 7);
                let (mut ea, mut eb) = (values(16 * stride + 9, 2), values(16 * stride + 9, 2));
                let grid = super::super::f32s4(&mut sa.grid).unwrap();
                // SAFETY: as above.
                unsafe { super::dy_transform(&dy, &g, &mut ea, stride, off, grid) };
                dy_transform_wide(&dy, &g, &mut eb, stride, off, &mut sb);
                assert_eq!(
                    first_difference(&ea, &eb),
                    None,
                    "dY transform, {h}×{w}, padding {padding:?}, stride {stride}"
                );

                let m = values(16 * stride + 9, 3);
                let (mut oa, mut ob) = (values(g.oh * g.ow, 4), values(g.oh * g.ow, 5));
                let y = super::super::f32s4(&mut sa.y).unwrap();
                // SAFETY: as above.
                unsafe { super::output_transform(&m, stride, off, &mut oa, &g, 0.25, y) };
                output_transform_wide(&m, stride, off, &mut ob, &g, 0.25, &mut sb);
                assert_eq!(
                    first_difference(&oa, &ob),
                    None,
                    "output transform, {h}×{w}, padding {padding:?}, stride {stride}"
                );
                sa.give();
                sb.give();
                checked += 1;
            }
        }
        assert!(checked >= 28, "only {checked} geometries checked");
    }

    /// The first index where `a` and `b` differ in bits, with both values.
    fn first_difference(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
        a.iter().zip(b).enumerate().find(|(_, (x, y))| x.to_bits() != y.to_bits()).map(|(i, (x, y))| (i, *x, *y))
    }
}
