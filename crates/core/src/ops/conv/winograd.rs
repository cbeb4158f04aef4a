//! Winograd F(2×2, 3×3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for the stride-1, undilated, ungrouped 3×3 convolutions that dominate
//! ResNet-style models: each 2×2 output tile costs 16 multiplies per input channel instead of
//! 36, so the GEMM work is 2.25× smaller than im2col's.
//!
//! With `d` a 4×4 input tile (rows and columns `2·ty − p ..`, zero outside the image), `g` one
//! 3×3 kernel and
//!
//! ```text
//! Bᵀ = [1  0 −1  0]     G = [ 1    0    0 ]     Aᵀ = [1  1  1  0]
//!      [0  1  1  0]         [ ½    ½    ½ ]          [0  1 −1 −1]
//!      [0 −1  1  0]         [ ½   −½    ½ ]
//!      [0  1  0 −1]         [ 0    0    1 ]
//! ```
//!
//! the tile's output is `Y = Aᵀ [Σ_c (G g_{o,c} Gᵀ) ⊙ (Bᵀ d_c B)] A`. For the 16 positions ξ of
//! the 4×4 transformed tile that sum is one GEMM each: `M_ξ [O, T] = U_ξ [O, C] · V_ξ [C, T]`
//! over a block of `T` tiles.
//!
//! The transforms run as long vector passes over a whole plane's tiles rather than over one row
//! of 7 or 14 tiles: the zero-padded plane is split by row and column parity into four
//! `(th + 1)×(tw + 1)` grids, where tile `(ty, tx)`'s sixteen inputs are the elements
//! `q = ty·(tw + 1) + tx`, `q + 1`, `q + tw + 1` and `q + tw + 2` of those grids. Every transform
//! step is then one pass over `q`. Tile columns are therefore numbered with a stride of
//! `tw + 1`: one column per tile row is padding, transformed and multiplied like the others and
//! dropped by the output transform (7% more GEMM work at 28×28, 14% at 14×14).
//!
//! The blocks, GEMMs and weight-gradient identity are written once over a [`Tiling`]: this
//! F(2×2), and F(4×4, 3×3) (`winograd4_x86.rs`), which f32 takes on AVX-512 for planes of at
//! least 48 tiles (a ResNet's 28×28 stage: 40% fewer GEMM multiply-adds, at some precision).
//!
//! For f32 on a CPU with AVX-512 the three F(2×2) transforms run as the explicit kernels of
//! `winograd_x86.rs` (two passes per plane instead of five, whole-cache-line stores, the next
//! plane prefetched), which give the same bits as the portable loops here.
//!
//! Determinism: samples are cut into blocks whose size depends on the geometry only, every
//! output element is computed by one block in a fixed order, and so the result is the same for
//! every thread count. The rounding differs from im2col's (the transforms add and subtract
//! inputs before the products), by a few ulps of the inputs' magnitude.

use super::geom::ConvGeom;
#[cfg(target_arch = "x86_64")]
use super::{avx512, f32s, f32s_mut, f32s4};
use crate::ops::matmul::cpu::{MatRef, gemm};
use crate::ops::tasks::{for_each_chunk, map_tasks, parallel_for};
use crate::ops::wide_fn;
use crate::storage::Float;

#[cfg(target_arch = "x86_64")]
#[path = "winograd_x86.rs"]
mod x86;

#[cfg(target_arch = "x86_64")]
#[path = "winograd4_x86.rs"]
mod x4;

/// The fewest input and output channels for which the transforms pay: with few channels the
/// GEMMs are thin and the per-tile transforms dominate (the 1-channel stem conv of a ResNet
/// stays on im2col).
const MIN_CHANNELS: usize = 8;

/// Elements of one block's transformed input and GEMM output together (`16·T·(C + O)`): about
/// 1 MB of f32, so that a block's working set stays in L2 between the input transform, the 16
/// GEMMs and the output transform.
const BLOCK_ELEMENTS: usize = 1 << 18;

impl ConvGeom {
    /// Whether this convolution runs as Winograd F(2×2, 3×3): a 3×3 kernel, stride 1, no
    /// dilation, one group, enough channels.
    pub(crate) fn winograd(&self) -> bool {
        self.kh == 3
            && self.kw == 3
            && self.stride == (1, 1)
            && self.dilation == (1, 1)
            && self.groups == 1
            && self.c >= MIN_CHANNELS
            && self.o >= MIN_CHANNELS
            && self.oh > 0
            && self.ow > 0
    }

