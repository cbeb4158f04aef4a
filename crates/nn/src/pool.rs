//! Pooling layers, PyTorch's `nn.MaxPool2d`, `nn.AvgPool2d` (both with `ceil_mode`, AvgPool2d
//! with `count_include_pad` and `divisor_override`) and `nn.AdaptiveAvgPool2d`. They have no
//! parameters; sizes take one number or a `(height, width)` pair ([`IntoPair`]). Invalid sizes
//! (a zero kernel, padding over half the kernel, a kernel larger than the padded input, a zero
//! `divisor_override`) are reported by `forward` as errors, and by the shape check.

use crate::Result;
use crate::check::context::{CheckContext, Window, window, window_fixes_1d};
use crate::check::error::ShapeErrorKind;
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, fixed, pair_arg};
use crate::conv::{IntoPair, pair_str};
use crate::layer::{BuildContext, Layer, LayerKind};
use crate::model_file::keys::{LayerFields, pair_toml};
use crate::module::Module;
use crate::spec::LayerSpec;
use strata_core::pool_output_size;
use strata_core::{AvgPool2dOptions, MaxPool2dOptions, Tensor, adaptive_avg_pool2d, avg_pool2d_with, max_pool2d_with};

/// Sliding-window sizes shared by the two fixed-window pools (`dilation` is MaxPool2d's).
fn window_desc(
    kind: &str,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    ceil_mode: bool,
) -> String {
    let mut s = format!("{kind} {}×{}", kernel.0, kernel.1);
    if stride != kernel {
        s.push_str(&format!(", stride {}", pair_str(stride)));
    }
    if padding != (0, 0) {
        s.push_str(&format!(", padding {}", pair_str(padding)));
    }
    if dilation != (1, 1) {
        s.push_str(&format!(", dilation {}", pair_str(dilation)));
    }
    if ceil_mode {
        s.push_str(", ceil_mode true");
    }
    s
}

/// Max pooling, PyTorch's `nn.MaxPool2d(kernel_size, stride=kernel_size, padding=0,
/// dilation=1, ceil_mode=False)`: each output is the maximum of a `kernel_size` window (padding
/// never wins). With `ceil_mode` the output size is rounded up, keeping a last window that runs
/// off the end of the input (it takes the maximum of what it covers).
///
/// # Shapes
/// - input: `[N, C, H, W]` (or `[C, H, W]`)
/// - output: `[N, C, OH, OW]` with
///   `OH = ⌊(H + 2·padding.0 − dilation.0·(kernel_size.0 − 1) − 1) / stride.0⌋ + 1`, `OW` likewise;
///   with `ceil_mode`, `⌈…⌉ + 1`, less one if that last window would start in the right padding
///   ([`strata_core::pool_output_size`], PyTorch's rule); `padding` at most half the dilated
///   kernel span
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
    /// The window: kernel size, stride, padding, dilation, `ceil_mode` (core's options, which
    /// the model spec holds too).
    pub options: MaxPool2dOptions,
}

impl MaxPool2d {
    /// `nn.MaxPool2d(kernel_size)`: stride = kernel size, no padding, no dilation, floor mode.
    pub fn new(kernel_size: impl IntoPair) -> Self {
        MaxPool2d { options: MaxPool2dOptions::new(kernel_size.into_pair()) }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: impl IntoPair) -> Self {
        self.options.stride = stride.into_pair();
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: impl IntoPair) -> Self {
        self.options.padding = padding.into_pair();
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: impl IntoPair) -> Self {
        self.options.dilation = dilation.into_pair();
        self
    }
    /// Whether the output size is rounded up (`ceil_mode`).
    pub fn ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.options.ceil_mode = ceil_mode;
        self
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(max_pool2d_with(x, &self.options)?)
    }
    fn describe(&self) -> String {
        // One description per kind: the layer kind's (what traces and summaries show).
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::MaxPool2d(self.options))
    }
}

