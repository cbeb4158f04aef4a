//! The copy and fill kernels on bare GPU buffers (`copy.wgsl`'s copy, `fill.wgsl`), with no
//! `Tensor` in them: what the tensor itself needs on a GPU (`Tensor::full_on`, the copies behind
//! copy-on-write and owned buffers), so the tensor sits below the ops and `gpu.rs`'s
//! tensor-level kernels sit above it.

use crate::device::{DType, Device};
use crate::error::{Error, Result};
use crate::gpu::{GpuBuffer, Kernel, context, groups_1d, layout_words, output};
use crate::shape::Layout;
use std::sync::Arc;

const COPY: Kernel = Kernel { name: "copy", wgsl: include_str!("copy.wgsl"), entry: "copy_main" };
const FILL: Kernel = Kernel { name: "fill", wgsl: include_str!("fill.wgsl"), entry: "fill_main" };

/// The elements `layout` picks from `b`, in a fresh contiguous buffer (always a copy).
pub(crate) fn copy(b: &Arc<GpuBuffer>, layout: &Layout) -> Result<Arc<GpuBuffer>> {
    let n = layout.shape.numel();
    let out = output(&b.ctx, "contiguous", n, b.dtype())?;
    let mut p = vec![n as u32];
    p.extend(layout_words(layout, layout.shape.dims()));
    b.ctx.dispatch(&COPY, &p, &[b.raw(), out.raw()], groups_1d(n))?;
    Ok(out)
}

/// A buffer of `n` elements of `dtype`, each `value`, on GPU `device`.
pub(crate) fn full(n: usize, value: f64, dtype: DType, device: Device) -> Result<Arc<GpuBuffer>> {
    let ctx = context(device)?;
    let word = match dtype {
        DType::F32 => (value as f32).to_bits(),
        DType::I64 => {
            let v = value as i64;
            i32::try_from(v).map_err(|_| Error::InvalidArgument {
                op: "full",
                message: format!("{v} does not fit the GPU's 32-bit integers"),
            })? as u32
        }
        DType::F64 => return crate::gpu::check_dtype("full", dtype).map(|_| unreachable!("f64 is refused")),
    };
    let out = output(&ctx, "full", n, dtype)?;
    ctx.dispatch(&FILL, &[n as u32, word], &[out.raw()], groups_1d(n))?;
    Ok(out)
}
