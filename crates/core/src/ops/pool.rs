//! 2-D pooling, as `torch.nn.functional`: `max_pool2d`, `avg_pool2d` (with `ceil_mode`,
//! `count_include_pad` and `divisor_override` through [`max_pool2d_with`] / [`avg_pool2d_with`])
//! and `adaptive_avg_pool2d`, each forward with its backward right below it and the per-plane
//! CPU kernel beside them; [`pool_output_size`] is PyTorch's output-size rule.
//!
//! Every `(n, c)` plane is independent, so planes are spread over rayon threads (above a size
//! threshold); each plane is computed by one task in a fixed order, so results are identical
//! whatever the thread count.

use super::conv::check_positive;
use super::conv::cpu::{for_each_chunk, map_tasks, parallel_for};
use super::with_float;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::storage::{Element, Float};
use crate::tensor::Tensor;

/// The planes of a pooling input: `[N, C, H, W]` or `[C, H, W]`; returns `(planes, H, W)`.
fn planes_of(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    if x.ndim() != 3 && x.ndim() != 4 {
        return Err(Error::ShapeMismatch {
            op,
            what: "input",
            got: x.shape().clone(),
            expected: "[N, C, H, W] (4 dimensions) or [C, H, W] (3 dimensions, unbatched)".into(),
        });
    }
    let d = x.dims();
    let (h, w) = (d[d.len() - 2], d[d.len() - 1]);
    Ok((x.numel() / (h * w).max(1), h, w))
}

/// `x`'s shape with the last two dimensions replaced by `(oh, ow)`.
fn pooled_shape(x: &Tensor, oh: usize, ow: usize) -> Shape {
    let mut d = x.dims().to_vec();
    let n = d.len();
    d[n - 2] = oh;
    d[n - 1] = ow;
    Shape(d)
}

/// The largest padding PyTorch allows: half the kernel span (`dilation·(kernel − 1) + 1`).
fn check_padding(
    op: &'static str,
    kernel: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
) -> Result<()> {
    let max = |k: usize, d: usize| (d * (k - 1)).div_ceil(2);
    let (mh, mw) = (max(kernel.0, dilation.0), max(kernel.1, dilation.1));
    if padding.0 > mh || padding.1 > mw {
        crate::bail_arg!(
            op,
            "padding ({}, {}) is more than half the kernel span: with kernel_size ({}, {}) and dilation ({}, {}) \
             it may be at most ({mh}, {mw})",
            padding.0,
            padding.1,
            kernel.0,
            kernel.1,
            dilation.0,
            dilation.1
        );
    }
    Ok(())
}

/// The output length of a pooling window along one axis, PyTorch's `pooling_output_shape`:
/// `⌊(size + 2·padding − dilation·(kernel − 1) − 1 + (ceil_mode ? stride − 1 : 0)) / stride⌋ + 1`
/// (rounded towards −∞), and in `ceil_mode` one less when the last window would start at or
/// beyond `size + padding` — in the right padding or past it — so every window starts inside the
/// input or its left padding. `None` when that is less than 1 (the input is too small) or when
/// `kernel`, `stride` or `dilation` is 0.
///
/// ```
/// use strata_core::pool_output_size;
/// // 5 wide, kernel 2, stride 2: floor mode drops the last column, ceil mode keeps it alone.
/// assert_eq!(pool_output_size(5, 2, 2, 0, 1, false), Some(2));
/// assert_eq!(pool_output_size(5, 2, 2, 0, 1, true), Some(3));
/// // 4 wide, kernel 2, stride 2, padding 1: a third window would start in the right padding.
/// assert_eq!(pool_output_size(4, 2, 2, 1, 1, true), Some(3));
/// // ceil mode lets a kernel wider than the input run off its end.
/// assert_eq!(pool_output_size(2, 3, 2, 0, 1, true), Some(1));
/// assert_eq!(pool_output_size(2, 3, 2, 0, 1, false), None);
/// ```
pub fn pool_output_size(
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    // Signed, as PyTorch's, so an input smaller than the window rounds towards −∞ (div_euclid).
    let (size, k, s, p, d) = (size as i128, kernel as i128, stride as i128, padding as i128, dilation as i128);
    let extra = if ceil_mode { s - 1 } else { 0 };
    let mut out = (size + 2 * p - d * (k - 1) - 1 + extra).div_euclid(s) + 1;
    if ceil_mode && (out - 1) * s >= size + p {
        out -= 1;
    }
    (out >= 1).then_some(out as usize)
}

/// Checks the spatial dimensions of a pooling op and returns `(OH, OW)` by
/// [`pool_output_size`]; the error names the dimension that is too small and the smallest size
/// that works.
fn pool_output(
    op: &'static str,
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    ceil_mode: bool,
) -> Result<(usize, usize)> {
    let nd = x.ndim();
    let axes = [
        ("height", nd - 2, kernel.0, stride.0, padding.0, dilation.0),
        ("width", nd - 1, kernel.1, stride.1, padding.1, dilation.1),
    ];
    let mut out = [0; 2];
    for (i, (name, dim, k, s, p, d)) in axes.into_iter().enumerate() {
        let size = x.dims()[dim];
        out[i] = pool_output_size(size, k, s, p, d, ceil_mode).ok_or_else(|| {
            let span = d * (k - 1) + 1;
            // In ceil mode the one window may run up to stride − 1 past the padded input.
            let (least, slack) = if ceil_mode {
                (span.saturating_sub(2 * p + s - 1).max(1), format!(" (with ceil_mode, plus stride − 1 = {})", s - 1))
            } else {
                (span.saturating_sub(2 * p).max(1), String::new())
            };
            Error::ShapeMismatch {
                op,
                what: "input",
                got: x.shape().clone(),
                expected: format!(
                    "a {name} (dimension {dim}) of at least {least}: the kernel spans {span} (size {k}, dilation {d}) \
                     but the {name} padded by {p} on each side is only {}{slack}; use a smaller kernel or dilation, \
                     more padding, or a larger input",
                    size + 2 * p
                ),
            }
        })?;
    }
    Ok((out[0], out[1]))
}