/// Average pooling, PyTorch's `nn.AvgPool2d(kernel_size, stride=kernel_size, padding=0,
/// ceil_mode=False, count_include_pad=True, divisor_override=None)`: each output is the mean of
/// a `kernel_size` window; with `count_include_pad` the padded zeros count in the divisor (in
/// `ceil_mode`, not the part of a last window beyond the padding); a `divisor_override` replaces
/// every window's divisor.
///
/// # Shapes
/// - input: `[N, C, H, W]` (or `[C, H, W]`)
/// - output: `[N, C, OH, OW]` with `OH = ⌊(H + 2·padding.0 − kernel_size.0) / stride.0⌋ + 1`,
///   `OW` likewise; with `ceil_mode`, `⌈…⌉ + 1`, less one if that last window would start in the
///   right padding ([`strata_core::pool_output_size`], PyTorch's rule); `padding` at most half
///   the kernel size; `divisor_override` at least 1
///
/// ```
/// use strata_nn::{AvgPool2d, Module};
/// use strata_core::{DType, Tensor};
/// let pool = AvgPool2d::new(2).ceil_mode(true).divisor_override(4);
/// assert_eq!(pool.forward(&Tensor::zeros(&[8, 3, 7, 7], DType::F32))?.dims(), &[8, 3, 4, 4]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    /// The window: kernel size, stride, padding, `ceil_mode`, `count_include_pad`,
    /// `divisor_override` (core's options, which the model spec holds too).
    pub options: AvgPool2dOptions,
}

