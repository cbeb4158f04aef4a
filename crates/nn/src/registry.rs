//! The registry of layer kinds — one line per kind — and the one place that maps a
//! [`LayerSpec`] to its kind's [`Layer`]. Everything else (check, summary, model files, build)
//! goes through the trait; only the containers are named, since they hold chains.

use crate::layer::{Layer, LayerKind, TensorShapes};
use crate::spec::LayerSpec;
use crate::{activation, batch_norm, conv, dropout, embedding, flatten, layer_norm, linear, pool, recurrent};
use std::fmt;

/// Every layer type a model file may name, in the order error messages list them.
pub static KINDS: &[&LayerKind] = &[
    &linear::LINEAR_KIND,
    &activation::RELU_KIND,
    &flatten::FLATTEN_KIND,
    &SEQUENTIAL_KIND,
    &RESIDUAL_KIND,
    &ADD_KIND,
    &CONCAT_KIND,
    &layer_norm::LAYER_NORM_KIND,
    &embedding::EMBEDDING_KIND,
    &conv::CONV2D_KIND,
    &conv::CONV1D_KIND,
    &pool::MAX_POOL2D_KIND,
    &pool::AVG_POOL2D_KIND,
    &pool::ADAPTIVE_AVG_POOL2D_KIND,
    &crate::pool1d::MAX_POOL1D_KIND,
    &crate::pool1d::AVG_POOL1D_KIND,
    &crate::pool1d::ADAPTIVE_AVG_POOL1D_KIND,
    &batch_norm::BATCH_NORM1D_KIND,
    &batch_norm::BATCH_NORM2D_KIND,
    &crate::group_norm::GROUP_NORM_KIND,
    &activation::SIGMOID_KIND,
    &activation::TANH_KIND,
    &activation::GELU_KIND,
    &activation::SILU_KIND,
    &activation::MISH_KIND,
    &activation::HARDSWISH_KIND,
    &activation::HARDSIGMOID_KIND,
    &activation::RELU6_KIND,
    &activation::LEAKY_RELU_KIND,
    &activation::ELU_KIND,
    &activation::SOFTMAX_KIND,
    &activation::LOG_SOFTMAX_KIND,
    &recurrent::layer::RNN_KIND,
    &recurrent::layer::LSTM_KIND,
    &recurrent::layer::GRU_KIND,
    &recurrent::last_step::LAST_STEP_KIND,
    &dropout::DROPOUT_KIND,
];

/// `Sequential`: a nested chain (`layers`).
static SEQUENTIAL_KIND: LayerKind = LayerKind {
    type_name: "Sequential",
    keys: &["name", "type", "layers", "init", "bias_init"],
    layer_of: None,
    parse: None,
};
/// `Residual`: `layers` plus an optional `shortcut` chain.
static RESIDUAL_KIND: LayerKind = LayerKind {
    type_name: "Residual",
    keys: &["name", "type", "layers", "shortcut", "init", "bias_init"],
    layer_of: None,
    parse: None,
};
/// `Add`: branches summed.
static ADD_KIND: LayerKind = LayerKind {
    type_name: "Add",
    keys: &["name", "type", "branches", "init", "bias_init"],
    layer_of: None,
    parse: None,
};
/// `Concat`: branches joined along `dim`.
static CONCAT_KIND: LayerKind = LayerKind {
    type_name: "Concat",
    keys: &["name", "type", "branches", "dim", "init", "bias_init"],
    layer_of: None,
    parse: None,
};

/// Kinds the unit tests add (a kind defined in a test, registered as a new kind would be).
#[cfg(test)]
static TEST_KINDS: &[&LayerKind] = &[&tests::SCALE_KIND];
#[cfg(not(test))]
static TEST_KINDS: &[&LayerKind] = &[];

/// The kind named `type_name` in model files.
pub fn kind(type_name: &str) -> Option<&'static LayerKind> {
    KINDS.iter().chain(TEST_KINDS).copied().find(|k| k.type_name == type_name)
}

/// Every type name, in registry order.
pub fn type_names() -> Vec<&'static str> {
    KINDS.iter().chain(TEST_KINDS).map(|k| k.type_name).collect()
}

