//! CPU kernels behind `conv2d`: im2col / col2im and the per-sample GEMMs (the `gemm` crate via
//! [`gemm`]). The geometry is in `geom.rs`; the task helpers, shared with pooling and batch norm,
//! in `ops/tasks.rs`.
//!
//! Layouts (all row-major): x `(N,C,H,W)`, weight `(O,C/g,kH,kW)`, out `(N,O,OH,OW)`. For one
//! sample the column matrix is `col (C·kH·kW, OH·OW)`; group `gi` owns the rows
//! `gi·K..(gi+1)·K` with `K = C/g·kH·kW`, so per group `out_g (O/g, L) = W_g (O/g, K) · col_g (K, L)`
//! with `L = OH·OW`.
//!
//! Determinism: samples are processed in chunks whose size depends only on the geometry (never on
//! the thread count); every output element and every per-chunk partial of d_weight is computed
//! by one task in a fixed order, and the partials are summed in chunk order.

use super::geom::{ConvGeom, shift_plan, valid_range};
#[cfg(target_arch = "x86_64")]
use super::{avx512, f32s, f32s_mut};
use crate::ops::matmul::cpu::{MatRef, gemm};
use crate::ops::prefetch;
use crate::ops::tasks::{LaneSum, for_each_chunk, map_tasks, parallel_for};
use crate::storage::Float;

#[cfg(target_arch = "x86_64")]
#[path = "cpu_x86.rs"]
mod x86;

/// Zeros a run of padding columns: usually one or two elements, stored directly rather than
/// through a `memset` call each.
#[inline(always)]
fn zero_edge<E: Copy + Default>(s: &mut [E]) {
    match s.len() {
        0 => {}
        1 => s[0] = E::default(),
        2 => {
            s[0] = E::default();
            s[1] = E::default();
        }
        _ => s.fill(E::default()),
    }
}

/// Column-matrix row `(ki, kj)` of a shift geometry ([`ConvGeom::is_shift`]) from one input
/// plane: one copy of the valid rows' span at a constant offset, then zeros (`E::default()`)
/// over the padded rows, the columns that wrapped around from a neighbour row, and whatever of
/// `row` lies past `OH·OW`. For f32 values (`im2col`) and bf16 bits (`rounded::Cols`).
#[inline(always)]
fn shift_row<E: Copy + Default>(plane: &[E], g: &ConvGeom, (ki, kj): (usize, usize), row: &mut [E]) {
    let ((y0, y1), (lo, hi), off) = shift_plan(g, ki, kj);
    let ow = g.ow;
    row[..y0 * ow].fill(E::default());
    row[(y1 * ow).max(y0 * ow)..].fill(E::default());
    if y0 < y1 && lo < hi {
        let (a, b) = (y0 * ow + lo, (y1 - 1) * ow + hi);
        let src = (a as isize + off) as usize;
        row[a..b].copy_from_slice(&plane[src..src + (b - a)]);
        for oy in y0..y1 {
            zero_edge(&mut row[oy * ow..oy * ow + lo]);
            zero_edge(&mut row[oy * ow + hi..(oy + 1) * ow]);
        }
    } else {
        row[y0 * ow..(y1 * ow).max(y0 * ow)].fill(E::default());
    }
}

crate::ops::wide_fn!(
    /// `col[(c,ki,kj), (oy,ox)] = x[c, oy·sh − ph + ki·dh, ox·sw − pw + kj·dw]`, 0 in the padding.
    /// `x` is one sample `(C,H,W)`, `col` is `(C·kH·kW, OH·OW)`; every element of `col` is written.
    pub(crate) fn im2col<T: Float>(x: &[T], g: &ConvGeom, col: &mut [T]) => im2col_loops
);

