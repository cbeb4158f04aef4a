//! 2-D pooling, as `torch.nn.functional`: `max_pool2d`, `avg_pool2d` (with `ceil_mode`,
//! `count_include_pad` and `divisor_override` through [`max_pool2d_with`] / [`avg_pool2d_with`])
//! and `adaptive_avg_pool2d`, each forward with its backward right below it; [`pool_output_size`]
//! is PyTorch's output-size rule. The per-plane CPU kernels are in `cpu.rs`, the GPU path in
//! `gpu.rs` and `pool.wgsl` (the `gpu` feature).
//!
//! Every `(n, c)` plane is independent, so planes are spread over rayon threads (above a size
//! threshold); each plane is computed by one task in a fixed order, so results are identical
//! whatever the thread count.

mod cpu;
#[cfg(feature = "gpu")]
pub(crate) mod gpu;

pub use super::conv::pool_output_size;
use super::conv::{check_positive, window_output};
use super::tasks::parallel_for;
use crate::error::{Error, Result};
use crate::shape::Shape;
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
    let max = |k: usize, d: usize| d.saturating_mul(k - 1).div_ceil(2);
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
    let (oh, ow) = window_output(OP, x, kernel_size, stride, padding, dilation, ceil_mode)?;
    let win = Window { h, w, oh, ow, kernel: kernel_size, stride, padding, dilation };
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        let taps = || gpu::window_taps(&win);
        return gpu::pool(OP, x, (planes, h * w, oh * ow), taps, None, pooled_shape(x, oh, ow));
    }
    let parallel = parallel_for(planes * oh * ow * kernel_size.0 * kernel_size.1);
    let (storage, index) = cpu::max_pool(x, planes, &win, parallel)?;
    let x_shape = x.shape().clone();
    Ok(Tensor::from_op(storage, pooled_shape(x, oh, ow), OP, &[x], move |g| {
        // d_x[argmax of window i] += d_y[i].
        let dx = cpu::max_pool_backward(g, &index, planes, (h, w), (oh, ow), parallel)?;
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
    let (oh, ow) = window_output(OP, x, kernel_size, stride, padding, (1, 1), ceil_mode)?;
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
    // The windows' bounds multiply an output index by the input size: both, and the output's
    // element count, must stay within a usize.
    let too_large = oh.checked_mul(h).is_none()
        || ow.checked_mul(w).is_none()
        || crate::shape::checked_product(&[planes, oh, ow]).is_none();
    if too_large {
        crate::bail_arg!(OP, "output_size ({oh}, {ow}) for input {} is too large to represent", x.shape());
    }
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
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        let divisors = windows.iter().map(|wi| wi.divisor as f32).collect();
        let taps = || gpu::avg_taps(&windows, w);
        return gpu::pool(op, x, (planes, h * w, oh * ow), taps, Some(divisors), pooled_shape(x, oh, ow));
    }
    let taps: usize = windows.iter().map(|wi| (wi.y1 - wi.y0) * (wi.x1 - wi.x0)).sum();
    let parallel = parallel_for(planes * taps);
    let storage = cpu::avg_pool(op, x, planes, (h, w), (oh, ow), &windows, parallel)?;
    let x_shape = x.shape().clone();
    Ok(Tensor::from_op(storage, pooled_shape(x, oh, ow), op, &[x], move |g| {
        let dx = cpu::avg_pool_backward(op, g, planes, (h, w), (oh, ow), &windows, parallel)?;
        Ok(vec![Some(Tensor::from_storage(dx, x_shape))])
    }))
}

#[cfg(test)]
mod tests;
