//! Batch normalisation layers, PyTorch's `nn.BatchNorm1d` and `nn.BatchNorm2d`: the shared
//! [`BatchNorm`] state (affine parameters, running statistics, train/eval flag) and the two
//! layers, which differ only in the input ranks they accept.

use crate::check::context::CheckContext;
use crate::check::error::ShapeErrorKind;
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{SymShape, fixed};
use crate::init::InitTargets;
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes};
use crate::model_file::keys::LayerFields;
use crate::module::Module;
use crate::spec::{BatchNormSpec, LayerSpec};
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use strata_core::{DType, Tensor, batch_norm, installed_collective, sync_batch_norm};

/// The hyper-parameters of a batch-norm layer, with PyTorch's defaults: `eps = 1e-5`,
/// `momentum = Some(0.1)`, `affine = true`, `track_running_stats = true`, f32.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormConfig {
    /// Channels `C` (dimension 1 of the input).
    pub num_features: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Weight of the current batch in the running statistics; `None` is a cumulative moving
    /// average (`1 / num_batches_tracked`), as PyTorch's `momentum=None`.
    pub momentum: Option<f64>,
    /// Whether the layer has a learned scale `weight` (γ) and shift `bias` (β).
    pub affine: bool,
    /// Whether the layer keeps running statistics (and uses them in eval mode). Without them,
    /// batch statistics are used in both modes.
    pub track_running_stats: bool,
    /// Element type of parameters and statistics.
    pub dtype: DType,
}

impl BatchNormConfig {
    /// `BatchNorm*d(num_features)` with PyTorch's defaults.
    pub fn new(num_features: usize) -> Self {
        BatchNormConfig {
            num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
            dtype: DType::F32,
        }
    }
    /// Sets `eps`.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Sets the momentum (`None`: cumulative moving average).
    pub fn momentum(mut self, momentum: Option<f64>) -> Self {
        self.momentum = momentum;
        self
    }
    /// With or without `weight` and `bias`.
    pub fn affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }
    /// With or without running statistics.
    pub fn track_running_stats(mut self, track: bool) -> Self {
        self.track_running_stats = track;
        self
    }
    /// Sets the element type (f32 or f64).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The shared state for a layer of `kind` (`"BatchNorm1d"` or `"BatchNorm2d"`): weight 1,
    /// bias 0, running mean 0, running variance 1, `num_batches_tracked` 0 (an `i64` scalar),
    /// as PyTorch initialises them; training mode.
    fn build(&self, kind: &'static str) -> Result<BatchNorm> {
        if self.num_features == 0 {
            return Err(Error::option(kind, "num_features", 0, "at least 1"));
        }
        if !self.dtype.is_float() {
            return Err(Error::option(kind, "dtype", format!("{:?}", self.dtype), "f32 or f64"));
        }
        if self.eps.is_nan() || self.eps < 0.0 {
            return Err(Error::option(kind, "eps", self.eps, "≥ 0"));
        }
        if let Some(m) = self.momentum.filter(|m| !m.is_finite()) {
            return Err(Error::option(kind, "momentum", m, "finite (or None for a cumulative average)"));
        }
        let c = [self.num_features];
        let param = |v: f64| Tensor::full(&c, v, self.dtype).requires_grad_();
        let (weight, bias) = if self.affine { (Some(param(1.0)?), Some(param(0.0)?)) } else { (None, None) };
        let track = self.track_running_stats;
        Ok(BatchNorm {
            weight,
            bias,
            running_mean: track.then(|| Tensor::zeros(&c, self.dtype)),
            running_var: track.then(|| Tensor::ones(&c, self.dtype)),
            num_batches_tracked: track.then(|| Tensor::scalar(0i64)),
            config: self.clone(),
            training: AtomicBool::new(true),
            kind,
        })
    }

    /// Builds a [`BatchNorm1d`].
    pub fn init_1d(&self) -> Result<BatchNorm1d> {
        Ok(BatchNorm1d(self.build("BatchNorm1d")?))
    }

    /// Builds a [`BatchNorm2d`].
    pub fn init_2d(&self) -> Result<BatchNorm2d> {
        Ok(BatchNorm2d(self.build("BatchNorm2d")?))
    }
}