#[inline(always)]
fn im2col_loops<T: Float>(x: &[T], g: &ConvGeom, col: &mut [T]) {
    let (h, w, l) = (g.h, g.w, g.l());
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    let shift = g.is_shift();
    let mut rows = col.chunks_exact_mut(l.max(1));
    for (ci, plane) in x.chunks_exact(h * w).take(g.c).enumerate() {
        // Each plane is a new short stream that the hardware prefetchers would wait for.
        if let Some(next) = x.get((ci + 1) * h * w..(ci + 2) * h * w) {
            prefetch(next);
        }
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = rows.next().expect("col has C·kH·kW rows");
                if shift {
                    shift_row(plane, g, (ki, kj), row);
                    continue;
                }
                let (lo, hi) = valid_range(g.ow, sw, kj * dw, pw, w);
                for (oy, dst) in row.chunks_exact_mut(g.ow).enumerate() {
                    let iy = (oy * sh + ki * dh) as isize - ph as isize;
                    if iy < 0 || iy >= h as isize || lo == hi {
                        dst.fill(T::ZERO);
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    dst[..lo].fill(T::ZERO);
                    dst[hi..].fill(T::ZERO);
                    let x0 = lo * sw + kj * dw - pw;
                    match sw {
                        1 => dst[lo..hi].iter_mut().zip(&src[x0..x0 + hi - lo]).for_each(|(d, &s)| *d = s),
                        // A constant stride: the vectoriser gathers it with shuffles.
                        2 => gather_stride2(src, x0, &mut dst[lo..hi]),
                        _ => dst[lo..hi].iter_mut().enumerate().for_each(|(j, d)| *d = src[x0 + j * sw]),
                    }
                }
            }
        }
    }
}

/// `dst[j] = src[x0 + 2j]`: f32 on AVX-512 takes `cpu_x86.rs` (rows of 7–14 never fill a
/// vector of the portable loop).
#[inline(always)]
fn gather_stride2<T: Float>(src: &[T], x0: usize, dst: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if avx512()
        && let (Some(src), Some(dst)) = (f32s(src), f32s_mut(dst))
    {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { x86::gather_stride2(src, x0, dst) };
    }
    dst.iter_mut().zip(src[x0..].iter().step_by(2)).for_each(|(d, &s)| *d = s);
}

/// `dst[x0 + 2j] += src[j]`: f32 on AVX-512 takes `cpu_x86.rs`.
#[inline(always)]
fn scatter_add_stride2<T: Float>(src: &[T], dst: &mut [T], x0: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx512()
        && let (Some(src), Some(dst)) = (f32s(src), f32s_mut(dst))
    {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { x86::scatter_add_stride2(src, dst, x0) };
    }
    src.iter().enumerate().for_each(|(j, &v)| dst[x0 + j * 2] += v);
}

crate::ops::wide_fn!(
    /// The adjoint of [`im2col`]: `dx[c, iy, ix] += col[(c,ki,kj), (oy,ox)]` over every window
    /// position that read `(c, iy, ix)`. `dx` is one sample `(C,H,W)`. For a shift geometry the
    /// padded columns of `col` are zeroed (they are gradients of padding, which nobody needs) so
    /// that each row can be added as one span.
    pub(crate) fn col2im<T: Float>(col: &mut [T], g: &ConvGeom, dx: &mut [T]) => col2im_loops
);

#[inline(always)]
fn col2im_loops<T: Float>(col: &mut [T], g: &ConvGeom, dx: &mut [T]) {
    let (h, w, l) = (g.h, g.w, g.l());
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    let shift = g.is_shift();
    let mut rows = col.chunks_exact_mut(l.max(1));
    for plane in dx.chunks_exact_mut(h * w).take(g.c) {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = rows.next().expect("col has C·kH·kW rows");
                if shift {
                    let ((y0, y1), (lo, hi), off) = shift_plan(g, ki, kj);
                    let ow = g.ow;
                    if y0 >= y1 || lo >= hi {
                        continue;
                    }
                    for oy in y0..y1 {
                        zero_edge(&mut row[oy * ow..oy * ow + lo]);
                        zero_edge(&mut row[oy * ow + hi..(oy + 1) * ow]);
                    }
                    let (a, b) = (y0 * ow + lo, (y1 - 1) * ow + hi);
                    let dst = (a as isize + off) as usize;
                    plane[dst..dst + (b - a)].iter_mut().zip(&row[a..b]).for_each(|(d, &v)| *d += v);
                    continue;
                }
                let (lo, hi) = valid_range(g.ow, sw, kj * dw, pw, w);
                if lo == hi {
                    continue;
                }
                for (oy, src) in row.chunks_exact(g.ow).enumerate() {
                    let iy = (oy * sh + ki * dh) as isize - ph as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * w..(iy as usize + 1) * w];
                    let x0 = lo * sw + kj * dw - pw;
                    if sw == 1 {
                        dst[x0..x0 + hi - lo].iter_mut().zip(&src[lo..hi]).for_each(|(d, &v)| *d += v);
                    } else if sw == 2 {
                        scatter_add_stride2(&src[lo..hi], dst, x0);
                    } else {
                        src[lo..hi].iter().enumerate().for_each(|(j, &v)| dst[x0 + j * sw] += v);
                    }
                }
            }
        }
    }
}