    /// Tiles per sample: `(⌈OH/2⌉, ⌈OW/2⌉)`.
    fn tiles(&self) -> (usize, usize) {
        (self.oh.div_ceil(2), self.ow.div_ceil(2))
    }

    /// Tiles per sample for output tiles of side `m`: `(⌈OH/m⌉, ⌈OW/m⌉)`.
    fn tiles_of(&self, m: usize) -> (usize, usize) {
        (self.oh.div_ceil(m), self.ow.div_ceil(m))
    }
}

/// One Winograd algorithm F(m×m, 3×3): the tile size, the kernel matrix G and the three
/// transforms over one plane's tiles. [`F2`] for every float type and CPU; F(4×4, 3×3) for f32
/// on AVX-512 (`winograd4_x86.rs`).
trait Tiling<T: Float> {
    /// The output tile's side m; input tiles are m + 2 wide, so there are (m + 2)² positions ξ.
    const M: usize;
    /// Elements of one block's transformed input and GEMM output together.
    const BLOCK: usize = BLOCK_ELEMENTS;
    /// Per-task buffers of the transforms, sized for one plane.
    type Scratch;
    /// Row `a` of G ((m + 2) × 3).
    fn g_row(a: usize) -> [f64; 3];
    /// The buffers for `g`'s planes.
    fn scratch(g: &ConvGeom) -> Self::Scratch;
    /// Returns the buffers to the pool.
    fn give(sc: Self::Scratch);
    /// `V_ξ[off + q] = (Bᵀ d B)_ξ` for every tile `q = ty·(tw + 1) + tx` of one input plane;
    /// position ξ's row starts at `ξ·stride`.
    fn input_transform(plane: &[T], g: &ConvGeom, v: &mut [T], stride: usize, off: usize, sc: &mut Self::Scratch);
    /// One output plane from its tiles' GEMM results, `Y = Aᵀ M A + bias`, position ξ's row of
    /// `m` starting at `ξ·stride + off`.
    fn output_transform(
        m: &[T],
        stride: usize,
        off: usize,
        out: &mut [T],
        g: &ConvGeom,
        bias: T,
        sc: &mut Self::Scratch,
    );
    /// `E_ξ[off + q] = (A dY Aᵀ)_ξ` for every tile of one output-gradient plane (zero for the
    /// padding column).
    fn dy_transform(plane: &[T], g: &ConvGeom, e: &mut [T], stride: usize, off: usize, sc: &mut Self::Scratch);
}

/// Positions ξ of a tiling: `(m + 2)²`.
fn positions<T: Float, W: Tiling<T>>() -> usize {
    (W::M + 2) * (W::M + 2)
}

/// Samples per block: as many as fit [`BLOCK_ELEMENTS`], at least one.
fn block<T: Float, W: Tiling<T>>(g: &ConvGeom) -> usize {
    let (th, tw) = g.tiles_of(W::M);
    (W::BLOCK / (positions::<T, W>() * th * (tw + 1) * (g.c + g.o)).max(1)).clamp(1, g.n.max(1))
}

/// F(2×2, 3×3), the portable tiling (f32 on AVX-512 runs its transforms as the kernels of
/// `winograd_x86.rs`).
struct F2;

