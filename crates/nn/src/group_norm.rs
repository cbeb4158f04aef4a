//! Group normalisation, PyTorch's `nn.GroupNorm`: the channels of every sample split into
//! `num_groups` groups, each group normalised over its channels and all positions, then a
//! per-channel learned scale and shift.
//!
//! Composed from differentiable core ops (a reshape to `[N, G, C/G·∏*]`, `layer_norm` over the
//! last dimension without affine, a reshape back, then `mul`/`add` by `[1, C, 1, …]`), so it
//! runs on every device with autograd and needs no kernel of its own.

use crate::check::context::CheckContext;
use crate::check::error::ShapeErrorKind;
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, fixed};
use crate::init::InitTargets;
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes, layer_of};
use crate::model_file::keys::LayerFields;
use crate::module::Module;
use crate::spec::{DynLayer, LayerSpec};
use crate::{Error, Result};
use strata_core::{DType, Tensor, layer_norm};

/// The config of `nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True)`, in a model
/// spec and for building a [`GroupNorm`].
///
/// # Shapes
/// - input: `[N, C, *]` (`[N, C]`, `[N, C, L]`, `[N, C, H, W]`, …), `C = num_channels`, which
///   `num_groups` divides
/// - output: the same shape
/// - parameters (when affine): `weight` and `bias`, each `[C]`
///
/// ```
/// use strata_nn::group_norm::GroupNormSpec;
/// use strata_nn::{Layer, Module, spec::ModelSpec};
/// use strata_core::{DType, Tensor};
/// let gn = GroupNormSpec::new(4, 32).eps(1e-3).init(DType::F32)?;
/// let y = gn.forward(&Tensor::ones(&[2, 32, 5, 5], DType::F32))?;
/// assert_eq!(y.dims(), &[2, 32, 5, 5]);
/// assert_eq!(gn.num_parameters(), 64);
/// // In a model spec: checked, summarised, written to model files, built.
/// let spec = ModelSpec::new("m").input(&[32, 5, 5]).layer("gn", GroupNormSpec::new(4, 32).to_spec());
/// assert!(spec.check(None).is_ok());
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNormSpec {
    /// Groups the channels are split into (each of `num_channels / num_groups` channels).
    pub num_groups: usize,
    /// Channels `C` (dimension 1 of the input).
    pub num_channels: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Whether the layer has a per-channel `weight` (γ, ones) and `bias` (β, zeros).
    pub affine: bool,
}

impl GroupNormSpec {
    /// `nn.GroupNorm(num_groups, num_channels)` with PyTorch's defaults: `eps = 1e-5`, affine.
    pub fn new(num_groups: usize, num_channels: usize) -> Self {
        GroupNormSpec { num_groups, num_channels, eps: 1e-5, affine: true }
    }

    /// Sets `eps`.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// With or without `weight` and `bias`.
    pub fn affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }

    /// Builds the layer with parameters of `dtype` (f32 or f64): weight 1 and bias 0, as
    /// PyTorch initialises them. An error when `num_groups` does not divide `num_channels`
    /// (PyTorch's `ValueError`), a size is 0 or `eps` is negative.
    pub fn init(&self, dtype: DType) -> Result<GroupNorm> {
        const OWNER: &str = "GroupNorm";
        let (g, c) = (self.num_groups, self.num_channels);
        for (key, v) in [("num_groups", g), ("num_channels", c)] {
            if v == 0 {
                return Err(Error::option(OWNER, key, 0, "at least 1"));
            }
        }
        if !c.is_multiple_of(g) {
            return Err(Error::option(OWNER, "num_groups", g, format!("a divisor of num_channels ({c})")));
        }
        if !dtype.is_float() {
            return Err(Error::option(OWNER, "dtype", format!("{dtype:?}"), "f32 or f64"));
        }
        if self.eps.is_nan() || self.eps < 0.0 {
            return Err(Error::option(OWNER, "eps", self.eps, "≥ 0"));
        }
        let (weight, bias) = if self.affine {
            (Some(Tensor::ones(&[c], dtype).requires_grad_()?), Some(Tensor::zeros(&[c], dtype).requires_grad_()?))
        } else {
            (None, None)
        };
        Ok(GroupNorm { weight, bias, config: self.clone() })
    }
}