/// One sample's column matrix `[C·kH·kW, L]`: the input itself for a pointwise (1×1, stride 1,
/// unpadded) convolution, whose columns are its rows as they lie; else im2col into `col`.
fn columns<'a, T: Float>(x_n: &'a [T], g: &ConvGeom, col: &'a mut [T]) -> &'a [T] {
    if g.is_pointwise() {
        x_n
    } else {
        im2col(x_n, g, col);
        col
    }
}

/// Forward: `out_n = bias + W_g · col(x_n)` per sample and group. `x` and `weight` contiguous.
pub(crate) fn conv2d_forward<T: Float>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    if g.winograd() {
        return super::winograd::conv2d(x, weight, bias, g);
    }
    let (l, k, og, chw) = (g.l(), g.k(), g.og(), g.chw());
    let per_sample = g.o * l;
    // Every element is written: by the bias fill, or by the GEMM (which then overwrites).
    let mut out = T::take_buffer(g.n * per_sample);
    let chunk = g.chunk();
    for_each_chunk(&mut out, chunk * per_sample, parallel_for(g.macs()), |ci, out_chunk| {
        let mut col = if g.is_pointwise() { Vec::new() } else { T::take_buffer(g.c * g.kh * g.kw * l) };
        for (j, out_n) in out_chunk.chunks_exact_mut(per_sample).enumerate() {
            let n = ci * chunk + j;
            let x_n = &x[n * chw..(n + 1) * chw];
            if let Some(b) = bias {
                for (row, &bv) in out_n.chunks_exact_mut(l.max(1)).zip(b) {
                    row.fill(bv);
                }
            }
            let cols = columns(x_n, g, &mut col);
            for gi in 0..g.groups {
                let lhs = MatRef { data: weight, offset: gi * og * k, rs: k, cs: 1 };
                let rhs = MatRef { data: cols, offset: gi * k * l, rs: l, cs: 1 };
                gemm(og, l, k, &mut out_n[gi * og * l..(gi + 1) * og * l], lhs, rhs, bias.is_some());
            }
        }
        T::give_buffer(col);
    });
    out
}