/// The contiguous, detached data of `x` and its offset.
fn contiguous_detached(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.detach())
}

// ---------------------------------------------------------------- max pooling

/// The options of [`max_pool2d_with`]: `torch.nn.functional.max_pool2d`'s.
///
/// `MaxPool2dOptions::new(k)` is PyTorch's defaults (stride = kernel size, no padding, no
/// dilation, `ceil_mode = False`); change fields with struct update syntax:
///
/// ```
/// use strata_core::{DType, MaxPool2dOptions, Tensor, max_pool2d_with};
/// let x = Tensor::zeros(&[1, 3, 7, 7], DType::F32);
/// let opts = MaxPool2dOptions { ceil_mode: true, ..MaxPool2dOptions::new((2, 2)) };
/// assert_eq!(max_pool2d_with(&x, &opts)?.dims(), &[1, 3, 4, 4]); // floor mode: 3×3
/// # Ok::<(), strata_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2dOptions {
    /// `(kH, kW)`; at least 1.
    pub kernel_size: (usize, usize),
    /// `(height, width)` step of the window; at least 1.
    pub stride: (usize, usize),
    /// Implicit −∞ padding on each side; at most half the dilated kernel span.
    pub padding: (usize, usize),
    /// Spacing of the window's taps; at least 1.
    pub dilation: (usize, usize),
    /// Round the output size up, so a last window that runs off the end of the (padded) input is
    /// kept (see [`pool_output_size`]).
    pub ceil_mode: bool,
}

impl MaxPool2dOptions {
    /// PyTorch's defaults for `kernel_size`: stride = kernel size, padding 0, dilation 1,
    /// `ceil_mode = false`.
    pub fn new(kernel_size: (usize, usize)) -> Self {
        MaxPool2dOptions { kernel_size, stride: kernel_size, padding: (0, 0), dilation: (1, 1), ceil_mode: false }
    }
}

/// Max pooling over `kernel_size` windows, as `torch.nn.functional.max_pool2d` with `ceil_mode
/// = False`; [`max_pool2d_with`] takes the options as a struct and has `ceil_mode`. Padded
/// positions never win. The gradient flows to the first maximum of each window (or to a NaN,
/// which propagates), as in PyTorch.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` or `[C, H, W]`
/// - output: `[N, C, OH, OW]` with
///   `OH = ⌊(H + 2·padding.0 − dilation.0·(kernel_size.0 − 1) − 1) / stride.0⌋ + 1`, `OW` likewise
/// - `padding` at most half the dilated kernel span in each dimension
pub fn max_pool2d(
    x: &Tensor,
    kernel_size: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
) -> Result<Tensor> {
    max_pool2d_with(x, &MaxPool2dOptions { kernel_size, stride, padding, dilation, ceil_mode: false })
}

/// Max pooling, as `torch.nn.functional.max_pool2d` with all its options. In `ceil_mode` the
/// last window in each dimension may run off the end of the padded input; it takes the maximum
/// of the input elements it covers.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` or `[C, H, W]`
/// - output: `[N, C, OH, OW]` with `OH = pool_output_size(H, kernel_size.0, stride.0, padding.0,
///   dilation.0, ceil_mode)` ([`pool_output_size`]; without `ceil_mode`
///   `⌊(H + 2·padding.0 − dilation.0·(kernel_size.0 − 1) − 1) / stride.0⌋ + 1`), `OW` likewise
/// - `padding` at most half the dilated kernel span in each dimension
pub fn max_pool2d_with(x: &Tensor, opts: &MaxPool2dOptions) -> Result<Tensor> {
    const OP: &str = "max_pool2d";
    let MaxPool2dOptions { kernel_size, stride, padding, dilation, ceil_mode } = *opts;
    let (planes, h, w) = planes_of(OP, x)?;
    check_positive(OP, "kernel_size", kernel_size)?;
    check_positive(OP, "stride", stride)?;
    check_positive(OP, "dilation", dilation)?;
    check_padding(OP, kernel_size, padding, dilation)?;
    let (oh, ow) = pool_output(OP, x, kernel_size, stride, padding, dilation, ceil_mode)?;
    let win = Window { h, w, oh, ow, kernel: kernel_size, stride, padding, dilation };
    let xc = contiguous_detached(x)?;
    let s = xc.storage();
    let xo = xc.layout().offset;
    let parallel = parallel_for(planes * oh * ow * kernel_size.0 * kernel_size.1);
    let (storage, index) = with_float!(s, OP, |v: T| {
        let (vals, idx) = max_pool_forward::<T>(&v[xo..xo + x.numel()], planes, &win, parallel);
        Ok((T::wrap(vals), idx))
    })?;
    let x_shape = x.shape().clone();
    Ok(Tensor::from_op(storage, pooled_shape(x, oh, ow), OP, &[x], move |g| {
        // d_x[argmax of window i] += d_y[i].
        let gc = g.contiguous()?;
        let s = gc.storage();
        let go = gc.layout().offset;
        let dx = with_float!(s, "max_pool2d backward", |v: T| {
            let gv = &v[go..go + gc.numel()];
            let (hw, ohw) = (h * w, oh * ow);
            let mut dx = vec![T::ZERO; planes * hw];
            for_each_chunk(&mut dx, hw, parallel, |p, dx_p| {
                for (&i, &gi) in index[p * ohw..(p + 1) * ohw].iter().zip(&gv[p * ohw..(p + 1) * ohw]) {
                    if i != usize::MAX {
                        dx_p[i] += gi;
                    }
                }
            });
            Ok(T::wrap(dx))
        })?;
        Ok(vec![Some(Tensor::from_storage(dx, x_shape))])
    }))
}

