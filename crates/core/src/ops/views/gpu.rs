//! The GPU kernels of views on tensors: `to_dtype`'s conversion, scatters (`copy.wgsl`), and
//! `narrow`'s backward. The copy and fill kernels on bare buffers, which `contiguous`, copies and
//! tensors made on a GPU use, are in `gpu_buffer.rs`.

use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, layout_words, output};
use crate::shape::{Layout, Shape};
use crate::storage::Storage;
use crate::tensor::Tensor;

const CONVERT: Kernel = Kernel { name: "convert", wgsl: include_str!("copy.wgsl"), entry: "convert_main" };
const SCATTER: Kernel = Kernel { name: "scatter", wgsl: include_str!("copy.wgsl"), entry: "scatter_main" };

/// `src` written into the region `region` (a layout over `dst`'s buffer, of `src`'s shape) of
/// `dst`, which must own its buffer unshared (a fresh tensor).
pub(crate) fn scatter(dst: &Tensor, region: &Layout, src: &Tensor) -> Result<()> {
    let src = src.owned_detached()?;
    let (bd, bs) = (dst.gpu_buffer("scatter")?, src.gpu_buffer("scatter")?);
    let n = src.numel();
    let mut p = vec![n as u32];
    p.extend(layout_words(region, src.dims()));
    bd.ctx.dispatch(&SCATTER, &p, &[bs.raw(), bd.raw()], groups_1d(n))
}

/// `t` converted between f32 and i64 (held as i32), into a fresh buffer.
pub(crate) fn convert(t: &Tensor, dtype: DType) -> Result<Storage> {
    let op = "to_dtype";
    let to_int = match (t.dtype(), dtype) {
        (DType::F32, DType::I64) => 1,
        (DType::I64, DType::F32) => 0,
        (_, other) => crate::gpu::check_dtype(op, other).and(crate::gpu::check_dtype(op, t.dtype())).map(|_| 0)?,
    };
    let b = t.gpu_buffer(op)?;
    let n = t.numel();
    let out = output(&b.ctx, op, n, dtype)?;
    let mut p = vec![n as u32, to_int];
    p.extend(layout_words(t.layout(), t.dims()));
    b.ctx.dispatch(&CONVERT, &p, &[b.raw(), out.raw()], groups_1d(n))?;
    Ok(Storage::Gpu(out))
}

/// `narrow`'s backward on a GPU: `g` (the gradient of the `len` slices from `start` along
/// dimension `d`) scattered into zeros of `in_shape`.
pub(super) fn narrow_backward(g: &Tensor, in_shape: &Shape, d: usize, start: usize, len: usize) -> Result<Tensor> {
    let out = Tensor::full_on(in_shape.dims(), 0.0, g.dtype(), g.device())?;
    let mut region = out.layout().clone();
    region.offset += start * region.strides[d];
    region.shape.0[d] = len;
    scatter(&out, &region, g)?;
    Ok(out)
}