/// Backward for x and weight, summed over the samples of a chunk in order and then over chunks
/// in order. Returns `(d_x, d_weight)`, each only when asked for. Per sample and group:
///
/// - `d_W_gᵀ += col_g · dY_gᵀ`, accumulated transposed, `[K, O/g]` per group: in that
///   orientation the `gemm` crate reads the column matrix as it lies, where
///   `d_W_g = dY_g · col_gᵀ` would make it repack all of `col_g`, transposing, for every sample.
///   The small sum is transposed once at the end.
/// - `d_x`: at stride 1, the convolution of dY with the flipped, channel-swapped kernel
///   ([`ConvGeom::transposed`]): an im2col of dY and one GEMM with `K = O/g·kH·kW`, written
///   straight into d_x. Otherwise `d_col = W_gᵀ · dY_g` (a GEMM with `K = O/g`) scattered back
///   by col2im.
pub(crate) fn conv2d_backward<T: Float>(
    x: &[T],
    weight: &[T],
    dy: &[T],
    g: &ConvGeom,
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    if g.winograd() {
        // d_x as a Winograd convolution of dY (when the padding allows, see `transposed`), and
        // d_weight from the same tile transforms.
        let dx = need_dx.then(|| match g.transposed().filter(ConvGeom::winograd) {
            Some(t) => {
                let w_flip = flip_kernel(weight, g);
                let dx = super::winograd::conv2d(dy, &w_flip, None, &t);
                T::give_buffer(w_flip);
                dx
            }
            None => conv2d_backward_im2col(x, weight, dy, g, true, false).0.expect("d_x was asked for"),
        });
        // d_weight by Winograd only when the caller chose the fast algorithm: its transforms mix
        // positions, so an element that is exactly 0 (a dead channel, zero-padded borders) comes
        // out as rounding noise, and Adam, which divides each element by its own size, turns
        // that noise into steps of ±lr that PyTorch never takes (found by the random-model
        // differential test). im2col's GEMM keeps exact zeros exact.
        let dw = need_dw.then(|| {
            if g.fast {
                super::winograd::weight_grad(x, dy, g)
            } else {
                conv2d_backward_im2col(x, weight, dy, g, false, true).1.expect("d_weight was asked for")
            }
        });
        return (dx, dw);
    }
    conv2d_backward_im2col(x, weight, dy, g, need_dx, need_dw)
}

