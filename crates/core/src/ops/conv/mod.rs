//! 2-D convolution, as `torch.nn.functional.conv2d`: stride, zero padding, dilation and groups,
//! computed as im2col + one GEMM per sample and group (the `gemm` crate; `cpu.rs`).
//!
//! Backward, per sample and group with `col = im2col(x)`:
//! - d_x = col2im(W_gᵀ · dY_g) (the adjoint of im2col scatters each column back to its pixels),
//! - d_W_g = Σ_n dY_g · col_gᵀ,
//! - `d_bias[o] = Σ_{n, oy, ox} dY[n, o, oy, ox]`.
//!
//! The column matrices are recomputed in backward rather than saved: they are kH·kW times the
//! size of the input, and rebuilding them is cheap next to the GEMMs.
//!
//! Stride-1 3×3 convolutions with enough channels (the bulk of a ResNet) run their forward pass
//! and their input gradient (itself a stride-1 3×3 convolution of dY) as Winograd F(2×2, 3×3)
//! instead (`winograd.rs`): 2.25× fewer multiply-adds, as accurate as PyTorch. F(4×4, 3×3) runs
//! only when the caller asks for [`ConvAlgorithm::Fast`].

mod cpu;
mod geom;
#[cfg(target_arch = "x86_64")]
mod simd_x86;
#[cfg(test)]
mod tests;
mod winograd;

#[cfg(feature = "gpu")]
mod gpu;
use super::with_float2;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::storage::Element;
use crate::tensor::Tensor;
use geom::ConvGeom;

/// `s` as f32s, when `T` is f32.
#[cfg(target_arch = "x86_64")]
pub(crate) fn f32s<T: crate::storage::Float>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (same TypeId), so the cast is the identity.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

/// `s` as f32s, when `T` is f32.
#[cfg(target_arch = "x86_64")]
pub(crate) fn f32s_mut<T: crate::storage::Float>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32 (same TypeId), so the cast is the identity.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}

/// Four scratch buffers as f32s, when `T` is f32.
#[cfg(target_arch = "x86_64")]
pub(crate) fn f32s4<T: crate::storage::Float>(b: &mut [Vec<T>]) -> Option<[&mut [f32]; 4]> {
    let [b0, b1, b2, b3] = b else { return None };
    Some([f32s_mut(b0)?, f32s_mut(b1)?, f32s_mut(b2)?, f32s_mut(b3)?])
}