impl<T: Float> Tiling<T> for F2 {
    const M: usize = 2;
    type Scratch = Scratch<T>;
    fn g_row(a: usize) -> [f64; 3] {
        G[a]
    }
    fn scratch(g: &ConvGeom) -> Scratch<T> {
        Scratch::new(g)
    }
    fn give(sc: Scratch<T>) {
        sc.give()
    }
    // f32 on AVX-512 takes the kernels of `winograd_x86.rs`, everything else the portable loops.
    fn input_transform(plane: &[T], g: &ConvGeom, v: &mut [T], stride: usize, off: usize, sc: &mut Scratch<T>) {
        #[cfg(target_arch = "x86_64")]
        if avx512()
            && let (Some(plane), Some(v), Some(grid)) = (f32s(plane), f32s_mut(v), f32s4(&mut sc.grid))
        {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { x86::input_transform(plane, g, v, stride, off, grid) };
        }
        input_transform_wide(plane, g, v, stride, off, sc)
    }
    fn output_transform(m: &[T], stride: usize, off: usize, out: &mut [T], g: &ConvGeom, bias: T, sc: &mut Scratch<T>) {
        #[cfg(target_arch = "x86_64")]
        if avx512()
            && let (Some(m), Some(out), Some(&[bias]), Some(y)) =
                (f32s(m), f32s_mut(out), f32s(std::slice::from_ref(&bias)), f32s4(&mut sc.y))
        {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { x86::output_transform(m, stride, off, out, g, bias, y) };
        }
        output_transform_wide(m, stride, off, out, g, bias, sc)
    }
    fn dy_transform(plane: &[T], g: &ConvGeom, e: &mut [T], stride: usize, off: usize, sc: &mut Scratch<T>) {
        #[cfg(target_arch = "x86_64")]
        if avx512()
            && let (Some(plane), Some(e), Some(grid)) = (f32s(plane), f32s_mut(e), f32s4(&mut sc.grid))
        {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { x86::dy_transform(plane, g, e, stride, off, grid) };
        }
        dy_transform_wide(plane, g, e, stride, off, sc)
    }
}

/// `v` as a `Vec<T>` when `T` is f32.
#[cfg(target_arch = "x86_64")]
fn from_f32<T: Float>(v: Vec<f32>) -> Vec<T> {
    assert!(std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>());
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: T is f32 (asserted), so this is the same vector.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}

/// `out = bias + conv2d(x, weight)` for a geometry with [`ConvGeom::winograd`]; `x` `(N,C,H,W)`
/// and `weight` `(O,C,3,3)` contiguous, the result `(N,O,OH,OW)`.
pub(crate) fn conv2d<T: Float>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    debug_assert!(g.winograd());
    #[cfg(target_arch = "x86_64")]
    if x4::applies(g)
        && let (Some(x), Some(w)) = (f32s(x), f32s(weight))
    {
        let bias = bias.map(|b| f32s(b).expect("bias has the input's type"));
        return from_f32(conv2d_with::<f32, x4::F4>(x, w, bias, g));
    }
    conv2d_with::<T, F2>(x, weight, bias, g)
}

/// [`conv2d`] with the tiling `W`.
fn conv2d_with<T: Float, W: Tiling<T>>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    let (c, o, hw) = (g.c, g.o, g.h * g.w);
    let (th, tw) = g.tiles_of(W::M);
    let tiles = th * (tw + 1);
    let np = positions::<T, W>();
    let u = transform_weight::<T, W>(weight, o, c);
    let per_sample = o * g.oh * g.ow;
    let nb = block::<T, W>(g);
    let mut out = T::take_buffer(g.n * per_sample);
    for_each_chunk(&mut out, nb * per_sample, parallel_for(g.macs()), |bi, out_blk| {
        let n0 = bi * nb;
        let ns = out_blk.len() / per_sample;
        let t = ns * tiles;
        // v: [P][C][T], m: [P][O][T]; the tiles of sample s are columns s·tiles.. of each.
        let mut v = T::take_buffer(np * c * t);
        let mut m = T::take_buffer(np * o * t);
        let mut scratch = W::scratch(g);
        for s in 0..ns {
            for ci in 0..c {
                let plane = &x[((n0 + s) * c + ci) * hw..((n0 + s) * c + ci + 1) * hw];
                W::input_transform(plane, g, &mut v, c * t, ci * t + s * tiles, &mut scratch);
            }
        }
        for xi in 0..np {
            let lhs = MatRef { data: &u, offset: xi * o * c, rs: c, cs: 1 };
            let rhs = MatRef { data: &v, offset: xi * c * t, rs: t, cs: 1 };
            gemm(o, t, c, &mut m[xi * o * t..(xi + 1) * o * t], lhs, rhs, false);
        }
        let plane_len = g.oh * g.ow;
        for (s, out_n) in out_blk.chunks_exact_mut(per_sample).enumerate() {
            for (oi, plane) in out_n.chunks_exact_mut(plane_len).enumerate() {
                let b = bias.map_or(T::ZERO, |b| b[oi]);
                W::output_transform(&m, o * t, oi * t + s * tiles, plane, g, b, &mut scratch);
            }
        }
        T::give_buffer(v);
        T::give_buffer(m);
        W::give(scratch);
    });
    T::give_buffer(u);
    out
}

