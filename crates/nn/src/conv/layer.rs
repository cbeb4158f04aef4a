//! `Conv2d` as a layer kind of model specs: its model-file keys, shape rule, parameters,
//! description and build. The shape rule and description serve `Conv1d` too (`conv1d.rs`),
//! through [`Dims`]: one rule, with each message in the layer's own terms.

use super::*;
use crate::Result;
use crate::check::context::{CheckContext, Window, window, window_fixes_1d};
use crate::check::error::{LayerRef, Producer, ShapeErrorKind};
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, fixed, pair_arg, saturating_product};
use crate::init::InitTargets;
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes};
use crate::model_file::keys::{LayerFields, pair_toml};
use crate::module::Module;
use crate::spec::{ConvSpec, LayerSpec};
use strata_core::PaddingMode;
use strata_core::ops::conv::window_output_size;
use toml::de::DeValue;

/// `type = "Conv2d"`: `in_channels` (inferred when left out), `out_channels`, `kernel_size`,
/// `stride`, `padding`, `dilation` (each an int or an `[h, w]` pair; `padding` also `"same"` or
/// `"valid"`), `padding_mode` (`"zeros"`, `"reflect"`, `"replicate"`, `"circular"`), `groups`,
/// `bias`.
pub static CONV2D_KIND: LayerKind =
    LayerKind { type_name: "Conv2d", keys: CONV_KEYS, layer_of: None, parse: Some(parse_conv2d) };

/// The model-file keys of `Conv2d` and `Conv1d` (PyTorch's constructor arguments).
pub(super) const CONV_KEYS: &[&str] = &[
    "name",
    "type",
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "padding_mode",
    "dilation",
    "groups",
    "bias",
    "init",
    "bias_init",
];

pub(super) fn parse_conv2d(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    let in_channels = f.optional_size("in_channels")?;
    let out_channels = f.required("out_channels");
    let kernel_size = match f.get("kernel_size") {
        Some(_) => Some(f.pair("kernel_size", (1, 1), 1)),
        None if f.meant("kernel_size") => None,
        None => {
            f.missing("kernel_size", "add kernel_size = 3 (or [3, 3])");
            None
        }
    };
    let mut c = ConvSpec::new(in_channels, out_channels?, kernel_size?);
    c.stride = f.pair("stride", (1, 1), 1);
    (c.padding, c.padding_same) = parse_padding(f);
    c.padding_mode = parse_padding_mode(f);
    c.dilation = f.pair("dilation", (1, 1), 1);
    c.groups = match f.get("groups") {
        Some(_) => f.positive("groups")?,
        None => 1,
    };
    c.bias = f.boolean("bias", true);
    Some(LayerSpec::Conv2d(c))
}

/// Which convolution a [`ConvSpec`] is: a `Conv2d`, or a `Conv1d` of height 1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Dims {
    /// `Conv1d` on `[N, C, L]`.
    One,
    /// `Conv2d` on `[N, C, H, W]`.
    Two,
}

impl Dims {
    /// `Conv1d` or `Conv2d`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Dims::One => "Conv1d",
            Dims::Two => "Conv2d",
        }
    }

    /// A size argument as PyTorch's constructor takes it: `3`, `(3, 2)`; a `Conv1d`'s width.
    pub(super) fn arg(self, p: (usize, usize)) -> String {
        match self {
            Dims::One => p.1.to_string(),
            Dims::Two => pair_arg(p),
        }
    }

    /// A size in descriptions: `3`, `3×2`.
    fn show(self, p: (usize, usize)) -> String {
        match self {
            Dims::One => p.1.to_string(),
            Dims::Two => pair_str(p),
        }
    }

    /// An input or output size in messages: `28×28`; a `Conv1d`'s length `28`.
    fn show_size(self, (h, w): (usize, usize)) -> String {
        match self {
            Dims::One => w.to_string(),
            Dims::Two => format!("{h}×{w}"),
        }
    }

    /// The spec of this kind.
    pub(super) fn spec(self, c: ConvSpec) -> LayerSpec {
        match self {
            Dims::One => LayerSpec::Conv1d(c),
            Dims::Two => LayerSpec::Conv2d(c),
        }
    }
}