/// [`conv2d_backward`] through im2col / col2im and the `gemm` crate.
fn conv2d_backward_im2col<T: Float>(
    x: &[T],
    weight: &[T],
    dy: &[T],
    g: &ConvGeom,
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    let tg = g.transposed();
    let (l, k, og, cg, chw) = (g.l(), g.k(), g.og(), g.cg(), g.chw());
    let per_out = g.o * l;
    let chunk = g.chunk();
    let n_chunks = g.n.div_ceil(chunk);
    let pointwise = g.is_pointwise();
    // The flipped kernel, [C/g·… per group: cg rows of (og, kH, kW)], for the transposed path.
    let w_flip = tg.filter(|_| need_dx).map(|_| flip_kernel(weight, g));
    // Every path writes each sample's d_x whole (col2im adds into it after zeroing it, in the
    // sample's task: a memset of the whole batch up front ran on one thread, and its pages had
    // left the cache by the time col2im came to them).
    let mut dx = need_dx.then(|| T::take_buffer(g.n * chw));
    let dx_chunks: Vec<Option<&mut [T]>> = match dx.as_mut() {
        Some(buf) => buf.chunks_mut(chunk * chw).map(Some).collect(),
        None => (0..n_chunks).map(|_| None).collect(),
    };
    let work = g.macs() * (need_dx as usize + need_dw as usize);
    let partials = map_tasks(dx_chunks, parallel_for(work), |ci, mut dx_chunk| {
        let first = ci * chunk;
        let last = (first + chunk).min(g.n);
        let mut col = if pointwise { Vec::new() } else { T::take_buffer(g.groups * k * l) };
        let mut col_dy = match (&tg, &w_flip) {
            (Some(t), Some(_)) => T::take_buffer(t.groups * t.k() * t.l()),
            _ => Vec::new(),
        };
        // [K, og] per group; the first sample's GEMM overwrites it.
        let mut dw_t = need_dw.then(|| T::take_buffer(g.o * k));
        // Under bf16 on the AVX512-BF16 kernel, a shift geometry's column matrix is built in
        // bf16 (see `rounded::Cols`).
        #[cfg(target_arch = "x86_64")]
        let mut rounded = need_dw.then(|| rounded::Cols::for_geometry::<T>(g)).flatten();
        for n in first..last {
            let x_n = &x[n * chw..(n + 1) * chw];
            let dy_off = n * per_out;
            if let Some(dw_t) = dw_t.as_mut() {
                'dw: {
                    #[cfg(target_arch = "x86_64")]
                    if let Some(cols) = rounded.as_mut() {
                        cols.weight_grad(x_n, g, dy, dy_off, dw_t, n > first);
                        break 'dw;
                    }
                    let cols = columns(x_n, g, &mut col);
                    for gi in 0..g.groups {
                        // dW_gᵀ (K×og) += col_g (K×L) · dY_gᵀ (L×og): dY_gᵀ is dY_g read with swapped strides.
                        let lhs = MatRef { data: cols, offset: gi * k * l, rs: l, cs: 1 };
                        let rhs = MatRef { data: dy, offset: dy_off + gi * og * l, rs: 1, cs: l };
                        gemm(k, og, l, &mut dw_t[gi * og * k..(gi + 1) * og * k], lhs, rhs, n > first);
                    }
                }
            }
            let Some(dx_chunk) = dx_chunk.as_deref_mut() else { continue };
            let dx_n = &mut dx_chunk[(n - first) * chw..(n - first + 1) * chw];
            if let (Some(t), Some(wf)) = (&tg, &w_flip) {
                // d_x_g (cg×HW) = W'_g (cg×K') · im2col(dY)_g (K'×HW).
                im2col(&dy[dy_off..dy_off + per_out], t, &mut col_dy);
                let (tk, tl) = (t.k(), t.l());
                for gi in 0..g.groups {
                    let lhs = MatRef { data: wf, offset: gi * cg * tk, rs: tk, cs: 1 };
                    let rhs = MatRef { data: &col_dy, offset: gi * tk * tl, rs: tl, cs: 1 };
                    gemm(cg, tl, tk, &mut dx_n[gi * cg * tl..(gi + 1) * cg * tl], lhs, rhs, false);
                }
                continue;
            }
            for gi in 0..g.groups {
                // d_col_g (K×L) = W_gᵀ (K×og) · dY_g (og×L).
                let lhs = MatRef { data: weight, offset: gi * og * k, rs: 1, cs: k };
                let rhs = MatRef { data: dy, offset: dy_off + gi * og * l, rs: l, cs: 1 };
                if pointwise {
                    gemm(k, l, og, &mut dx_n[gi * cg * l..(gi + 1) * cg * l], lhs, rhs, false);
                } else {
                    gemm(k, l, og, &mut col[gi * k * l..(gi + 1) * k * l], lhs, rhs, false);
                }
            }
            if !pointwise {
                dx_n.fill(T::ZERO);
                col2im(&mut col, g, dx_n);
            }
        }
        T::give_buffer(col);
        T::give_buffer(col_dy);
        dw_t
    });
    if let Some(wf) = w_flip {
        T::give_buffer(wf);
    }
    let dw = need_dw.then(|| {
        let mut parts = partials.into_iter().flatten();
        let mut total = parts.next().unwrap_or_else(|| T::zeroed_buffer(g.o * k));
        for p in parts {
            total.iter_mut().zip(&p).for_each(|(t, &v)| *t += v);
            T::give_buffer(p);
        }
        // [K, og] per group → [og, K] per group: PyTorch's [O, C/g, kH, kW].
        let mut dw = T::take_buffer(g.o * k);
        for (dst, src) in dw.chunks_exact_mut(og * k).zip(total.chunks_exact(og * k)) {
            for (kk, row) in src.chunks_exact(og).enumerate() {
                row.iter().enumerate().for_each(|(o, &v)| dst[o * k + kk] = v);
            }
        }
        T::give_buffer(total);
        dw
    });
    (dx, dw)
}

/// The weight gradient of a shift geometry ([`ConvGeom::is_shift`], one group) under bf16
/// autocast on the AVX512-BF16 kernel, with its column matrix built in bf16: the input is
/// rounded once (`vcvtne2ps2bf16`, 32 values an instruction) and each of the C·kH·kW rows copied
/// from it as 16-bit values, where the f32 path builds the f32 matrix (each input value copied
/// kH·kW times) and the product then reads all of it back to round and pack it. The product
/// reads the rounded rows in place (`matmul::cpu::rounded_lhs`). Same bits as that path: the
/// same rounded values, the same sums.
#[cfg(target_arch = "x86_64")]
mod rounded {
    use super::{ConvGeom, MatRef, shift_row};
    use crate::ops::conv::{f32s, f32s_mut};
    use crate::ops::matmul::cpu::rounded_lhs;
    use crate::storage::Float;