/// `d_weight` of a convolution with [`ConvGeom::winograd`]: by the same bilinear identity, the
/// weight gradient of one tile is `Gᵀ [(A dY Aᵀ) ⊙ (Bᵀ d B)] G`, so per position ξ
/// `D_ξ [O, C] = Σ_tiles dYᵀ_ξ [O, T] · V_ξ [C, T]ᵀ`: GEMMs with the tiles as the long inner
/// dimension, and `V` the forward pass's input transform. `x` `(N,C,H,W)` and `dy`
/// `(N,O,OH,OW)` contiguous; the result is `(O,C,3,3)`.
///
/// Each task sums a fixed run of blocks (at most 16 runs, fixed by the geometry), and the runs'
/// sums are added in order, so the result does not depend on the thread count.
pub(crate) fn weight_grad<T: Float>(x: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    debug_assert!(g.winograd());
    #[cfg(target_arch = "x86_64")]
    if x4::applies(g)
        && let (Some(x), Some(dy)) = (f32s(x), f32s(dy))
    {
        return from_f32(weight_grad_with::<f32, x4::F4>(x, dy, g));
    }
    weight_grad_with::<T, F2>(x, dy, g)
}

/// [`weight_grad`] with the tiling `W`.
fn weight_grad_with<T: Float, W: Tiling<T>>(x: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    let (c, o, hw, ohw) = (g.c, g.o, g.h * g.w, g.oh * g.ow);
    let (th, tw) = g.tiles_of(W::M);
    let tiles = th * (tw + 1);
    let (np, side) = (positions::<T, W>(), W::M + 2);
    let nb = block::<T, W>(g);
    let blocks = g.n.div_ceil(nb);
    let per_task = blocks.div_ceil(blocks.clamp(1, 16));
    let tasks: Vec<usize> = (0..blocks.div_ceil(per_task)).collect();
    let partials = map_tasks(tasks, parallel_for(g.macs()), |_, task| {
        let mut acc = T::take_buffer(np * o * c);
        let mut v = T::take_buffer(np * c * nb * tiles);
        let mut e = T::take_buffer(np * o * nb * tiles);
        let mut scratch = W::scratch(g);
        for (k, b) in (task * per_task..((task + 1) * per_task).min(blocks)).enumerate() {
            let n0 = b * nb;
            let ns = nb.min(g.n - n0);
            let t = ns * tiles;
            for s in 0..ns {
                let n = n0 + s;
                for ci in 0..c {
                    W::input_transform(
                        &x[(n * c + ci) * hw..(n * c + ci + 1) * hw],
                        g,
                        &mut v,
                        c * t,
                        ci * t + s * tiles,
                        &mut scratch,
                    );
                }
                for oi in 0..o {
                    W::dy_transform(
                        &dy[(n * o + oi) * ohw..(n * o + oi + 1) * ohw],
                        g,
                        &mut e,
                        o * t,
                        oi * t + s * tiles,
                        &mut scratch,
                    );
                }
            }
            for xi in 0..np {
                // D_ξ (O×C) += E_ξ (O×T) · V_ξᵀ (T×C): V_ξ read with swapped strides.
                let lhs = MatRef { data: &e, offset: xi * o * t, rs: t, cs: 1 };
                let rhs = MatRef { data: &v, offset: xi * c * t, rs: 1, cs: t };
                gemm(o, c, t, &mut acc[xi * o * c..(xi + 1) * o * c], lhs, rhs, k > 0);
            }
        }
        T::give_buffer(v);
        T::give_buffer(e);
        W::give(scratch);
        acc
    });
    let mut parts = partials.into_iter();
    let mut total = parts.next().expect("at least one sample");
    for p in parts {
        total.iter_mut().zip(&p).for_each(|(t, &v)| *t += v);
        T::give_buffer(p);
    }
    // dW[o, c, i, j] = Σ_{a,b} G[a][i]·D_(a,b)[o, c]·G[b][j], in f64.
    let gm: Vec<[f64; 3]> = (0..side).map(W::g_row).collect();
    let mut dw = T::take_buffer(o * c * 9);
    let mut d = vec![0.0f64; np];
    for oc in 0..o * c {
        d.iter_mut().enumerate().for_each(|(xi, d)| *d = total[xi * o * c + oc].to_f64());
        for i in 0..3 {
            for j in 0..3 {
                let mut sum = 0.0;
                for a in 0..side {
                    for b in 0..side {
                        sum += gm[a][i] * d[a * side + b] * gm[b][j];
                    }
                }
                dw[oc * 9 + i * 3 + j] = T::from_f64(sum);
            }
        }
    }
    T::give_buffer(total);
    dw
}