/// Whether the f32 kernels can take the explicit AVX-512 versions (`winograd_x86.rs`,
/// `cpu_x86.rs`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Output size along one axis of a sliding window (convolution or pooling, `ceil_mode=False`):
/// `⌊(size + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1`, or `None` when the dilated
/// kernel is larger than the padded input (stride and dilation must be at least 1).
pub fn window_output_size(size: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> Option<usize> {
    if stride == 0 || dilation == 0 {
        return None;
    }
    // Sizes too large to compute with cannot be any tensor's: None, not a wrapped result.
    let span = dilation.checked_mul(kernel.max(1) - 1)?.checked_add(1)?;
    let padded = padding.checked_mul(2)?.checked_add(size)?;
    (padded >= span).then(|| (padded - span) / stride + 1)
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
    // d·(k − 1) can pass i128's range for absurd sizes; the result must fit a usize.
    let mut out = (size + 2 * p - d.checked_mul(k - 1)? - 1 + extra).div_euclid(s) + 1;
    if ceil_mode && (out - 1).checked_mul(s)? >= size + p {
        out -= 1;
    }
    (out >= 1).then_some(out).and_then(|o| usize::try_from(o).ok())
}

/// Checks the spatial dimensions of a sliding-window op (convolution, or pooling with its
/// `ceil_mode`) and returns `(OH, OW)` by [`pool_output_size`]; the error names the dimension
/// that is too small and the smallest size that works.
pub(crate) fn window_output(
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
        if size == 0 {
            // As PyTorch: only the batch may be empty (an empty plane has no windows to slide).
            return Err(Error::ShapeMismatch {
                op,
                what: "input",
                got: x.shape().clone(),
                expected: format!("a {name} (dimension {dim}) of at least 1: only the batch dimension may be empty"),
            });
        }
        let too_large = || Error::InvalidArgument {
            op,
            message: format!(
                "a {name} of {size} with padding {p}, kernel size {k}, dilation {d} and stride {s} gives an \
                 output {name} too large to represent; use a smaller padding or dilation"
            ),
        };
        let span = d.checked_mul(k.max(1) - 1).and_then(|v| v.checked_add(1)).ok_or_else(too_large)?;
        let padded = p.checked_mul(2).and_then(|v| v.checked_add(size)).ok_or_else(too_large)?;
        out[i] = pool_output_size(size, k, s, p, d, ceil_mode).ok_or_else(|| {
            if padded >= span {
                // Large enough: only a result past a usize's range gives None.
                return too_large();
            }
            // In ceil mode the one window may run up to stride − 1 past the padded input.
            let (least, slack) = if ceil_mode {
                (
                    span.saturating_sub((2 * p).saturating_add(s - 1)).max(1),
                    format!(" (with ceil_mode, plus stride − 1 = {})", s - 1),
                )
            } else {
                (span.saturating_sub(2 * p).max(1), String::new())
            };
            Error::ShapeMismatch {
                op,
                what: "input",
                got: x.shape().clone(),
                expected: format!(
                    "a {name} (dimension {dim}) of at least {least}: the kernel spans {span} (size {k}, dilation {d}) \
                     but the {name} padded by {p} on each side is only {padded}{slack}; use a smaller kernel or \
                     dilation, more padding, or a larger input"
                ),
            }
        })?;
    }
    // The output's element count must be countable too (the leading dimensions are the input's).
    let leading = &x.dims()[..nd - 2];
    if crate::shape::checked_product(&[leading, &out[..]].concat()).is_none() {
        crate::bail_arg!(
            op,
            "the output of {}×{} per plane for input {} has more elements than a usize can count; use a \
             smaller padding or dilation",
            out[0],
            out[1],
            x.shape()
        );
    }
    Ok((out[0], out[1]))
}

/// Checks that each pair has both entries at least 1.
pub(crate) fn check_positive(op: &'static str, what: &str, pair: (usize, usize)) -> Result<()> {
    if pair.0 == 0 || pair.1 == 0 {
        crate::bail_arg!(op, "{what} must be at least 1 in each dimension, got ({}, {})", pair.0, pair.1);
    }
    Ok(())
}

/// Which algorithms a convolution may use, as cuDNN lets its users choose.
///
/// Measured on 3×3 stride-1 convolutions (`tools/make_conv_accuracy.py`; the error of a tensor
/// is its worst element's distance from the f64 result, over the tensor's largest magnitude):
/// PyTorch's f32 error is 2.5–4.8e-7 in the output and input gradient, 0.3–2.5e-6 in the weight
/// gradient; `Default` stays within 1.6× of it on every shape (a test holds it to 2×); `Fast`
/// is 7–14× PyTorch's in the output and input gradient on planes of 28×28 and more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvAlgorithm {
    /// As accurate as PyTorch in f32: im2col GEMMs; for stride-1 3×3 convolutions with at least
    /// 8 channels in and out, Winograd F(2×2, 3×3) for the output and the input gradient. The
    /// weight gradient is always im2col's GEMM, which keeps its exact zeros exact (a dead
    /// channel's weights get no Adam steps, as in PyTorch).
    #[default]
    Default,
    /// Winograd for the weight gradient too, and F(4×4, 3×3) for f32 on AVX-512 where a plane has
    /// at least 48 output tiles of 4×4 (28×28 and larger): fewer multiply-adds, at 7–14×
    /// PyTorch's f32 rounding error, and rounding noise where the weight gradient is exactly 0.
    /// f64 takes the same paths with errors far below f32's.
    Fast,
}

impl ConvAlgorithm {
    /// The name used in model files: `"default"` or `"fast"`.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::Default => "default",
            ConvAlgorithm::Fast => "fast",
        }
    }

    /// Parses a model-file name (`"default"`, `"fast"`).
    pub fn from_name(name: &str) -> Option<ConvAlgorithm> {
        match name {
            "default" => Some(ConvAlgorithm::Default),
            "fast" => Some(ConvAlgorithm::Fast),
            _ => None,
        }
    }
}

