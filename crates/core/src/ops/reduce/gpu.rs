//! The GPU kernels of the reductions (`reduce.wgsl`, `max.wgsl`). Sums accumulate in f32 (the CPU
//! accumulates in f64), so they agree to f32 rounding, not bit for bit.

use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, layout_words, output};
use crate::shape::Layout;
use crate::storage::Storage;
use crate::tensor::Tensor;

const SUM_THREAD: Kernel = Kernel { name: "sum_thread", wgsl: include_str!("reduce.wgsl"), entry: "sum_thread" };
const SUM_GROUP: Kernel = Kernel { name: "sum_group", wgsl: include_str!("reduce.wgsl"), entry: "sum_group" };
const MAX: Kernel = Kernel { name: "max", wgsl: include_str!("max.wgsl"), entry: "max_main" };

/// Reductions at least this long get a workgroup each; shorter ones a thread each.
const GROUP_MIN: usize = 64;

fn plan_words(n_out: usize, reduced: usize, plan: &Layout) -> Vec<u32> {
    let mut p = vec![n_out as u32, reduced as u32];
    p.extend(layout_words(plan, plan.shape.dims()));
    p
}

/// The sums of `t` under `plan` (`n_out` outputs of `reduced` elements each).
pub(super) fn sum(t: &Tensor, plan: &Layout, reduced: usize, n_out: usize) -> Result<Storage> {
    let b = t.gpu_buffer("sum")?;
    let out = output(&b.ctx, "sum", n_out, DType::F32)?;
    let p = plan_words(n_out, reduced, plan);
    if reduced >= GROUP_MIN {
        let groups = if n_out <= 65_535 { (n_out as u32, 1, 1) } else { (65_535, n_out.div_ceil(65_535) as u32, 1) };
        b.ctx.dispatch(&SUM_GROUP, &p, &[b.raw(), out.raw()], groups)?;
    } else {
        b.ctx.dispatch(&SUM_THREAD, &p, &[b.raw(), out.raw()], groups_1d(n_out))?;
    }
    Ok(Storage::Gpu(out))
}

/// The maxima of `t` under `plan` and their indices (i64, held as i32).
pub(super) fn max(t: &Tensor, plan: &Layout, reduced: usize, n_out: usize) -> Result<(Storage, Storage)> {
    let b = t.gpu_buffer("max")?;
    let values = output(&b.ctx, "max", n_out, DType::F32)?;
    let index = output(&b.ctx, "max", n_out, DType::I64)?;
    let p = plan_words(n_out, reduced, plan);
    b.ctx.dispatch(&MAX, &p, &[b.raw(), values.raw(), index.raw()], groups_1d(n_out))?;
    Ok((Storage::Gpu(values), Storage::Gpu(index)))
}