/// The kernel transform's matrix (4×3).
const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// `U_ξ[o, c] = (G g_{o,c} Gᵀ)_ξ`, `[P][O][C]`, computed in f64 (F(2×2)'s factors ½ are exact).
fn transform_weight<T: Float, W: Tiling<T>>(weight: &[T], o: usize, c: usize) -> Vec<T> {
    let side = W::M + 2;
    let gm: Vec<[f64; 3]> = (0..side).map(W::g_row).collect();
    let mut u = T::take_buffer(side * side * o * c);
    let mut gg = vec![[0.0f64; 3]; side];
    for oi in 0..o {
        for ci in 0..c {
            let k = &weight[(oi * c + ci) * 9..(oi * c + ci + 1) * 9];
            // gg = G·g: [side][3]
            for (r, row) in gg.iter_mut().enumerate() {
                for (j, e) in row.iter_mut().enumerate() {
                    *e = (0..3).map(|i| gm[r][i] * k[i * 3 + j].to_f64()).sum();
                }
            }
            for a in 0..side {
                for b in 0..side {
                    let val: f64 = (0..3).map(|j| gg[a][j] * gm[b][j]).sum();
                    u[(a * side + b) * o * c + oi * c + ci] = T::from_f64(val);
                }
            }
        }
    }
    u
}

/// Per-task buffers of the transforms, sized for one plane.
struct Scratch<T: Float> {
    /// The zero-padded plane's even and odd rows, `[th + 1][2·(tw + 1)]` each; only the
    /// interior is rewritten per plane, so the padding stays zero.
    rows: [Vec<T>; 2],
    /// `grid[2·row parity + column parity]`: `[th + 1][tw + 1]` plus one slack element.
    grid: [Vec<T>; 4],
    /// Row transforms `d·B` per row parity and column `j`, then `Aᵀ·M` in the output transform.
    h: [Vec<T>; 8],
    /// dY's even and odd rows, `[th][2·(tw + 1)]` each, zero past the output's edges.
    dy_rows: [Vec<T>; 2],
    /// One row parity's output tile values `y[a][b]` for b = 0, 1 (`[th][tw + 1]`), then the
    /// interleaved output rows `[th][2·(tw + 1)]` of each row parity `a`.
    y: [Vec<T>; 4],
}

impl<T: Float> Scratch<T> {
    fn new(g: &ConvGeom) -> Self {
        let (th, tw) = g.tiles();
        // Slack past the last tile: the AVX-512 kernels read whole vectors.
        let grid = (th + 1) * (tw + 1) + 32;
        Scratch {
            rows: std::array::from_fn(|_| T::zeroed_buffer((th + 1) * 2 * (tw + 1))),
            // Zeroed: nothing writes the slack, which the last tile's padding column reads (a
            // NaN left there by the buffer pool would reach dW through 0·NaN).
            grid: std::array::from_fn(|_| T::zeroed_buffer(grid)),
            h: std::array::from_fn(|_| T::take_buffer(grid)),
            y: std::array::from_fn(|_| T::take_buffer(th * 2 * (tw + 1) + 16)),
            dy_rows: std::array::from_fn(|_| T::zeroed_buffer(th * 2 * (tw + 1))),
        }
    }

    fn give(self) {
        self.rows.into_iter().chain(self.grid).chain(self.h).chain(self.y).chain(self.dy_rows).for_each(T::give_buffer);
    }
}

wide_fn!(
    /// The portable F(2×2) input transform (`Tiling::input_transform`).
    fn input_transform_wide<T: Float>(plane: &[T], g: &ConvGeom, v: &mut [T], stride: usize, off: usize, sc: &mut Scratch<T>) => input_loops
);

