//! The bf16 matrix product on Intel's AMX tiles (Sapphire Rapids and later): the same operands
//! as `bf16.rs`'s (rounded to bf16 pairs by its packing), multiplied by `tdpbf16ps`, a 16×16
//! f32 tile += a 16×32 bf16 tile · a 32×16 bf16 tile, 8,192 multiply-adds per instruction.
//!
//! Blocking as `packed.rs`'s (columns in blocks of `NC`, depth in blocks of `KC` pairs, B packed
//! once per block, A once per row block; the sizes are this file's), with a 32×32 micro-tile:
//! two A tiles (rows 0–15 and 16–31, 16 pairs each) and two B tiles (columns 0–15 and 16–31 of a
//! packed 32-column panel) feed four C tiles. The packed layouts are `bf16.rs`'s, which are what
//! the tiles read: A `[row][pair]` (a tile row is 16 consecutive pairs of one row), B
//! `[pair][column]` (a tile row is one pair of 16 columns), both from 64-byte boundaries
//! (`packed::Packing`). A block's depth is padded with zero pairs to a multiple of 16, a tile's
//! depth.
//!
//! Measured on a 2-core Intel Xeon with AMX (KVM, 2026-12-03): the micro-tile with its operands
//! in L1 runs at ~1,640 GFLOP/s on one core (`tdpbf16ps` peaks at 1,024 flops a cycle: ~2
//! TFLOP/s at 2 GHz); W4's products, B packed ahead, at 700–1,200; against `bf16.rs`'s AVX512-BF16 kernel on the same machine, W4
//! in bf16 (`strata-bench -w W4 --precision bf16 --threads 2`) went from ~4,900 to ~21,000
//! samples/s.
//!
//! The output tiles start from what `dst` holds (or zero) and are stored back after each depth
//! block, so an element's sum is the same chain of `tdpbf16ps` additions wherever the element
//! lies in a tile: tiles at the edges go through a scratch copy, not a different sum. As
//! `packed.rs`, any cut of the product into blocks (`cpu.rs`) gives the same bits.
//!
//! The tile state is off until the process asks Linux for it (`arch_prctl`,
//! `ARCH_REQ_XCOMP_PERM`); where that is refused (an older kernel, a hypervisor that hides the
//! state), or `STRATA_NO_AMX` is set, [`available`] is false and bf16 products take the
//! AVX512-BF16 kernel.
//!
//! What was looked for first: no crate on crates.io gives a bf16 GEMM on AMX (the `gemm`
//! family has none; the AMX crates found wrap the intrinsics, which are unstable in Rust, and
//! stop there), so the tile instructions are issued here through `asm!`.

use super::bf16::x86::Bf16;
use super::gemm_crate::MatRef;
use super::packed::{self, Kernel, NR, Operand, PackedB, Packing, Rhs};
use std::any::TypeId;
use std::arch::asm;
use std::cell::RefCell;
use std::sync::OnceLock;

/// The tag of right operands packed here ([`pack_whole`]): their depth blocks are padded.
pub(super) struct Amx;

/// Rows of the micro-tile: two A tiles of 16.
const TM: usize = 32;
/// Pairs per depth block: four times `packed.rs`'s (the output tiles are stored and reloaded
/// after each block, and that store waits for the tiles' sums to drain: ~20% of the kernel's
/// time at 256). A B micro-panel (`KC·NR` values) is 64 KiB, in L2. Chosen with `MC` and `NC`
/// on W4's three products (`cargo run --release -p strata-bench --example w4_products`, one
/// thread, medians of 30): 512 against 256 took the forward and input-gradient products from
/// ~600 to ~660 GFLOP/s; 1024, MC 128 or NC 512/256 were no better (NC 256 clearly worse).
const KC: usize = 512;
/// Rows per packed A block: two micro-panels (128 KiB with `KC`); see `KC`.
const MC: usize = 64;
/// Columns per packed B block: 2 MiB with `KC`, L2's size; see `KC`.
const NC: usize = packed::NC;
/// Pairs per tile row (64 bytes): the depth one `tdpbf16ps` covers.
const TK: usize = 16;

/// Whether this process can run the AMX kernel: the CPU has AMX-TILE and AMX-BF16 (and the
/// AVX512-BF16 the packing uses), it is not [`turned_off`], and the OS granted the tile state.
pub(super) fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| super::bf16::x86::available() && cpu_has_amx() && !turned_off() && request_tile_state())
}