    thread_local! {
        /// The last [`Cols`]' buffers on this thread, reused by the next (a task per sample
        /// chunk, every convolution's backward).
        static SPARE: std::cell::RefCell<(Vec<u32>, Vec<u32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }

    /// A task's buffers: the rounded input and the rounded column matrix, two values a word.
    /// Every word a product reads is written for each sample (the rows past K only fill the
    /// tile's last micro-panel, whose extra rows are never stored), so reused buffers are not
    /// zeroed.
    pub(super) struct Cols {
        x: Vec<u32>,
        col: Vec<u32>,
        /// Words per column-matrix row: ⌈L/2⌉ (an odd L's last word pairs with zero).
        row_words: usize,
    }

    impl Cols {
        /// The buffers when `g`'s weight-gradient product takes this path now (f32, a shift
        /// geometry of one group, bf16 autocast on the AVX512-BF16 kernel), else `None`.
        pub(super) fn for_geometry<T: Float>(g: &ConvGeom) -> Option<Cols> {
            let (k, l) = (g.k(), g.l());
            let applies = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
                && g.is_shift()
                && g.groups == 1
                && !g.is_pointwise()
                && l > 0
                && rounded_lhs::applies(k, g.o, l);
            applies.then(|| {
                let row_words = l.div_ceil(2);
                let (mut x, mut col) = SPARE.with_borrow_mut(std::mem::take);
                x.resize(g.chw().div_ceil(2), 0);
                col.resize(rounded_lhs::rows(k) * row_words, 0);
                Cols { x, col, row_words }
            })
        }

        /// `dW ᵀ (K×O) (+)= col(x_n) (K×L) · dY_nᵀ (L×O)`, dY_n at `dy_off` of `dy`.
        pub(super) fn weight_grad<T: Float>(
            &mut self,
            x_n: &[T],
            g: &ConvGeom,
            dy: &[T],
            dy_off: usize,
            dw_t: &mut [T],
            accumulate: bool,
        ) {
            let (x_n, dy, dw_t) = (f32s(x_n).expect("f32"), f32s(dy).expect("f32"), f32s_mut(dw_t).expect("f32"));
            rounded_lhs::round_into(x_n, &mut self.x);
            self.im2col(g);
            let (k, l) = (g.k(), g.l());
            let rhs = MatRef { data: dy, offset: dy_off, rs: 1, cs: l };
            rounded_lhs::gemm(k, g.o, l, dw_t, &self.col, self.row_words, rhs, accumulate);
        }

        /// The column matrix from the rounded input, as the f32 shift path builds it: each
        /// row one copy of the valid span, zeros over padded rows and wrapped columns, and a
        /// zero after an odd row.
        fn im2col(&mut self, g: &ConvGeom) {
            let (hw, row_len) = (g.h * g.w, 2 * self.row_words);
            let x = halves(&self.x);
            // SAFETY: a u32 buffer seen as twice as many u16 (the alignment only falls).
            let col =
                unsafe { std::slice::from_raw_parts_mut(self.col.as_mut_ptr().cast::<u16>(), 2 * self.col.len()) };
            let mut r = 0;
            for plane in x.chunks_exact(hw).take(g.c) {
                for ki in 0..g.kh {
                    for kj in 0..g.kw {
                        shift_row(plane, g, (ki, kj), &mut col[r * row_len..(r + 1) * row_len]);
                        r += 1;
                    }
                }
            }
        }
    }

    impl Drop for Cols {
        fn drop(&mut self) {
            let bufs = (std::mem::take(&mut self.x), std::mem::take(&mut self.col));
            SPARE.with_borrow_mut(|spare| *spare = bufs);
        }
    }

    /// A u32 buffer seen as its 16-bit halves, low half first (little-endian x86-64).
    fn halves(v: &[u32]) -> &[u16] {
        // SAFETY: as in `im2col`: the same bytes, u16's alignment divides u32's.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u16>(), 2 * v.len()) }
    }

    #[cfg(test)]
    mod tests {
        use super::super::{gemm, im2col};
        use super::*;
        use crate::autocast::{Precision, autocast};

        /// The bf16-built weight gradient against the f32 path's (f32 im2col, then the bf16
        /// product rounding and packing it), over two samples (write, then accumulate): the
        /// same bits. Geometries: W5's 3×3 at 28×28, an odd L (7×5), a 5×5 kernel with
        /// padding 2, inputs with exact zeros, negative zeros and values that round up.
        #[test]
        fn bf16_columns_give_the_f32_paths_bits() {
            // (C, H, W, O, k, padding)
            for (c, h, w, o, kk, p) in [(8, 28, 28, 32, 3, 1), (4, 7, 5, 20, 3, 1), (3, 9, 11, 17, 5, 2)] {
                let g = ConvGeom {
                    n: 2,
                    c,
                    h,
                    w,
                    o,
                    kh: kk,
                    kw: kk,
                    stride: (1, 1),
                    padding: (p, p),
                    dilation: (1, 1),
                    groups: 1,
                    oh: h,
                    ow: w,
                    fast: false,
                };
                let (k, l) = (g.k(), g.l());
                let value = |i: usize, s: u32| -> f32 {
                    let v = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(s) >> 8) as f32 / (1 << 24) as f32;
                    match i % 11 {
                        0 => 0.0,
                        1 => -0.0,
                        _ => (v - 0.5) * 3.0 + 1.0 / 512.0,
                    }
                };
                let x: Vec<f32> = (0..2 * g.chw()).map(|i| value(i, 1)).collect();
                let dy: Vec<f32> = (0..2 * o * l).map(|i| value(i, 7)).collect();
                autocast(Precision::Bf16, || {
                    let Some(mut cols) = Cols::for_geometry::<f32>(&g) else {
                        eprintln!("skipped: bf16 products here do not run on the AVX512-BF16 kernel");
                        return;
                    };
                    let (mut want, mut got) = (vec![0f32; k * o], vec![0f32; k * o]);
                    let mut col = vec![0f32; k * l];
                    for n in 0..2 {
                        let x_n = &x[n * g.chw()..(n + 1) * g.chw()];
                        im2col(x_n, &g, &mut col);
                        let lhs = MatRef { data: &col, offset: 0, rs: l, cs: 1 };
                        let rhs = MatRef { data: &dy, offset: n * o * l, rs: 1, cs: l };
                        gemm(k, o, l, &mut want, lhs, rhs, n > 0);
                        cols.weight_grad(x_n, &g, &dy, n * o * l, &mut got, n > 0);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "C {c}, {h}×{w}, O {o}, {kk}×{kk}, padding {p}");
                });
            }
        }
    }
}