#[inline(always)]
fn input_loops<T: Float>(plane: &[T], g: &ConvGeom, v: &mut [T], stride: usize, off: usize, sc: &mut Scratch<T>) {
    let (h, w) = (g.h, g.w);
    let (ph, pw) = g.padding;
    let (th, tw) = g.tiles();
    let (s, wide) = (tw + 1, 2 * (tw + 1));
    // Padded column x holds input column x − pw; only columns < 2·(tw + 1) are ever read.
    let (x0, x1) = (pw.min(wide), (pw + w).min(wide));
    let n_cols = x1 - x0;
    for iy in 0..h {
        let r = iy + ph;
        if r >= 2 * (th + 1) {
            break;
        }
        let dst = &mut sc.rows[r % 2][(r / 2) * wide..(r / 2 + 1) * wide];
        dst[x0..x1].copy_from_slice(&plane[iy * w..iy * w + n_cols]);
    }
    // Column parity: grid[2·pr + pc][ry·s + kx] = padded[2ry + pr][2kx + pc].
    for pr in 0..2 {
        let (ge, go) = sc.grid[2 * pr..2 * pr + 2].split_at_mut(1);
        let pairs = sc.rows[pr].chunks_exact(2);
        for ((e, o), pair) in ge[0].iter_mut().zip(go[0].iter_mut()).zip(pairs) {
            *e = pair[0];
            *o = pair[1];
        }
    }
    // Row transforms d·B: tile columns 2kx..2kx + 4 are e[q], o[q], e[q + 1], o[q + 1].
    let n = (th + 1) * s;
    for pr in 0..2 {
        let (e, o) = (&sc.grid[2 * pr][..n + 1], &sc.grid[2 * pr + 1][..n + 1]);
        let (h01, h23) = sc.h[4 * pr..4 * pr + 4].split_at_mut(2);
        let (h0, h1) = h01.split_at_mut(1);
        let (h2, h3) = h23.split_at_mut(1);
        let (h0, h1, h2, h3) = (&mut h0[0][..n], &mut h1[0][..n], &mut h2[0][..n], &mut h3[0][..n]);
        for q in 0..n {
            let (d0, d1, d2, d3) = (e[q], o[q], e[q + 1], o[q + 1]);
            h0[q] = d0 - d2;
            h1[q] = d1 + d2;
            h2[q] = d2 - d1;
            h3[q] = d1 - d3;
        }
    }
    // Column transforms Bᵀ·: tile rows 2ty..2ty + 4 are even[q], odd[q], even[q + s], odd[q + s].
    let t = th * s;
    for j in 0..4 {
        let (he, ho) = (&sc.h[j][..t + s], &sc.h[4 + j][..t + s]);
        let at = |i: usize| (i * 4 + j) * stride + off;
        // Positions (i, j) for i = 0..4 are ξ = 4i + j: 4·stride apart.
        let (v0, rest) = v[at(0)..].split_at_mut(4 * stride);
        let (v1, rest) = rest.split_at_mut(4 * stride);
        let (v2, rest) = rest.split_at_mut(4 * stride);
        let (v0, v1, v2, v3) = (&mut v0[..t], &mut v1[..t], &mut v2[..t], &mut rest[..t]);
        for q in 0..t {
            let (d0, d1, d2, d3) = (he[q], ho[q], he[q + s], ho[q + s]);
            v0[q] = d0 - d2;
            v1[q] = d1 + d2;
            v2[q] = d2 - d1;
            v3[q] = d1 - d3;
        }
    }
}

wide_fn!(
    /// The portable F(2×2) output transform: one output plane `(OH, OW)` from its tiles' GEMM results: `Y = Aᵀ M A + bias`, with
    /// position ξ's row of `m` starting at `ξ·stride + off`.
    fn output_transform_wide<T: Float>(m: &[T], stride: usize, off: usize, out: &mut [T], g: &ConvGeom, bias: T, sc: &mut Scratch<T>) => output_loops
);