/// Whether `STRATA_NO_AMX` is set (to anything but `0`): bf16 products then take the
/// AVX512-BF16 kernel on an AMX CPU, to compare the two or to step around a tile problem (as
/// oneDNN's `ONEDNN_MAX_CPU_ISA`). Read once, with the first bf16 product.
pub(super) fn turned_off() -> bool {
    std::env::var_os("STRATA_NO_AMX").is_some_and(|v| v != "0")
}

/// Whether the CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7: EDX bits 24 and 22), whatever the
/// OS allows.
pub(super) fn cpu_has_amx() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // Leaf 7 is read only where leaf 0 lists it.
    let max = __cpuid(0).eax;
    let edx = if max >= 7 { __cpuid_count(7, 0).edx } else { 0 };
    max >= 7 && edx & (1 << 22) != 0 && edx & (1 << 24) != 0
}

/// Asks Linux for the tile data state (XTILEDATA, state component 18) for this process, which
/// it grants once and for all threads; false where refused.
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this code only reads its integer argument.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

/// Other systems: not tried (the kernel is written for Linux's permission request).
#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The tile configuration: palette 1, every tile 16 rows of 64 bytes (C: 16×16 f32; A: 16 rows
/// × 16 pairs; B: 16 pairs × 16 columns).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            // Bytes per row (u16 at 16 + 2t), rows (u8 at 48 + t).
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

thread_local! {
    /// Packing buffers (A block, B block), reused across calls on this thread.
    static PACKED: RefCell<(Packing, Packing)> = const { RefCell::new((Packing::new(), Packing::new())) };
}

/// A left operand packed whole for [`run`] (every depth block's row blocks, as `run` visits
/// them), so that the column blocks of one product (`cpu.rs` cuts W4's products in four) share
/// one packing of A instead of each packing all of it: A's packing was ~8% of a W4 bf16 step,
/// three quarters of it repeated. W4 bf16 step (`examples/w4_phases -- bf16 2`, medians of 60
/// steps, seven alternating runs): 10.5–11.1 ms → 9.8–10.1 ms in six, level in one.
#[derive(Default)]
pub(super) struct PackedA {
    m: usize,
    k: usize,
    /// Depth block by depth block, row block by row block; each padded to whole micro-tiles.
    blocks: Vec<Packing>,
}

/// The left operand of [`run`]: A as a view, or packed by [`with_shared_lhs`] for the same m
/// and k.
pub(super) type Lhs<'a> = Operand<'a, PackedA>;

thread_local! {
    /// The calling thread's shared packing of A ([`with_shared_lhs`]), reused across calls.
    static SHARED_A: RefCell<PackedA> = RefCell::new(PackedA::default());
}

/// Runs `f` with `lhs` (m×k) packed whole for [`run`] in this thread's reusable buffer, or with
/// `None` where that buffer is in use (a product started inside another's, as rayon may do
/// while the first waits for its blocks): `f` then lets each block pack its own.
///
/// # Safety
/// [`available`] must be true; the view lies inside its buffer.
pub(super) unsafe fn with_shared_lhs<R>(
    lhs: MatRef<f32>,
    m: usize,
    k: usize,
    f: impl FnOnce(Option<&PackedA>) -> R,
) -> R {
    SHARED_A.with(|cell| {
        let Ok(mut packed) = cell.try_borrow_mut() else {
            return f(None);
        };
        let steps = k.div_ceil(2);
        let count = steps.div_ceil(KC) * m.div_ceil(MC);
        packed.blocks.resize_with(count, Packing::new);
        (packed.m, packed.k) = (m, k);
        let mut blocks = packed.blocks.iter_mut();
        for pc in (0..steps).step_by(KC) {
            let kc = padded(KC.min(steps - pc));
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                let buf = blocks.next().expect("one buffer per block");
                // SAFETY: the CPU has AVX512-BF16 (`available`); the view is the caller's promise.
                unsafe { pack_a_block(lhs, (ic, mc, m), (pc, kc, k), buf) };
            }
        }
        f(Some(&*packed))
    })
}

/// Rows `ic..ic + mc` of A (m in all), depth block `pc..pc + kc` pairs, packed as [`run`]
/// reads them: `bf16.rs`'s layout, zero rows up to whole micro-tiles.
///
/// # Safety
/// The CPU has AVX512-BF16; the view lies inside its buffer.
unsafe fn pack_a_block(
    lhs: MatRef<f32>,
    (ic, mc, m): (usize, usize, usize),
    (pc, kc, k): (usize, usize, usize),
    buf: &mut Packing,
) {
    // SAFETY: the caller's promise.
    unsafe { Bf16::pack_a(lhs, (ic, mc, m), (pc, kc, k), buf) };
    buf.grow_zeroed(mc.next_multiple_of(TM) * kc);
}

