//! Pooling layers, PyTorch's `nn.MaxPool2d`, `nn.AvgPool2d` and `nn.AdaptiveAvgPool2d`
//! (`ceil_mode = False`). They have no parameters; sizes take one number or a
//! `(height, width)` pair ([`IntoPair`]). Invalid sizes (a zero kernel, padding over half the
//! kernel, a kernel larger than the padded input) are reported by `forward` as errors.

use crate::Result;
use crate::check::context::{CheckContext, Window, window};
use crate::check::error::ShapeErrorKind;
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, fixed, pair_arg};
use crate::conv::{IntoPair, pair_str};
use crate::layer::{BuildContext, Layer, LayerKind};
use crate::model_file::keys::{LayerFields, pair_toml};
use crate::module::Module;
use crate::spec::LayerSpec;
use strata_core::{Tensor, adaptive_avg_pool2d, avg_pool2d, max_pool2d};

/// Sliding-window sizes shared by the two fixed-window pools.
fn window_desc(kind: &str, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> String {
    let mut s = format!("{kind} {}×{}", kernel.0, kernel.1);
    if stride != kernel {
        s.push_str(&format!(", stride {}", pair_str(stride)));
    }
    if padding != (0, 0) {
        s.push_str(&format!(", padding {}", pair_str(padding)));
    }
    s
}

/// Max pooling, PyTorch's `nn.MaxPool2d(kernel_size, stride=kernel_size, padding=0,
/// dilation=1)`: each output is the maximum of a `kernel_size` window (padding never wins).
///
/// # Shapes
/// - input: `[N, C, H, W]` (or `[C, H, W]`)
/// - output: `[N, C, OH, OW]` with
///   `OH = ⌊(H + 2·padding.0 − dilation.0·(kernel_size.0 − 1) − 1) / stride.0⌋ + 1`, `OW` likewise;
///   `padding` at most half the dilated kernel span
///
/// ```
/// use strata_nn::{MaxPool2d, Module};
/// use strata_core::{DType, Tensor};
/// let y = MaxPool2d::new(2).forward(&Tensor::zeros(&[64, 32, 28, 28], DType::F32))?;
/// assert_eq!(y.dims(), &[64, 32, 14, 14]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// `(kH, kW)`.
    pub kernel_size: (usize, usize),
    /// Step of the window (defaults to the kernel size).
    pub stride: (usize, usize),
    /// Implicit −∞ padding on each side.
    pub padding: (usize, usize),
    /// Spacing between window taps.
    pub dilation: (usize, usize),
}

impl MaxPool2d {
    /// `nn.MaxPool2d(kernel_size)`: stride = kernel size, no padding, no dilation.
    pub fn new(kernel_size: impl IntoPair) -> Self {
        let k = kernel_size.into_pair();
        MaxPool2d { kernel_size: k, stride: k, padding: (0, 0), dilation: (1, 1) }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: impl IntoPair) -> Self {
        self.stride = stride.into_pair();
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: impl IntoPair) -> Self {
        self.padding = padding.into_pair();
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: impl IntoPair) -> Self {
        self.dilation = dilation.into_pair();
        self
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)?)
    }
    fn describe(&self) -> String {
        // One description per kind: the layer kind's (what traces and summaries show).
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::MaxPool2d {
            kernel_size: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        })
    }
}

/// Average pooling, PyTorch's `nn.AvgPool2d(kernel_size, stride=kernel_size, padding=0,
/// count_include_pad=True)`: each output is the mean of a `kernel_size` window; with
/// `count_include_pad` the padded zeros count in the divisor.
///
/// # Shapes
/// - input: `[N, C, H, W]` (or `[C, H, W]`)
/// - output: `[N, C, OH, OW]` with `OH = ⌊(H + 2·padding.0 − kernel_size.0) / stride.0⌋ + 1`,
///   `OW` likewise; `padding` at most half the kernel size
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    /// `(kH, kW)`.
    pub kernel_size: (usize, usize),
    /// Step of the window (defaults to the kernel size).
    pub stride: (usize, usize),
    /// Implicit zero padding on each side.
    pub padding: (usize, usize),
    /// Whether padded zeros count in each window's divisor (PyTorch's default: yes).
    pub count_include_pad: bool,
}