/// `padding`: an int, an `[h, w]` pair, `"same"` or `"valid"`; `(padding, same)`.
pub(super) fn parse_padding(f: &mut LayerFields<'_, '_>) -> ((usize, usize), bool) {
    const HELP: &str = "PyTorch's Conv2d takes padding = 1, [1, 2], \"same\" (output as large as the input, \
                        stride 1) or \"valid\" (no padding)";
    match f.get("padding").map(|v| (v.get_ref(), v.span())) {
        Some((DeValue::String(s), _)) if s.as_ref() == "same" => ((0, 0), true),
        Some((DeValue::String(s), _)) if s.as_ref() == "valid" => ((0, 0), false),
        Some((DeValue::String(s), span)) => {
            let message = format!("unknown padding \"{s}\" for Conv2d");
            f.error(span, message, Some(HELP.into()));
            ((0, 0), false)
        }
        Some((DeValue::Integer(_) | DeValue::Array(_), _)) | None => (f.pair("padding", (0, 0), 0), false),
        Some((other, span)) => {
            let message = format!(
                "`padding` must be an integer, an [height, width] pair or a string, found {}",
                other.type_str()
            );
            f.error(span, message, Some(HELP.into()));
            ((0, 0), false)
        }
    }
}

/// `padding_mode`: one of PyTorch's four names, `"zeros"` when absent.
pub(super) fn parse_padding_mode(f: &mut LayerFields<'_, '_>) -> PaddingMode {
    let names = PaddingMode::ALL.map(|m| format!("\"{m}\"")).join(", ");
    match f.get("padding_mode").map(|v| (v.get_ref(), v.span())) {
        None => PaddingMode::Zeros,
        Some((DeValue::String(s), span)) => PaddingMode::from_name(s).unwrap_or_else(|| {
            let help = match s.as_ref() {
                // F.pad's name for zeros, which nn.Conv2d does not take.
                "constant" => "Conv2d calls constant zero padding \"zeros\"".to_string(),
                _ => format!("padding_mode is one of {names}"),
            };
            f.error(span, format!("unknown padding_mode \"{s}\" for Conv2d"), Some(help));
            PaddingMode::Zeros
        }),
        Some((other, span)) => {
            let message = format!("`padding_mode` must be a string, found {}", other.type_str());
            f.error(span, message, Some(format!("padding_mode is one of {names}")));
            PaddingMode::Zeros
        }
    }
}

/// The divisor of both channel counts closest to `groups` (the smaller on a tie).
pub(super) fn nearest_groups(in_channels: usize, out_channels: usize, groups: usize) -> usize {
    let (mut a, mut b) = (in_channels.max(1), out_channels.max(1));
    while b != 0 {
        (a, b) = (b, a % b);
    }
    (1..=a).filter(|d| a.is_multiple_of(*d)).min_by_key(|d| d.abs_diff(groups)).unwrap_or(1)
}

impl ConvSpec {
    /// The description, in the terms of a `Conv1d` or a `Conv2d`.
    pub(super) fn describe_as(&self, d: Dims) -> String {
        let (name, k) = match d {
            Dims::One => ("Conv1d", format!("kernel {}", self.kernel_size.1)),
            Dims::Two => ("Conv2d", format!("{}×{}", self.kernel_size.0, self.kernel_size.1)),
        };
        let mut s = match self.in_channels {
            Some(i) => format!("{name} {} → {}, {k}", Dim::Fixed(i), self.out_channels),
            None => format!("{name} ? → {}, {k}", self.out_channels),
        };
        if self.stride != (1, 1) {
            s.push_str(&format!(", stride {}", d.show(self.stride)));
        }
        // `padding same`, `padding 1`, and the mode after it when not zeros: `padding 2 reflect`.
        let mode = self.padding_mode;
        match (self.padding_same, self.padding != (0, 0)) {
            (true, _) => s.push_str(", padding same"),
            (false, true) => s.push_str(&format!(", padding {}", d.show(self.padding))),
            (false, false) if mode != PaddingMode::Zeros => s.push_str(", padding 0"),
            (false, false) => {}
        }
        if mode != PaddingMode::Zeros {
            s.push_str(&format!(" {mode}"));
        }
        if self.dilation != (1, 1) {
            s.push_str(&format!(", dilation {}", d.show(self.dilation)));
        }
        if self.groups != 1 {
            s.push_str(&format!(", groups {}", self.groups));
        }
        if !self.bias {
            s.push_str(", no bias");
        }
        s
    }