/// A depth block of `kc` pairs padded to whole tiles.
fn padded(kc: usize) -> usize {
    kc.next_multiple_of(TK)
}

/// `rhs` (k×n) packed whole for [`run`]: what `prepare_rhs` keeps for an LSTM's recurrent
/// weight.
///
/// # Safety
/// [`available`] must be true; the view lies inside its buffer.
pub(super) unsafe fn pack_whole(rhs: MatRef<f32>, n: usize, k: usize) -> PackedB {
    let steps = k.div_ceil(2);
    let rhs_t = MatRef { rs: rhs.cs, cs: rhs.rs, ..rhs };
    let mut blocks = Vec::new();
    for jc in (0..n).step_by(NC) {
        for pc in (0..steps).step_by(KC) {
            let mut buf = Packing::new();
            // SAFETY: the CPU has AVX512-BF16 (`available`); the view is the caller's promise.
            unsafe { Bf16::pack_b(rhs_t, (jc, NC.min(n - jc), n), (pc, padded(KC.min(steps - pc)), k), &mut buf) };
            blocks.push(buf);
        }
    }
    PackedB::from_blocks(TypeId::of::<Amx>(), n, k, blocks)
}

/// `dst[m×n] (+)= bf16(lhs)[m×k] · bf16(rhs)[k×n]` on the tiles, `dst` with row stride `dst_rs`.
///
/// # Safety
/// [`available`] must be true; `dst` valid for reads and writes of an m×n block with row stride
/// `dst_rs`; the operands' views inside their buffers; a packed `rhs` from [`pack_whole`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn run(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: Lhs,
    rhs: Rhs,
    accumulate: bool,
) {
    let steps = k.div_ceil(2);
    if let Lhs::Packed(p) = lhs {
        assert!((p.m, p.k) == (m, k), "a packed operand used with another product");
    }
    let row_blocks = m.div_ceil(MC);
    let config = TileConfig::new();
    PACKED.with_borrow_mut(|(a_buf, b_buf)| {
        // SAFETY: the OS granted the tile state (`available`); the configuration is valid for
        // palette 1. The tiles stay configured until `tilerelease` below: the compiler never
        // emits tile instructions of its own (no AMX target feature is enabled), so nothing
        // between the `asm!` blocks touches them.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
        let mut block = 0;
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..steps).step_by(KC) {
                let kc = padded(KC.min(steps - pc));
                let b_block: &[u32] = match rhs {
                    Rhs::View(v) => {
                        // B read as its transpose: row i of Bᵀ is column i of B.
                        let v_t = MatRef { rs: v.cs, cs: v.rs, ..v };
                        // SAFETY: the CPU has AVX512-BF16 (`available`); the view is the
                        // caller's promise.
                        unsafe { Bf16::pack_b(v_t, (jc, nc, n), (pc, kc, k), b_buf) };
                        b_buf
                    }
                    Rhs::Packed(p) => p.block(TypeId::of::<Amx>(), n, k, block),
                };
                assert!(b_block.len() >= nc.div_ceil(NR) * kc * NR, "a packed block of another depth");
                block += 1;
                // The first depth block writes (or adds to what dst held, with `accumulate`);
                // later ones add: each element's sum runs over the blocks in order.
                let add = accumulate || pc > 0;
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    let a_block: &[u32] = match lhs {
                        Lhs::View(v) => {
                            // SAFETY: as for `pack_b`.
                            unsafe { pack_a_block(v, (ic, mc, m), (pc, kc, k), a_buf) };
                            a_buf
                        }
                        Lhs::Packed(p) => &p.blocks[pc / KC * row_blocks + ic / MC],
                    };
                    assert!(a_block.len() >= mc.next_multiple_of(TM) * kc, "a packed block of another depth");
                    for jp in 0..nc.div_ceil(NR) {
                        let cols = NR.min(nc - jp * NR);
                        let bp = b_block[jp * kc * NR..].as_ptr();
                        for ip in 0..mc.div_ceil(TM) {
                            let rows = TM.min(mc - ip * TM);
                            let ap = a_block[ip * TM * kc..].as_ptr();
                            // SAFETY: the A panel holds TM rows of kc pairs, the B panel kc pairs
                            // of NR columns (both packed above, kc a multiple of TK); the tile
                            // (ic + ip·TM.., jc + jp·NR..) of rows × cols lies inside dst.
                            unsafe {
                                let d = dst.add((ic + ip * TM) * dst_rs + jc + jp * NR);
                                micro(kc, ap, bp, (d, dst_rs), (rows, cols), add);
                            }
                        }
                    }
                }
            }
        }
        // SAFETY: releases the state configured above.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    });
}

