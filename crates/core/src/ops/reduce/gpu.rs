//! The GPU kernels of the reductions (`reduce.wgsl`, `max.wgsl` and its backward, `finite.wgsl`). Sums accumulate in f32 (the CPU
//! accumulates in f64), so they agree to f32 rounding, not bit for bit.

use crate::device::DType;
use crate::error::Result;
use crate::gpu::GpuBuffer;
use crate::gpu::{Kernel, groups_1d, layout_words, output};
use crate::shape::{Layout, Shape};
use crate::storage::{CpuStorage, Storage};
use crate::tensor::Tensor;
use std::sync::Arc;

const SUM_THREAD: Kernel = Kernel { name: "sum_thread", wgsl: include_str!("reduce.wgsl"), entry: "sum_thread" };
const SUM_GROUP: Kernel = Kernel { name: "sum_group", wgsl: include_str!("reduce.wgsl"), entry: "sum_group" };
const MAX: Kernel = Kernel { name: "max", wgsl: include_str!("max.wgsl"), entry: "max_main" };
const MAX_BACKWARD: Kernel =
    Kernel { name: "max_backward", wgsl: include_str!("max_backward.wgsl"), entry: "max_backward_main" };
const FINITE: Kernel = Kernel { name: "all_finite", wgsl: include_str!("finite.wgsl"), entry: "finite_main" };

/// Reductions at least this long get a workgroup each; shorter ones a thread each.
const GROUP_MIN: usize = 64;

/// Fewer outputs than this, each at least `2·SLICE` long, are summed in slices of `SLICE` or
/// more by several workgroups each, then the slices added (two passes).
const SPLIT_BELOW_OUTPUTS: usize = 128;

/// The shortest slice of a split sum (16 elements per thread of a workgroup).
const SLICE: usize = 4096;

fn plan_words(n_out: usize, reduced: usize, plan: &Layout) -> Vec<u32> {
    let mut p = vec![n_out as u32, reduced as u32];
    p.extend(layout_words(plan, plan.shape.dims()));
    p
}

/// The sums of `t` under `plan` (`n_out` outputs of `reduced` elements each).
pub(super) fn sum(t: &Tensor, plan: &Layout, reduced: usize, n_out: usize) -> Result<Storage> {
    let b = t.gpu_f32_buffer("sum")?;
    let mut p = plan_words(n_out, reduced, plan);
    if n_out < SPLIT_BELOW_OUTPUTS && reduced >= 2 * SLICE {
        // Enough slices for ~256 workgroups in all, none shorter than SLICE.
        let splits = (256usize.div_ceil(n_out)).min(reduced / SLICE).max(2);
        let chunk = reduced.div_ceil(splits);
        let splits = reduced.div_ceil(chunk);
        p.extend([splits as u32, chunk as u32]);
        let part = output(&b.ctx, "sum", n_out * splits, DType::F32)?;
        b.ctx.dispatch(&SUM_GROUP, &p, &[b.raw(), part.raw()], ((n_out * splits) as u32, 1, 1))?;
        let slices = Tensor::from_storage(Storage::Gpu(part), Shape(vec![n_out, splits]));
        return sum(&slices, &Layout::contiguous(Shape(vec![n_out, splits])), splits, n_out);
    }
    let out = output(&b.ctx, "sum", n_out, DType::F32)?;
    if reduced >= GROUP_MIN {
        // One slice per output.
        p.extend([1, reduced as u32]);
        let groups = if n_out <= 65_535 { (n_out as u32, 1, 1) } else { (65_535, n_out.div_ceil(65_535) as u32, 1) };
        b.ctx.dispatch(&SUM_GROUP, &p, &[b.raw(), out.raw()], groups)?;
    } else {
        b.ctx.dispatch(&SUM_THREAD, &p, &[b.raw(), out.raw()], groups_1d(n_out))?;
    }
    Ok(Storage::Gpu(out))
}

/// The maxima of `t` under `plan` and their indices (i64, held as i32).
pub(super) fn max(t: &Tensor, plan: &Layout, reduced: usize, n_out: usize) -> Result<(Storage, Storage)> {
    let b = t.gpu_f32_buffer("max")?;
    let values = output(&b.ctx, "max", n_out, DType::F32)?;
    let index = output(&b.ctx, "max", n_out, DType::I64)?;
    let p = plan_words(n_out, reduced, plan);
    b.ctx.dispatch(&MAX, &p, &[b.raw(), values.raw(), index.raw()], groups_1d(n_out))?;
    Ok((Storage::Gpu(values), Storage::Gpu(index)))
}

/// `max`'s input gradient `[in_shape]` from the output gradient `g` (the kept shape, dimension
/// `d` as 1) and the forward's `index` (i32 on the device): a gather, on the device.
pub(super) fn max_backward(g: &Tensor, index: &Storage, in_shape: &Shape, d: usize) -> Result<Tensor> {
    let g = g.owned_detached()?;
    let bg = g.gpu_f32_buffer("max backward")?;
    let Storage::Gpu(index) = index else { unreachable!("the GPU max keeps its indices on the device") };
    let numel = in_shape.numel();
    let inner: usize = in_shape.dims()[d + 1..].iter().product();
    let dx = output(&bg.ctx, "max backward", numel, DType::F32)?;
    let p = [numel as u32, in_shape.dims()[d] as u32, inner as u32];
    bg.ctx.dispatch(&MAX_BACKWARD, &p, &[bg.raw(), index.raw(), dx.raw()], groups_1d(numel))?;
    Ok(Tensor::from_storage(Storage::Gpu(dx), in_shape.clone()))
}

/// Whether every element of every f32 tensor in `tensors` (all on the GPU of the first) is
/// finite: one flag on the device that each tensor's check may set, read back once.
pub(super) fn all_finite(tensors: &[&Tensor]) -> Result<bool> {
    let Some(first) = tensors.first() else { return Ok(true) };
    let ctx = first.gpu_buffer("all_finite")?.ctx.clone();
    let flag = Arc::new(GpuBuffer::upload(first.device(), "all_finite", &CpuStorage::F32(vec![0.0]))?);
    for t in tensors.iter().filter(|t| t.dtype() == DType::F32 && t.numel() > 0) {
        let b = t.gpu_buffer("all_finite")?;
        let mut p = vec![t.numel() as u32];
        p.extend(layout_words(t.layout(), t.dims()));
        ctx.dispatch(&FINITE, &p, &[b.raw(), flag.raw()], groups_1d(t.numel()))?;
    }
    let CpuStorage::F32(v) = &flag.download("all_finite")? else { unreachable!("an f32 buffer") };
    // The flag's bits are 0 (all finite) or the integer 1.
    Ok(v[0].to_bits() == 0)
}
