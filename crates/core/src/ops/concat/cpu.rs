//! The CPU kernels of joining and splitting: the interleaved copy behind `cat` and `stack`, and
//! the accumulation of each split piece's gradient into the buffer the pieces share.

use crate::device::DType;
use crate::error::Result;
use crate::shape::Layout;
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;

/// Copies each part (`rows` runs of `run_len[i]` elements, row-major) into `out` interleaved:
/// for every outer index, part 0's run, then part 1's, …
fn interleave<T: Element>(parts: &[&[T]], run_len: &[usize], outer: usize) -> Vec<T> {
    let total: usize = run_len.iter().sum::<usize>() * outer;
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for (p, &len) in parts.iter().zip(run_len) {
            out.extend_from_slice(&p[o * len..(o + 1) * len]);
        }
    }
    out
}

/// `parts` (each `[outer, run_len[i]]`, read in row-major order) joined along their second
/// dimension, in their element type.
pub(super) fn join(parts: &[&Tensor], run_len: &[usize], outer: usize) -> Result<CpuStorage> {
    fn go<T: Element>(parts: &[&Tensor], run_len: &[usize], outer: usize) -> Result<CpuStorage> {
        let data: Vec<Vec<T>> = parts.iter().map(|t| t.to_vec::<T>()).collect::<Result<_>>()?;
        let slices: Vec<&[T]> = data.iter().map(Vec::as_slice).collect();
        Ok(T::wrap(interleave(&slices, run_len, outer)))
    }
    Ok(match parts[0].dtype() {
        DType::F32 => go::<f32>(parts, run_len, outer)?,
        DType::F64 => go::<f64>(parts, run_len, outer)?,
        DType::I64 => go::<i64>(parts, run_len, outer)?,
    })
}

/// Adds a piece's gradient `g` into `region` of the buffer the pieces share (`numel` zeros of
/// `g`'s type, allocated by the first piece whose backward runs).
pub(super) fn add_piece_grad(buf: &mut Option<CpuStorage>, numel: usize, region: &Layout, g: &Tensor) -> Result<()> {
    let dtype = g.dtype();
    let buf = buf.get_or_insert_with(|| match dtype {
        DType::F64 => CpuStorage::F64(f64::zeroed_buffer(numel)),
        _ => CpuStorage::F32(f32::zeroed_buffer(numel)),
    });
    match dtype {
        DType::F64 => add_region::<f64>(buf, region, g),
        _ => add_region::<f32>(buf, region, g),
    }
}

fn add_region<T: Float>(buf: &mut CpuStorage, region: &Layout, g: &Tensor) -> Result<()> {
    let gv = g.to_vec::<T>()?;
    let b = T::slice_mut(buf).expect("buffer has the gradient's type");
    let mut k = 0;
    region.for_each_index(|i| {
        b[i] += gv[k];
        k += 1;
    });
    Ok(())
}
