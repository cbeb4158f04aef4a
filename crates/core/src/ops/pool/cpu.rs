//! The pooling CPU kernels, plane by plane: max pooling (each window's first maximum and its
//! index, and the backward's scatter to those indices) and averaging over precomputed windows
//! (and its backward, spreading each gradient over its window). Planes run as rayon tasks above
//! a size threshold, each plane by one task in a fixed order.

use super::{AvgWindow, Window};
use crate::error::Result;
use crate::ops::tasks::{for_each_chunk, map_tasks};
use crate::ops::with_float;
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;

/// The contiguous, detached data of `x` and its offset.
fn contiguous_detached(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.detach())
}

impl Window {
    /// In-bounds input rows (or columns) of the window at output position `o` along one axis.
    fn taps(o: usize, k: usize, s: usize, p: usize, d: usize, size: usize) -> impl Iterator<Item = usize> {
        (0..k).filter_map(move |i| (o * s + i * d).checked_sub(p).filter(|&v| v < size))
    }
}

/// Per plane: each output is the maximum of its window; also returns the in-plane index of the
/// chosen element (`usize::MAX` when the window holds no input element).
fn max_pool_forward<T: Float>(x: &[T], planes: usize, win: &Window, parallel: bool) -> (Vec<T>, Vec<usize>) {
    let (hw, ohw) = (win.h * win.w, win.oh * win.ow);
    // Every output is written below; taken from the buffer pool (a fresh vector of this size
    // is a fresh mmap whose pages fault in on every step).
    let mut vals = T::take_buffer(planes * ohw);
    let mut idx = vec![0usize; planes * ohw];
    let items: Vec<(&mut [T], &mut [usize])> = vals.chunks_mut(ohw).zip(idx.chunks_mut(ohw)).collect();
    // Without padding or dilation a window's taps are a rectangle cut at the plane's far edges
    // (ceil mode): read as row slices, in the same order, so the same first maximum.
    let plain = win.padding == (0, 0) && win.dilation == (1, 1);
    map_tasks(items, parallel, |p, (vals, idx)| {
        let plane = &x[p * hw..(p + 1) * hw];
        if plain {
            for oy in 0..win.oh {
                let y0 = oy * win.stride.0;
                let (y0, y1) = (y0.min(win.h), (y0 + win.kernel.0).min(win.h));
                for ox in 0..win.ow {
                    let x0 = ox * win.stride.1;
                    let (x0, x1) = (x0.min(win.w), (x0 + win.kernel.1).min(win.w));
                    let (mut best, mut best_i) = (T::NEG_INFINITY, usize::MAX);
                    for iy in y0..y1 {
                        let row = iy * win.w;
                        for (i, &v) in (row + x0..row + x1).zip(&plane[row + x0..row + x1]) {
                            if v > best || v.is_nan() || best_i == usize::MAX {
                                (best, best_i) = (v, i);
                            }
                        }
                    }
                    vals[oy * win.ow + ox] = best;
                    idx[oy * win.ow + ox] = best_i;
                }
            }
            return;
        }
        for oy in 0..win.oh {
            for ox in 0..win.ow {
                let (mut best, mut best_i) = (T::NEG_INFINITY, usize::MAX);
                for iy in Window::taps(oy, win.kernel.0, win.stride.0, win.padding.0, win.dilation.0, win.h) {
                    for ix in Window::taps(ox, win.kernel.1, win.stride.1, win.padding.1, win.dilation.1, win.w) {
                        let v = plane[iy * win.w + ix];
                        // PyTorch's rule: strictly greater wins (the first maximum), NaN always wins.
                        if v > best || v.is_nan() || best_i == usize::MAX {
                            best = v;
                            best_i = iy * win.w + ix;
                        }
                    }
                }
                vals[oy * win.ow + ox] = best;
                idx[oy * win.ow + ox] = best_i;
            }
        }
    });
    (vals, idx)
}