/// The geometry of a sliding pooling window over one `H×W` plane.
struct Window {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
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
    let mut vals = vec![T::ZERO; planes * ohw];
    let mut idx = vec![0usize; planes * ohw];
    let items: Vec<(&mut [T], &mut [usize])> = vals.chunks_mut(ohw).zip(idx.chunks_mut(ohw)).collect();
    map_tasks(items, parallel, |p, (vals, idx)| {
        let plane = &x[p * hw..(p + 1) * hw];
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

// ---------------------------------------------------------------- average pooling

/// The options of [`avg_pool2d_with`]: `torch.nn.functional.avg_pool2d`'s.
///
/// `AvgPool2dOptions::new(k)` is PyTorch's defaults (stride = kernel size, no padding,
/// `ceil_mode = False`, `count_include_pad = True`, no `divisor_override`); change fields with
/// struct update syntax:
///
/// ```
/// use strata_core::{AvgPool2dOptions, DType, Tensor, avg_pool2d_with};
/// let x = Tensor::ones(&[1, 1, 5, 5], DType::F64);
/// let opts = AvgPool2dOptions { ceil_mode: true, divisor_override: Some(2), ..AvgPool2dOptions::new((2, 2)) };
/// let y = avg_pool2d_with(&x, &opts)?;
/// assert_eq!(y.dims(), &[1, 1, 3, 3]);
/// // Sums over 4, 2 and 1 input elements, each divided by 2.
/// assert_eq!(y.to_vec::<f64>()?[6..], [1.0, 1.0, 0.5]);
/// # Ok::<(), strata_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2dOptions {
    /// `(kH, kW)`; at least 1.
    pub kernel_size: (usize, usize),
    /// `(height, width)` step of the window; at least 1.
    pub stride: (usize, usize),
    /// Implicit zero padding on each side; at most half the kernel size.
    pub padding: (usize, usize),
    /// Round the output size up, so a last window that runs off the end of the (padded) input is
    /// kept (see [`pool_output_size`]).
    pub ceil_mode: bool,
    /// Whether padded zeros count in each window's divisor (PyTorch's default: yes). The part of
    /// a window beyond the padded input (in `ceil_mode`) never counts.
    pub count_include_pad: bool,
    /// A divisor (at least 1) that replaces every window's own.
    pub divisor_override: Option<usize>,
}

impl AvgPool2dOptions {
    /// PyTorch's defaults for `kernel_size`: stride = kernel size, padding 0, `ceil_mode =
    /// false`, `count_include_pad = true`, no `divisor_override`.
    pub fn new(kernel_size: (usize, usize)) -> Self {
        AvgPool2dOptions {
            kernel_size,
            stride: kernel_size,
            padding: (0, 0),
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }
}

/// Average pooling, as `torch.nn.functional.avg_pool2d` with `ceil_mode = False` and no
/// `divisor_override`; [`avg_pool2d_with`] takes the options as a struct and has both. With
/// `count_include_pad` (PyTorch's default) every window is divided by its full size `kH·kW`;
/// without it, by the number of input elements it covers.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` or `[C, H, W]`
/// - output: `[N, C, OH, OW]` with `OH = ⌊(H + 2·padding.0 − kernel_size.0) / stride.0⌋ + 1`,
///   `OW` likewise
/// - `padding` at most half the kernel size in each dimension
pub fn avg_pool2d(
    x: &Tensor,
    kernel_size: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    count_include_pad: bool,
) -> Result<Tensor> {
    let opts = AvgPool2dOptions { stride, padding, count_include_pad, ..AvgPool2dOptions::new(kernel_size) };
    avg_pool2d_with(x, &opts)
}

/// Average pooling, as `torch.nn.functional.avg_pool2d` with all its options. Each window's
/// divisor is, as PyTorch's: `divisor_override` if given; else with `count_include_pad` the
/// window's size clipped to the padded input (so in `ceil_mode` a last window that runs past the
/// padding counts the padding but not what lies beyond it); else the number of input elements
/// it covers.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` or `[C, H, W]`
/// - output: `[N, C, OH, OW]` with `OH = pool_output_size(H, kernel_size.0, stride.0, padding.0,
///   1, ceil_mode)` ([`pool_output_size`]; without `ceil_mode`
///   `⌊(H + 2·padding.0 − kernel_size.0) / stride.0⌋ + 1`), `OW` likewise
/// - `padding` at most half the kernel size in each dimension; `divisor_override` at least 1
pub fn avg_pool2d_with(x: &Tensor, opts: &AvgPool2dOptions) -> Result<Tensor> {
    const OP: &str = "avg_pool2d";
    let AvgPool2dOptions { kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override } = *opts;
    let (planes, h, w) = planes_of(OP, x)?;
    check_positive(OP, "kernel_size", kernel_size)?;
    check_positive(OP, "stride", stride)?;
    check_padding(OP, kernel_size, padding, (1, 1))?;
    if divisor_override == Some(0) {
        crate::bail_arg!(
            OP,
            "divisor_override must be at least 1, got 0 (leave it unset to divide by the window size)"
        );
    }
    let (oh, ow) = pool_output(OP, x, kernel_size, stride, padding, (1, 1), ceil_mode)?;
    let win = Window { h, w, oh, ow, kernel: kernel_size, stride, padding, dilation: (1, 1) };
    let windows = avg_windows(&win, count_include_pad, divisor_override);
    pool_by_windows(OP, x, planes, (h, w), (oh, ow), windows)
}

/// One averaging window: input rows `y0..y1`, columns `x0..x1`, and the divisor.
#[derive(Clone, Copy)]
struct AvgWindow {
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
    divisor: f64,
}

/// The windows of `avg_pool2d`, computed as PyTorch does: the window is clipped to the padded
/// input for the divisor (count_include_pad), then to the input for the sum; a
/// `divisor_override` replaces the divisor. The output size keeps every window's start inside
/// the input or its left padding, so no window is empty of input in `ceil_mode` either.
fn avg_windows(win: &Window, count_include_pad: bool, divisor_override: Option<usize>) -> Vec<AvgWindow> {
    let axis = |o: usize, k: usize, s: usize, p: usize, size: usize| {
        let start = (o * s) as isize - p as isize;
        let end = (start + k as isize).min((size + p) as isize);
        let padded_len = (end - start) as usize;
        (start.max(0) as usize, end.min(size as isize).max(0) as usize, padded_len)
    };
    let mut out = Vec::with_capacity(win.oh * win.ow);
    for oy in 0..win.oh {
        let (y0, y1, ph) = axis(oy, win.kernel.0, win.stride.0, win.padding.0, win.h);
        for ox in 0..win.ow {
            let (x0, x1, pw) = axis(ox, win.kernel.1, win.stride.1, win.padding.1, win.w);
            let inside = y1.saturating_sub(y0) * x1.saturating_sub(x0);
            let divisor = match divisor_override {
                Some(d) => d,
                None if count_include_pad => ph * pw,
                None => inside,
            } as f64;
            out.push(AvgWindow { y0, y1: y1.max(y0), x0, x1: x1.max(x0), divisor });
        }
    }
    out
}

/// Adaptive average pooling, as `torch.nn.functional.adaptive_avg_pool2d`: output cell `(i, j)`
/// averages input rows `⌊i·H/OH⌋..⌈(i+1)·H/OH⌉` and columns `⌊j·W/OW⌋..⌈(j+1)·W/OW⌉` (windows
/// may overlap, and `OH > H` repeats rows).
///
/// # Shapes
/// - `x`: `[N, C, H, W]` or `[C, H, W]` with `H, W ≥ 1`
/// - output: `[N, C, OH, OW]` = `[N, C, output_size.0, output_size.1]`
pub fn adaptive_avg_pool2d(x: &Tensor, output_size: (usize, usize)) -> Result<Tensor> {
    const OP: &str = "adaptive_avg_pool2d";
    let (planes, h, w) = planes_of(OP, x)?;
    check_positive(OP, "output_size", output_size)?;
    if h == 0 || w == 0 {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "input",
            got: x.shape().clone(),
            expected: "a height and width (the last two dimensions) of at least 1".into(),
        });
    }
    let (oh, ow) = output_size;
    let start = |i: usize, size: usize, out: usize| i * size / out;
    let end = |i: usize, size: usize, out: usize| ((i + 1) * size).div_ceil(out);
    let mut windows = Vec::with_capacity(oh * ow);
    for i in 0..oh {
        let (y0, y1) = (start(i, h, oh), end(i, h, oh));
        for j in 0..ow {
            let (x0, x1) = (start(j, w, ow), end(j, w, ow));
            windows.push(AvgWindow { y0, y1, x0, x1, divisor: ((y1 - y0) * (x1 - x0)) as f64 });
        }
    }
    pool_by_windows(OP, x, planes, (h, w), (oh, ow), windows)
}

/// Averages each plane over `windows` (one per output cell, row-major), recording the backward:
/// every input element of window `i` receives `d_y[i] / divisor_i`.
fn pool_by_windows(
    op: &'static str,
    x: &Tensor,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    windows: Vec<AvgWindow>,
) -> Result<Tensor> {
    let xc = contiguous_detached(x)?;
    let s = xc.storage();
    let xo = xc.layout().offset;
    let (hw, ohw) = (h * w, oh * ow);
    let taps: usize = windows.iter().map(|wi| (wi.y1 - wi.y0) * (wi.x1 - wi.x0)).sum();
    let parallel = parallel_for(planes * taps);
    let storage = with_float!(s, op, |v: T| {
        let xv = &v[xo..xo + x.numel()];
        let mut out = vec![T::ZERO; planes * ohw];
        for_each_chunk(&mut out, ohw, parallel, |p, out_p| {
            let plane = &xv[p * hw..(p + 1) * hw];
            for (o, wi) in out_p.iter_mut().zip(&windows) {
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
    })?;
    let x_shape = x.shape().clone();
    Ok(Tensor::from_op(storage, pooled_shape(x, oh, ow), op, &[x], move |g| {
        let gc = g.contiguous()?;
        let s = gc.storage();
        let go = gc.layout().offset;
        let dx = with_float!(s, op, |v: T| {
            let gv = &v[go..go + gc.numel()];
            let mut dx = vec![T::ZERO; planes * hw];
            for_each_chunk(&mut dx, hw, parallel, |p, dx_p| {
                for (&gi, wi) in gv[p * ohw..(p + 1) * ohw].iter().zip(&windows) {
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
        })?;
        Ok(vec![Some(Tensor::from_storage(dx, x_shape))])
    }))
}

#[cfg(test)]
mod tests {
    use super::{AvgPool2dOptions, MaxPool2dOptions, avg_pool2d_with, max_pool2d_with, pool_output_size};
    use super::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    fn grid() -> Tensor {
        // 4×4: 1..16 row-major.
        Tensor::from_vec((1..=16).map(|v| v as f64).collect(), &[1, 1, 4, 4]).unwrap()
    }

    #[test]
    fn max_pool_by_hand() {
        let y = max_pool2d(&grid(), (2, 2), (2, 2), (0, 0), (1, 1)).unwrap();
        assert_eq!(y.dims(), &[1, 1, 2, 2]);
        assert_eq!(y.to_vec::<f64>().unwrap(), [6., 8., 14., 16.]);
        // Padding 1, stride 2, kernel 3: windows over rows {−1,0,1}, {1,2,3}.
        let y = max_pool2d(&grid(), (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
        assert_eq!(y.to_vec::<f64>().unwrap(), [6., 8., 14., 16.]);
        // Dilation 2, kernel 2: the window reads rows/columns {i, i+2}.
        let y = max_pool2d(&grid(), (2, 2), (1, 1), (0, 0), (2, 2)).unwrap();
        assert_eq!(y.to_vec::<f64>().unwrap(), [11., 12., 15., 16.]);
        // Negative inputs: padding never wins.
        let y = max_pool2d(&grid().neg().unwrap(), (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
        assert_eq!(y.to_vec::<f64>().unwrap(), [-1., -2., -5., -6.]);
        // Ties: the gradient goes to the first maximum only.
        let x = Tensor::from_vec(vec![5.0f64, 5.0, 1.0, 5.0], &[1, 2, 2]).unwrap().requires_grad_().unwrap();
        max_pool2d(&x, (2, 2), (2, 2), (0, 0), (1, 1)).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), [1., 0., 0., 0.]);
        // NaN propagates.
        let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, 2.0], &[1, 1, 2, 2]).unwrap();
        assert!(max_pool2d(&x, (2, 2), (2, 2), (0, 0), (1, 1)).unwrap().item().unwrap().is_nan());
    }

    #[test]
    fn avg_pools_by_hand() {
        let y = avg_pool2d(&grid(), (2, 2), (2, 2), (0, 0), true).unwrap();
        assert_eq!(y.to_vec::<f64>().unwrap(), [3.5, 5.5, 11.5, 13.5]);
        // Padding 1, kernel 2, stride 2: the corner window holds only element 1 plus three zeros.
        let inc = avg_pool2d(&grid(), (2, 2), (2, 2), (1, 1), true).unwrap().to_vec::<f64>().unwrap();
        let exc = avg_pool2d(&grid(), (2, 2), (2, 2), (1, 1), false).unwrap().to_vec::<f64>().unwrap();
        assert_eq!(inc.len(), 9);
        assert_eq!((inc[0], exc[0]), (0.25, 1.0));
        // The middle window (rows 1..3, columns 1..3) lies inside: both divide by 4.
        assert_eq!((inc[4], exc[4]), ((6. + 7. + 10. + 11.) / 4.0, (6. + 7. + 10. + 11.) / 4.0));
        // Adaptive 4×4 → 3×3: windows {0,1}, {1,2}, {2,3} in each axis.
        let y = adaptive_avg_pool2d(&grid(), (3, 3)).unwrap().to_vec::<f64>().unwrap();
        assert_eq!(y[0], (1. + 2. + 5. + 6.) / 4.0);
        assert_eq!(y[8], (11. + 12. + 15. + 16.) / 4.0);
        // Global average pooling, and an output larger than the input.
        assert_eq!(adaptive_avg_pool2d(&grid(), (1, 1)).unwrap().item().unwrap(), 8.5);
        let up = adaptive_avg_pool2d(&grid(), (8, 5)).unwrap();
        assert_eq!(up.dims(), &[1, 1, 8, 5]);
        assert_eq!(up.to_vec::<f64>().unwrap()[0], 1.0);
    }

    /// `ceil_mode` and `divisor_override` by hand (each value also checked against
    /// `torch.nn.functional` in f64).
    #[test]
    fn ceil_mode_and_divisor_override_by_hand() {
        let max = |x: &Tensor, o: MaxPool2dOptions| max_pool2d_with(x, &o).unwrap();
        let avg = |x: &Tensor, o: AvgPool2dOptions| avg_pool2d_with(x, &o).unwrap();
        let (m3, a3) = (MaxPool2dOptions::new((3, 3)), AvgPool2dOptions::new((3, 3)));
        // 4×4, kernel 3, stride 2: floor mode has one window; ceil mode adds rows/columns {2, 3}.
        let y = max(&grid(), MaxPool2dOptions { stride: (2, 2), ..m3 });
        assert_eq!(y.to_vec::<f64>().unwrap(), [11.]);
        let y = max(&grid(), MaxPool2dOptions { stride: (2, 2), ceil_mode: true, ..m3 });
        assert_eq!((y.dims(), y.to_vec::<f64>().unwrap()), (&[1, 1, 2, 2][..], vec![11., 12., 15., 16.]));
        // Average of the same windows: no padding, so the divisor is the clipped window (9, 6, 6, 4)
        // with or without count_include_pad.
        for count_include_pad in [true, false] {
            let y = avg(&grid(), AvgPool2dOptions { stride: (2, 2), ceil_mode: true, count_include_pad, ..a3 });
            assert_eq!(y.to_vec::<f64>().unwrap(), [54. / 9., 45. / 6., 72. / 6., 54. / 4.]);
        }
        // Ones 6×6, kernel 3, stride 2, padding 1: ceil mode adds a 4th window over padded rows
        // 5..7, i.e. input row 5 and one padded row; the part past the padding is not counted.
        let ones = Tensor::ones(&[1, 1, 6, 6], crate::DType::F64);
        let o = AvgPool2dOptions { stride: (2, 2), padding: (1, 1), ceil_mode: true, ..a3 };
        let y = avg(&ones, o).to_vec::<f64>().unwrap();
        assert_eq!(y.len(), 16);
        // Corners: 4/9 (3×3 window, 2×2 inside), 2/6 (3×2, 2×1), 1/4 (2×2, 1×1).
        assert_eq!((y[0], y[3], y[12], y[15]), (4. / 9., 2. / 6., 2. / 6., 1. / 4.));
        assert_eq!((y[5], y[7]), (1.0, 3. / 6.));
        let y = avg(&ones, AvgPool2dOptions { count_include_pad: false, ..o }).to_vec::<f64>().unwrap();
        assert_eq!(y, [1.0; 16]);
        // divisor_override replaces every divisor: the sums over 4, 6, 9, 2, 1 elements, halved.
        let y = avg(&ones, AvgPool2dOptions { divisor_override: Some(2), ..o }).to_vec::<f64>().unwrap();
        assert_eq!((y[0], y[1], y[5], y[7], y[15]), (2., 3., 4.5, 1.5, 0.5));
        // Without ceil mode too, and the gradient: each input gets Σ d_y / 2 over its windows.
        let x = grid().requires_grad_().unwrap();
        let y = avg(&x, AvgPool2dOptions { divisor_override: Some(2), ..AvgPool2dOptions::new((2, 2)) });
        assert_eq!(y.to_vec::<f64>().unwrap(), [7., 11., 23., 27.]);
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), [0.5; 16]);
        // 5×5, kernel 2, stride 2, padding 1: a 4th window would start in the right padding, so
        // PyTorch drops it and ceil mode gives 3, as floor mode.
        let five = Tensor::ones(&[1, 1, 5, 5], crate::DType::F64);
        let o2 = AvgPool2dOptions { padding: (1, 1), ceil_mode: true, ..AvgPool2dOptions::new((2, 2)) };
        assert_eq!(avg(&five, o2).dims(), &[1, 1, 3, 3]);
        // Dilation 2 on 6×6 (1..36): windows read rows/columns {0, 2}, {2, 4} and, in ceil mode, {4}.
        let g6 =
            Tensor::from_vec((1..=36).map(|v| v as f64).collect(), &[1, 1, 6, 6]).unwrap().requires_grad_().unwrap();
        let o = MaxPool2dOptions { dilation: (2, 2), ceil_mode: true, ..MaxPool2dOptions::new((2, 2)) };
        let y = max(&g6, o);
        assert_eq!(y.to_vec::<f64>().unwrap(), [15., 17., 17., 27., 29., 29., 27., 29., 29.]);
        // The gradient goes to each window's maximum, summed where windows share it.
        y.sum_all().unwrap().backward().unwrap();
        let g = g6.grad().unwrap().to_vec::<f64>().unwrap();
        assert_eq!((g[14], g[16], g[26], g[28], g.iter().sum::<f64>()), (1., 2., 2., 4., 9.));
        // Ceil mode lets a kernel wider than the input run off its end (2 wide, kernel 3, stride 2).
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
        assert_eq!(max(&x, MaxPool2dOptions { stride: (2, 2), ceil_mode: true, ..m3 }).item().unwrap(), 4.0);
        assert_eq!(avg(&x, AvgPool2dOptions { stride: (2, 2), ceil_mode: true, ..a3 }).item().unwrap(), 2.5);
        // The defaults are the old functions'.
        let x = randn64(&[2, 3, 7, 6], &mut Generator::new(5));
        let same = |a: Tensor, b: Tensor| assert_eq!(a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        same(max(&x, MaxPool2dOptions::new((2, 3))), max_pool2d(&x, (2, 3), (2, 3), (0, 0), (1, 1)).unwrap());
        same(avg(&x, AvgPool2dOptions::new((3, 2))), avg_pool2d(&x, (3, 2), (3, 2), (0, 0), true).unwrap());
    }

    /// PyTorch's `pooling_output_shape`, hand-computed.
    #[test]
    fn output_size_rule() {
        // (size, kernel, stride, padding, dilation) → (floor, ceil)
        let cases = [
            ((4, 2, 2, 0, 1), (Some(2), Some(2))),
            ((5, 2, 2, 0, 1), (Some(2), Some(3))),
            ((5, 2, 2, 1, 1), (Some(3), Some(3))), // the 4th window would start in the padding
            ((6, 3, 2, 1, 1), (Some(3), Some(4))), // the 4th starts on the last input row
            ((7, 3, 3, 1, 1), (Some(3), Some(3))),
            ((8, 3, 3, 1, 1), (Some(3), Some(3))), // the 4th would start in the padding
            ((9, 3, 3, 1, 1), (Some(3), Some(4))),
            ((6, 2, 2, 0, 2), (Some(2), Some(3))),
            ((2, 3, 2, 0, 1), (None, Some(1))),
            ((2, 3, 1, 0, 1), (None, None)),
            ((1, 3, 2, 0, 1), (None, None)),
            ((1, 1, 1, 0, 1), (Some(1), Some(1))),
            ((9, 3, 1, 1, 1), (Some(9), Some(9))),
        ];
        for ((n, k, s, p, d), (floor, ceil)) in cases {
            assert_eq!(pool_output_size(n, k, s, p, d, false), floor, "{:?}", (n, k, s, p, d));
            assert_eq!(pool_output_size(n, k, s, p, d, true), ceil, "{:?} ceil", (n, k, s, p, d));
        }
        assert_eq!(pool_output_size(4, 0, 1, 0, 1, true), None);
        assert_eq!(pool_output_size(4, 2, 0, 0, 1, true), None);
    }

    #[test]
    fn gradcheck_pools() {
        let mut rng = Generator::new(71);
        let x = randn64(&[2, 3, 7, 6], &mut rng);
        let one = std::slice::from_ref(&x);
        // Max pooling: continuous random inputs have no ties, so the finite differences are exact.
        gradcheck(one, |t| max_pool2d(&t[0], (2, 2), (2, 2), (0, 0), (1, 1)));
        gradcheck(one, |t| max_pool2d(&t[0], (3, 2), (2, 1), (1, 1), (1, 1)));
        gradcheck(one, |t| max_pool2d(&t[0], (3, 3), (1, 2), (1, 0), (2, 2)));
        gradcheck(one, |t| avg_pool2d(&t[0], (2, 2), (2, 2), (0, 0), true));
        gradcheck(one, |t| avg_pool2d(&t[0], (3, 3), (2, 2), (1, 1), true));
        gradcheck(one, |t| avg_pool2d(&t[0], (3, 2), (2, 1), (1, 1), false));
        gradcheck(one, |t| adaptive_avg_pool2d(&t[0], (3, 4)));
        gradcheck(one, |t| adaptive_avg_pool2d(&t[0], (1, 1)));
        gradcheck(one, |t| adaptive_avg_pool2d(&t[0], (9, 5)));
        // ceil_mode (7×6 leaves partial windows at the bottom/right) and divisor_override.
        let mp = |k, s, p, d| MaxPool2dOptions {
            stride: s,
            padding: p,
            dilation: d,
            ceil_mode: true,
            ..MaxPool2dOptions::new(k)
        };
        let ap = |k, s, p, cip, div| AvgPool2dOptions {
            stride: s,
            padding: p,
            ceil_mode: true,
            count_include_pad: cip,
            divisor_override: div,
            ..AvgPool2dOptions::new(k)
        };
        gradcheck(one, |t| max_pool2d_with(&t[0], &mp((2, 2), (2, 2), (0, 0), (1, 1))));
        gradcheck(one, |t| max_pool2d_with(&t[0], &mp((3, 3), (2, 4), (1, 1), (1, 1))));
        gradcheck(one, |t| max_pool2d_with(&t[0], &mp((2, 3), (3, 2), (1, 0), (2, 2))));
        gradcheck(one, |t| avg_pool2d_with(&t[0], &ap((3, 3), (2, 2), (1, 1), true, None)));
        gradcheck(one, |t| avg_pool2d_with(&t[0], &ap((3, 3), (2, 2), (1, 1), false, None)));
        gradcheck(one, |t| avg_pool2d_with(&t[0], &ap((2, 3), (3, 2), (0, 1), true, Some(5))));
        gradcheck(one, |t| {
            avg_pool2d_with(
                &t[0],
                &AvgPool2dOptions { divisor_override: Some(3), ..ap((3, 2), (2, 1), (1, 1), true, None) },
            )
        });
        gradcheck(one, |t| {
            avg_pool2d_with(&t[0], &AvgPool2dOptions { ceil_mode: false, ..ap((3, 3), (2, 2), (1, 1), false, Some(7)) })
        });
        // Unbatched and non-contiguous inputs.
        gradcheck(&[randn64(&[3, 5, 4], &mut rng)], |t| max_pool2d(&t[0], (2, 2), (1, 1), (1, 1), (1, 1)));
        gradcheck(&[randn64(&[3, 5, 4], &mut rng)], |t| {
            avg_pool2d_with(&t[0], &ap((2, 2), (2, 3), (1, 1), true, None))
        });
        gradcheck(one, |t| avg_pool2d(&t[0].transpose(2, 3)?, (2, 3), (2, 2), (1, 1), false));
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = Generator::new(72);
        let x = randn64(&[2, 3, 9, 7], &mut rng);
        let x32 = x.to_dtype(DType::F32).unwrap();
        type Pool = fn(&Tensor) -> crate::Result<Tensor>;
        let pools: [Pool; 5] = [
            |t| max_pool2d(t, (3, 3), (2, 2), (1, 1), (1, 1)),
            |t| avg_pool2d(t, (3, 3), (2, 2), (1, 1), true),
            |t| adaptive_avg_pool2d(t, (4, 3)),
            |t| max_pool2d_with(t, &MaxPool2dOptions { ceil_mode: true, ..MaxPool2dOptions::new((2, 2)) }),
            |t| {
                let o = AvgPool2dOptions {
                    padding: (1, 1),
                    ceil_mode: true,
                    divisor_override: Some(4),
                    ..AvgPool2dOptions::new((3, 3))
                };
                avg_pool2d_with(t, &AvgPool2dOptions { stride: (2, 2), ..o })
            },
        ];
        for f in pools {
            assert_close(&f(&x32).unwrap().to_vec_f64(), &f(&x).unwrap().to_vec_f64(), 1e-6, 1e-6);
        }
    }

    #[test]
    fn shape_errors() {
        let x = Tensor::zeros(&[2, 3, 4, 4], DType::F32);
        let msg = |r: crate::Result<Tensor>| r.unwrap_err().to_string();
        assert_eq!(
            msg(max_pool2d(&Tensor::zeros(&[3, 4], DType::F32), (2, 2), (2, 2), (0, 0), (1, 1))),
            "max_pool2d: input has shape [3, 4], expected [N, C, H, W] (4 dimensions) or [C, H, W] (3 dimensions, unbatched)"
        );
        assert_eq!(
            msg(max_pool2d(&x, (5, 2), (1, 1), (0, 0), (1, 1))),
            "max_pool2d: input has shape [2, 3, 4, 4], expected a height (dimension 2) of at least 5: the kernel spans 5 \
             (size 5, dilation 1) but the height padded by 0 on each side is only 4; use a smaller kernel or dilation, \
             more padding, or a larger input"
        );
        assert_eq!(
            msg(max_pool2d(&x, (3, 3), (1, 1), (2, 1), (1, 1))),
            "max_pool2d: padding (2, 1) is more than half the kernel span: with kernel_size (3, 3) and dilation (1, 1) \
             it may be at most (1, 1)"
        );
        assert!(msg(avg_pool2d(&x, (2, 2), (2, 2), (0, 2), true)).contains("may be at most (1, 1)"));
        assert_eq!(
            msg(avg_pool2d(&x, (2, 0), (2, 2), (0, 0), true)),
            "avg_pool2d: kernel_size must be at least 1 in each dimension, got (2, 0)"
        );
        assert_eq!(
            msg(adaptive_avg_pool2d(&x, (0, 2))),
            "adaptive_avg_pool2d: output_size must be at least 1 in each dimension, got (0, 2)"
        );
        assert!(msg(adaptive_avg_pool2d(&Tensor::zeros(&[1, 1, 0, 3], DType::F32), (1, 1))).contains("at least 1"));
        assert!(
            msg(max_pool2d(&Tensor::zeros(&[4], DType::I64), (1, 1), (1, 1), (0, 0), (1, 1))).contains("[N, C, H, W]")
        );
        // divisor_override 0 (PyTorch: "divisor must be not zero"), and ceil mode's own minimum size.
        let a = AvgPool2dOptions { divisor_override: Some(0), ..AvgPool2dOptions::new((2, 2)) };
        assert_eq!(
            msg(avg_pool2d_with(&x, &a)),
            "avg_pool2d: divisor_override must be at least 1, got 0 (leave it unset to divide by the window size)"
        );
        let m = MaxPool2dOptions { stride: (1, 2), ceil_mode: true, ..MaxPool2dOptions::new((6, 6)) };
        assert_eq!(
            msg(max_pool2d_with(&x, &m)),
            "max_pool2d: input has shape [2, 3, 4, 4], expected a height (dimension 2) of at least 6: the kernel spans 6 \
             (size 6, dilation 1) but the height padded by 0 on each side is only 4 (with ceil_mode, plus stride − 1 = 0); \
             use a smaller kernel or dilation, more padding, or a larger input"
        );
        // The width passes: 4 + (2 − 1) = 5 < 6 still fails, so widen the stride to 3.
        let m = MaxPool2dOptions { stride: (3, 3), ceil_mode: true, ..MaxPool2dOptions::new((6, 6)) };
        assert_eq!(max_pool2d_with(&x, &m).unwrap().dims(), &[2, 3, 1, 1]);
    }

    #[test]
    fn one_and_four_threads_give_identical_bits() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut rng = Generator::new(73);
                // 33·32 planes, 20×20 outputs of 9 taps each: 3.8M, above the threading threshold.
                const { assert!(33 * 32 * 400 * 9 >= crate::ops::conv::cpu::PAR_WORK) };
                let x =
                    Tensor::randn(&[33, 32, 40, 40], 0.0, 1.0, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
                let a = max_pool2d(&x, (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
                let b = avg_pool2d(&x, (3, 3), (2, 2), (1, 1), false).unwrap();
                let c = adaptive_avg_pool2d(&x, (7, 7)).unwrap();
                let loss = a.sum_all().unwrap().add(&b.mul(&b).unwrap().sum_all().unwrap()).unwrap();
                loss.add(&c.mul(&c).unwrap().sum_all().unwrap()).unwrap().backward().unwrap();
                let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                [bits(&a), bits(&b), bits(&c), bits(&x.grad().unwrap())]
            })
        };
        assert_eq!(run(1), run(4));
    }
}