/// Group normalisation, PyTorch's `nn.GroupNorm`: per sample and group of `C/G` channels,
/// `y = (x − μ)/√(σ² + eps)·γ + β` with the mean and biased variance over the group's channels
/// and every position, γ and β per channel. The same in training and evaluation mode; no
/// running statistics.
///
/// Parameters `weight` (γ, ones) and `bias` (β, zeros), each `[C]`, when affine: PyTorch's
/// names, so state_dicts move both ways. The config and its shapes: [`GroupNormSpec`].
///
/// ```
/// use strata_nn::group_norm::GroupNorm;
/// use strata_nn::Module;
/// use strata_core::{DType, Tensor};
/// let gn = GroupNorm::new(2, 6)?;
/// let y = gn.forward(&Tensor::ones(&[4, 6, 10], DType::F32))?;
/// assert_eq!(y.dims(), &[4, 6, 10]);
/// assert_eq!(gn.describe(), "GroupNorm 2 groups, 6 channels");
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug)]
pub struct GroupNorm {
    /// γ, `[C]` (when affine).
    pub weight: Option<Tensor>,
    /// β, `[C]` (when affine).
    pub bias: Option<Tensor>,
    config: GroupNormSpec,
}

impl GroupNorm {
    /// `nn.GroupNorm(num_groups, num_channels)` with PyTorch's defaults (f32).
    pub fn new(num_groups: usize, num_channels: usize) -> Result<GroupNorm> {
        GroupNormSpec::new(num_groups, num_channels).init(DType::F32)
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &GroupNormSpec {
        &self.config
    }
}

/// `torch.nn.functional.group_norm(x, num_groups, weight, bias, eps)` for `x` of `[N, C, *]`
/// (checked by the caller), composed: each sample's groups as rows of a layer norm, then the
/// per-channel affine broadcast as `[1, C, 1, …]`.
fn group_norm(
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> strata_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let per_group = dims[1] / num_groups * dims[2..].iter().product::<usize>();
    let rows = x.reshape(&[dims[0], num_groups, per_group])?;
    let mut y = layer_norm(&rows, &[per_group], None, None, eps)?.reshape(&dims)?;
    let mut channel = vec![1; dims.len()];
    channel[1] = dims[1];
    if let Some(w) = weight {
        y = y.mul(&w.reshape(&channel)?)?;
    }
    if let Some(b) = bias {
        y = y.add(&b.reshape(&channel)?)?;
    }
    Ok(y)
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let expected = if x.ndim() < 2 {
            Some(format!("[N, {}, *] (at least 2 dimensions)", c.num_channels))
        } else if x.dims()[1] != c.num_channels {
            Some(format!("{0} channels in dimension 1 (num_channels = {0})", c.num_channels))
        } else {
            None
        };
        if let Some(expected) = expected {
            let got = x.shape().clone();
            return Err(strata_core::Error::ShapeMismatch { op: "GroupNorm", what: "input", got, expected }.into());
        }
        Ok(group_norm(x, c.num_groups, self.weight.as_ref(), self.bias.as_ref(), c.eps)?)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![];
        p.extend(self.weight.clone().map(|t| ("weight".to_string(), t)));
        p.extend(self.bias.clone().map(|t| ("bias".to_string(), t)));
        p
    }
    fn describe(&self) -> String {
        self.config.describe()
    }
    fn spec(&self) -> Option<LayerSpec> {
        Some(self.config.to_spec())
    }
}

/// `type = "GroupNorm"`, `num_groups` and `num_channels` (required), `eps`, `affine`.
pub static GROUP_NORM_KIND: LayerKind = LayerKind {
    type_name: "GroupNorm",
    keys: &["name", "type", "num_groups", "num_channels", "eps", "affine", "init", "bias_init"],
    parse: Some(parse_group_norm),
    layer_of: Some(layer_of::<GroupNormSpec>),
};

fn parse_group_norm(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    let mut size = |key: &str, help: &str| match f.get(key) {
        Some(_) => f.positive(key),
        None if f.meant(key) => None,
        None => {
            f.missing(key, help);
            None
        }
    };
    let num_groups = size("num_groups", "add num_groups = 32 (the channels are split into this many groups)");
    let num_channels = size("num_channels", "add num_channels = 64 (the channels, dimension 1 of the input)");
    let eps = f.float("eps", 1e-5);
    if eps.is_nan() || eps < 0.0 {
        let span = f.span_of("eps");
        f.error(span, format!("`eps` must be at least 0, got {eps}"), None);
    }
    let affine = f.boolean("affine", true);
    Some(GroupNormSpec { num_groups: num_groups?, num_channels: num_channels?, eps, affine }.to_spec())
}