    /// The shape rule on `x`, `[N, C, H, W]` (a `Conv1d`'s `[N, C, L]` seen with `H = 1`), with
    /// messages in the terms of the layer `d` and its input as `shown`.
    pub(super) fn check_as(&mut self, d: Dims, cx: &mut CheckContext<'_>, x: &SymShape, shown: &SymShape) -> SymShape {
        let path = cx.path;
        let got = fixed(x, 1);
        let (h, w) = (fixed(x, 2), fixed(x, 3));
        let (k, out) = (self.kernel_size, self.out_channels);
        match self.in_channels {
            None => self.in_channels = Some(got),
            Some(expected) if expected == got => {}
            Some(expected) => {
                let mut fixes = vec![];
                if got.is_multiple_of(self.groups.max(1)) {
                    fixes.push(Fix {
                        text: format!("make {path} {}({got}, {out}, {})", d.name(), d.arg(k)),
                        edits: vec![Edit::SetInChannels { path: path.into(), value: got }],
                    });
                }
                fixes.extend(cx.channel_producer_fix(shown, expected));
                let producer = cx.producer.clone();
                cx.fail(ShapeErrorKind::ChannelMismatch { expected, got, producer }, fixes);
            }
        }
        let in_c = self.in_channels.unwrap_or(got);
        let g = self.groups.max(1);
        if !cx.has_error() && (!in_c.is_multiple_of(g) || !out.is_multiple_of(g)) {
            let best = nearest_groups(in_c, out, g);
            let reason = format!("groups = {g} must divide both in_channels ({in_c}) and out_channels ({out})");
            let fix = Fix {
                text: format!(
                    "make {path} {}({in_c}, {out}, {}, groups={best}) (the nearest number of groups that divides both)",
                    d.name(),
                    d.arg(k)
                ),
                edits: vec![Edit::SetGroups { path: path.into(), groups: best }],
            };
            cx.fail(ShapeErrorKind::BadLayer { reason }, vec![fix]);
        }
        if self.padding_same && self.stride != (1, 1) && !cx.has_error() {
            cx.fail(
                ShapeErrorKind::BadLayer { reason: self.strided_same_reason(d) },
                self.strided_same_fixes(d, path, (h, w)),
            );
        }
        if !cx.has_error()
            && let Some((reason, fixes)) = self.padding_limit_error(d, path, (h, w))
        {
            cx.fail(ShapeErrorKind::BadLayer { reason }, fixes);
        }
        let (oh, ow) = if self.padding_same {
            // Output = input, the point of "same" (also the intended shape after a stride error).
            (h, w)
        } else {
            let win = Window { kernel: k, stride: self.stride, padding: self.padding, dilation: self.dilation };
            let (oh, ow, mut werr) = window(path, d.name(), shown, (h, w), win, false);
            if d == Dims::One {
                window_fixes_1d(path, "Conv1d", shown, self.padding, &mut werr);
            }
            cx.fail_with(werr);
            (oh, ow)
        };
        SymShape(vec![x.0[0], Dim::Fixed(out), Dim::Fixed(oh), Dim::Fixed(ow)])
    }

    /// The padding as `[left, right, top, bottom]` (see [`Conv2dConfig::pads`]).
    pub fn pads(&self) -> [usize; 4] {
        pads_of(self.padding_same, self.padding, self.kernel_size, self.dilation)
    }