/// Max pooling of the `planes` planes of `x`: the maxima, and per output the in-plane index of
/// the chosen element (`usize::MAX` when the window holds no input element).
pub(super) fn max_pool(x: &Tensor, planes: usize, win: &Window, parallel: bool) -> Result<(CpuStorage, Vec<usize>)> {
    const OP: &str = "max_pool2d";
    let xc = contiguous_detached(x)?;
    let s = xc.cpu_storage("pool")?;
    let xo = xc.layout().offset;
    with_float!(s, OP, |v: T| {
        let (vals, idx) = max_pool_forward::<T>(&v[xo..xo + x.numel()], planes, win, parallel);
        Ok((T::wrap(vals), idx))
    })
}

/// Max pooling's backward: `d_x[argmax of window i] += d_y[i]`, with `index` from [`max_pool`].
pub(super) fn max_pool_backward(
    g: &Tensor,
    index: &[usize],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    parallel: bool,
) -> Result<CpuStorage> {
    let gc = g.contiguous()?;
    let s = gc.cpu_storage("pool")?;
    let go = gc.layout().offset;
    with_float!(s, "max_pool2d backward", |v: T| {
        let gv = &v[go..go + gc.numel()];
        let (hw, ohw) = (h * w, oh * ow);
        // From the pool, each plane zeroed by its own task (in parallel, and in that thread's
        // cache) before the gradients are added.
        let mut dx = T::take_buffer(planes * hw);
        for_each_chunk(&mut dx, hw, parallel, |p, dx_p| {
            dx_p.fill(T::ZERO);
            for (&i, &gi) in index[p * ohw..(p + 1) * ohw].iter().zip(&gv[p * ohw..(p + 1) * ohw]) {
                if i != usize::MAX {
                    dx_p[i] += gi;
                }
            }
        });
        Ok(T::wrap(dx))
    })
}

/// Averages each of the `planes` planes of `x` over `windows` (one per output cell, row-major).
pub(super) fn avg_pool(
    op: &'static str,
    x: &Tensor,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    windows: &[AvgWindow],
    parallel: bool,
) -> Result<CpuStorage> {
    let xc = contiguous_detached(x)?;
    let s = xc.cpu_storage("pool")?;
    let xo = xc.layout().offset;
    let (hw, ohw) = (h * w, oh * ow);
    with_float!(s, op, |v: T| {
        let xv = &v[xo..xo + x.numel()];
        // Every output is written below.
        let mut out = T::take_buffer(planes * ohw);
        for_each_chunk(&mut out, ohw, parallel, |p, out_p| {
            let plane = &xv[p * hw..(p + 1) * hw];
            for (o, wi) in out_p.iter_mut().zip(windows) {
                let mut sum = T::ZERO;
                for iy in wi.y0..wi.y1 {
                    for &xval in &plane[iy * w + wi.x0..iy * w + wi.x1] {
                        sum += xval;
                    }
                }
                *o = if wi.divisor > 0.0 { sum / T::from_f64(wi.divisor) } else { T::ZERO };
            }
        });
        Ok(T::wrap(out))
    })
}

/// The backward of [`avg_pool`]: every input element of window `i` receives `d_y[i] / divisor_i`.
pub(super) fn avg_pool_backward(
    op: &'static str,
    g: &Tensor,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    windows: &[AvgWindow],
    parallel: bool,
) -> Result<CpuStorage> {
    let (hw, ohw) = (h * w, oh * ow);
    let gc = g.contiguous()?;
    let s = gc.cpu_storage("pool")?;
    let go = gc.layout().offset;
    with_float!(s, op, |v: T| {
        let gv = &v[go..go + gc.numel()];
        // From the pool, each plane zeroed by its own task (see `max_pool_backward`).
        let mut dx = T::take_buffer(planes * hw);
        for_each_chunk(&mut dx, hw, parallel, |p, dx_p| {
            dx_p.fill(T::ZERO);
            for (&gi, wi) in gv[p * ohw..(p + 1) * ohw].iter().zip(windows) {
                if wi.divisor == 0.0 {
                    continue;
                }
                let delta = gi / T::from_f64(wi.divisor);
                for iy in wi.y0..wi.y1 {
                    dx_p[iy * w + wi.x0..iy * w + wi.x1].iter_mut().for_each(|d| *d += delta);
                }
            }
        });
        Ok(T::wrap(dx))
    })
}