impl LayerSpec {
    /// The layer kind's behaviour on this config; `None` for the containers (`Sequential`,
    /// `Residual`, `Add`/`Concat`), which the machinery walks itself.
    pub fn layer(&self) -> Option<Box<dyn Layer>> {
        use crate::activation::{ActivationSpec as A, SoftmaxSpec};
        Some(match self {
            LayerSpec::Linear { in_features, out_features, bias } => {
                Box::new(linear::LinearSpec { in_features: *in_features, out_features: *out_features, bias: *bias })
            }
            LayerSpec::ReLU => Box::new(A::ReLU),
            LayerSpec::Sigmoid => Box::new(A::Sigmoid),
            LayerSpec::Tanh => Box::new(A::Tanh),
            LayerSpec::GELU { approximate } => Box::new(A::GELU { approximate: *approximate }),
            LayerSpec::SiLU => Box::new(A::SiLU),
            LayerSpec::Mish => Box::new(A::Mish),
            LayerSpec::Hardswish => Box::new(A::Hardswish),
            LayerSpec::Hardsigmoid => Box::new(A::Hardsigmoid),
            LayerSpec::ReLU6 => Box::new(A::ReLU6),
            LayerSpec::LeakyReLU { negative_slope } => Box::new(A::LeakyReLU { negative_slope: *negative_slope }),
            LayerSpec::ELU { alpha } => Box::new(A::ELU { alpha: *alpha }),
            LayerSpec::Softmax { dim } => Box::new(SoftmaxSpec { dim: *dim, log: false }),
            LayerSpec::LogSoftmax { dim } => Box::new(SoftmaxSpec { dim: *dim, log: true }),
            LayerSpec::Flatten { start_dim, end_dim } => {
                Box::new(flatten::FlattenSpec { start_dim: *start_dim, end_dim: *end_dim })
            }
            LayerSpec::Conv2d(c) => Box::new(c.clone()),
            LayerSpec::Conv1d(c) => Box::new(conv::Conv1dLayer(c.clone())),
            LayerSpec::MaxPool2d(options) => Box::new(*options),
            LayerSpec::AvgPool2d(options) => Box::new(*options),
            LayerSpec::MaxPool1d(o) => Box::new(crate::pool1d::Pool1dLayer::Max(*o)),
            LayerSpec::AvgPool1d(o) => Box::new(crate::pool1d::Pool1dLayer::Avg(*o)),
            LayerSpec::AdaptiveAvgPool1d { output_size } => {
                Box::new(crate::pool1d::Pool1dLayer::Adaptive(*output_size))
            }
            LayerSpec::AdaptiveAvgPool2d { output_size } => {
                Box::new(pool::AdaptiveAvgPool2dSpec { output_size: *output_size })
            }
            LayerSpec::BatchNorm1d(b) => Box::new(batch_norm::BatchNormLayer { config: b.clone(), two_d: false }),
            LayerSpec::BatchNorm2d(b) => Box::new(batch_norm::BatchNormLayer { config: b.clone(), two_d: true }),
            LayerSpec::Recurrent(r) => Box::new(r.clone()),
            LayerSpec::LastStep { batch_first } => {
                Box::new(recurrent::last_step::LastStepSpec { batch_first: *batch_first })
            }
            LayerSpec::Dropout { p } => Box::new(dropout::DropoutSpec { p: *p }),
            LayerSpec::LayerNorm { normalized_shape, eps, elementwise_affine } => Box::new(layer_norm::LayerNormSpec {
                normalized_shape: normalized_shape.clone(),
                eps: *eps,
                elementwise_affine: *elementwise_affine,
            }),
            LayerSpec::Embedding { num_embeddings, embedding_dim, padding_idx } => Box::new(embedding::EmbeddingSpec {
                num_embeddings: *num_embeddings,
                embedding_dim: *embedding_dim,
                padding_idx: *padding_idx,
            }),
            LayerSpec::Other(d) => kind(d.0.type_name())?.layer_of?(d.0.as_any())?,
            LayerSpec::Sequential(_) | LayerSpec::Residual { .. } | LayerSpec::Branches { .. } => return None,
        })
    }

    /// The PyTorch type name (`Linear`, `ReLU`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerSpec::Sequential(_) => "Sequential",
            LayerSpec::Residual { .. } => "Residual",
            LayerSpec::Branches { merge, .. } => merge.type_name(),
            leaf => leaf.layer().map_or("?", |l| l.type_name()),
        }
    }

    /// Trainable parameters of this layer alone (not its children) as `(name, shape)`; `None`
    /// when a size is still to be inferred.
    pub fn own_parameter_shapes(&self) -> Option<TensorShapes> {
        self.layer().map_or(Some(vec![]), |l| l.parameter_shapes())
    }

    /// Whether the layer holds other layers (a block), whose rows follow it in a trace.
    pub fn is_block(&self) -> bool {
        matches!(self, LayerSpec::Sequential(_) | LayerSpec::Residual { .. } | LayerSpec::Branches { .. })
    }

    /// Buffers of this layer alone as `(name, shape)` — BatchNorm's `running_mean`,
    /// `running_var` and `num_batches_tracked` (`[]`) —; `None` when a size is still to be inferred.
    pub fn own_buffer_shapes(&self) -> Option<TensorShapes> {
        self.layer().map_or(Some(vec![]), |l| l.buffer_shapes())
    }

    /// Multiply-accumulates per sample of this layer alone, given its output (0 for blocks).
    pub fn macs(&self, output: &crate::check::shape::SymShape) -> usize {
        self.layer().map_or(0, |l| l.macs(output))
    }

    /// Whether a size in this layer or a layer inside it is left to inference.
    pub fn has_inferred(&self) -> bool {
        let any = |c: &[crate::spec::NamedLayer]| c.iter().any(|l| l.spec.has_inferred());
        match self {
            LayerSpec::Sequential(inner) => any(inner),
            LayerSpec::Residual { body, shortcut } => any(body) || shortcut.as_deref().is_some_and(any),
            LayerSpec::Branches { branches, .. } => branches.iter().any(|b| any(b)),
            leaf => leaf.layer().is_some_and(|l| l.has_inferred()),
        }
    }
}