impl AvgPool2d {
    /// `nn.AvgPool2d(kernel_size)`: stride = kernel size, no padding, floor mode,
    /// `count_include_pad=True`, no `divisor_override`.
    pub fn new(kernel_size: impl IntoPair) -> Self {
        AvgPool2d { options: AvgPool2dOptions::new(kernel_size.into_pair()) }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: impl IntoPair) -> Self {
        self.options.stride = stride.into_pair();
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: impl IntoPair) -> Self {
        self.options.padding = padding.into_pair();
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
    /// Divides every window by `divisor` (`4`, or `None` for the window's own divisor).
    pub fn divisor_override(mut self, divisor: impl Into<Option<usize>>) -> Self {
        self.options.divisor_override = divisor.into();
        self
    }
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(avg_pool2d_with(x, &self.options)?)
    }
    fn describe(&self) -> String {
        // One description per kind: the layer kind's (what traces and summaries show).
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::AvgPool2d(self.options))
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

/// `type = "MaxPool2d"`: `kernel_size` (required), `stride`, `padding`, `dilation`, `ceil_mode`.
pub static MAX_POOL2D_KIND: LayerKind = LayerKind {
    type_name: "MaxPool2d",
    keys: &["name", "type", "kernel_size", "stride", "padding", "dilation", "ceil_mode"],
    layer_of: None,
    parse: Some(parse_window_pool),
};
/// `type = "AvgPool2d"`: `kernel_size` (required), `stride`, `padding`, `ceil_mode`,
/// `count_include_pad`, `divisor_override` (a positive integer).
pub static AVG_POOL2D_KIND: LayerKind = LayerKind {
    type_name: "AvgPool2d",
    keys: &["name", "type", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"],
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
    let ceil_mode = f.boolean("ceil_mode", false);
    Some(if f.ty == "MaxPool2d" {
        let dilation = f.pair("dilation", (1, 1), 1);
        LayerSpec::MaxPool2d(MaxPool2dOptions { kernel_size, stride, padding, dilation, ceil_mode })
    } else {
        let count_include_pad = f.boolean("count_include_pad", true);
        // A bad value (0, negative, not an integer) is reported here, located in the file.
        let divisor_override = f.optional_size("divisor_override")?;
        LayerSpec::AvgPool2d(AvgPool2dOptions {
            kernel_size,
            stride,
            padding,
            ceil_mode,
            count_include_pad,
            divisor_override,
        })
    })
}

/// The shape rule of MaxPool2d / AvgPool2d (AvgPool2d with dilation 1): PyTorch's output size
/// ([`pool_output_size`]), with `ceil_mode` rounding up.
fn pool_shape(cx: &mut CheckContext<'_>, kind: &str, x: &SymShape, win: Window, ceil_mode: bool) -> SymShape {
    if x.rank() < 3 {
        cx.fail(ShapeErrorKind::TooFewDims { needs: "[N, C, H, W]: a batch of images".into() }, vec![]);
        return x.clone();
    }
    pool_shape_as(cx, kind, x, x, win, ceil_mode, false)
}

/// [`pool_shape`] on `x` (rank ≥ 3), its messages about `shown`, in 1-d terms when `one_d` (a
/// `MaxPool1d` / `AvgPool1d`: `x` is its `[N, C, L]` seen at height 1).
pub(crate) fn pool_shape_as(
    cx: &mut CheckContext<'_>,
    kind: &str,
    x: &SymShape,
    shown: &SymShape,
    win: Window,
    ceil_mode: bool,
    one_d: bool,
) -> SymShape {
    let (k, p, path) = (win.kernel, win.padding, cx.path);
    let r = x.rank();
    let (h, w) = (fixed(x, r - 2), fixed(x, r - 1));
    if p.0 > k.0 / 2 || p.1 > k.1 / 2 {
        let fixed_p = (p.0.min(k.0 / 2), p.1.min(k.1 / 2));
        let (pad, window, fixed_pad) = if one_d {
            (p.1.to_string(), format!("{}-wide", k.1), fixed_p.1.to_string())
        } else {
            (pair_arg(p), format!("{}×{}", k.0, k.1), pair_arg(fixed_p))
        };
        let reason = format!("padding {pad} is more than half the {window} window (PyTorch refuses it)");
        let fix = Fix {
            text: format!("make {path} {kind} with padding {fixed_pad}"),
            edits: vec![Edit::SetWindow { path: path.into(), kernel_size: k, padding: fixed_p }],
        };
        cx.fail(ShapeErrorKind::BadLayer { reason }, vec![fix]);
    }
    let (mut oh, mut ow, mut werr) = window(path, kind, shown, (h, w), win, true);
    if one_d {
        window_fixes_1d(path, kind, shown, p, &mut werr);
    }
    let (s, d) = (win.stride, win.dilation);
    let ceil = |n: usize, k: usize, s: usize, p: usize, d: usize| pool_output_size(n, k, s, p, d, true);
    match (ceil(h, k.0, s.0, p.0, d.0), ceil(w, k.1, s.1, p.1, d.1)) {
        // Ceil mode may keep a window larger than the padded input, which floor mode refuses.
        (Some(ch), Some(cw)) if ceil_mode => (oh, ow) = (ch, cw),
        // Otherwise the window does not fit in floor mode either: `window`'s error and fixes.
        _ => cx.fail_with(werr),
    }
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

/// The model-spec side of `nn.MaxPool2d`: core's options are the config.
impl Layer for MaxPool2dOptions {
    fn type_name(&self) -> &'static str {
        "MaxPool2d"
    }

    fn describe(&self) -> String {
        window_desc("MaxPool2d", self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let win =
            Window { kernel: self.kernel_size, stride: self.stride, padding: self.padding, dilation: self.dilation };
        pool_shape(cx, "MaxPool2d", x, win, self.ceil_mode)
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(MaxPool2d { options: *self }))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("kernel_size = {}", pair_toml(self.kernel_size)));
        fields.push(format!("stride = {}", pair_toml(self.stride)));
        fields.push(format!("padding = {}", pair_toml(self.padding)));
        fields.push(format!("dilation = {}", pair_toml(self.dilation)));
        // Written only when set, so files without it read and write back unchanged.
        if self.ceil_mode {
            fields.push("ceil_mode = true".into());
        }
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        set_window(edit, &mut self.kernel_size, &mut self.padding)
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::MaxPool2d(*self)
    }
}

/// The model-spec side of `nn.AvgPool2d`: core's options are the config.
impl Layer for AvgPool2dOptions {
    fn type_name(&self) -> &'static str {
        "AvgPool2d"
    }

