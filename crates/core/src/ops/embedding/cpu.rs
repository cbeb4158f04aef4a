//! The embedding's CPU kernels: the row gather of the forward and the in-order scatter-add of
//! the weight gradient, with the dispatch on the element type.

use crate::device::DType;
use crate::error::{Error, Result};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;

/// The rows `idx` (in range) of `weight` (`[rows, dim]`, float), one after another.
pub(super) fn embedding(weight: &Tensor, idx: &[i64], dim: usize) -> Result<CpuStorage> {
    Ok(match weight.dtype() {
        DType::F32 => f32::wrap(gather::<f32>(&weight.to_vec::<f32>()?, idx, dim)),
        DType::F64 => f64::wrap(gather::<f64>(&weight.to_vec::<f64>()?, idx, dim)),
        DType::I64 => {
            return Err(Error::UnsupportedDType {
                op: "embedding",
                dtype: DType::I64,
                hint: " as weight (it must be float)",
            });
        }
    })
}

/// The weight gradient (`[rows, dim]`) from the output gradient `g`: `d_weight[idx[p]] += g[p]`,
/// in order of p, except at positions that hold `pad`.
pub(super) fn embedding_backward(
    g: &Tensor,
    idx: &[i64],
    pad: Option<i64>,
    rows: usize,
    dim: usize,
) -> Result<CpuStorage> {
    Ok(match g.dtype() {
        DType::F64 => f64::wrap(g.with_slice::<f64, _>(|gv| scatter_add(gv, idx, pad, rows, dim))?),
        _ => f32::wrap(g.with_slice::<f32, _>(|gv| scatter_add(gv, idx, pad, rows, dim))?),
    })
}

/// `out[p] = w[idx[p]]`, rows of `dim` elements.
fn gather<T: Float>(w: &[T], idx: &[i64], dim: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        out.extend_from_slice(&w[i as usize * dim..(i as usize + 1) * dim]);
    }
    out
}

/// `d_w[idx[p]] += g[p]` for p in order, skipping positions that hold `pad`.
fn scatter_add<T: Float>(g: &[T], idx: &[i64], pad: Option<i64>, rows: usize, dim: usize) -> Vec<T> {
    let mut dw = T::zeroed_buffer(rows * dim);
    for (p, &i) in idx.iter().enumerate().filter(|&(_, &i)| Some(i) != pad) {
        let row = &mut dw[i as usize * dim..(i as usize + 1) * dim];
        row.iter_mut().zip(&g[p * dim..(p + 1) * dim]).for_each(|(d, &v)| *d += v);
    }
    dw
}
