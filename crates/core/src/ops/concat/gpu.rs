//! Joining and splitting on a GPU: `cat` and `stack` scatter each part into its runs of a fresh
//! buffer (`views`' kernels), and the split pieces are `narrow` views.

use crate::error::Result;
use crate::ops::views::gpu::scatter;
use crate::shape::{Layout, Shape};
use crate::storage::Storage;
use crate::tensor::Tensor;

/// The GPU forward of `cat` and `stack`: `parts` are viewed as `[outer, run_len[i]]` and joined
/// along their second dimension into `out_shape`.
pub(super) fn join(parts: &[&Tensor], run_len: &[usize], outer: usize, out_shape: &Shape) -> Result<Storage> {
    // Each part written into its runs of a fresh buffer: as [outer, run] at column `start`
    // of the output seen as [outer, total].
    let out = Tensor::full_on(out_shape.dims(), 0.0, parts[0].dtype(), parts[0].device())?;
    let total: usize = run_len.iter().sum();
    let mut start = 0;
    for (t, &run) in parts.iter().zip(run_len) {
        let region = Layout { shape: Shape(vec![outer, run]), strides: vec![total, 1], offset: start };
        scatter(&out, &region, &t.detach().reshape(&[outer, run])?)?;
        start += run;
    }
    Ok(out.buffer())
}

/// Splits `x` along dimension `d` into pieces of the given sizes as `narrow` views, each with its
/// own backward (into zeros of the input's shape; autograd sums them): the shared host buffer of
/// the CPU path is the CPU's saving. With `squeeze` the pieces lose dimension `d`.
pub(super) fn split_views(x: &Tensor, d: usize, sizes: &[usize], squeeze: bool) -> Result<Vec<Tensor>> {
    let mut start = 0;
    sizes
        .iter()
        .map(|&len| {
            let piece = x.narrow(d as isize, start, len)?;
            start += len;
            if squeeze { piece.squeeze(d as isize) } else { Ok(piece) }
        })
        .collect()
}