/// The options of [`conv2d_with`]: `torch.nn.functional.conv2d`'s, plus the algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// `(height, width)` step of the window; at least 1.
    pub stride: (usize, usize),
    /// Zeros added on each side, `(height, width)`.
    pub padding: (usize, usize),
    /// Spacing of the kernel's taps; at least 1.
    pub dilation: (usize, usize),
    /// Independent channel groups (`C` for a depthwise convolution).
    pub groups: usize,
    /// Which algorithms may run.
    pub algorithm: ConvAlgorithm,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions { stride: (1, 1), padding: (0, 0), dilation: (1, 1), groups: 1, algorithm: ConvAlgorithm::Default }
    }
}

/// 2-D convolution (cross-correlation, as PyTorch computes it) of `x` with `weight`, plus `bias`,
/// with the default (accurate) algorithm; [`conv2d_with`] takes the options as a struct and
/// lets the fast algorithm run.
///
/// `stride`, `padding` (zeros on each side), `dilation` are `(height, width)` pairs; `groups`
/// splits the channels into independent convolutions (`groups = C` is a depthwise convolution).
///
/// # Shapes
/// - `x`: `[N, C, H, W]`, or `[C, H, W]` (unbatched; the output then has no batch dimension)
/// - `weight`: `[O, C / groups, kH, kW]` (PyTorch's layout); `C` and `O` divisible by `groups`
/// - `bias`: `[O]`
/// - output: `[N, O, OH, OW]` with
///   `OH = ⌊(H + 2·padding.0 − dilation.0·(kH − 1) − 1) / stride.0⌋ + 1`, and `OW` likewise
///
/// ```
/// # use strata_core::{Tensor, DType, conv2d};
/// let x = Tensor::ones(&[2, 3, 8, 8], DType::F32);
/// let w = Tensor::ones(&[4, 3, 3, 3], DType::F32);
/// let y = conv2d(&x, &w, None, (2, 2), (1, 1), (1, 1), 1)?;
/// assert_eq!(y.dims(), &[2, 4, 4, 4]);
/// # Ok::<(), strata_core::Error>(())
/// ```
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Result<Tensor> {
    conv2d_with(x, weight, bias, &ConvOptions { stride, padding, dilation, groups, algorithm: ConvAlgorithm::Default })
}

