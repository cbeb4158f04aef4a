//! The packed AVX-512 matrix product that strata's own kernels share (`bf16.rs`: `vdpbf16ps`
//! on bf16 pairs; `f32_x86.rs`: FMA on f32): GotoBLAS's blocking, a 12×32 register tile.
//!
//! Loops, outermost first: columns of B in blocks of `NC`; depth in blocks of `KC` steps (a step
//! is one k for f32, a pair of k for bf16), whose B block is packed once; rows of A in blocks
//! of `MC`, packed once per B block; then every 32-column B micro-panel (in L1) against every
//! 12-row A micro-panel (in L2). Packed layouts: A `[panel][MR rows][kc steps]` (a row's steps
//! contiguous, so contiguous rows pack as runs), B `[panel][kc steps][NR columns]` (one vector
//! load per 16 columns of a step).
//!
//! Determinism: an output element's sum is split at fixed depth blocks, added in order; how the
//! caller cuts the output into blocks (`cpu.rs`) never changes it.

use super::gemm_crate::MatRef;
use std::any::TypeId;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of the micro-kernel's output tile.
pub(super) const MR: usize = 12;
/// Columns of the micro-kernel's output tile: two AVX-512 vectors of f32.
pub(super) const NR: usize = 32;
/// Depth steps per packed block: a B micro-panel (`KC·NR` 32-bit values, 16 KiB) stays in L1
/// while every A micro-panel of the row block passes it.
pub(super) const KC: usize = 128;
/// The depth of the blocks packed for a product `steps` deep with `n` output columns: the whole
/// depth when it is 193 to 256 steps and the output is wide (W4's weight gradients, 2048
/// columns, 256 deep: each output tile is then computed in one visit, its two `KC`-step halves
/// one after the other while it is in L1, instead of being stored after the first block and
/// loaded again from memory for the second), else `KC`. The sums are the same either way: a
/// tile's accumulators are still stored after every `KC` steps ([`run`]). Measured (2-core
/// Xeon, 2 threads, five alternating runs): W4 f32 +13%, W2 +4%, W5 and W6 level; taking every
/// depth up to 256 or narrow outputs too cost W5 ~3% (its 144-deep convolution products).
fn depth_block(steps: usize, n: usize) -> usize {
    if steps <= 2 * KC && steps > KC + KC / 2 && n >= WIDE { steps } else { KC }
}

/// Output columns from which a product counts as wide for [`depth_block`].
const WIDE: usize = 8 * NR;

/// Rows per packed A block (60 KiB with `KC`, in L2).
const MC: usize = 120;
/// Columns per packed B block (512 KiB with `KC`).
pub(super) const NC: usize = 1024;

/// The 24 accumulators of one tile: row r, columns `16v..16v + 16`.
pub(super) type Tile = [[__m512; 2]; MR];

