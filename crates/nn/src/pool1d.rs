//! 1-d pooling on `[N, C, L]`, PyTorch's `nn.MaxPool1d`, `nn.AvgPool1d` and
//! `nn.AdaptiveAvgPool1d` — the modules and their layer kinds (model-file keys, shape rule,
//! description, build). Each runs as its 2-d pool at height 1 (the input seen as `[N, C, 1, L]`,
//! the options `(1, k)`, `(1, s)`, `(0, p)`, `(1, d)`), so the same kernels, devices and
//! gradients, and the same shape rule (`pool.rs`, its messages in 1-d terms).

use crate::Result;
use crate::check::context::{CheckContext, Window};
use crate::check::error::ShapeErrorKind;
use crate::check::fix::Edit;
use crate::check::shape::{Dim, SymShape};
use crate::layer::{BuildContext, Layer, LayerKind};
use crate::model_file::keys::LayerFields;
use crate::module::Module;
use crate::pool::pool_shape_as;
use crate::spec::LayerSpec;
use strata_core::{AvgPool2dOptions, MaxPool2dOptions, Tensor, adaptive_avg_pool2d, avg_pool2d_with, max_pool2d_with};

/// Runs a 2-d op on `x` (`[N, C, L]` or `[C, L]`) seen at height 1, and takes the height out
/// of its output; `op` names the layer in the rank error.
fn at_height_1(op: &'static str, x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if !matches!(x.ndim(), 2 | 3) {
        let expected = "[N, C, L] or [C, L]".into();
        return Err(strata_core::Error::ShapeMismatch { op, what: "input", got: x.shape().clone(), expected }.into());
    }
    Ok(f(&x.unsqueeze(-2)?)?.squeeze(-2)?)
}

/// Max pooling over sequences, PyTorch's `nn.MaxPool1d(kernel_size, stride=kernel_size,
/// padding=0, dilation=1, ceil_mode=False)`: each output is the maximum of a window of
/// `kernel_size` taps (padding never wins).
///
/// # Shapes
/// - input: `[N, C, L]` (or `[C, L]`)
/// - output: `[N, C, OL]`, `OL = ⌊(L + 2·padding − dilation·(kernel_size − 1) − 1) / stride⌋ + 1`
///   (`⌈…⌉` with `ceil_mode`, as PyTorch); `padding` at most half the kernel
///
/// ```
/// use strata_nn::{MaxPool1d, Module};
/// use strata_core::{DType, Tensor};
/// let y = MaxPool1d::new(2).forward(&Tensor::zeros(&[8, 16, 100], DType::F32))?;
/// assert_eq!(y.dims(), &[8, 16, 50]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool1d {
    /// The window as the 2-d pool's options at height 1.
    pub options: MaxPool2dOptions,
}

impl MaxPool1d {
    /// `nn.MaxPool1d(kernel_size)`: stride = kernel size, no padding, no dilation, floor mode.
    pub fn new(kernel_size: usize) -> Self {
        MaxPool1d { options: MaxPool2dOptions::new((1, kernel_size)) }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.options.stride = (1, stride);
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: usize) -> Self {
        self.options.padding = (0, padding);
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.options.dilation = (1, dilation);
        self
    }
    /// Whether the output size is rounded up (`ceil_mode`).
    pub fn ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.options.ceil_mode = ceil_mode;
        self
    }
}

impl Module for MaxPool1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        at_height_1("MaxPool1d", x, |x| Ok(max_pool2d_with(x, &self.options)?))
    }
    fn describe(&self) -> String {
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }
    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::MaxPool1d(self.options))
    }
}

/// Average pooling over sequences, PyTorch's `nn.AvgPool1d(kernel_size, stride=kernel_size,
/// padding=0, ceil_mode=False, count_include_pad=True)`.
///
/// # Shapes
/// - input: `[N, C, L]` (or `[C, L]`)
/// - output: `[N, C, OL]`, `OL = ⌊(L + 2·padding − kernel_size) / stride⌋ + 1` (`⌈…⌉` with
///   `ceil_mode`); `padding` at most half the kernel
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool1d {
    /// The window as the 2-d pool's options at height 1.
    pub options: AvgPool2dOptions,
}

impl AvgPool1d {
    /// `nn.AvgPool1d(kernel_size)`: stride = kernel size, no padding, floor mode,
    /// `count_include_pad=True`.
    pub fn new(kernel_size: usize) -> Self {
        AvgPool1d { options: AvgPool2dOptions::new((1, kernel_size)) }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.options.stride = (1, stride);
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: usize) -> Self {
        self.options.padding = (0, padding);
        self
    }
    /// Whether padded zeros count in the divisor.
    pub fn count_include_pad(mut self, count_include_pad: bool) -> Self {
        self.options.count_include_pad = count_include_pad;
        self
    }
    /// Whether the output size is rounded up (`ceil_mode`).
    pub fn ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.options.ceil_mode = ceil_mode;
        self
    }
}

