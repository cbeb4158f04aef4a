//! Pooling on a GPU (`pool.wgsl`): the host lists each output cell's input pixels (its taps) and,
//! transposed, the cells covering each pixel; the kernels read those tables, so average, adaptive
//! and max pooling share them, and the backward is a gather (no atomics).

use super::{AvgWindow, Window};
use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, output, words_as_bytes};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;
use std::sync::Arc;

const AVG_FORWARD: Kernel = Kernel { name: "avg_pool", wgsl: include_str!("pool.wgsl"), entry: "avg_forward" };
const AVG_BACKWARD: Kernel = Kernel { name: "avg_pool_back", wgsl: include_str!("pool.wgsl"), entry: "avg_backward" };
const MAX_FORWARD: Kernel = Kernel { name: "max_pool", wgsl: include_str!("pool.wgsl"), entry: "max_forward" };
const MAX_BACKWARD: Kernel = Kernel { name: "max_pool_back", wgsl: include_str!("pool.wgsl"), entry: "max_backward" };

/// The tables of one pooling: every cell's taps, and every pixel's cells, in one word buffer.
struct Tables {
    words: Vec<u32>,
    /// Where cell_off, taps, pix_off, pix_cells and the divisors start in `words`.
    at: [u32; 5],
}

fn tables(hw: usize, taps: &[Vec<u32>], divisors: &[f32]) -> Tables {
    let mut words = vec![];
    let mut at = [0u32; 5];
    at[0] = 0;
    let mut off = 0u32;
    words.push(0);
    for t in taps {
        off += t.len() as u32;
        words.push(off);
    }
    at[1] = words.len() as u32;
    words.extend(taps.iter().flatten());
    // Pixel → cells, in cell order (so sums run in a fixed order).
    let mut count = vec![0u32; hw + 1];
    for t in taps {
        for &pix in t {
            count[pix as usize + 1] += 1;
        }
    }
    for i in 0..hw {
        count[i + 1] += count[i];
    }
    at[2] = words.len() as u32;
    words.extend(&count);
    let mut fill = count.clone();
    let mut cells = vec![0u32; count[hw] as usize];
    for (cell, t) in taps.iter().enumerate() {
        for &pix in t {
            cells[fill[pix as usize] as usize] = cell as u32;
            fill[pix as usize] += 1;
        }
    }
    at[3] = words.len() as u32;
    words.extend(cells);
    at[4] = words.len() as u32;
    words.extend(divisors.iter().map(|d| d.to_bits()));
    Tables { words, at }
}

/// Average (or, with `divisors` empty, max) pooling of contiguous planes of `x`, with its backward;
/// `taps` lists each cell's taps (called only when there is an output to compute).
/// Also padding (`pad2d`): one tap or none per cell, every divisor 1.
pub(crate) fn pool(
    op: &'static str,
    x: &Tensor,
    (planes, hw, ohw): (usize, usize, usize),
    taps: impl FnOnce() -> Vec<Vec<u32>>,
    divisors: Option<Vec<f32>>,
    out_shape: Shape,
) -> Result<Tensor> {
    let max = divisors.is_none();
    let xc = x.detach().detach_owned()?;
    let bx = xc.gpu_f32_buffer(op)?;
    if planes * ohw == 0 {
        // No output (an empty batch or plane): no tables to build — they would cover every
        // pixel and cell of a plane that is never read, host time and memory for nothing.
        let out = Tensor::full_on(out_shape.dims(), 0.0, DType::F32, x.device())?;
        let (x_shape, device) = (x.shape().clone(), x.device());
        return Ok(Tensor::from_op(out.buffer(), out_shape, op, &[x], move |_| {
            Ok(vec![Some(Tensor::full_on(x_shape.dims(), 0.0, DType::F32, device)?)])
        }));
    }
    let t = tables(hw, &taps(), divisors.as_deref().unwrap_or(&vec![0.0; ohw]));
    let ctx = bx.ctx.clone();
    let tab = Arc::new(ctx.upload(op, words_as_bytes(&t.words))?);
    let mut p = vec![planes as u32, hw as u32, ohw as u32, 0];
    p.extend(t.at);
    let out = output(&ctx, op, planes * ohw, DType::F32)?;
    let index = output(&ctx, op, if max { planes * ohw } else { 1 }, DType::I64)?;
    let kernel = if max { &MAX_FORWARD } else { &AVG_FORWARD };
    ctx.dispatch(kernel, &p, &[bx.raw(), &tab, out.raw(), index.raw()], groups_1d(planes * ohw))?;
    let x_shape = x.shape().clone();
    Ok(Tensor::from_op(Storage::Gpu(out), out_shape, op, &[x], move |g| {
        let g = g.detach_owned()?;
        let bg = g.gpu_f32_buffer(op)?;
        let dx = output(&ctx, op, planes * hw, DType::F32)?;
        let kernel = if max { &MAX_BACKWARD } else { &AVG_BACKWARD };
        ctx.dispatch(kernel, &p, &[bg.raw(), &tab, dx.raw(), index.raw()], groups_1d(planes * hw))?;
        Ok(vec![Some(Tensor::from_storage(Storage::Gpu(dx), x_shape))])
    }))
}

/// Each output cell's taps under a max-pooling window: the in-plane indices of the input
/// pixels it covers (padding and positions past the edge hold none).
pub(super) fn window_taps(win: &Window) -> Vec<Vec<u32>> {
    let Window { h, w, oh, ow, kernel: kernel_size, stride, padding, dilation } = *win;
    let mut taps = Vec::with_capacity(oh * ow);
    for oy in 0..oh {
        for ox in 0..ow {
            let mut t = vec![];
            for ky in 0..kernel_size.0 {
                let iy = (oy * stride.0 + ky * dilation.0) as isize - padding.0 as isize;
                for kx in 0..kernel_size.1 {
                    let ix = (ox * stride.1 + kx * dilation.1) as isize - padding.1 as isize;
                    if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                        t.push((iy as usize * w + ix as usize) as u32);
                    }
                }
            }
            taps.push(t);
        }
    }
    taps
}

/// Each averaging window's taps: the in-plane indices of its input pixels (planes `w` wide).
pub(super) fn avg_taps(windows: &[AvgWindow], w: usize) -> Vec<Vec<u32>> {
    windows
        .iter()
        .map(|wi| (wi.y0..wi.y1).flat_map(|iy| (wi.x0..wi.x1).map(move |ix| (iy * w + ix) as u32)).collect())
        .collect()
}
