//! The shape ops' CPU kernels: copying any layout into a fresh row-major buffer (`contiguous`),
//! the element-type conversions of `to_dtype`, and `narrow`'s backward (the gradient written
//! into zeros of the input's shape).

use crate::device::DType;
use crate::error::Result;
use crate::ops::elementwise::cpu::unary_kernel;
use crate::shape::Shape;
use crate::storage::{CpuStorage, Element};
use crate::tensor::Tensor;

/// Copies any layout of any element type into a fresh row-major buffer.
pub(super) fn copy_contiguous(t: &Tensor) -> Result<CpuStorage> {
    let s = t.cpu_storage("contiguous")?;
    Ok(match &*s {
        CpuStorage::F32(v) => CpuStorage::F32(unary_kernel(v, t.layout(), |x| x)),
        CpuStorage::F64(v) => CpuStorage::F64(unary_kernel(v, t.layout(), |x| x)),
        CpuStorage::I64(v) => CpuStorage::I64(unary_kernel(v, t.layout(), |x| x)),
    })
}

/// `t`'s values converted to `dtype`, another element type than `t`'s, in row-major order.
pub(super) fn convert(t: &Tensor, dtype: DType) -> Result<CpuStorage> {
    let s = t.cpu_storage("to_dtype")?;
    let l = t.layout();
    Ok(match (&*s, dtype) {
        (CpuStorage::F32(v), DType::F64) => CpuStorage::F64(unary_kernel(v, l, |x| x as f64)),
        (CpuStorage::F32(v), DType::I64) => CpuStorage::I64(unary_kernel(v, l, |x| x as i64)),
        (CpuStorage::F64(v), DType::F32) => CpuStorage::F32(unary_kernel(v, l, |x| x as f32)),
        (CpuStorage::F64(v), DType::I64) => CpuStorage::I64(unary_kernel(v, l, |x| x as i64)),
        (CpuStorage::I64(v), DType::F32) => CpuStorage::F32(unary_kernel(v, l, |x| x as f32)),
        (CpuStorage::I64(v), DType::F64) => CpuStorage::F64(unary_kernel(v, l, |x| x as f64)),
        _ => unreachable!("same dtype handled above"),
    })
}

/// `narrow`'s backward: `g` (the gradient of the `len` slices from `start` along dimension `d`)
/// written into zeros of `in_shape`.
pub(super) fn narrow_backward(g: &Tensor, in_shape: &Shape, d: usize, start: usize, len: usize) -> Result<Tensor> {
    // g into zeros of the input's shape at the narrowed range: per index of the
    // dimensions before `d`, one contiguous run of `len` slices.
    let out = Tensor::zeros(in_shape.dims(), g.dtype());
    let inner: usize = in_shape.dims()[d + 1..].iter().product();
    let (outer, size) = (in_shape.dims()[..d].iter().product::<usize>(), in_shape.dims()[d]);
    let runs = (outer, size * inner, start * inner, len * inner);
    match g.dtype() {
        DType::F32 => copy_runs::<f32>(&out, g, runs)?,
        DType::F64 => copy_runs::<f64>(&out, g, runs)?,
        DType::I64 => copy_runs::<i64>(&out, g, runs)?,
    }
    Ok(out)
}

/// Copies `g` (any layout, `outer` runs of `run` elements) into `out`'s buffer: run `o` goes to
/// `o·stride + at`.
fn copy_runs<T: Element>(
    out: &Tensor,
    g: &Tensor,
    (outer, stride, at, run): (usize, usize, usize, usize),
) -> Result<()> {
    g.with_slice::<T, _>(|gv| {
        out.update_::<T, _>(|o| {
            if run == 0 {
                return;
            }
            for (i, src) in gv.chunks_exact(run).take(outer).enumerate() {
                o[i * stride + at..i * stride + at + run].copy_from_slice(src);
            }
        })
    })?
}