/// [`conv2d`] with its options in a struct, including the [`ConvAlgorithm`].
///
/// # Shapes
/// As [`conv2d`].
pub fn conv2d_with(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, opts: &ConvOptions) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let ConvOptions { stride, padding, dilation, groups, algorithm } = *opts;
    x.check_same(OP, weight)?;
    if let Some(b) = bias {
        x.check_same(OP, b)?;
    }
    if x.ndim() == 3 {
        return conv2d_with(&x.unsqueeze(0)?, weight, bias, opts)?.squeeze(0);
    }
    if x.ndim() != 4 {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "input",
            got: x.shape().clone(),
            expected: "[N, C, H, W] (4 dimensions) or [C, H, W] (3 dimensions, unbatched)".into(),
        });
    }
    if weight.ndim() != 4 || weight.dims()[2] == 0 || weight.dims()[3] == 0 {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "weight",
            got: weight.shape().clone(),
            expected: "[out_channels, in_channels / groups, kH, kW] with kH, kW ≥ 1".into(),
        });
    }
    if groups == 0 {
        crate::bail_arg!(OP, "groups must be at least 1, got 0");
    }
    check_positive(OP, "stride", stride)?;
    check_positive(OP, "dilation", dilation)?;
    let (n, c, h, w) = (x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]);
    let (o, cg, kh, kw) = (weight.dims()[0], weight.dims()[1], weight.dims()[2], weight.dims()[3]);
    if !o.is_multiple_of(groups) {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "weight",
            got: weight.shape().clone(),
            expected: format!(
                "out_channels (dimension 0) divisible by groups = {groups}, but {o} is not; \
                 change out_channels or groups"
            ),
        });
    }
    if c != cg * groups {
        let why = if c.is_multiple_of(groups) {
            format!("the weight {} takes {cg} channels per group × {groups} groups = {}", weight.shape(), cg * groups)
        } else {
            format!("{c} channels are not divisible by groups = {groups}")
        };
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "input",
            got: x.shape().clone(),
            expected: format!("[N, {}, H, W] (dimension 1 is the channels): {why}", cg * groups),
        });
    }
    if let Some(b) = bias
        && b.dims() != [o]
    {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "bias",
            got: b.shape().clone(),
            expected: format!("[{o}] (one value per output channel)"),
        });
    }
    if c == 0 {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "input",
            got: x.shape().clone(),
            expected: "at least 1 channel (dimension 1): only the batch dimension may be empty".into(),
        });
    }
    let (oh, ow) = window_output(OP, x, (kh, kw), stride, padding, dilation, false)?;
    if crate::shape::checked_product(&[n, o, oh, ow]).is_none() {
        crate::bail_arg!(OP, "the output [{n}, {o}, {oh}, {ow}] has more elements than a usize can count");
    }
    let fast = algorithm == ConvAlgorithm::Fast;
    let geom = ConvGeom { n, c, h, w, o, kh, kw, stride, padding, dilation, groups, oh, ow, fast };
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu::conv2d(x, weight, bias, geom);
    }

    let (xc, wc) = (x.contiguous()?.detach(), weight.contiguous()?.detach());
    let bc = bias.map(|b| b.contiguous().map(|t| t.detach())).transpose()?;
    let (sx, sw) = (xc.cpu_storage("conv2d")?, wc.cpu_storage("conv2d")?);
    let sb = bc.as_ref().map(|b| b.cpu_storage("conv2d")).transpose()?;
    let (xo, wo) = (xc.layout().offset, wc.layout().offset);
    let bo = bc.as_ref().map_or(0, |b| b.layout().offset);
    let storage = with_float2!(sx, sw, OP, |vx, vw: T| {
        let vb = match sb.as_deref() {
            Some(s) => {
                Some(&T::slice(s).ok_or(Error::DTypeMismatch { op: OP, lhs: T::DTYPE, rhs: s.dtype() })?[bo..bo + o])
            }
            None => None,
        };
        Ok(T::wrap(cpu::conv2d_forward::<T>(&vx[xo..xo + x.numel()], &vw[wo..wo + weight.numel()], vb, &geom)))
    })?;

    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    let needs = (x.requires_grad(), weight.requires_grad(), bias.is_some_and(Tensor::requires_grad));
    let has_bias = bias.is_some();
    let (x_shape, w_shape) = (x.shape().clone(), weight.shape().clone());
    Ok(Tensor::from_op(storage, Shape(vec![n, o, oh, ow]), OP, &inputs, move |g| {
        let gc = g.contiguous()?;
        let (sg, sx, sw) = (gc.cpu_storage("conv2d")?, xc.cpu_storage("conv2d")?, wc.cpu_storage("conv2d")?);
        let go = gc.layout().offset;
        let (xo, wo) = (xc.layout().offset, wc.layout().offset);
        let (nx, nw, ng) = (xc.numel(), wc.numel(), gc.numel());
        let (dx, dw, db) = with_float2!(sg, sx, "conv2d backward", |vg, vx: T| {
            let vw = T::slice(&sw).expect("weight has the input's dtype");
            let dy = &vg[go..go + ng];
            let (dx, dw) = cpu::conv2d_backward::<T>(&vx[xo..xo + nx], &vw[wo..wo + nw], dy, &geom, needs.0, needs.1);
            let db = needs.2.then(|| cpu::conv2d_bias_backward::<T>(dy, &geom));
            Ok((dx.map(T::wrap), dw.map(T::wrap), db.map(T::wrap)))
        })?;
        let mut out = vec![
            dx.map(|s| Tensor::from_storage(s, x_shape.clone())),
            dw.map(|s| Tensor::from_storage(s, w_shape.clone())),
        ];
        if has_bias {
            out.push(db.map(|s| Tensor::from_storage(s, Shape(vec![o]))));
        }
        Ok(out)
    }))
}
