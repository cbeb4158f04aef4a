//! Building blocks of the f32 AVX-512 kernels of the convolutions (`winograd_x86.rs`,
//! `winograd4_x86.rs`, `cpu_x86.rs`): lane masks, permutation indices, the cache-line-aligned
//! pass over a row of tiles, and the next plane's prefetch.

use std::arch::x86_64::*;

/// Lane indices of the even (`0, 2, …, 30`) and odd elements of two concatenated vectors.
pub(crate) const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
pub(crate) const ODD: [i32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];
/// Lane indices that interleave `a[0..8]` with `b[0..8]` (`a0 b0 a1 b1 …`), and `a[8..]` with
/// `b[8..]`.
pub(crate) const ZIP_LO: [i32; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
pub(crate) const ZIP_HI: [i32; 16] = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];

/// A permutation index vector.
#[target_feature(enable = "avx512f")]
pub(crate) fn idx(i: &[i32; 16]) -> __m512i {
    // SAFETY: reads 16 i32s from a 16-element array.
    unsafe { _mm512_loadu_si512(i.as_ptr().cast()) }
}

/// The lanes `i` of a 16-lane vector with `lo ≤ base + i < hi`.
pub(crate) fn lanes(base: isize, lo: isize, hi: isize) -> __mmask16 {
    let from = (lo - base).clamp(0, 16) as u32;
    let to = (hi - base).clamp(0, 16) as u32;
    if to <= from {
        return 0;
    }
    (((1u32 << to) - 1) & !((1u32 << from) - 1)) as __mmask16
}

/// The first `n` lanes (all 16 for `n ≥ 16`).
pub(crate) fn first(n: usize) -> __mmask16 {
    if n >= 16 { 0xFFFF } else { ((1u32 << n) - 1) as __mmask16 }
}

/// The vectors of a pass over `t` tiles whose row in memory starts at `row`: `(q, lanes)` with
/// tiles `q..q + 16` and the mask of those below `t`. The first vector stops at a 64-byte
/// boundary of `row`, so that the others load or store whole cache lines (one that spans two
/// lines costs about twice as much, and the rows start wherever the tile counts put them).
pub(crate) fn vectors(row: *const f32, t: usize) -> impl Iterator<Item = (usize, __mmask16)> {
    let head = (16 - (row as usize / 4) % 16) % 16;
    let head = (head > 0 && t > 0).then(|| (0, first(head.min(t))));
    head.into_iter()
        .chain((head.map_or(0, |(_, m)| m.count_ones() as usize)..t).step_by(16).map(move |q| (q, first(t - q))))
}

/// Asks for the cache lines of the `len` floats after `plane` (the next plane of the same
/// tensor, which the callers transform next): without it every plane's rows arrive from
/// memory while the transform waits (a third of its time in the profile).
#[target_feature(enable = "avx512f")]
pub(crate) fn prefetch_next<const HINT: i32>(plane: &[f32]) {
    let next = plane.as_ptr().wrapping_add(plane.len()).cast::<i8>();
    for at in (0..size_of_val(plane)).step_by(64) {
        // A prefetch never faults, whatever the address (`wrapping_add` only forms it).
        _mm_prefetch::<HINT>(next.wrapping_add(at));
    }
}