    /// This layer with other keys, as a `Replace` fix's edit.
    fn replaced(&self, d: Dims, path: &str, change: impl FnOnce(&mut ConvSpec)) -> Edit {
        let mut spec = self.clone();
        change(&mut spec);
        Edit::Replace { path: path.into(), spec: d.spec(spec) }
    }

    /// Why `padding = "same"` with a stride is refused.
    fn strided_same_reason(&self, d: Dims) -> String {
        format!(
            "padding = \"same\" needs stride 1 (PyTorch refuses strided \"same\" convolutions), but stride is {}",
            d.arg(self.stride)
        )
    }

    /// Fixes for `"same"` with a stride: stride 1, or the explicit padding `"same"` would have
    /// put before, keeping the stride.
    fn strided_same_fixes(&self, dims: Dims, path: &str, (h, w): (usize, usize)) -> Vec<Fix> {
        let (k, d, s) = (self.kernel_size, self.dilation, self.stride);
        let p = (same_padding(k.0, d.0).0, same_padding(k.1, d.1).0);
        let size = |n, k, s, p, d| window_output_size(n, k, s, p, d).unwrap_or(1);
        let (oh, ow) = (size(h, k.0, s.0, p.0, d.0), size(w, k.1, s.1, p.1, d.1));
        let one = (1, 1);
        vec![
            Fix {
                text: format!("make {path} stride 1, as padding \"same\" needs (output {})", dims.show_size((h, w))),
                edits: vec![self.replaced(dims, path, |c| c.stride = one)],
            },
            Fix {
                text: format!(
                    "keep stride {} with an explicit padding = {} on {path} (output {})",
                    dims.arg(s),
                    dims.arg(p),
                    dims.show_size((oh, ow))
                ),
                edits: vec![self.replaced(dims, path, |c| (c.padding, c.padding_same) = (p, false))],
            },
        ]
    }

    /// The error when the padding is too large for its mode on an `h×w` input (reflect needs
    /// padding < size, circular padding ≤ size), with fixes: the most padding the mode allows
    /// (explicit padding only), or zero padding.
    fn padding_limit_error(&self, d: Dims, path: &str, (h, w): (usize, usize)) -> Option<(String, Vec<Fix>)> {
        let mode = self.padding_mode;
        let [left, right, top, bottom] = self.pads();
        let width = if d == Dims::One { "length" } else { "width" };
        let sides = [
            ("top", top, "height", h),
            ("bottom", bottom, "height", h),
            ("left", left, width, w),
            ("right", right, width, w),
        ];
        let (side, p, axis, size) = sides.into_iter().find(|&(_, p, _, size)| p > 0 && p > mode.max_padding(size))?;
        let reason = format!(
            "the {side} padding of {p} is too large for an input {axis} of {size}{}: {}, at most {}",
            if d == Dims::One { String::new() } else { format!(" ({h}×{w})") },
            mode.limit_reason(),
            mode.max_padding(size)
        );
        let mut fixes = vec![];
        if !self.padding_same {
            let fit = (self.padding.0.min(mode.max_padding(h)), self.padding.1.min(mode.max_padding(w)));
            fixes.push(Fix {
                text: format!(
                    "make {path} padding {} (the most {mode} padding fits {})",
                    d.arg(fit),
                    d.show_size((h, w))
                ),
                edits: vec![self.replaced(d, path, |c| c.padding = fit)],
            });
        }
        fixes.push(Fix {
            text: format!("make {path} padding_mode \"zeros\" (no limit on zero padding)"),
            edits: vec![self.replaced(d, path, |c| c.padding_mode = PaddingMode::Zeros)],
        });
        Some((reason, fixes))
    }
}