    fn describe(&self) -> String {
        let mut s = window_desc("AvgPool2d", self.kernel_size, self.stride, self.padding, (1, 1), self.ceil_mode);
        if !self.count_include_pad {
            s.push_str(", count_include_pad false");
        }
        if let Some(d) = self.divisor_override {
            s.push_str(&format!(", divisor_override {d}"));
        }
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        if self.divisor_override == Some(0) {
            // PyTorch refuses it at the first forward ("divisor must be not zero").
            let reason = "divisor_override must be at least 1, got 0 (leave it unset to divide by the window size)";
            cx.fail(ShapeErrorKind::BadLayer { reason: reason.into() }, vec![]);
        }
        let win = Window { kernel: self.kernel_size, stride: self.stride, padding: self.padding, dilation: (1, 1) };
        pool_shape(cx, "AvgPool2d", x, win, self.ceil_mode)
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(AvgPool2d { options: *self }))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("kernel_size = {}", pair_toml(self.kernel_size)));
        fields.push(format!("stride = {}", pair_toml(self.stride)));
        fields.push(format!("padding = {}", pair_toml(self.padding)));
        // ceil_mode and divisor_override are written only when set, so files without them read
        // and write back unchanged.
        if self.ceil_mode {
            fields.push("ceil_mode = true".into());
        }
        fields.push(format!("count_include_pad = {}", self.count_include_pad));
        if let Some(d) = self.divisor_override {
            fields.push(format!("divisor_override = {d}"));
        }
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        set_window(edit, &mut self.kernel_size, &mut self.padding)
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::AvgPool2d(*self)
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

    #[test]
    fn ceil_mode_and_divisor_override() {
        let x = Tensor::zeros(&[2, 3, 9, 8], DType::F32);
        // 9×8, kernel 2: floor mode drops the last row; ceil mode keeps a 1-row window.
        assert_eq!(MaxPool2d::new(2).ceil_mode(true).forward(&x).unwrap().dims(), &[2, 3, 5, 4]);
        assert_eq!(AvgPool2d::new(3).stride(2).padding(1).ceil_mode(true).forward(&x).unwrap().dims(), &[2, 3, 5, 5]);
        assert_eq!(
            MaxPool2d::new(3).stride(2).padding(1).dilation(2).ceil_mode(true).describe(),
            "MaxPool2d 3×3, stride 2, padding 1, dilation 2, ceil_mode true"
        );
        let a = AvgPool2d::new(2).ceil_mode(true).count_include_pad(false).divisor_override(4);
        assert_eq!(a.describe(), "AvgPool2d 2×2, ceil_mode true, count_include_pad false, divisor_override 4");
        assert_eq!(AvgPool2d::new(2).divisor_override(4).divisor_override(None).options.divisor_override, None);
        let e = AvgPool2d::new(2).divisor_override(0).forward(&x).unwrap_err().to_string();
        assert!(e.starts_with("avg_pool2d: divisor_override must be at least 1, got 0"), "{e}");
    }

    /// The model-file keys read and write back; bad values are located errors; the shape check
    /// gives the module's forward shape and refuses `divisor_override = 0`.
    #[test]
    fn model_file_keys_round_trip_and_check() {
        use crate::model_file::{parse_model, to_toml};
        let text = "input = [3, 9, 8]\nlayers = [\n\
            { name = \"mp\", type = \"MaxPool2d\", kernel_size = 3, stride = 2, padding = 1, ceil_mode = true },\n\
            { name = \"ap\", type = \"AvgPool2d\", kernel_size = [2, 3], ceil_mode = true, divisor_override = 4 },\n\
            { name = \"ap2\", type = \"AvgPool2d\", kernel_size = 2 },\n]\n";
        let spec = parse_model(text, "t.toml", "m").unwrap();
        let want_mp = LayerSpec::MaxPool2d(MaxPool2dOptions {
            kernel_size: (3, 3),
            stride: (2, 2),
            padding: (1, 1),
            dilation: (1, 1),
            ceil_mode: true,
        });
        let want_ap = LayerSpec::AvgPool2d(AvgPool2dOptions {
            kernel_size: (2, 3),
            stride: (2, 3),
            padding: (0, 0),
            ceil_mode: true,
            count_include_pad: true,
            divisor_override: Some(4),
        });
        assert_eq!((&spec.layers[0].spec, &spec.layers[1].spec), (&want_mp, &want_ap));
        let written = to_toml(&spec);
        assert!(written.contains("ceil_mode = true") && written.contains("divisor_override = 4"), "{written}");
        // Defaults are not written: a file without the keys writes back without them.
        assert_eq!(written.matches("ceil_mode").count(), 2, "{written}");
        assert_eq!(written.matches("divisor_override").count(), 1, "{written}");
        let again = parse_model(&written, "u.toml", "m").unwrap();
        let specs = |m: &crate::spec::ModelSpec| m.layers.iter().map(|l| l.spec.clone()).collect::<Vec<_>>();
        assert_eq!(specs(&again), specs(&spec));
        // 9×8 → MaxPool 3/2/1 ceil → 5×5 (floor: 5×4) → AvgPool [2, 3] ceil → 3×2 → AvgPool 2 → 1×1.
        let report = spec.check(None).unwrap();
        assert_eq!(report.output.unwrap().to_string(), "[N, 3, 1, 1]");
        let model = spec.build().unwrap();
        let y = model.forward(&Tensor::zeros(&[2, 3, 9, 8], DType::F32)).unwrap();
        assert_eq!(y.dims(), &[2, 3, 1, 1]);
        assert_eq!(crate::spec::ModelSpec::from_module("m", &model).map(|m| specs(&m)), Some(specs(&spec)));

        // Bad values: located, named by key.
        let bad = "layers = [\n\
            { type = \"AvgPool2d\", kernel_size = 2, divisor_override = 0 },\n\
            { type = \"MaxPool2d\", kernel_size = 2, ceil_mode = 1, divisor_override = 2 },\n]\n";
        let e = parse_model(bad, "bad.toml", "m").unwrap_err().to_string();
        assert!(e.contains("bad.toml:2:"), "{e}");
        assert!(e.contains("`divisor_override` must be a positive integer"), "{e}");
        assert!(e.contains("`ceil_mode` must be true or false"), "{e}");
        assert!(e.contains("unknown key `divisor_override` in a MaxPool2d layer"), "{e}");

        // A spec built in code with divisor_override 0 fails the check, as forward would.
        let LayerSpec::AvgPool2d(options) = want_ap else { unreachable!() };
        let ap0 = LayerSpec::AvgPool2d(AvgPool2dOptions { divisor_override: Some(0), ..options });
        let zero = crate::spec::ModelSpec::new("z").input(&[3, 8, 8]).layer("ap", ap0);
        let e = zero.check(None).unwrap_err().render_errors();
        assert!(e.contains("divisor_override must be at least 1, got 0"), "{e}");
        // Ceil mode keeps a window wider than the input; floor mode refuses it.
        let wide = |ceil_mode| {
            let mp = LayerSpec::MaxPool2d(MaxPool2dOptions {
                kernel_size: (3, 3),
                stride: (2, 2),
                padding: (0, 0),
                dilation: (1, 1),
                ceil_mode,
            });
            crate::spec::ModelSpec::new("w").input(&[1, 2, 2]).layer("mp", mp).check(None)
        };
        assert_eq!(wide(true).unwrap().output.unwrap().to_string(), "[N, 1, 1, 1]");
        assert!(wide(false).unwrap_err().render_errors().contains("mp"));
    }
}