/// The divisor of `c` nearest to `g` (the smaller on a tie); divisors in pairs up to `√c`, so a
/// channel count near [`crate::model_file::keys::MAX_SIZE`] takes 46,341 steps, not 2³¹.
fn nearest_divisor(c: usize, g: usize) -> usize {
    let c = c.max(1);
    let small = (1..).take_while(|d| d * d <= c).filter(|d| c.is_multiple_of(*d));
    let pairs = small.flat_map(|d| [d, c / d]);
    pairs.min_by_key(|&d| (d.abs_diff(g), d)).unwrap_or(1)
}

impl Layer for GroupNormSpec {
    fn type_name(&self) -> &'static str {
        "GroupNorm"
    }

    fn describe(&self) -> String {
        let mut s = format!("GroupNorm {} groups, {} channels", self.num_groups, self.num_channels);
        if self.eps != 1e-5 {
            s.push_str(&format!(", eps {}", self.eps));
        }
        if !self.affine {
            s.push_str(", not affine");
        }
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let path = cx.path;
        let (g, c) = (self.num_groups, self.num_channels);
        // Channels in dimension 1 after the batch: a time-major [T, N, F] has none.
        if x.rank() < 2 || x.batch_dim().is_some_and(|b| b != 0) || !matches!(x.0[1], Dim::Fixed(_)) {
            cx.fail(
                ShapeErrorKind::TooFewDims { needs: "[N, C, *]: a batch with channels in dimension 1".into() },
                vec![],
            );
            return x.clone();
        }
        let got = fixed(x, 1);
        if got != c {
            // Keep the groups when they divide the new count, else take the nearest that does.
            let groups = if g > 0 && got.is_multiple_of(g) { g } else { nearest_divisor(got, g) };
            let mut edits = vec![Edit::SetNumFeatures { path: path.into(), value: got }];
            if groups != g {
                edits.push(Edit::SetGroups { path: path.into(), groups });
            }
            let mut fixes = vec![Fix { text: format!("make {path} GroupNorm({groups}, {got})"), edits }];
            fixes.extend(cx.channel_producer_fix(x, c));
            let producer = cx.producer.clone();
            cx.fail(ShapeErrorKind::ChannelMismatch { expected: c, got, producer }, fixes);
        } else if g == 0 || !c.is_multiple_of(g) {
            let best = nearest_divisor(c, g);
            let fix = Fix {
                text: format!("make {path} GroupNorm({best}, {c}) (the nearest number of groups that divides {c})"),
                edits: vec![Edit::SetGroups { path: path.into(), groups: best }],
            };
            let reason = format!("num_groups = {g} must divide num_channels ({c})");
            cx.fail(ShapeErrorKind::BadLayer { reason }, vec![fix]);
        }
        x.clone()
    }

    fn init_targets(&self) -> Option<InitTargets> {
        // Scale and shift `[C]`: only their own `init` and `bias_init`.
        self.affine.then_some(InitTargets { weight_dims: 1, bias: true, inherits: false })
    }

    fn parameter_shapes(&self) -> Option<TensorShapes> {
        let c = self.num_channels;
        Some(if self.affine { vec![("weight".into(), vec![c]), ("bias".into(), vec![c])] } else { vec![] })
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(self.init(cx.dtype)?))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("num_groups = {}", self.num_groups));
        fields.push(format!("num_channels = {}", self.num_channels));
        fields.push(format!("eps = {:?}", self.eps));
        fields.push(format!("affine = {}", self.affine));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetGroups { groups, .. } => self.num_groups = *groups,
            Edit::SetNumFeatures { value, .. } => self.num_channels = *value,
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Other(DynLayer(Box::new(self.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_spec;
    use crate::model_file::{parse_model, to_toml};
    use crate::spec::ModelSpec;
    use crate::summary::Summary;
    use strata_core::Generator;
    use strata_core::testing::{assert_close, gradcheck, randn64};

    /// PyTorch's group norm written out with loops over `[N, C, S]` (f64).
    fn by_hand(x: &[f64], (n, c, s): (usize, usize, usize), g: usize, w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
        let mut y = vec![0.0; x.len()];
        let per = c / g * s;
        for i in 0..n {
            for k in 0..g {
                let start = (i * c + k * c / g) * s;
                let group = &x[start..start + per];
                let mean = group.iter().sum::<f64>() / per as f64;
                let var = group.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / per as f64;
                for (j, v) in group.iter().enumerate() {
                    let ch = k * c / g + j / s;
                    y[start + j] = (v - mean) / (var + eps).sqrt() * w[ch] + b[ch];
                }
            }
        }
        y
    }

    #[test]
    fn nearest_divisors() {
        let cases = [(16, 6, 4), (16, 5, 4), (30, 4, 3), (36, 7, 6), (7, 3, 1), (7, 5, 7), (1, 4, 1), (64, 0, 1)];
        for (c, g, want) in cases {
            assert_eq!(nearest_divisor(c, g), want, "c {c}, g {g}");
        }
        assert_eq!(nearest_divisor((1 << 31) - 1, 1000), 1); // a prime: 46,341 steps
    }

    #[test]
    fn pytorch_names_init_and_errors() {
        let gn = GroupNorm::new(2, 6).unwrap();
        let keys: Vec<String> = gn.state_dict().keys().map(str::to_string).collect();
        assert_eq!(keys, ["weight", "bias"]);
        assert_eq!(gn.weight.as_ref().unwrap().to_vec::<f32>().unwrap(), [1.0; 6]);
        assert_eq!(gn.bias.as_ref().unwrap().to_vec::<f32>().unwrap(), [0.0; 6]);
        assert!(gn.named_buffers().is_empty());
        assert_eq!(gn.describe(), "GroupNorm 2 groups, 6 channels");
        let e = gn.forward(&Tensor::zeros(&[2, 4, 3], DType::F32)).unwrap_err().to_string();
        assert_eq!(e, "GroupNorm: input has shape [2, 4, 3], expected 6 channels in dimension 1 (num_channels = 6)");
        let e = gn.forward(&Tensor::zeros(&[6], DType::F32)).unwrap_err().to_string();
        assert_eq!(e, "GroupNorm: input has shape [6], expected [N, 6, *] (at least 2 dimensions)");
        let plain = GroupNormSpec::new(3, 3).affine(false).eps(1e-3).init(DType::F64).unwrap();
        assert_eq!(plain.num_parameters(), 0);
        assert_eq!(plain.describe(), "GroupNorm 3 groups, 3 channels, eps 0.001, not affine");
        let err = |s: GroupNormSpec| s.init(DType::F32).unwrap_err().to_string();
        assert_eq!(err(GroupNormSpec::new(4, 6)), "GroupNorm: num_groups must be a divisor of num_channels (6), got 4");
        assert!(err(GroupNormSpec::new(0, 6)).contains("at least 1"));
        assert!(err(GroupNormSpec::new(2, 6).eps(-1.0)).contains("eps must be ≥ 0"));
        assert!(GroupNormSpec::new(2, 6).init(DType::I64).unwrap_err().to_string().contains("f32 or f64"));
    }

    #[test]
    fn values_by_hand() {
        // [1, 4, 2] in 2 groups, eps 0: group 0 holds 1, 2, 3, 4 (mean 2.5, variance 1.25).
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 14.0], &[1, 4, 2]).unwrap();
        let gn = GroupNormSpec::new(2, 4).eps(0.0).init(DType::F64).unwrap();
        let y = gn.forward(&x).unwrap().to_vec::<f64>().unwrap();
        let r = 1.25f64.sqrt();
        // Group 1: 10, 10, 10, 14 (mean 11, variance 3).
        let s = 3f64.sqrt();
        assert_close(&y, &[-1.5 / r, -0.5 / r, 0.5 / r, 1.5 / r, -1.0 / s, -1.0 / s, -1.0 / s, 3.0 / s], 1e-15, 1e-15);
        // With a per-channel scale and shift, on images, against the loops.
        let mut rng = Generator::new(5);
        let x = randn64(&[3, 6, 2, 3], &mut rng);
        let (w, b) = (randn64(&[6], &mut rng), randn64(&[6], &mut rng));
        for g in [1, 2, 3, 6] {
            let y = group_norm(&x, g, Some(&w), Some(&b), 1e-5).unwrap();
            let want = by_hand(&x.to_vec_f64(), (3, 6, 6), g, &w.to_vec_f64(), &b.to_vec_f64(), 1e-5);
            assert_close(&y.to_vec_f64(), &want, 1e-12, 1e-12);
        }
        // f32 in, f32 out; [N, C] normalises each sample's groups of channels.
        let y = GroupNorm::new(1, 2).unwrap().forward(&Tensor::from_vec(vec![1f32, 3.0], &[1, 2]).unwrap()).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        assert_close(&y.to_vec_f64(), &[-1.0, 1.0], 1e-5, 1e-5);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Generator::new(11);
        for (shape, g) in [(vec![2, 6, 3], 3), (vec![2, 4, 2, 3], 1), (vec![3, 4, 2, 2], 4), (vec![2, 6], 2)] {
            let x = randn64(&shape, &mut rng);
            let c = shape[1];
            let (w, b) = (randn64(&[c], &mut rng), randn64(&[c], &mut rng));
            gradcheck(&[x.clone(), w, b], |t| group_norm(&t[0], g, Some(&t[1]), Some(&t[2]), 1e-5));
            gradcheck(&[x], |t| group_norm(&t[0], g, None, None, 1e-3));
        }
    }

    /// The errors of bad configs and shapes, as `strata check` prints them; the first fix of
    /// each makes the model check, build and run.
    #[test]
    fn shape_errors_name_the_fix() {
        let conv_gn = |g: usize, c: usize| {
            ModelSpec::new("m")
                .input(&[3, 8, 8])
                .conv2d("conv", Some(3), 16, 3, 1, 1)
                .layer("gn", GroupNormSpec::new(g, c).to_spec())
        };
        let cases = [
            // The conv makes 16 channels; 24 are expected (and 16 keeps 4 groups).
            conv_gn(4, 24),
            // The same, with 6 groups, which do not divide 16: the fix takes the nearest that do.
            conv_gn(6, 24),
            // Groups that do not divide the channels.
            conv_gn(5, 16),
            // After a Linear: [N, F] takes F as the channels.
            ModelSpec::new("m").input(&[10]).linear("fc", 10, 12).layer("gn", GroupNormSpec::new(4, 8).to_spec()),
            // From the input.
            ModelSpec::new("m").input(&[6, 5]).layer("gn", GroupNormSpec::new(2, 4).to_spec()),
        ];
        let mut text = String::new();
        for spec in cases {
            let report = check_spec(&spec, None, None);
            text.push_str(&report.render_errors());
            text.push_str("\n\n");
            let mut fixed = spec.clone();
            for e in &report.errors {
                assert!(fixed.apply(&e.fixes[0].edits), "`{}` does not apply", e.fixes[0].text);
            }
            let after = check_spec(&fixed, None, None);
            assert!(after.errors.is_empty(), "{}", after.render_errors());
            let mut dims = vec![2];
            dims.extend(fixed.input.clone().unwrap());
            let y = fixed.build().unwrap().forward(&Tensor::ones(&dims, DType::F32)).unwrap();
            assert_eq!(y.dims(), after.output.unwrap().with_batch(2).as_slice());
        }
        insta::assert_snapshot!(text, @r#"
            error: layer `gn` (GroupNorm 4 groups, 24 channels, position 2) receives [N, 16, 8, 8]
              `conv` (Conv2d 3 → 16, 3×3, padding 1, position 1) produces 16 channels, `gn` expects 24
              fix: make gn GroupNorm(4, 16), or make conv produce 24 channels

            error: layer `gn` (GroupNorm 6 groups, 24 channels, position 2) receives [N, 16, 8, 8]
              `conv` (Conv2d 3 → 16, 3×3, padding 1, position 1) produces 16 channels, `gn` expects 24
              fix: make gn GroupNorm(4, 16), or make conv produce 24 channels

            error: layer `gn` (GroupNorm 5 groups, 16 channels, position 2) receives [N, 16, 8, 8]
              num_groups = 5 must divide num_channels (16)
              fix: make gn GroupNorm(4, 16) (the nearest number of groups that divides 16)

            error: layer `gn` (GroupNorm 4 groups, 8 channels, position 2) receives [N, 12]
              `fc` (Linear 10 → 12, position 1) produces 12 channels, `gn` expects 8
              fix: make gn GroupNorm(4, 12), or make fc produce 8 features

            error: layer `gn` (GroupNorm 2 groups, 4 channels, position 1) receives [N, 6, 5]
              the model input has 6 channels, `gn` expects 4
              fix: make gn GroupNorm(2, 6), or feed samples with 4 channels: input [4, 5]
        "#);
        // A time-major sequence [T, N, F] has no channels in dimension 1.
        let mut lstm = crate::spec::RecurrentSpec::new(crate::spec::RecurrentKind::Lstm, Some(5), 4);
        lstm.batch_first = false;
        let seq = ModelSpec::new("m")
            .input(&[7, 5])
            .layer("lstm", LayerSpec::Recurrent(lstm))
            .layer("gn", GroupNormSpec::new(2, 4).to_spec());
        insta::assert_snapshot!(check_spec(&seq, None, None).render_errors(), @r#"
            error: layer `gn` (GroupNorm 2 groups, 4 channels, position 2) receives [7, N, 4]
              it needs [N, C, *]: a batch with channels in dimension 1
        "#);
    }

    #[test]
    fn model_file_round_trip_summary_and_module() {
        let text = r#"name = "g"
input = [3, 8, 8]
layers = [
  { name = "conv", type = "Conv2d", in_channels = 3, out_channels = 8, kernel_size = 3, padding = 1 },
  { name = "gn", type = "GroupNorm", num_groups = 2, num_channels = 8 },
  { type = "ReLU" },
  { name = "gn2", type = "GroupNorm", num_groups = 8, num_channels = 8, eps = 0.001, affine = false },
]
"#;
        let spec = parse_model(text, "g.toml", "g").unwrap();
        let report = spec.check(None).unwrap_or_else(|r| panic!("{}", r.render_errors()));
        assert!(report.render_trace().contains("GroupNorm 8 groups, 8 channels, eps 0.001, not affine"));
        let summary = Summary::from_report(&report, 1);
        assert_eq!(summary.rows[1].layer_type, "GroupNorm 2 groups, 8 channels");
        assert_eq!(summary.rows[1].params, 16);
        assert_eq!(summary.total_params, 3 * 8 * 9 + 8 + 16);
        let written = to_toml(&spec);
        assert!(written.contains("num_groups = 8, num_channels = 8, eps = 0.001, affine = false"), "{written}");
        let mut again = parse_model(&written, "h.toml", "g").unwrap();
        let mut resolved = report.resolved.clone();
        for l in again.layers.iter_mut().chain(resolved.layers.iter_mut()) {
            l.origin = None;
        }
        assert_eq!(again, resolved);
        let model = spec.build().unwrap();
        assert_eq!(model.num_parameters(), summary.total_params);
        let keys: Vec<String> = model.state_dict().keys().map(str::to_string).collect();
        assert_eq!(keys, ["conv.weight", "conv.bias", "gn.weight", "gn.bias"]);
        assert_eq!(ModelSpec::from_module("g", &model).unwrap().input(&[3, 8, 8]), resolved);

        // Typos, missing, zero and negative values are located.
        let bad = r#"layers = [
  { type = "GroupNorm", num_group = 2, num_channels = 8 },
  { type = "GroupNorm", num_groups = 2 },
  { type = "GroupNorm", num_groups = 0, num_channels = 8, eps = -1.0 },
]
"#;
        let e = parse_model(bad, "bad.toml", "m").unwrap_err().to_string();
        insta::assert_snapshot!(e, @r#"
            error: unknown key `num_group` in a GroupNorm layer
             --> bad.toml:2:25
              |
            2 |   { type = "GroupNorm", num_group = 2, num_channels = 8 },
              |                         ^^^^^^^^^
              = help: did you mean `num_groups`? a GroupNorm layer takes: name, type, num_groups, num_channels, eps, affine, init, bias_init, device

            error: this GroupNorm layer has no `num_channels`
             --> bad.toml:3:3
              |
            3 |   { type = "GroupNorm", num_groups = 2 },
              |   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
              = help: add num_channels = 64 (the channels, dimension 1 of the input)

            error: `num_groups` must be a positive integer (at most 2147483648), got 0
             --> bad.toml:4:38
              |
            4 |   { type = "GroupNorm", num_groups = 0, num_channels = 8, eps = -1.0 },
              |                                      ^

            error: `eps` must be at least 0, got -1
             --> bad.toml:4:65
              |
            4 |   { type = "GroupNorm", num_groups = 0, num_channels = 8, eps = -1.0 },
              |                                                                 ^^^^
        "#);
    }
}
