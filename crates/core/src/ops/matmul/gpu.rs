//! The GPU kernels of matmul and linear (`matmul.wgsl`): a tiled, batched GEMM with strided
//! operands and an optional bias + ReLU epilogue, and a split-K kernel with the same parameters
//! for products of a few rows.

use crate::device::DType;
use crate::error::Result;
use crate::gpu::{GpuBuffer, Kernel, groups_1d, layout_words, output};
use crate::shape::Layout;
use crate::storage::Storage;
use crate::tensor::Tensor;
use std::sync::Arc;

const MATMUL: Kernel = Kernel { name: "matmul", wgsl: include_str!("matmul.wgsl"), entry: "matmul_main" };
const GEMV: Kernel = Kernel { name: "matmul_gemv", wgsl: include_str!("matmul.wgsl"), entry: "gemv_main" };
const SPLITK: Kernel = Kernel { name: "matmul_splitk", wgsl: include_str!("splitk.wgsl"), entry: "splitk_main" };

/// Output tiles (64×64, over the batch) below which a product with a long K is split along K:
/// a GPU has ~100 compute units, and a product of 2 tiles (SimpleNN's first layer at batch 64)
/// ran its 49-deep K loop on 2 of them.
const SPLIT_BELOW_TILES: usize = 64;

/// The shortest K slice a split gives one workgroup (8 of the kernel's 16-deep steps).
const MIN_SLICE: usize = 128;

/// How many K slices a tiled product of `tiles` output tiles and depth `k` runs as (1: none).
fn k_splits(tiles: usize, k: usize) -> usize {
    // No tiles (an empty output): nothing to split, and no division by zero.
    if tiles == 0 || tiles >= SPLIT_BELOW_TILES {
        return 1;
    }
    (2 * SPLIT_BELOW_TILES).div_ceil(tiles).min(k / MIN_SLICE).max(1)
}

/// Most rows (or columns) a product takes the split-K kernel with: at 8 the tiled kernel still
/// leaves seven eighths of each 64-wide tile idle and runs on few workgroups, while the split-K
/// one reads the other operand once per row (column).
const GEMV_MAX_SIDE: usize = 8;

/// Most workgroups along one dispatch dimension (WebGPU's default limit).
const MAX_GROUPS: usize = 65_535;

/// One operand: the tensor, its batch layout (broadcast to the result's batch shape) and the
/// strides of its rows and columns.
pub(crate) struct Operand<'a> {
    /// The tensor holding the matrices.
    pub t: &'a Tensor,
    /// Where each batch's matrix starts: a layout over the batch shape.
    pub batch: Layout,
    /// Stride between rows.
    pub rs: usize,
    /// Stride between columns.
    pub cs: usize,
}

/// `out[z] = a[z] · b[z]` for every batch `z` (`batch` of them), `[m, k] × [k, n]`, plus `bias`
/// (`[n]`, contiguous) and a ReLU when asked; a fresh contiguous `[batch, m, n]` buffer.
pub(crate) fn gemm(
    op: &'static str,
    a: Operand<'_>,
    b: Operand<'_>,
    (batch, m, k, n): (usize, usize, usize, usize),
    bias: Option<&Tensor>,
    relu: bool,
) -> Result<Storage> {
    let (ba, bb) = (a.t.gpu_f32_buffer(op)?, b.t.gpu_f32_buffer(op)?);
    let ctx = &ba.ctx;
    let out = output(ctx, op, batch * m * n, DType::F32)?;
    let bias_buf: Arc<GpuBuffer> = match bias {
        // A buffer of its own, so the kernel reads it from element 0.
        Some(t) => t.owned_detached()?.gpu_f32_buffer(op)?,
        // Bound but unread: the binding must exist.
        None => output(ctx, op, 1, DType::F32)?,
    };
    let flags = u32::from(bias.is_some()) | (u32::from(relu) << 1);
    let gemv = (m <= GEMV_MAX_SIDE || n <= GEMV_MAX_SIDE) && m <= MAX_GROUPS && n <= MAX_GROUPS;
    let splits = if gemv { 1 } else { k_splits(n.div_ceil(64) * m.div_ceil(64) * batch, k) };
    // Slices a multiple of the kernel's 16-deep step (and at least one step: K may be 0).
    let slice = k.div_ceil(splits).next_multiple_of(16).max(16);
    let splits = k.div_ceil(slice).max(1);
    let mut p = vec![m as u32, n as u32, k as u32, a.rs as u32, a.cs as u32, b.rs as u32, b.cs as u32, flags];
    p.extend([splits as u32, slice as u32]);
    let dims = a.batch.shape.0.clone();
    p.extend(layout_words(&a.batch, &dims));
    p.extend(layout_words(&b.batch, &dims));
    let tiles = |z: usize| (n.div_ceil(64), m.div_ceil(64), z);
    // The grid in dispatches of at most MAX_GROUPS workgroups per dimension, each told its origin.
    let run = |kernel: &Kernel, (gx, gy, gz): (usize, usize, usize), buffers: &[&wgpu::Buffer]| -> Result<()> {
        for z0 in (0..gz).step_by(MAX_GROUPS) {
            for y0 in (0..gy).step_by(MAX_GROUPS) {
                for x0 in (0..gx).step_by(MAX_GROUPS) {
                    let mut words = p.clone();
                    words.extend([x0 as u32, y0 as u32, z0 as u32]);
                    let size = |g: usize, at: usize| (g - at).min(MAX_GROUPS) as u32;
                    ctx.dispatch(kernel, &words, buffers, (size(gx, x0), size(gy, y0), size(gz, z0)))?;
                }
            }
        }
        Ok(())
    };
    if gemv {
        // One workgroup per output element: (column, row, batch).
        run(&GEMV, (n, m, batch), &[ba.raw(), bb.raw(), bias_buf.raw(), out.raw()])?;
    } else if splits == 1 {
        run(&MATMUL, tiles(batch), &[ba.raw(), bb.raw(), bias_buf.raw(), out.raw()])?;
    } else {
        // Each slice's partial product, then their sum with the epilogue.
        let part = output(ctx, op, splits * batch * m * n, DType::F32)?;
        run(&MATMUL, tiles(splits * batch), &[ba.raw(), bb.raw(), bias_buf.raw(), part.raw()])?;
        let total = batch * m * n;
        let q = [total as u32, (m * n) as u32, n as u32, splits as u32, flags];
        ctx.dispatch(&SPLITK, &q, &[part.raw(), bias_buf.raw(), out.raw()], groups_1d(total))?;
    }
    Ok(Storage::Gpu(out))
}