#[inline(always)]
fn output_loops<T: Float>(
    m: &[T],
    stride: usize,
    off: usize,
    out: &mut [T],
    g: &ConvGeom,
    bias: T,
    sc: &mut Scratch<T>,
) {
    let (oh, ow) = (g.oh, g.ow);
    let (th, tw) = g.tiles();
    let s = tw + 1;
    let t = th * s;
    // Aᵀ·M: h[4a + j][q] = r_a[j].
    for j in 0..4 {
        let row = |i: usize| &m[(i * 4 + j) * stride + off..(i * 4 + j) * stride + off + t];
        let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3));
        let (ha, hb) = sc.h.split_at_mut(4);
        let (r0, r1) = (&mut ha[j][..t], &mut hb[j][..t]);
        for q in 0..t {
            r0[q] = m0[q] + m1[q] + m2[q];
            r1[q] = m1[q] - m2[q] - m3[q];
        }
    }
    // ·A, then the two output columns of each tile interleaved into rows of width 2·(tw + 1).
    for a in 0..2 {
        let r = &sc.h[4 * a..4 * a + 4];
        let (r0, r1, r2, r3) = (&r[0][..t], &r[1][..t], &r[2][..t], &r[3][..t]);
        let (yv, rows) = sc.y.split_at_mut(2);
        let (y0, y1) = yv.split_at_mut(1);
        let (y0, y1) = (&mut y0[0][..t], &mut y1[0][..t]);
        for q in 0..t {
            y0[q] = r0[q] + r1[q] + r2[q] + bias;
            y1[q] = r1[q] - r2[q] - r3[q] + bias;
        }
        for (pair, (&p, &q)) in rows[a][..2 * t].chunks_exact_mut(2).zip(y0.iter().zip(y1.iter())) {
            pair[0] = p;
            pair[1] = q;
        }
    }
    for (oy, dst) in out.chunks_exact_mut(ow).take(oh).enumerate() {
        let src = &sc.y[2 + oy % 2][(oy / 2) * 2 * s..(oy / 2) * 2 * s + ow];
        dst.copy_from_slice(src);
    }
}

wide_fn!(
    /// The portable F(2×2) dY transform: `E_ξ[o, off + q] = (A dY Aᵀ)_ξ` for every tile `q = ty·(tw + 1) + tx` of one output-gradient
    /// plane `(OH, OW)` (zero for the padding column `tx = tw`); position ξ's row starts at
    /// `ξ·stride`.
    fn dy_transform_wide<T: Float>(plane: &[T], g: &ConvGeom, e: &mut [T], stride: usize, off: usize, sc: &mut Scratch<T>) => dy_loops
);

#[inline(always)]
fn dy_loops<T: Float>(plane: &[T], g: &ConvGeom, e: &mut [T], stride: usize, off: usize, sc: &mut Scratch<T>) {
    let (oh, ow) = (g.oh, g.ow);
    let (th, tw) = g.tiles();
    let (s, wide) = (tw + 1, 2 * (tw + 1));
    for oy in 0..oh {
        sc.dy_rows[oy % 2][(oy / 2) * wide..(oy / 2) * wide + ow].copy_from_slice(&plane[oy * ow..(oy + 1) * ow]);
    }
    // grid[2a + b][q] = dY[2ty + a, 2tx + b].
    let t = th * s;
    for a in 0..2 {
        let (ge, go) = sc.grid[2 * a..2 * a + 2].split_at_mut(1);
        let pairs = sc.dy_rows[a].chunks_exact(2);
        for ((e, o), pair) in ge[0][..t].iter_mut().zip(go[0][..t].iter_mut()).zip(pairs) {
            *e = pair[0];
            *o = pair[1];
        }
    }
    // A·dY (rows (p, q), (p + r, q + s), (p − r, q − s), (−r, −s)), then each row (u, v) ·Aᵀ
    // → (u, u + v, u − v, −v).
    let (p, q, r, w) = (&sc.grid[0][..t], &sc.grid[1][..t], &sc.grid[2][..t], &sc.grid[3][..t]);
    let mut rows = e[off..].chunks_mut(stride);
    let mut next = || &mut rows.next().expect("16 rows")[..t];
    for i in 0..4 {
        let (e0, e1, e2, e3) = (next(), next(), next(), next());
        for k in 0..t {
            let (u, v) = match i {
                0 => (p[k], q[k]),
                1 => (p[k] + r[k], q[k] + w[k]),
                2 => (p[k] - r[k], q[k] - w[k]),
                _ => (-r[k], -w[k]),
            };
            e0[k] = u;
            e1[k] = u + v;
            e2[k] = u - v;
            e3[k] = -v;
        }
    }
}
