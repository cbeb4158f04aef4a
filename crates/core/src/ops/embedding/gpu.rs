//! Embedding on a GPU (`embedding.wgsl`): a gather forward (an index outside the table gives a
//! NaN row: the indices are not read back); the weight gradient by a gather over a table of the
//! positions reading each row, built on the device (`table_*.wgsl`: count, prefix sum, place in
//! position order), so no atomics on floats and a deterministic sum.

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
const COUNT: Kernel = Kernel { name: "embedding_count", wgsl: include_str!("table_count.wgsl"), entry: "count_main" };
const SCAN: Kernel = Kernel { name: "embedding_scan", wgsl: include_str!("table_scan.wgsl"), entry: "scan_main" };
const PLACE: Kernel = Kernel { name: "embedding_place", wgsl: include_str!("table_place.wgsl"), entry: "place_main" };

/// `weight[indices]` with shape `out_dims`, and its backward; `pad` is the padding row.
pub(super) fn embedding(indices: &Tensor, weight: &Tensor, pad: Option<usize>, out_dims: Vec<usize>) -> Result<Tensor> {
    const OP: &str = "embedding";
    let (rows, dim) = (weight.dims()[0], weight.dims()[1]);
    let w = weight.detach().detach_owned()?;
    let bw = w.gpu_f32_buffer(OP)?;
    let ctx = bw.ctx.clone();
    let bi = indices.detach().detach_owned()?.gpu_buffer(OP)?;
    let n = indices.numel();
    let out = output(&ctx, OP, n * dim, DType::F32)?;
    let p = [n as u32, dim as u32, rows as u32];
    ctx.dispatch(&GATHER, &p, &[bw.raw(), bi.raw(), out.raw()], groups_1d(n * dim))?;
    Ok(Tensor::from_op(Storage::Gpu(out), Shape(out_dims), OP, &[weight], move |g| {
        // The table: n position slots, then rows + 1 row offsets.
        let pad = pad.map_or(-1, |p| p as i32) as u32;
        let p = [n as u32, rows as u32, pad];
        let counts = Arc::new(ctx.upload(OP, words_as_bytes(&vec![0u32; rows + 1]))?);
        let table = output(&ctx, OP, n + rows + 1, DType::F32)?;
        ctx.dispatch(&COUNT, &p, &[bi.raw(), &counts], groups_1d(n))?;
        ctx.dispatch(&SCAN, &p, &[&counts, table.raw()], (1, 1, 1))?;
        ctx.dispatch(&PLACE, &p, &[bi.raw(), table.raw()], groups_1d(n))?;
        let g = g.detach_owned()?;
        let bg = g.gpu_f32_buffer(OP)?;
        let dw = output(&ctx, OP, rows * dim, DType::F32)?;
        let words = [rows as u32, dim as u32, 0, n as u32];
        ctx.dispatch(&BACKWARD, &words, &[bg.raw(), table.raw(), dw.raw()], groups_1d(rows * dim))?;
        Ok(vec![Some(Tensor::from_storage(Storage::Gpu(dw), Shape(vec![rows, dim])))])
    }))
}