impl fmt::Display for LayerSpec {
    /// `Linear 784 → 128`, `ReLU`, `Flatten`, `Sequential (3 layers)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::spec::Merge;
        match self {
            LayerSpec::Sequential(l) if l.is_empty() => write!(f, "identity"),
            LayerSpec::Sequential(l) => write!(f, "Sequential ({})", layers_count(l.len())),
            LayerSpec::Branches { branches, merge: Merge::Add } => write!(f, "Add ({} branches)", branches.len()),
            LayerSpec::Branches { branches, merge: Merge::Concat { dim: 1 } } => {
                write!(f, "Concat ({} branches)", branches.len())
            }
            LayerSpec::Branches { branches, merge: Merge::Concat { dim } } => {
                write!(f, "Concat ({} branches, dim {dim})", branches.len())
            }
            LayerSpec::Residual { body, shortcut: None } => {
                write!(f, "Residual ({} + identity)", layers_count(body.len()))
            }
            LayerSpec::Residual { body, shortcut: Some(_) } => {
                write!(f, "Residual ({} + projection)", layers_count(body.len()))
            }
            leaf => match leaf.layer() {
                Some(l) => write!(f, "{}", l.describe()),
                None => Ok(()),
            },
        }
    }
}

/// `1 layer`, `3 layers`.
fn layers_count(n: usize) -> String {
    if n == 1 { "1 layer".into() } else { format!("{n} layers") }
}

#[cfg(test)]
mod tests {
    //! A layer kind defined in one place and registered in one line (`TEST_KINDS`), as
    //! `crates/nn/README.md` describes: the model file, the check, the summary, the writer and
    //! the builder all take it without knowing it.

    use crate::check::context::CheckContext;
    use crate::check::shape::SymShape;
    use crate::layer::{BuildContext, Layer, LayerKind, layer_of};
    use crate::model_file::{parse_model, to_toml};
    use crate::module::Module;
    use crate::spec::{DynLayer, LayerSpec};
    use crate::{Result, Summary};
    use strata_core::{DType, Tensor};

    /// `y = factor·x`: a made-up element-wise layer.
    #[derive(Clone, Debug, PartialEq)]
    pub(super) struct ScaleSpec {
        factor: f64,
    }

    pub(super) static SCALE_KIND: LayerKind = LayerKind {
        type_name: "Scale",
        keys: &["name", "type", "factor"],
        parse: Some(|f| Some(ScaleSpec { factor: f.float("factor", 1.0) }.to_spec())),
        layer_of: Some(layer_of::<ScaleSpec>),
    };

    struct Scale(f64);

    impl Module for Scale {
        fn forward(&self, x: &Tensor) -> Result<Tensor> {
            Ok(x.mul_scalar(self.0)?)
        }
    }

    impl Layer for ScaleSpec {
        fn type_name(&self) -> &'static str {
            "Scale"
        }
        fn describe(&self) -> String {
            format!("Scale ×{}", self.factor)
        }
        fn check(&mut self, _cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
            x.clone()
        }
        fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
            Ok(Box::new(Scale(self.factor)))
        }
        fn write_toml(&self, fields: &mut Vec<String>) {
            fields.push(format!("factor = {:?}", self.factor));
        }
        fn to_spec(&self) -> LayerSpec {
            LayerSpec::Other(DynLayer(Box::new(self.clone())))
        }
    }

    #[test]
    fn a_kind_in_one_file_works_everywhere() {
        let text = "input = [4]\nlayers = [{ name = \"fc\", type = \"Linear\", out_features = 3 }, { name = \"s\", type = \"Scale\", factor = 2.0 }]\n";
        let spec = parse_model(text, "t.toml", "m").unwrap();
        let report = spec.check(None).unwrap();
        assert!(report.render_trace().contains("Scale ×2"), "{}", report.render_trace());
        assert_eq!(report.output, Some(SymShape::batched(&[3])));
        let summary = Summary::from_report(&report, 1);
        assert_eq!(summary.rows[1].layer_type, "Scale ×2");
        let mut again = parse_model(&to_toml(&report.resolved), "u.toml", "m").unwrap();
        let mut resolved = report.resolved.clone();
        for l in again.layers.iter_mut().chain(resolved.layers.iter_mut()) {
            l.origin = None;
        }
        assert_eq!(again, resolved);
        let bad = parse_model("layers = [{ type = \"Scale\", factr = 2.0 }]\n", "b.toml", "m").unwrap_err();
        assert!(bad.to_string().contains("did you mean `factor`?"), "{bad}");
        let model = spec.build().unwrap();
        let x = Tensor::ones(&[2, 4], DType::F32);
        let y = model.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 3]);
        let fc = model.layers().next().unwrap().1.forward(&x).unwrap();
        assert_eq!(y.to_vec_f64(), fc.to_vec_f64().iter().map(|v| 2.0 * v).collect::<Vec<_>>());
    }
}