impl AvgPool2d {
    /// `nn.AvgPool2d(kernel_size)`: stride = kernel size, no padding, `count_include_pad=True`.
    pub fn new(kernel_size: impl IntoPair) -> Self {
        let k = kernel_size.into_pair();
        AvgPool2d { kernel_size: k, stride: k, padding: (0, 0), count_include_pad: true }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: impl IntoPair) -> Self {
        self.stride = stride.into_pair();
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: impl IntoPair) -> Self {
        self.padding = padding.into_pair();
        self
    }
    /// Whether padded zeros count in the divisor.
    pub fn count_include_pad(mut self, count_include_pad: bool) -> Self {
        self.count_include_pad = count_include_pad;
        self
    }
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)?)
    }
    fn describe(&self) -> String {
        // One description per kind: the layer kind's (what traces and summaries show).
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::AvgPool2d {
            kernel_size: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
            count_include_pad: self.count_include_pad,
        })
    }
}

/// Adaptive average pooling, PyTorch's `nn.AdaptiveAvgPool2d(output_size)`: the output has a
/// fixed size whatever the input's; cell `(i, j)` averages rows `⌊i·H/OH⌋..⌈(i+1)·H/OH⌉` and
/// columns likewise. `AdaptiveAvgPool2d::new(1)` is global average pooling.
///
/// # Shapes
/// - input: `[N, C, H, W]` (or `[C, H, W]`), `H, W ≥ 1`
/// - output: `[N, C, output_size.0, output_size.1]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveAvgPool2d {
    /// `(OH, OW)`.
    pub output_size: (usize, usize),
}

impl AdaptiveAvgPool2d {
    /// `nn.AdaptiveAvgPool2d(output_size)`.
    pub fn new(output_size: impl IntoPair) -> Self {
        AdaptiveAvgPool2d { output_size: output_size.into_pair() }
    }
}

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(adaptive_avg_pool2d(x, self.output_size)?)
    }
    fn describe(&self) -> String {
        // One description per kind: the layer kind's (what traces and summaries show).
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::AdaptiveAvgPool2d { output_size: self.output_size })
    }
}

/// The config of `nn.MaxPool2d(kernel_size, stride=kernel_size, padding=0, dilation=1)` in a
/// model spec.
///
/// # Shapes
/// - input: `[N, C, H, W]`
/// - output: `[N, C, OH, OW]` (see [`MaxPool2d`])
#[derive(Clone, Debug, PartialEq)]
pub struct MaxPool2dSpec {
    /// `(kH, kW)`.
    pub kernel_size: (usize, usize),
    /// Step of the window.
    pub stride: (usize, usize),
    /// Padding on each side.
    pub padding: (usize, usize),
    /// Spacing between window taps.
    pub dilation: (usize, usize),
}

/// The config of `nn.AvgPool2d(kernel_size, stride=kernel_size, padding=0,
/// count_include_pad=True)` in a model spec.
///
/// # Shapes
/// - input: `[N, C, H, W]`
/// - output: `[N, C, OH, OW]` (see [`AvgPool2d`])
#[derive(Clone, Debug, PartialEq)]
pub struct AvgPool2dSpec {
    /// `(kH, kW)`.
    pub kernel_size: (usize, usize),
    /// Step of the window.
    pub stride: (usize, usize),
    /// Padding on each side.
    pub padding: (usize, usize),
    /// Whether padded zeros count in the divisor.
    pub count_include_pad: bool,
}

/// The config of `nn.AdaptiveAvgPool2d(output_size)` in a model spec.
///
/// # Shapes
/// - input: `[N, C, H, W]`
/// - output: `[N, C, OH, OW]` = `output_size`
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveAvgPool2dSpec {
    /// `(OH, OW)`.
    pub output_size: (usize, usize),
}

