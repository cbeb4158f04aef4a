//! Layer normalisation's CPU kernels: per-row statistics in f64, the fused normalise-scale-shift
//! pass, and the backward (`dx` row by row, `dγ` and `dβ` summed over rows in a fixed order).
//! Rows run in parallel chunks of a fixed size, so results do not depend on the thread count.

use crate::error::Result;
use crate::ops::{parallel_pays, with_float};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;

/// Rows per parallel task: fixed, so the split never depends on the thread count.
const ROWS_PER_TASK: usize = 64;

/// `f(row index, output row)` over the rows of `out` (rows of `d` values), in parallel chunks.
fn for_each_row<T: Send>(out: &mut [T], d: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let d = d.max(1);
    if parallel_pays(out.len()) {
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(c, chunk)| chunk.chunks_mut(d).enumerate().for_each(|(j, row)| f(c * ROWS_PER_TASK + j, row)));
    } else {
        out.chunks_mut(d).enumerate().for_each(|(i, row)| f(i, row));
    }
}

/// `(μ, 1/√(σ² + eps))` of one row, in f64 (two passes).
fn row_stats<T: Float>(x: &[T], eps: f64) -> (f64, f64) {
    let d = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / d;
    let var = x.iter().map(|v| (v.to_f64() - mean) * (v.to_f64() - mean)).sum::<f64>() / d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// What the backward needs from the forward: the contiguous input (`numel` values from
/// `offset`, in `rows` rows of `d`), each row's `(μ, 1/√(σ² + eps))`, and γ.
pub(super) struct Saved {
    x: Arc<CpuStorage>,
    offset: usize,
    numel: usize,
    d: usize,
    rows: usize,
    stats: Vec<(f64, f64)>,
    gamma: Option<Vec<f64>>,
}

/// Layer norm of `x` over its rows of `d` values, with γ and β (`[d]`, as f64) when given: the
/// output (`x`'s type, row-major) and what the backward needs.
pub(super) fn forward(
    x: &Tensor,
    d: usize,
    gamma: Option<Vec<f64>>,
    beta: Option<Vec<f64>>,
    eps: f64,
) -> Result<(CpuStorage, Saved)> {
    const OP: &str = "layer_norm";
    let numel = x.numel();
    let xc = x.contiguous()?.detach();
    let sx = xc.cpu_storage("layer_norm")?;
    let xo = xc.layout().offset;
    let rows = numel.checked_div(d).unwrap_or(0);
    let (out, stats) = with_float!(sx, OP, |v: T| {
        let xv = &v[xo..xo + numel];
        let stats: Vec<(f64, f64)> = xv.chunks(d.max(1)).map(|row| row_stats(row, eps)).collect();
        // Every element is written below; from the buffer pool (see `storage`).
        let mut out = T::take_buffer(numel);
        for_each_row(&mut out, d, |i, o| {
            let (mean, r) = stats[i];
            for (j, (o, &xv)) in o.iter_mut().zip(&xv[i * d..(i + 1) * d]).enumerate() {
                let xhat = (xv.to_f64() - mean) * r;
                let y = xhat * gamma.as_ref().map_or(1.0, |g| g[j]) + beta.as_ref().map_or(0.0, |b| b[j]);
                *o = T::from_f64(y);
            }
        });
        Ok((T::wrap(out), stats))
    })?;
    debug_assert_eq!(stats.len(), rows);
    Ok((out, Saved { x: sx, offset: xo, numel, d, rows, stats, gamma }))
}

/// The gradients `(dx, dγ, dβ)` from the output gradient `g`, each only where `needs` asks.
pub(super) fn backward(
    g: &Tensor,
    saved: &Saved,
    needs: (bool, bool, bool),
) -> Result<(Option<CpuStorage>, Option<CpuStorage>, Option<CpuStorage>)> {
    let Saved { x: sx, offset: xo, numel, d, rows, stats, gamma } = saved;
    let (xo, numel, d, rows) = (*xo, *numel, *d, *rows);
    let gc = g.contiguous()?;
    let sg = gc.cpu_storage("layer_norm")?;
    let go = gc.layout().offset;
    with_float!(sg, "layer_norm backward", |gv: T| {
        let xv = &T::slice(sx).expect("saved input has the gradient's dtype")[xo..xo + numel];
        let gv = &gv[go..go + numel];
        let xhat = |i: usize, j: usize| (xv[i * d + j].to_f64() - stats[i].0) * stats[i].1;
        let dx = needs.0.then(|| {
            let mut dx = T::take_buffer(numel);
            for_each_row(&mut dx, d, |i, out| {
                let g = &gv[i * d..(i + 1) * d];
                // ĝ = g·γ; dx = r·(ĝ − mean ĝ − x̂·mean(ĝ·x̂))
                let gh = |j: usize| g[j].to_f64() * gamma.as_ref().map_or(1.0, |w| w[j]);
                let (mut s, mut sgx) = (0.0, 0.0);
                for j in 0..d {
                    s += gh(j);
                    sgx += gh(j) * xhat(i, j);
                }
                let (m, mx, r) = (s / d as f64, sgx / d as f64, stats[i].1);
                for (j, o) in out.iter_mut().enumerate() {
                    *o = T::from_f64(r * (gh(j) - m - xhat(i, j) * mx));
                }
            });
            T::wrap(dx)
        });
        // dγ = Σ_rows g·x̂, dβ = Σ_rows g, in row order.
        let (mut dg, mut db) = (vec![0.0; d], vec![0.0; d]);
        if needs.1 || needs.2 {
            for i in 0..rows {
                for j in 0..d {
                    let g = gv[i * d + j].to_f64();
                    dg[j] += g * xhat(i, j);
                    db[j] += g;
                }
            }
        }
        let wrap = |v: Vec<f64>| T::wrap(v.into_iter().map(T::from_f64).collect());
        Ok((dx, needs.1.then(|| wrap(dg)), needs.2.then(|| wrap(db))))
    })
}