/// The state shared by [`BatchNorm1d`] and [`BatchNorm2d`] (PyTorch's `_BatchNorm`); both
/// dereference to it.
#[derive(Debug)]
pub struct BatchNorm {
    /// γ, `[C]` (when affine).
    pub weight: Option<Tensor>,
    /// β, `[C]` (when affine).
    pub bias: Option<Tensor>,
    /// Running mean, `[C]`, updated in place in training mode (when tracking).
    pub running_mean: Option<Tensor>,
    /// Running (unbiased) variance, `[C]` (when tracking).
    pub running_var: Option<Tensor>,
    /// Training batches seen, an `i64` scalar (when tracking).
    pub num_batches_tracked: Option<Tensor>,
    config: BatchNormConfig,
    training: AtomicBool,
    kind: &'static str,
}

impl BatchNorm {
    /// The hyper-parameters.
    pub fn config(&self) -> &BatchNormConfig {
        &self.config
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// Normalises `x` (rank already checked by the layer): batch statistics in training mode
    /// (or without running stats), updating the running statistics; running stats in eval.
    fn normalise(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let c = self.config.num_features;
        if x.dims()[1] != c {
            return Err(strata_core::Error::ShapeMismatch {
                op: self.kind,
                what: "input",
                got: x.shape().clone(),
                expected: format!("{} channels in dimension 1 (num_features = {c})", c),
            }
            .into());
        }
        let training = self.is_training();
        let track = self.running_mean.is_some();
        let mut momentum = self.config.momentum.unwrap_or(0.0);
        let mut batches = None;
        if training && let Some(nbt) = &self.num_batches_tracked {
            // The counter is host metadata (as an optimizer's step count): on the CPU, reading
            // and bumping it each step syncs no device. Moved back once after `to_device`.
            if nbt.device() != strata_core::Device::Cpu {
                nbt.to_device_(strata_core::Device::Cpu)?;
            }
            let next = nbt.item()? as i64 + 1;
            if self.config.momentum.is_none() {
                momentum = 1.0 / next as f64;
            }
            batches = Some((nbt, next));
        }
        // Running statistics are read in eval mode and updated in training mode.
        let use_batch_stats = training || !track;
        let op = if relu { strata_core::batch_norm_relu } else { batch_norm };
        // sync_bn: in training mode, with a data-parallel run's collective installed on this
        // thread, the global batch's statistics, summed over the processes.
        let y = if training && installed_collective().is_some() {
            let y = sync_batch_norm(
                x,
                self.running_mean.as_ref(),
                self.running_var.as_ref(),
                self.weight.as_ref(),
                self.bias.as_ref(),
                momentum,
                self.config.eps,
            )?;
            if relu { y.relu()? } else { y }
        } else {
            op(
                x,
                self.running_mean.as_ref(),
                self.running_var.as_ref(),
                self.weight.as_ref(),
                self.bias.as_ref(),
                use_batch_stats,
                momentum,
                self.config.eps,
            )?
        };
        if let Some((nbt, next)) = batches {
            nbt.update_::<i64, _>(|v| v[0] = next)?;
        }
        Ok(y)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![];
        p.extend(self.weight.clone().map(|t| ("weight".to_string(), t)));
        p.extend(self.bias.clone().map(|t| ("bias".to_string(), t)));
        p
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut b = vec![];
        b.extend(self.running_mean.clone().map(|t| ("running_mean".to_string(), t)));
        b.extend(self.running_var.clone().map(|t| ("running_var".to_string(), t)));
        b.extend(self.num_batches_tracked.clone().map(|t| ("num_batches_tracked".to_string(), t)));
        b
    }
}

macro_rules! batch_norm_layer {
    ($(#[$doc:meta])* $name:ident, $init:ident, $ranks:expr, $expected:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(BatchNorm);

        impl $name {
            #[doc = concat!("`nn.", stringify!($name), "(num_features)` with PyTorch's defaults (f32).")]
            pub fn new(num_features: usize) -> Result<$name> {
                BatchNormConfig::new(num_features).$init()
            }
        }

        impl std::ops::Deref for $name {
            type Target = BatchNorm;
            fn deref(&self) -> &BatchNorm {
                &self.0
            }
        }

        impl $name {
            /// Normalises `x` after checking its rank, then applies a ReLU when `relu`.
            fn run(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
                if !$ranks.contains(&x.ndim()) {
                    return Err(strata_core::Error::ShapeMismatch {
                        op: stringify!($name),
                        what: "input",
                        got: x.shape().clone(),
                        expected: format!($expected, c = self.0.config.num_features),
                    }
                    .into());
                }
                self.0.normalise(x, relu)
            }
        }

        impl Module for $name {
            fn forward(&self, x: &Tensor) -> Result<Tensor> {
                self.run(x, false)
            }
            fn forward_fused_relu(&self, x: &Tensor) -> Option<Result<Tensor>> {
                Some(self.run(x, true))
            }
            fn own_parameters(&self) -> Vec<(String, Tensor)> {
                self.0.parameters()
            }
            fn own_buffers(&self) -> Vec<(String, Tensor)> {
                self.0.buffers()
            }
            fn set_own_training(&self, training: bool) {
                self.0.training.store(training, Ordering::Relaxed);
            }
            fn describe(&self) -> String {
                // One description per kind: the layer kind's (what traces and summaries show).
                self.spec().map(|s| s.to_string()).unwrap_or_default()
            }

            fn spec(&self) -> Option<crate::spec::LayerSpec> {
                let c = &self.0.config;
                Some(crate::spec::LayerSpec::$name(crate::spec::BatchNormSpec {
                    num_features: Some(c.num_features),
                    eps: c.eps,
                    momentum: c.momentum,
                    affine: c.affine,
                    track_running_stats: c.track_running_stats,
                }))
            }
        }
    };
}

batch_norm_layer!(
    /// Batch normalisation over a mini-batch of feature vectors or sequences, PyTorch's
    /// `nn.BatchNorm1d`: per channel, `y = (x − μ)/√(σ² + eps)·γ + β` with the batch's
    /// statistics in training mode (updating the running statistics with `momentum`, the
    /// variance unbiased) and the running statistics in eval mode.
    ///
    /// Parameters `weight` (γ, ones) and `bias` (β, zeros), buffers `running_mean` (zeros),
    /// `running_var` (ones) and `num_batches_tracked` (an `i64` scalar): PyTorch's names, so
    /// state_dicts move both ways. Switch modes with [`Module::train`] / [`Module::eval`].
    ///
    /// # Shapes
    /// - input: `[N, C]` or `[N, C, L]`, `C = num_features`; in training mode more than one
    ///   value per channel (`N·L > 1`)
    /// - output: the input's shape
    /// - parameters and buffers: `[C]`; `num_batches_tracked`: `[]`
    BatchNorm1d,
    init_1d,
    [2, 3],
    "[N, {c}] or [N, {c}, L] (2 or 3 dimensions)"
);

batch_norm_layer!(
    /// Batch normalisation over a mini-batch of images, PyTorch's `nn.BatchNorm2d`: per
    /// channel, `y = (x − μ)/√(σ² + eps)·γ + β` with statistics over `N`, `H` and `W` in
    /// training mode (updating the running statistics with `momentum`, the variance unbiased)
    /// and the running statistics in eval mode.
    ///
    /// Parameters `weight` (γ, ones) and `bias` (β, zeros), buffers `running_mean` (zeros),
    /// `running_var` (ones) and `num_batches_tracked` (an `i64` scalar): PyTorch's names, so
    /// state_dicts move both ways. Switch modes with [`Module::train`] / [`Module::eval`].
    ///
    /// # Shapes
    /// - input: `[N, C, H, W]`, `C = num_features`; in training mode `N·H·W > 1`
    /// - output: the input's shape
    /// - parameters and buffers: `[C]`; `num_batches_tracked`: `[]`
    ///
    /// ```
    /// use strata_nn::{BatchNorm2d, Module};
    /// use strata_core::{DType, Tensor};
    /// let bn = BatchNorm2d::new(32)?;
    /// let y = bn.forward(&Tensor::ones(&[8, 32, 5, 5], DType::F32))?;
    /// assert_eq!(y.dims(), &[8, 32, 5, 5]);
    /// assert_eq!(bn.num_batches_tracked.as_ref().unwrap().item()?, 1.0);
    /// bn.eval();
    /// # Ok::<(), strata_nn::Error>(())
    /// ```
    BatchNorm2d,
    init_2d,
    [4],
    "[N, {c}, H, W] (4 dimensions)"
);

/// `BatchNorm1d` / `BatchNorm2d` in a model spec: [`BatchNormSpec`] (PyTorch's arguments and
/// defaults) is the config, `two_d` which of the two.
///
/// # Shapes
/// - `BatchNorm1d` input: `[N, C]` or `[N, C, L]`; `BatchNorm2d` input: `[N, C, H, W]`
/// - output: the same shape
/// - parameters (when affine): `weight`, `bias` `[C]`; buffers (when tracking):
///   `running_mean`, `running_var` `[C]`, `num_batches_tracked` `[]`
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormLayer {
    /// The hyper-parameters.
    pub config: BatchNormSpec,
    /// `BatchNorm2d` rather than `BatchNorm1d`.
    pub two_d: bool,
}

const BATCH_NORM_KEYS: &[&str] =
    &["name", "type", "num_features", "eps", "momentum", "affine", "track_running_stats", "init", "bias_init"];

/// `type = "BatchNorm1d"` (`momentum = "None"` for a cumulative average).
pub static BATCH_NORM1D_KIND: LayerKind =
    LayerKind { type_name: "BatchNorm1d", keys: BATCH_NORM_KEYS, layer_of: None, parse: Some(parse_batch_norm) };
/// `type = "BatchNorm2d"` (`momentum = "None"` for a cumulative average).
pub static BATCH_NORM2D_KIND: LayerKind =
    LayerKind { type_name: "BatchNorm2d", keys: BATCH_NORM_KEYS, layer_of: None, parse: Some(parse_batch_norm) };

fn parse_batch_norm(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    use toml::de::DeValue;
    let mut b = BatchNormSpec::new(f.optional_size("num_features")?);
    b.eps = f.float("eps", 1e-5);
    if b.eps < 0.0 {
        // Checked here, not only when the layer is built, so that `strata check` locates it.
        let span = f.span_of("eps");
        f.error(span, format!("`eps` must be at least 0, got {}", b.eps), None);
    }
    b.momentum = match f.get("momentum").map(|v| (v.get_ref(), v.span())) {
        Some((DeValue::String(m), _)) if m.as_ref() == "None" => None,
        Some((DeValue::String(_), sp)) => {
            f.error(sp, "`momentum` must be a number, or \"None\" for a cumulative average".into(), None);
            Some(0.1)
        }
        _ => Some(f.float("momentum", 0.1)),
    };

    b.affine = f.boolean("affine", true);
    b.track_running_stats = f.boolean("track_running_stats", true);
    Some(BatchNormLayer { config: b, two_d: f.ty == "BatchNorm2d" }.to_spec())
}

impl Layer for BatchNormLayer {
    fn type_name(&self) -> &'static str {
        if self.two_d { "BatchNorm2d" } else { "BatchNorm1d" }
    }

    fn describe(&self) -> String {
        let b = &self.config;
        let mut s = match b.num_features {
            Some(c) => format!("{} {c}", self.type_name()),
            None => format!("{} ?", self.type_name()),
        };
        if b.eps != 1e-5 {
            s.push_str(&format!(", eps {}", b.eps));
        }
        match b.momentum {
            None => s.push_str(", cumulative average"),
            Some(m) if m != 0.1 => s.push_str(&format!(", momentum {m}")),
            Some(_) => {}
        }
        if !b.affine {
            s.push_str(", not affine");
        }
        if !b.track_running_stats {
            s.push_str(", no running stats");
        }
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let (two_d, path, kind) = (self.two_d, cx.path, self.type_name());
        let (ok, needs) = if two_d {
            (x.rank() == 4, "[N, C, H, W]: a batch of images")
        } else {
            (x.rank() == 2 || x.rank() == 3, "[N, C] or [N, C, L]")
        };
        if !ok {
            // The other BatchNorm takes this rank: [N, C] / [N, C, L] or [N, C, H, W].
            let other = match (two_d, x.rank()) {
                (true, 2 | 3) => Some(("BatchNorm1d", LayerSpec::BatchNorm1d(self.config.clone()))),
                (false, 4) => Some(("BatchNorm2d", LayerSpec::BatchNorm2d(self.config.clone()))),
                _ => None,
            };
            let fixes = other
                .map(|(kind, spec)| Fix {
                    text: format!(
                        "make {path} {kind}({}) (it takes {x})",
                        self.config.num_features.unwrap_or_else(|| fixed(x, 1))
                    ),
                    edits: vec![Edit::Replace { path: path.into(), spec }],
                })
                .into_iter()
                .collect();
            cx.fail(ShapeErrorKind::TooFewDims { needs: needs.into() }, fixes);
            return x.clone();
        }
        let got = fixed(x, 1);
        match self.config.num_features {
            None => self.config.num_features = Some(got),
            Some(expected) if expected == got => {}
            Some(expected) => {
                let mut fixes = vec![Fix {
                    text: format!("make {path} {kind}({got})"),
                    edits: vec![Edit::SetNumFeatures { path: path.into(), value: got }],
                }];
                fixes.extend(cx.channel_producer_fix(x, expected));
                let producer = cx.producer.clone();
                cx.fail(ShapeErrorKind::ChannelMismatch { expected, got, producer }, fixes);
            }
        }
        x.clone()
    }

    fn init_targets(&self) -> Option<InitTargets> {
        // Scale and shift `[C]`: only their own `init` and `bias_init`.
        self.config.affine.then_some(InitTargets { weight_dims: 1, bias: true, inherits: false })
    }

    fn parameter_shapes(&self) -> Option<TensorShapes> {
        let c = self.config.num_features?;
        Some(if self.config.affine { vec![("weight".into(), vec![c]), ("bias".into(), vec![c])] } else { vec![] })
    }

    fn buffer_shapes(&self) -> Option<TensorShapes> {
        if !self.config.track_running_stats {
            return Some(vec![]);
        }
        let c = self.config.num_features?;
        Some(vec![
            ("running_mean".into(), vec![c]),
            ("running_var".into(), vec![c]),
            ("num_batches_tracked".into(), vec![]),
        ])
    }

    fn has_inferred(&self) -> bool {
        self.config.num_features.is_none()
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        let b = &self.config;
        let c = b.num_features.ok_or_else(|| cx.unknown("num_features"))?;
        let config = BatchNormConfig::new(c)
            .eps(b.eps)
            .momentum(b.momentum)
            .affine(b.affine)
            .track_running_stats(b.track_running_stats)
            .dtype(cx.dtype);
        Ok(if self.two_d { Box::new(config.init_2d()?) } else { Box::new(config.init_1d()?) })
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        let b = &self.config;
        if let Some(c) = b.num_features {
            fields.push(format!("num_features = {c}"));
        }
        fields.push(format!("eps = {:?}", b.eps));
        match b.momentum {
            Some(m) => fields.push(format!("momentum = {m:?}")),
            None => fields.push("momentum = \"None\"".into()),
        }
        fields.push(format!("affine = {}", b.affine));
        fields.push(format!("track_running_stats = {}", b.track_running_stats));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetNumFeatures { value, .. } => self.config.num_features = Some(*value),
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        if self.two_d {
            LayerSpec::BatchNorm2d(self.config.clone())
        } else {
            LayerSpec::BatchNorm1d(self.config.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_names_init_and_modes() {
        let bn = BatchNorm2d::new(3).unwrap();
        let sd = bn.state_dict();
        let keys: Vec<&str> = sd.keys().collect();
        assert_eq!(keys, ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]);
        assert_eq!(sd.get("num_batches_tracked").unwrap().dtype(), DType::I64);
        assert_eq!(sd.get("num_batches_tracked").unwrap().dims(), &[] as &[usize]);
        assert_eq!(bn.weight.as_ref().unwrap().to_vec::<f32>().unwrap(), [1.0; 3]);
        assert_eq!(bn.running_var.as_ref().unwrap().to_vec::<f32>().unwrap(), [1.0; 3]);
        assert_eq!(bn.num_parameters(), 6);
        assert!(bn.is_training());
        bn.eval();
        assert!(!bn.is_training());
        // Eval mode with fresh statistics is the identity up to eps.
        let x = Tensor::from_vec((0..24).map(|v| v as f32).collect(), &[2, 3, 2, 2]).unwrap();
        let y = bn.forward(&x).unwrap().to_vec::<f32>().unwrap();
        assert!(y.iter().zip(x.to_vec::<f32>().unwrap()).all(|(a, b)| (a - b / (1.0f32 + 1e-5).sqrt()).abs() < 1e-6));
        assert_eq!(bn.num_batches_tracked.as_ref().unwrap().item().unwrap(), 0.0);
        bn.train(true);
        bn.forward(&x).unwrap();
        bn.forward(&x).unwrap();
        assert_eq!(bn.num_batches_tracked.as_ref().unwrap().item().unwrap(), 2.0);
        assert_eq!(bn.describe(), "BatchNorm2d 3");
    }

    #[test]
    fn options_and_errors() {
        // Without running statistics: batch statistics in eval mode too, no buffers.
        let bn = BatchNormConfig::new(2).track_running_stats(false).affine(false).init_1d().unwrap();
        assert!(bn.state_dict().is_empty());
        bn.eval();
        let x = Tensor::from_vec(vec![1.0f32, 10.0, 3.0, 20.0], &[2, 2]).unwrap();
        let y = bn.forward(&x).unwrap().to_vec::<f32>().unwrap();
        assert!((y[0] + 1.0).abs() < 1e-4 && (y[3] - 1.0).abs() < 1e-4, "{y:?}");
        assert_eq!(bn.describe(), "BatchNorm1d 2, not affine, no running stats");
        // momentum None: a cumulative average (1/1 then 1/2).
        let bn = BatchNormConfig::new(2).momentum(None).init_1d().unwrap();
        bn.forward(&x).unwrap();
        assert_eq!(bn.running_mean.as_ref().unwrap().to_vec::<f32>().unwrap(), [2.0, 15.0]);
        bn.forward(&x.mul_scalar(0.0).unwrap()).unwrap();
        assert_eq!(bn.running_mean.as_ref().unwrap().to_vec::<f32>().unwrap(), [1.0, 7.5]);
        // Wrong ranks and channel counts are errors naming the layer.
        let bn1 = BatchNorm1d::new(2).unwrap();
        let e = bn1.forward(&Tensor::zeros(&[2, 2, 2, 2], DType::F32)).unwrap_err().to_string();
        assert_eq!(e, "BatchNorm1d: input has shape [2, 2, 2, 2], expected [N, 2] or [N, 2, L] (2 or 3 dimensions)");
        let bn2 = BatchNorm2d::new(4).unwrap();
        let e = bn2.forward(&Tensor::zeros(&[2, 2, 3], DType::F32)).unwrap_err().to_string();
        assert_eq!(e, "BatchNorm2d: input has shape [2, 2, 3], expected [N, 4, H, W] (4 dimensions)");
        let e = bn2.forward(&Tensor::zeros(&[2, 3, 2, 2], DType::F32)).unwrap_err().to_string();
        assert_eq!(
            e,
            "BatchNorm2d: input has shape [2, 3, 2, 2], expected 4 channels in dimension 1 (num_features = 4)"
        );
        // A batch of one value per channel cannot be normalised in training mode; nothing changes.
        let e = bn2.forward(&Tensor::zeros(&[1, 4, 1, 1], DType::F32)).unwrap_err().to_string();
        assert!(e.contains("more than 1 value per channel"), "{e}");
        assert_eq!(bn2.num_batches_tracked.as_ref().unwrap().item().unwrap(), 0.0);
        assert!(BatchNorm1d::new(0).unwrap_err().to_string().contains("at least 1"));
    }

    /// A model file's negative eps is an error located in the file (`strata check` passed it;
    /// only building the layer refused it, without a location); non-finite values too.
    #[test]
    fn model_file_eps_and_momentum_are_checked_where_written() {
        let bad = r#"layers = [
  { type = "BatchNorm2d", num_features = 2, eps = -1.0 },
  { type = "BatchNorm1d", num_features = 2, eps = nan, momentum = inf },
]
"#;
        let e = crate::model_file::parse_model(bad, "bad.toml", "m").unwrap_err().to_string();
        assert!(e.contains("`eps` must be at least 0, got -1\n --> bad.toml:2:51"), "{e}");
        assert!(e.contains("`eps` must be a finite number\n --> bad.toml:3:51"), "{e}");
        assert!(e.contains("`momentum` must be a finite number\n --> bad.toml:3:67"), "{e}");
    }
}