/// `type = "MaxPool2d"`.
pub static MAX_POOL2D_KIND: LayerKind = LayerKind {
    type_name: "MaxPool2d",
    keys: &["name", "type", "kernel_size", "stride", "padding", "dilation"],
    layer_of: None,
    parse: Some(parse_window_pool),
};
/// `type = "AvgPool2d"`.
pub static AVG_POOL2D_KIND: LayerKind = LayerKind {
    type_name: "AvgPool2d",
    keys: &["name", "type", "kernel_size", "stride", "padding", "count_include_pad"],
    layer_of: None,
    parse: Some(parse_window_pool),
};
/// `type = "AdaptiveAvgPool2d"`, `output_size` (required).
pub static ADAPTIVE_AVG_POOL2D_KIND: LayerKind = LayerKind {
    type_name: "AdaptiveAvgPool2d",
    keys: &["name", "type", "output_size"],
    layer_of: None,
    parse: Some(|f| match f.get("output_size") {
        Some(_) => Some(LayerSpec::AdaptiveAvgPool2d { output_size: f.pair("output_size", (1, 1), 1) }),
        None if f.meant("output_size") => None,
        None => {
            f.missing("output_size", "add output_size = 1 (global average pooling)");
            None
        }
    }),
};

fn parse_window_pool(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    let kernel_size = match f.get("kernel_size") {
        Some(_) => f.pair("kernel_size", (1, 1), 1),
        None if f.meant("kernel_size") => return None,
        None => {
            f.missing("kernel_size", "add kernel_size = 2 (or [2, 2])");
            return None;
        }
    };
    let stride = f.pair("stride", kernel_size, 1);
    let padding = f.pair("padding", (0, 0), 0);
    Some(if f.ty == "MaxPool2d" {
        LayerSpec::MaxPool2d { kernel_size, stride, padding, dilation: f.pair("dilation", (1, 1), 1) }
    } else {
        LayerSpec::AvgPool2d { kernel_size, stride, padding, count_include_pad: f.boolean("count_include_pad", true) }
    })
}

/// The shape rule of MaxPool2d / AvgPool2d (AvgPool2d with dilation 1).
fn pool_shape(cx: &mut CheckContext<'_>, kind: &str, x: &SymShape, win: Window) -> SymShape {
    if x.rank() < 3 {
        cx.fail(ShapeErrorKind::TooFewDims { needs: "[N, C, H, W]: a batch of images".into() }, vec![]);
        return x.clone();
    }
    let (k, p, path) = (win.kernel, win.padding, cx.path);
    let r = x.rank();
    let (h, w) = (fixed(x, r - 2), fixed(x, r - 1));
    if p.0 > k.0 / 2 || p.1 > k.1 / 2 {
        let fixed_p = (p.0.min(k.0 / 2), p.1.min(k.1 / 2));
        let reason =
            format!("padding {} is more than half the {}×{} window (PyTorch refuses it)", pair_arg(p), k.0, k.1);
        let fix = Fix {
            text: format!("make {path} {kind} with padding {}", pair_arg(fixed_p)),
            edits: vec![Edit::SetWindow { path: path.into(), kernel_size: k, padding: fixed_p }],
        };
        cx.fail(ShapeErrorKind::BadLayer { reason }, vec![fix]);
    }
    let (oh, ow, werr) = window(path, kind, x, (h, w), win, true);
    cx.fail_with(werr);
    let mut v = x.0.clone();
    v[r - 2] = Dim::Fixed(oh);
    v[r - 1] = Dim::Fixed(ow);
    SymShape(v)
}

/// `kernel_size` and `padding` from a `SetWindow` edit.
fn set_window(edit: &Edit, kernel_size: &mut (usize, usize), padding: &mut (usize, usize)) -> bool {
    match edit {
        Edit::SetWindow { kernel_size: k, padding: p, .. } => (*kernel_size, *padding) = (*k, *p),
        _ => return false,
    }
    true
}

impl Layer for MaxPool2dSpec {
    fn type_name(&self) -> &'static str {
        "MaxPool2d"
    }

    fn describe(&self) -> String {
        let mut s = window_desc("MaxPool2d", self.kernel_size, self.stride, self.padding);
        if self.dilation != (1, 1) {
            s.push_str(&format!(", dilation {}", pair_str(self.dilation)));
        }
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let win =
            Window { kernel: self.kernel_size, stride: self.stride, padding: self.padding, dilation: self.dilation };
        pool_shape(cx, "MaxPool2d", x, win)
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(MaxPool2d::new(self.kernel_size).stride(self.stride).padding(self.padding).dilation(self.dilation)))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("kernel_size = {}", pair_toml(self.kernel_size)));
        fields.push(format!("stride = {}", pair_toml(self.stride)));
        fields.push(format!("padding = {}", pair_toml(self.padding)));
        fields.push(format!("dilation = {}", pair_toml(self.dilation)));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        set_window(edit, &mut self.kernel_size, &mut self.padding)
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::MaxPool2d {
            kernel_size: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        }
    }
}