/// One C tile's scratch copy (a tile at the product's edge): 16 rows of 16 f32.
#[repr(C, align(64))]
struct Scratch([[f32; 16]; 16]);

/// Loads C tile `t` (0–3) from `p` with row stride `stride` bytes.
macro_rules! load_c {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tileloadd tmm", $t, ", [{0} + {1}]"), in(reg) $p, in(reg) $stride, options(nostack, readonly))
    };
}

/// Stores C tile `t` (0–3) to `p` with row stride `stride` bytes.
macro_rules! store_c {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tilestored [{0} + {1}], tmm", $t), in(reg) $p, in(reg) $stride, options(nostack))
    };
}

/// The 32×32 micro-tile: `dst` (rows × cols of it live) (+)= A panel · B panel over `kc` pairs.
///
/// # Safety
/// Tiles configured by `run`; `a` holds TM rows of `kc` pairs, `b` `kc` pairs of NR columns,
/// `kc` a multiple of TK; `dst` (row stride `dst.1`) valid for rows × cols.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn micro(
    kc: usize,
    a: *const u32,
    b: *const u32,
    (dst, dst_rs): (*mut f32, usize),
    (rows, cols): (usize, usize),
    add: bool,
) {
    // C tile t covers rows 16·(t / 2).., columns 16·(t % 2)..; its live rows and columns, and
    // whether it is whole (read and written in place) or goes through scratch.
    let live = |t: usize| (rows.saturating_sub(16 * (t / 2)).min(16), cols.saturating_sub(16 * (t % 2)).min(16));
    let at = |t: usize| dst.wrapping_add(16 * (t / 2) * dst_rs + 16 * (t % 2));
    // Uninitialised: most micro-tiles are whole, and zeroing 4 KiB each time would cost a tenth
    // of one; an edge tile zeroes its own scratch before use.
    let mut scratch = std::mem::MaybeUninit::<[Scratch; 4]>::uninit();
    let base = scratch.as_mut_ptr().cast::<Scratch>();
    let scratch_at = |t: usize| base.wrapping_add(t).cast::<f32>();
    let mut src = [(std::ptr::null_mut::<f32>(), 0usize); 4];
    for (t, s) in src.iter_mut().enumerate() {
        let (lr, lc) = live(t);
        *s = if lr == 16 && lc == 16 {
            (at(t), dst_rs * 4)
        } else {
            let p = scratch_at(t);
            if add {
                // SAFETY: the tile's scratch holds 256 f32; row r < lr and columns < lc of this
                // tile lie inside dst.
                unsafe {
                    std::ptr::write_bytes(p, 0, 256);
                    for r in 0..lr {
                        std::ptr::copy_nonoverlapping(at(t).add(r * dst_rs), p.add(16 * r), lc);
                    }
                }
            }
            (p, 64)
        };
    }
    // SAFETY: whole tiles read 16 rows × 16 f32 of dst; edge tiles their scratch copy.
    unsafe {
        if add {
            load_c!("0", src[0].0, src[0].1);
            load_c!("1", src[1].0, src[1].1);
            load_c!("2", src[2].0, src[2].1);
            load_c!("3", src[3].0, src[3].1);
        } else {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        }
    }
    for c in 0..kc / TK {
        // SAFETY: A's rows 0–15 and 16–31 at pairs 16c..16c + 16 (row stride kc pairs), B's
        // pairs 16c..16c + 16 at columns 0–15 and 16–31 (row stride NR): inside the panels.
        unsafe {
            asm!(
                "tileloadd tmm4, [{a0} + {a_rs}]",
                "tileloadd tmm6, [{b0} + {b_rs}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {b_rs}]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {a_rs}]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a.add(c * TK),
                a1 = in(reg) a.add(16 * kc + c * TK),
                a_rs = in(reg) kc * 4,
                b0 = in(reg) b.add(c * TK * NR),
                b1 = in(reg) b.add(c * TK * NR + 16),
                b_rs = in(reg) NR * 4,
                options(nostack, readonly),
            );
        }
    }
    // SAFETY: as the loads.
    unsafe {
        store_c!("0", src[0].0, src[0].1);
        store_c!("1", src[1].0, src[1].1);
        store_c!("2", src[2].0, src[2].1);
        store_c!("3", src[3].0, src[3].1);
    }
    for t in 0..4 {
        let (lr, lc) = live(t);
        if lr == 16 && lc == 16 {
            continue;
        }
        for r in 0..lr {
            // SAFETY: as the copy in; the scratch was written by the tile store.
            unsafe { std::ptr::copy_nonoverlapping(scratch_at(t).add(16 * r), at(t).add(r * dst_rs), lc) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm_crate::{TestOperands, test_values as values};
    use super::super::packed;
    use super::*;

    #[test]
    fn equals_the_avx512_bf16_kernel_within_f32_rounding() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX tiles");
            return;
        }
        // Edges of the micro-tile (32×32), the tile depth (16 pairs: k 7, 259), the depth block
        // (512 pairs: k 1025), the row block (64: m 130) and the column block (1024: n 1094).
        for &(m, n, k) in &[(1, 1, 1), (17, 33, 7), (32, 32, 32), (45, 70, 259), (130, 40, 1025), (3, 1094, 40)] {
            let ops = TestOperands::new(m, n, k);
            for (lhs, rhs) in ops.layouts() {
                // SAFETY: AMX checked; pack_whole's view covers its buffer.
                let whole = unsafe { pack_whole(rhs, n, k) };
                for accumulate in [false, true] {
                    let mut want = vec![0.5f32; m * n];
                    let (mut got, mut got_packed, mut got_shared) = (want.clone(), want.clone(), want.clone());
                    // SAFETY: the CPU has AMX and AVX512-BF16 (checked); dst holds m×n; the views
                    // cover their buffers.
                    unsafe {
                        packed::run::<Bf16>(m, n, k, want.as_mut_ptr(), n, lhs, Rhs::View(rhs), accumulate);
                        run(m, n, k, got.as_mut_ptr(), n, Lhs::View(lhs), Rhs::View(rhs), accumulate);
                        run(m, n, k, got_packed.as_mut_ptr(), n, Lhs::View(lhs), Rhs::Packed(&whole), accumulate);
                        with_shared_lhs(lhs, m, k, |a| {
                            let a = Lhs::Packed(a.expect("the buffer is free"));
                            run(m, n, k, got_shared.as_mut_ptr(), n, a, Rhs::View(rhs), accumulate);
                        });
                    }
                    assert_eq!(got, got_packed, "{m}×{n}×{k}: a packed operand changed the result");
                    assert_eq!(got, got_shared, "{m}×{n}×{k}: a shared packing of A changed the result");
                    for (g, w) in got.iter().zip(&want) {
                        let tol = 1e-5 * (k as f32).sqrt() * (1.0 + w.abs());
                        assert!((g - w).abs() <= tol, "{m}×{n}×{k}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_cut_of_the_output_changes_no_bit() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX tiles");
            return;
        }
        // The whole product, and the same product cut into column blocks at 16 and 48 (so that
        // elements move between whole and edge tiles): equal bits.
        let (m, n, k) = (40, 80, 300);
        let (a, b) = (values(m * k, 3), values(k * n, 4));
        let lhs = MatRef { data: &a[..], offset: 0, rs: k, cs: 1 };
        let mut whole = vec![0.25f32; m * n];
        let (mut cut, mut shared) = (whole.clone(), whole.clone());
        // SAFETY: AMX checked; each block's destination and views lie inside the buffers.
        unsafe {
            run(
                m,
                n,
                k,
                whole.as_mut_ptr(),
                n,
                Lhs::View(lhs),
                Rhs::View(MatRef { data: &b[..], offset: 0, rs: n, cs: 1 }),
                true,
            );
            for (j0, j1) in [(0, 16), (16, 48), (48, 80)] {
                let rhs = MatRef { data: &b[..], offset: j0, rs: n, cs: 1 };
                run(m, j1 - j0, k, cut.as_mut_ptr().add(j0), n, Lhs::View(lhs), Rhs::View(rhs), true);
            }
            // The same cut sharing one packing of A, as `cpu.rs` runs column blocks.
            with_shared_lhs(lhs, m, k, |a| {
                let a = Lhs::Packed(a.expect("the buffer is free"));
                for (j0, j1) in [(0, 16), (16, 48), (48, 80)] {
                    let rhs = MatRef { data: &b[..], offset: j0, rs: n, cs: 1 };
                    run(m, j1 - j0, k, shared.as_mut_ptr().add(j0), n, a, Rhs::View(rhs), true);
                }
            });
        }
        assert_eq!(whole, cut);
        assert_eq!(whole, shared);
    }
}