/// What differs between the kernels: the element packed (a bf16 pair or an f32, both 32 bits),
/// how many depth steps k makes, and the tile's inner loop.
pub(super) trait Kernel {
    /// Depth steps for an inner dimension of `k`.
    fn steps(k: usize) -> usize;
    /// Packs rows `row0..row0 + rows` of A (`rows_all` in all), steps `p0..p0 + kc`, as
    /// `[rows/MR panels][MR][kc]` (or `[rows/MR panels][kc][MR]` where [`Kernel::tile_packed`]
    /// reads that), zero beyond A's rows and k (`k` values in all).
    ///
    /// # Safety
    /// The CPU must have the kernel's features.
    unsafe fn pack_a(v: MatRef<f32>, rows: (usize, usize, usize), depth: (usize, usize, usize), out: &mut Packing);
    /// Packs columns `col0..col0 + cols` of B (`cols_all` in all; `v` is Bᵀ, so a column is a
    /// row of `v`), steps `p0..p0 + kc`, as `[cols/NR panels][kc][NR]`, zero beyond.
    ///
    /// # Safety
    /// As `pack_a`.
    unsafe fn pack_b(v: MatRef<f32>, cols: (usize, usize, usize), depth: (usize, usize, usize), out: &mut Packing);
    /// Whether the operands' f32 values are already what the packing would store (f32 itself,
    /// as its bits, a step being one k), so that an operand laid out suitably can be read in
    /// place ([`run`]'s direct paths).
    const IN_PLACE: bool;
    /// The tile's sums over `kc` steps of an A micro-panel at `a` (row r's step p at
    /// `a + r·a_rs + p`) and a B micro-panel at `b` (step p's `NR` values at `b + p·b_rs`, of
    /// which only the first `cols` are read, the rest counting as zeros).
    ///
    /// # Safety
    /// As `pack_a`; `a + r·a_rs + p` is readable for r < MR and p < kc, and `b + p·b_rs ..
    /// + cols` for p < kc.
    unsafe fn tile(kc: usize, a: *const u32, a_rs: usize, b: *const u32, b_rs: usize, cols: usize) -> Tile;
    /// [`run`] for this kernel: [`run_body`] instantiated under the kernel's own CPU features,
    /// so that its tile and [`store`] are inlined into the loops. Compiled under AVX512-F alone,
    /// the bf16 tile (which needs AVX512-BF16) could not be inlined: each call returned its 24
    /// accumulators through memory and `store` read them back, a cost that Winograd's 16- and
    /// 32-step products (W5) paid on every tile.
    ///
    /// # Safety
    /// As [`run`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        dst_rs: usize,
        lhs: MatRef<f32>,
        rhs: Rhs,
        accumulate: bool,
    );
    /// [`Kernel::tile`] over steps `p0..p0 + kc` of a micro-panel of A as `pack_a` packed it,
    /// `panel_kc` steps deep (by default row r's step p at `a + r·panel_kc + p`).
    ///
    /// # Safety
    /// As `tile`, for a packed micro-panel of MR rows × `panel_kc` steps at `a`, `p0 + kc ≤
    /// panel_kc`.
    #[inline]
    unsafe fn tile_packed(
        panel_kc: usize,
        p0: usize,
        kc: usize,
        a: *const u32,
        b: *const u32,
        b_rs: usize,
        cols: usize,
    ) -> Tile {
        // SAFETY: the caller's promise, with the packing's row stride.
        unsafe { Self::tile(kc, a.add(p0), panel_kc, b, b_rs, cols) }
    }
}

/// A kernel's [`Kernel::run`]: [`run_body`] for `Self`, compiled under the CPU features named
/// (`kernel_run!("avx512f")`), inside the kernel's `impl Kernel`.
macro_rules! kernel_run {
    ($features:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn run(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut f32,
            dst_rs: usize,
            lhs: $crate::ops::matmul::gemm_crate::MatRef<f32>,
            rhs: $crate::ops::matmul::packed::Rhs,
            accumulate: bool,
        ) {
            // SAFETY: the caller's promise; compiled with this kernel's features.
            unsafe { $crate::ops::matmul::packed::run_body::<Self>(m, n, k, dst, dst_rs, lhs, rhs, accumulate) }
        }
    };
}
pub(super) use kernel_run;

/// The mask of the first `n` (≤ 16) of a vector's 16 lanes.
#[inline(always)]
pub(super) fn lanes(n: usize) -> __mmask16 {
    debug_assert!(n <= 16);
    ((1u32 << n) - 1) as __mmask16
}

/// The most columns of a product for which [`run`] reads a left operand with contiguous rows in
/// place (f32) instead of packing it: each A value is then used by at most two B micro-panels,
/// read from memory once and from L2 at most once more, where packing would first copy it. The
/// weight gradients of im2col convolutions (`C·kh·kw × O × HW`, per sample) are such: packing
/// their im2col matrix was ~5% of a W5 step.
const DIRECT_A_MAX_N: usize = 2 * NR;