impl Layer for AvgPool2dSpec {
    fn type_name(&self) -> &'static str {
        "AvgPool2d"
    }

    fn describe(&self) -> String {
        let mut s = window_desc("AvgPool2d", self.kernel_size, self.stride, self.padding);
        if !self.count_include_pad {
            s.push_str(", count_include_pad false");
        }
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let win = Window { kernel: self.kernel_size, stride: self.stride, padding: self.padding, dilation: (1, 1) };
        pool_shape(cx, "AvgPool2d", x, win)
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(
            AvgPool2d::new(self.kernel_size)
                .stride(self.stride)
                .padding(self.padding)
                .count_include_pad(self.count_include_pad),
        ))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("kernel_size = {}", pair_toml(self.kernel_size)));
        fields.push(format!("stride = {}", pair_toml(self.stride)));
        fields.push(format!("padding = {}", pair_toml(self.padding)));
        fields.push(format!("count_include_pad = {}", self.count_include_pad));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        set_window(edit, &mut self.kernel_size, &mut self.padding)
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::AvgPool2d {
            kernel_size: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
            count_include_pad: self.count_include_pad,
        }
    }
}

impl Layer for AdaptiveAvgPool2dSpec {
    fn type_name(&self) -> &'static str {
        "AdaptiveAvgPool2d"
    }

    fn describe(&self) -> String {
        format!("AdaptiveAvgPool2d {}×{}", self.output_size.0, self.output_size.1)
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        if x.rank() < 3 {
            cx.fail(ShapeErrorKind::TooFewDims { needs: "[N, C, H, W]: a batch of images".into() }, vec![]);
            return x.clone();
        }
        let mut v = x.0.clone();
        let r = v.len();
        v[r - 2] = Dim::Fixed(self.output_size.0);
        v[r - 1] = Dim::Fixed(self.output_size.1);
        SymShape(v)
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(AdaptiveAvgPool2d::new(self.output_size)))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("output_size = {}", pair_toml(self.output_size)));
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::AdaptiveAvgPool2d { output_size: self.output_size }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::DType;

    #[test]
    fn shapes_descriptions_and_errors() {
        let x = Tensor::zeros(&[2, 3, 9, 8], DType::F32);
        assert_eq!(MaxPool2d::new(2).forward(&x).unwrap().dims(), &[2, 3, 4, 4]);
        assert_eq!(MaxPool2d::new(3).stride(2).padding(1).forward(&x).unwrap().dims(), &[2, 3, 5, 4]);
        assert_eq!(AvgPool2d::new((3, 2)).stride(1).forward(&x).unwrap().dims(), &[2, 3, 7, 7]);
        assert_eq!(AdaptiveAvgPool2d::new((2, 5)).forward(&x).unwrap().dims(), &[2, 3, 2, 5]);
        assert_eq!(MaxPool2d::new(3).stride(2).padding(1).describe(), "MaxPool2d 3×3, stride 2, padding 1");
        assert_eq!(MaxPool2d::new(2).dilation(2).describe(), "MaxPool2d 2×2, dilation 2");
        assert_eq!(AvgPool2d::new(2).count_include_pad(false).describe(), "AvgPool2d 2×2, count_include_pad false");
        assert_eq!(AdaptiveAvgPool2d::new(1).describe(), "AdaptiveAvgPool2d 1×1");
        assert!(MaxPool2d::new(2).num_parameters() == 0);
        let e = MaxPool2d::new(10).forward(&x).unwrap_err().to_string();
        assert!(
            e.starts_with("max_pool2d: input has shape [2, 3, 9, 8], expected a height (dimension 2) of at least 10"),
            "{e}"
        );
        let e = AvgPool2d::new(0).forward(&x).unwrap_err().to_string();
        assert_eq!(e, "avg_pool2d: kernel_size must be at least 1 in each dimension, got (0, 0)");
    }
}