impl Module for AvgPool1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        at_height_1("AvgPool1d", x, |x| Ok(avg_pool2d_with(x, &self.options)?))
    }
    fn describe(&self) -> String {
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }
    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::AvgPool1d(self.options))
    }
}

/// Adaptive average pooling over sequences, PyTorch's `nn.AdaptiveAvgPool1d(output_size)`:
/// output position `i` averages `⌊i·L/O⌋..⌈(i+1)·L/O⌉`; `AdaptiveAvgPool1d::new(1)` is global
/// average pooling.
///
/// # Shapes
/// - input: `[N, C, L]` (or `[C, L]`), `L ≥ 1`
/// - output: `[N, C, output_size]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveAvgPool1d {
    /// The output length.
    pub output_size: usize,
}

impl AdaptiveAvgPool1d {
    /// `nn.AdaptiveAvgPool1d(output_size)`.
    pub fn new(output_size: usize) -> Self {
        AdaptiveAvgPool1d { output_size }
    }
}

impl Module for AdaptiveAvgPool1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        at_height_1("AdaptiveAvgPool1d", x, |x| Ok(adaptive_avg_pool2d(x, (1, self.output_size))?))
    }
    fn describe(&self) -> String {
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }
    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::AdaptiveAvgPool1d { output_size: self.output_size })
    }
}

