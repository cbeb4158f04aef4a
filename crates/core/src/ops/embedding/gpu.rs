//! Embedding on a GPU (`embedding.wgsl`): a gather forward; the weight gradient by a gather over a
//! host-built table of the positions reading each row (the indices were read back for the range
//! check anyway), so no atomics.

use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, output, words_as_bytes};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;
use std::sync::Arc;

const GATHER: Kernel = Kernel { name: "embedding", wgsl: include_str!("embedding.wgsl"), entry: "gather_main" };
const BACKWARD: Kernel =
    Kernel { name: "embedding_back", wgsl: include_str!("embedding.wgsl"), entry: "backward_main" };

/// `weight[idx]` with shape `out_dims`, and its backward; `idx` are the host copy of `indices`
/// (checked in range), `pad` the padding row.
pub(super) fn embedding(
    indices: &Tensor,
    weight: &Tensor,
    idx: Vec<i64>,
    pad: Option<usize>,
    out_dims: Vec<usize>,
) -> Result<Tensor> {
    const OP: &str = "embedding";
    let (rows, dim) = (weight.dims()[0], weight.dims()[1]);
    let w = weight.detach().detach_owned()?;
    let bw = w.gpu_buffer(OP)?;
    let ctx = bw.ctx.clone();
    let bi = indices.detach().detach_owned()?.gpu_buffer(OP)?;
    let n = idx.len();
    let out = output(&ctx, OP, n * dim, DType::F32)?;
    ctx.dispatch(&GATHER, &[n as u32, dim as u32], &[bw.raw(), bi.raw(), out.raw()], groups_1d(n * dim))?;
    Ok(Tensor::from_op(Storage::Gpu(out), Shape(out_dims), OP, &[weight], move |g| {
        // Positions per row, in order, without the padding positions.
        let mut count = vec![0u32; rows + 1];
        for &i in &idx {
            if Some(i as usize) != pad {
                count[i as usize + 1] += 1;
            }
        }
        for r in 0..rows {
            count[r + 1] += count[r];
        }
        let mut fill = count.clone();
        let mut positions = vec![0u32; count[rows] as usize];
        for (pos, &i) in idx.iter().enumerate() {
            if Some(i as usize) != pad {
                positions[fill[i as usize] as usize] = pos as u32;
                fill[i as usize] += 1;
            }
        }
        let mut table = positions;
        let offsets_at = table.len() as u32;
        table.extend(&count);
        let table = Arc::new(ctx.upload(OP, words_as_bytes(&table))?);
        let g = g.detach_owned()?;
        let bg = g.gpu_buffer(OP)?;
        let dw = output(&ctx, OP, rows * dim, DType::F32)?;
        let words = [rows as u32, dim as u32, 0, offsets_at];
        ctx.dispatch(&BACKWARD, &words, &[bg.raw(), &table, dw.raw()], groups_1d(rows * dim))?;
        Ok(vec![Some(Tensor::from_storage(Storage::Gpu(dw), Shape(vec![rows, dim])))])
    }))
}