/// The most rows of A for which [`run`] reads a row-major B in place instead of packing it (f32),
/// when the whole depth is one block (`k ≤ KC`): every B value is then used by at most `MC`
/// rows, read once from memory into L1 where packing would first copy it. Winograd's products
/// (`O × tiles × C`, O and C the channels) are such: packing B was ~7% of a W5 step, and
/// reading it in place took W5 (f32, 2 threads) from ~665 to ~750 samples/s. A deeper B (W4's
/// 2048-deep weights) is packed still: read in place, each step of a panel is another page,
/// and W4 lost ~5%.
const DIRECT_B_MAX_M: usize = MC;

/// A packed operand's storage: 32-bit values from a 64-byte boundary (a cache line), so that no
/// load of a packed row straddles two lines. For AMX tiles it matters twice over: a tile whose
/// rows straddled lines loaded at ~60% of the speed of an aligned one (the 32×32 micro-tile,
/// operands in L1: ~800 against ~1,350 GFLOP/s, `amx.rs`).
#[derive(Default)]
pub(super) struct Packing {
    lines: Vec<Line>,
    len: usize,
}

/// 64 bytes, aligned as such.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; 16]);

impl Packing {
    /// An empty buffer (no allocation).
    pub(super) const fn new() -> Packing {
        Packing { lines: Vec::new(), len: 0 }
    }

    /// `len` values whose content is unspecified (what the buffer last held, zero where it
    /// grows; the allocation is reused): every packing writes each value it packs, zeros
    /// included, rather than zeroing the buffer in a pass of its own first.
    pub(super) fn resized(&mut self, len: usize) -> &mut [u32] {
        self.lines.resize(len.div_ceil(16), Line([0; 16]));
        self.len = len;
        self
    }

    /// Grows to `len` values (no-op if shorter), the new ones zero.
    pub(super) fn grow_zeroed(&mut self, len: usize) {
        if len > self.len {
            let old = self.len;
            self.lines.resize(len.div_ceil(16), Line([0; 16]));
            self.len = len;
            self[old..].fill(0);
        }
    }
}

impl std::ops::Deref for Packing {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        // SAFETY: `lines` holds ⌈len/16⌉ lines of 16 initialised u32 each, contiguous.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u32>(), self.len) }
    }
}

impl std::ops::DerefMut for Packing {
    fn deref_mut(&mut self) -> &mut [u32] {
        // SAFETY: as `deref`, borrowed uniquely.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u32>(), self.len) }
    }
}

thread_local! {
    /// Packing buffers (A block, B block), reused across calls on this thread.
    static PACKED: RefCell<(Packing, Packing)> = const { RefCell::new((Packing::new(), Packing::new())) };
}

/// A right operand packed whole (every column and depth block) by kernel `K`: what a caller
/// multiplying many left operands by the same right one reuses (an LSTM's recurrent weight, at
/// every time step), instead of packing it again for each product.
pub(super) struct PackedB {
    /// The kernel that packed it (a bf16 packing read as f32 would be garbage).
    kernel: TypeId,
    n: usize,
    k: usize,
    /// Column block by column block, depth block by depth block, as `run` visits them.
    blocks: Vec<Packing>,
}