/// The kernel of the input-gradient convolution: `W'[g][c, (o, i, j)] = W[g·og + o, c, kH−1−i, kW−1−j]`
/// (channels swapped within each group, window flipped), `[C, O/g·kH·kW]`.
fn flip_kernel<T: Float>(weight: &[T], g: &ConvGeom) -> Vec<T> {
    let (og, cg, kh, kw) = (g.og(), g.cg(), g.kh, g.kw);
    let mut out = T::take_buffer(g.c * og * kh * kw);
    for gi in 0..g.groups {
        for c in 0..cg {
            for o in 0..og {
                for i in 0..kh {
                    for j in 0..kw {
                        let src = (((gi * og + o) * cg + c) * kh + kh - 1 - i) * kw + kw - 1 - j;
                        out[(((gi * cg + c) * og + o) * kh + i) * kw + j] = weight[src];
                    }
                }
            }
        }
    }
    out
}

/// `d_bias[o] = Σ_n Σ_l dY[n, o, l]`, accumulated in f64 in a fixed order.
pub(crate) fn conv2d_bias_backward<T: Float>(dy: &[T], g: &ConvGeom) -> Vec<T> {
    let l = g.l();
    (0..g.o)
        .map(|o| {
            let mut acc = LaneSum::default();
            for n in 0..g.n {
                let start = (n * g.o + o) * l;
                acc.add_slice(&dy[start..start + l]);
            }
            T::from_f64(acc.total())
        })
        .collect()
}