/// `Conv2d` in a model spec: [`ConvSpec`] (PyTorch's arguments and defaults) is its config.
///
/// # Shapes
/// - input: `[N, in_channels, H, W]`
/// - output: `[N, out_channels, OH, OW]` (see [`Conv2d`])
/// - parameters: `weight` `[out_channels, in_channels / groups, kH, kW]`, `bias` `[out_channels]`
impl Layer for ConvSpec {
    fn type_name(&self) -> &'static str {
        "Conv2d"
    }

    fn describe(&self) -> String {
        self.describe_as(Dims::Two)
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        if x.rank() != 4 {
            let mut fixes = vec![];
            if x.rank() == 3 && *cx.producer == Producer::Input {
                let mut sample = vec![1];
                sample.extend(x.sample().unwrap_or_default());
                fixes.push(Fix {
                    text: format!("give the images a channel dimension: input {sample:?}"),
                    edits: vec![Edit::SetInput { sample }],
                });
            }
            cx.fail(
                ShapeErrorKind::TooFewDims { needs: "[N, C, H, W]: a batch of images with channels".into() },
                fixes,
            );
            return SymShape(vec![Dim::Batch, Dim::Fixed(self.out_channels), Dim::Fixed(1), Dim::Fixed(1)]);
        }
        self.check_as(Dims::Two, cx, x, x)
    }

    fn produces(&self, layer: &LayerRef) -> Option<Producer> {
        Some(Producer::Conv2d(layer.clone()))
    }

    fn init_targets(&self) -> Option<InitTargets> {
        Some(InitTargets { weight_dims: 4, bias: self.bias, inherits: true })
    }

    fn parameter_shapes(&self) -> Option<TensorShapes> {
        let (kh, kw) = self.kernel_size;
        let mut p =
            vec![("weight".to_string(), vec![self.out_channels, self.in_channels? / self.groups.max(1), kh, kw])];
        if self.bias {
            p.push(("bias".to_string(), vec![self.out_channels]));
        }
        Some(p)
    }

    /// One multiply-add per weight at every output position.
    fn macs(&self, output: &SymShape) -> usize {
        let (kh, kw) = self.kernel_size;
        let positions: usize = output.sample().map_or(0, |s| saturating_product(&s[1.min(s.len())..]));
        self.in_channels
            .map_or(0, |i| saturating_product(&[self.out_channels, i / self.groups.max(1), kh, kw, positions]))
    }

    fn has_inferred(&self) -> bool {
        self.in_channels.is_none()
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        let i = self.in_channels.ok_or_else(|| cx.unknown("in_channels"))?;
        let config = Conv2dConfig::new(i, self.out_channels, self.kernel_size)
            .stride(self.stride)
            .padding(if self.padding_same { Padding::Same } else { Padding::Explicit(self.padding.0, self.padding.1) })
            .padding_mode(self.padding_mode)
            .dilation(self.dilation)
            .groups(self.groups)
            .bias(self.bias)
            .dtype(cx.dtype)
            .algorithm(cx.conv_algorithm);
        Ok(Box::new(Conv2d::from_config(&config)?))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        if let Some(i) = self.in_channels {
            fields.push(format!("in_channels = {i}"));
        }
        fields.push(format!("out_channels = {}", self.out_channels));
        fields.push(format!("kernel_size = {}", pair_toml(self.kernel_size)));
        fields.push(format!("stride = {}", pair_toml(self.stride)));
        if self.padding_same {
            fields.push("padding = \"same\"".into());
        } else {
            fields.push(format!("padding = {}", pair_toml(self.padding)));
        }
        // Only when set, so files (and snapshots) of zero-padded models keep their keys.
        if self.padding_mode != PaddingMode::Zeros {
            fields.push(format!("padding_mode = \"{}\"", self.padding_mode));
        }
        fields.push(format!("dilation = {}", pair_toml(self.dilation)));
        fields.push(format!("groups = {}", self.groups));
        fields.push(format!("bias = {}", self.bias));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetInChannels { value, .. } => self.in_channels = Some(*value),
            Edit::SetOutChannels { value, .. } => self.out_channels = *value,
            Edit::SetGroups { groups, .. } => self.groups = *groups,
            Edit::SetWindow { kernel_size, padding, .. } => {
                (self.kernel_size, self.padding, self.padding_same) = (*kernel_size, *padding, false)
            }
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Conv2d(self.clone())
    }
}