/// `type = "MaxPool1d"`: `kernel_size` (required), `stride`, `padding`, `dilation`, `ceil_mode`
/// (sizes as integers).
pub static MAX_POOL1D_KIND: LayerKind = LayerKind {
    type_name: "MaxPool1d",
    keys: &["name", "type", "kernel_size", "stride", "padding", "dilation", "ceil_mode"],
    layer_of: None,
    parse: Some(parse_pool1d),
};
/// `type = "AvgPool1d"`: `kernel_size` (required), `stride`, `padding`, `ceil_mode`,
/// `count_include_pad`.
pub static AVG_POOL1D_KIND: LayerKind = LayerKind {
    type_name: "AvgPool1d",
    keys: &["name", "type", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"],
    layer_of: None,
    parse: Some(parse_pool1d),
};
/// `type = "AdaptiveAvgPool1d"`, `output_size` (required, an integer).
pub static ADAPTIVE_AVG_POOL1D_KIND: LayerKind = LayerKind {
    type_name: "AdaptiveAvgPool1d",
    keys: &["name", "type", "output_size"],
    layer_of: None,
    parse: Some(|f| match f.get("output_size") {
        Some(_) => Some(LayerSpec::AdaptiveAvgPool1d { output_size: crate::conv::size_1d(f, "output_size", 1, 1) }),
        None if f.meant("output_size") => None,
        None => {
            f.missing("output_size", "add output_size = 1 (global average pooling)");
            None
        }
    }),
};

fn parse_pool1d(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    use crate::conv::size_1d;
    let kernel_size = match f.get("kernel_size") {
        Some(_) => size_1d(f, "kernel_size", 1, 1),
        None if f.meant("kernel_size") => return None,
        None => {
            f.missing("kernel_size", "add kernel_size = 2");
            return None;
        }
    };
    let stride = (1, size_1d(f, "stride", kernel_size, 1));
    let padding = (0, size_1d(f, "padding", 0, 0));
    let ceil_mode = f.boolean("ceil_mode", false);
    let kernel_size = (1, kernel_size);
    Some(if f.ty == "MaxPool1d" {
        let dilation = (1, size_1d(f, "dilation", 1, 1));
        LayerSpec::MaxPool1d(MaxPool2dOptions { kernel_size, stride, padding, dilation, ceil_mode })
    } else {
        let count_include_pad = f.boolean("count_include_pad", true);
        let divisor_override = None;
        LayerSpec::AvgPool1d(AvgPool2dOptions {
            kernel_size,
            stride,
            padding,
            ceil_mode,
            count_include_pad,
            divisor_override,
        })
    })
}

/// A 1-d pool in a model spec: its 2-d options at height 1, or the adaptive pool's length.
///
/// # Shapes
/// - input: `[N, C, L]`
/// - output: `[N, C, OL]` (see [`MaxPool1d`], [`AvgPool1d`], [`AdaptiveAvgPool1d`])
#[derive(Debug)]
pub(crate) enum Pool1dLayer {
    /// `MaxPool1d`.
    Max(MaxPool2dOptions),
    /// `AvgPool1d`.
    Avg(AvgPool2dOptions),
    /// `AdaptiveAvgPool1d`.
    Adaptive(usize),
}

impl Pool1dLayer {
    /// The window: kernel, stride, padding, dilation (1 for the average), `ceil_mode`.
    fn window(&self) -> Option<(Window, bool)> {
        match self {
            Pool1dLayer::Max(o) => Some((
                Window { kernel: o.kernel_size, stride: o.stride, padding: o.padding, dilation: o.dilation },
                o.ceil_mode,
            )),
            Pool1dLayer::Avg(o) => Some((
                Window { kernel: o.kernel_size, stride: o.stride, padding: o.padding, dilation: (1, 1) },
                o.ceil_mode,
            )),
            Pool1dLayer::Adaptive(_) => None,
        }
    }
}

impl Layer for Pool1dLayer {
    fn type_name(&self) -> &'static str {
        match self {
            Pool1dLayer::Max(_) => "MaxPool1d",
            Pool1dLayer::Avg(_) => "AvgPool1d",
            Pool1dLayer::Adaptive(_) => "AdaptiveAvgPool1d",
        }
    }

    fn describe(&self) -> String {
        let Some((w, ceil_mode)) = self.window() else {
            let Pool1dLayer::Adaptive(n) = self else { unreachable!("the other pools have a window") };
            return format!("AdaptiveAvgPool1d {n}");
        };
        let mut s = format!("{} {}", self.type_name(), w.kernel.1);
        if w.stride.1 != w.kernel.1 {
            s.push_str(&format!(", stride {}", w.stride.1));
        }
        if w.padding.1 != 0 {
            s.push_str(&format!(", padding {}", w.padding.1));
        }
        if w.dilation.1 != 1 {
            s.push_str(&format!(", dilation {}", w.dilation.1));
        }
        if ceil_mode {
            s.push_str(", ceil_mode true");
        }
        if let Pool1dLayer::Avg(o) = self
            && !o.count_include_pad
        {
            s.push_str(", count_include_pad false");
        }
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        if x.rank() != 3 {
            cx.fail(
                ShapeErrorKind::TooFewDims { needs: "[N, C, L]: a batch of sequences with channels".into() },
                vec![],
            );
            return x.clone();
        }
        let Some((win, ceil_mode)) = self.window() else {
            let Pool1dLayer::Adaptive(n) = self else { unreachable!("the other pools have a window") };
            return SymShape(vec![x.0[0], x.0[1], Dim::Fixed(*n)]);
        };
        // [N, C, L] seen as [N, C, 1, L], and the height taken out again.
        let mut x4 = x.clone();
        x4.0.insert(2, Dim::Fixed(1));
        let mut y = pool_shape_as(cx, self.type_name(), &x4, x, win, ceil_mode, true);
        y.0.remove(2);
        y
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(match self {
            Pool1dLayer::Max(o) => Box::new(MaxPool1d { options: *o }),
            Pool1dLayer::Avg(o) => Box::new(AvgPool1d { options: *o }),
            Pool1dLayer::Adaptive(n) => Box::new(AdaptiveAvgPool1d::new(*n)),
        })
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        let Some((w, ceil_mode)) = self.window() else {
            let Pool1dLayer::Adaptive(n) = self else { unreachable!("the other pools have a window") };
            fields.push(format!("output_size = {n}"));
            return;
        };
        fields.push(format!("kernel_size = {}", w.kernel.1));
        fields.push(format!("stride = {}", w.stride.1));
        fields.push(format!("padding = {}", w.padding.1));
        if let Pool1dLayer::Max(_) = self {
            fields.push(format!("dilation = {}", w.dilation.1));
        }
        // Written only when set, so files without it read and write back unchanged.
        if ceil_mode {
            fields.push("ceil_mode = true".into());
        }
        if let Pool1dLayer::Avg(o) = self {
            fields.push(format!("count_include_pad = {}", o.count_include_pad));
        }
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        let Edit::SetWindow { kernel_size: k, padding: p, .. } = edit else { return false };
        let (kernel, padding) = ((1, k.1), (0, p.1));
        match self {
            Pool1dLayer::Max(o) => (o.kernel_size, o.padding) = (kernel, padding),
            Pool1dLayer::Avg(o) => (o.kernel_size, o.padding) = (kernel, padding),
            Pool1dLayer::Adaptive(_) => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        match self {
            Pool1dLayer::Max(o) => LayerSpec::MaxPool1d(*o),
            Pool1dLayer::Avg(o) => LayerSpec::AvgPool1d(*o),
            Pool1dLayer::Adaptive(n) => LayerSpec::AdaptiveAvgPool1d { output_size: *n },
        }
    }
}