/// An operand of a product: a view, packed block by block on the way, or packed already (`P`).
pub(super) enum Operand<'a, P> {
    /// The matrix as it lies in memory.
    View(MatRef<'a, f32>),
    /// Packed ahead for the same kernel and sizes.
    Packed(&'a P),
}

// Copy whatever `P` is (derive would ask `P: Copy`).
impl<P> Clone for Operand<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P> Copy for Operand<'_, P> {}

/// The right operand of [`run`]: B as a view, or packed by [`pack_whole`] for the same kernel,
/// n and k.
pub(super) type Rhs<'a> = Operand<'a, PackedB>;

impl PackedB {
    /// Blocks packed elsewhere (`amx.rs`, which pads each block's depth) under the tag `kernel`.
    pub(super) fn from_blocks(kernel: TypeId, n: usize, k: usize, blocks: Vec<Packing>) -> PackedB {
        PackedB { kernel, n, k, blocks }
    }

    /// The packed block `i`, counting column blocks then depth blocks as [`run`] visits them,
    /// after checking that it was packed under `kernel` for this n and k.
    pub(super) fn block(&self, kernel: TypeId, n: usize, k: usize, i: usize) -> &[u32] {
        assert!(self.kernel == kernel && (self.n, self.k) == (n, k), "a packed operand used with another product");
        &self.blocks[i]
    }

    /// Whether kernel `kernel` packed this.
    pub(super) fn packed_by(&self, kernel: TypeId) -> bool {
        self.kernel == kernel
    }
}

/// `rhs` (k×n) packed whole by kernel `K`.
///
/// # Safety
/// The CPU must have AVX512-F and `K`'s features; the view lies inside its buffer.
pub(super) unsafe fn pack_whole<K: Kernel + 'static>(rhs: MatRef<f32>, n: usize, k: usize) -> PackedB {
    let steps = K::steps(k);
    let rhs_t = MatRef { rs: rhs.cs, cs: rhs.rs, ..rhs };
    let mut blocks = Vec::new();
    for jc in (0..n).step_by(NC) {
        let kc_max = depth_block(steps, n);
        for pc in (0..steps).step_by(kc_max) {
            let mut buf = Packing::new();
            // SAFETY: the caller's promise.
            unsafe { K::pack_b(rhs_t, (jc, NC.min(n - jc), n), (pc, kc_max.min(steps - pc), k), &mut buf) };
            blocks.push(buf);
        }
    }
    PackedB { kernel: TypeId::of::<K>(), n, k, blocks }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` through kernel `K`, `dst` with row stride `dst_rs`.
///
/// # Safety
/// The CPU must have AVX512-F and `K`'s features; `dst` valid for writes of an m×n block with
/// row stride `dst_rs`; the operands' views inside their buffers.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run<K: Kernel + 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: MatRef<f32>,
    rhs: Rhs,
    accumulate: bool,
) {
    // SAFETY: the caller's promise.
    unsafe { K::run(m, n, k, dst, dst_rs, lhs, rhs, accumulate) }
}

/// [`run`]'s loops, inlined into each kernel's [`Kernel::run`] (compiled there with the
/// kernel's CPU features).
///
/// # Safety
/// As [`run`], and the caller is compiled with AVX512-F and `K`'s features.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn run_body<K: Kernel + 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: MatRef<f32>,
    rhs: Rhs,
    accumulate: bool,
) {
    let steps = K::steps(k);
    let kc_max = depth_block(steps, n);
    // The buffers are taken out of the thread-local for the call (and put back at the end)
    // rather than borrowed inside a closure: the closure would be compiled without the
    // kernel's features, and the tile could not be inlined into it.
    let (mut a_buf, mut b_buf) = PACKED.with_borrow_mut(std::mem::take);
    {
        let (a_buf, b_buf) = (&mut a_buf, &mut b_buf);
        let mut block = 0;
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..steps).step_by(kc_max) {
                let kc = kc_max.min(steps - pc);
                // B in place (no packing): its row pc + p, columns jc.., from `direct`.
                let direct = match rhs {
                    Rhs::View(v) if K::IN_PLACE && v.cs == 1 && m <= DIRECT_B_MAX_M && steps <= KC => {
                        Some((v.data.as_ptr().wrapping_add(v.offset + pc * v.rs + jc).cast::<u32>(), v.rs))
                    }
                    _ => None,
                };
                let b_block: &[u32] = match rhs {
                    Rhs::View(_) if direct.is_some() => &[],
                    Rhs::View(v) => {
                        // B read as its transpose: row i of Bᵀ is column i of B.
                        let v_t = MatRef { rs: v.cs, cs: v.rs, ..v };
                        // SAFETY: the CPU features are the caller's promise.
                        unsafe { K::pack_b(v_t, (jc, nc, n), (pc, kc, k), b_buf) };
                        b_buf
                    }
                    Rhs::Packed(p) => p.block(TypeId::of::<K>(), n, k, block),
                };
                block += 1;
                // The first depth block writes (or adds to what dst held, with `accumulate`);
                // later ones add: each element's sum runs over the blocks in order.
                let add = accumulate || pc > 0;
                // A in place (rows contiguous in k; f32, so a step is one k) for a narrow product.
                let a_direct = K::IN_PLACE && lhs.cs == 1 && n <= DIRECT_A_MAX_N;
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    // Whole micro-panels read in place; the last, partial one (reading MR rows in
                    // place would pass A's end) and every panel of a packed A from `a_buf`.
                    let whole = if a_direct { mc / MR * MR } else { 0 };
                    if whole < mc {
                        // SAFETY: as for `pack_b`.
                        unsafe { K::pack_a(lhs, (ic + whole, mc - whole, m), (pc, kc, k), a_buf) };
                    }
                    for jp in 0..nc.div_ceil(NR) {
                        let cols = NR.min(nc - jp * NR);
                        // A packed panel is NR wide, zero-padded (read whole); B in place is
                        // read up to its last column.
                        let (bp, b_rs, b_cols) = match direct {
                            Some((b, rs)) => (b.wrapping_add(jp * NR), rs, cols),
                            None => (b_block[jp * kc * NR..].as_ptr(), NR, NR),
                        };
                        for ip in 0..mc.div_ceil(MR) {
                            let rows = MR.min(mc - ip * MR);
                            let (i0, j0) = (ic + ip * MR, jc + jp * NR);
                            // The tile's sums in runs of at most KC steps, each stored (added
                            // after the first) before the next: the same sums as KC-deep blocks.
                            for p0 in (0..kc).step_by(KC) {
                                let sub = KC.min(kc - p0);
                                let b_sub = bp.wrapping_add(p0 * b_rs);
                                // SAFETY: A's MR rows × steps p0..p0 + sub lie inside the packed
                                // panel, or inside A's view (bounds-checked by the caller: rows
                                // i0..i0 + MR ≤ m, steps pc + p0.. < k); B's sub rows of b_cols
                                // values inside the packed block, or inside B's view (rows
                                // pc + p0.. < k, columns j0.. < n); the tile (i0.., j0..) of
                                // rows × cols inside the m×n destination.
                                unsafe {
                                    let acc = if ip * MR < whole {
                                        let ap = lhs
                                            .data
                                            .as_ptr()
                                            .wrapping_add(lhs.offset + i0 * lhs.rs + pc + p0)
                                            .cast::<u32>();
                                        K::tile(sub, ap, lhs.rs, b_sub, b_rs, b_cols)
                                    } else {
                                        let panel = a_buf[(ip - whole / MR) * kc * MR..].as_ptr();
                                        K::tile_packed(kc, p0, sub, panel, b_sub, b_rs, b_cols)
                                    };
                                    store(&acc, dst.add(i0 * dst_rs + j0), dst_rs, rows, cols, add || p0 > 0);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    PACKED.with_borrow_mut(|bufs| *bufs = (a_buf, b_buf));
}

/// Writes the first `rows` × `cols` of a tile to `dst` (added to it when `add`).
///
/// # Safety
/// `dst` valid for a rows × cols tile with row stride `dst_rs`; the CPU has AVX512-F.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store(acc: &Tile, dst: *mut f32, dst_rs: usize, rows: usize, cols: usize, add: bool) {
    let mask = |v: usize| lanes(cols.saturating_sub(16 * v).min(16));
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

/// The transpose of a 16×16 block of 32-bit values (`r[i]` is row i): two rounds of in-lane
/// interleaves, then two of 128-bit lane shuffles.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
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
