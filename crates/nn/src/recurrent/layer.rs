//! `RNN`, `LSTM` and `GRU` as layer kinds: [`RecurrentSpec`] (PyTorch's arguments and defaults)
//! is the config; its shape rule, parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`, …),
//! MACs, model-file keys and build are here. The modules are in `rnn.rs`, `lstm.rs`, `gru.rs`.

use super::{GRU, LSTM, Nonlinearity, RNN, RecurrentOptions};
use crate::Result;
use crate::check::context::CheckContext;
use crate::check::error::{LayerRef, Producer, ShapeErrorKind};
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, fixed, saturating_product};
use crate::init::InitTargets;
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes};
use crate::model_file::keys::LayerFields;
use crate::module::Module;
use crate::spec::{LayerSpec, RecurrentKind, RecurrentSpec};
use strata_core::with_default_generator;

/// `type = "RNN"`: `input_size` (inferred when left out), `hidden_size`, `num_layers`,
/// `nonlinearity` (`"tanh"` or `"relu"`), `bias`, `batch_first`, `dropout` (in `[0, 1)`, between
/// stacked layers), `bidirectional`.
pub static RNN_KIND: LayerKind = LayerKind {
    type_name: "RNN",
    keys: &[
        "name",
        "type",
        "input_size",
        "hidden_size",
        "num_layers",
        "nonlinearity",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "init",
        "bias_init",
    ],
    layer_of: None,
    parse: Some(parse_recurrent),
};
/// The keys of `LSTM` and `GRU` (`RNN` adds `nonlinearity`).
const RECURRENT_KEYS: [&str; 11] = [
    "name",
    "type",
    "input_size",
    "hidden_size",
    "num_layers",
    "bias",
    "batch_first",
    "dropout",
    "bidirectional",
    "init",
    "bias_init",
];

/// `type = "LSTM"`: as `RNN` without `nonlinearity`.
pub static LSTM_KIND: LayerKind =
    LayerKind { type_name: "LSTM", keys: &RECURRENT_KEYS, layer_of: None, parse: Some(parse_recurrent) };
/// `type = "GRU"`: as `RNN` without `nonlinearity`.
pub static GRU_KIND: LayerKind =
    LayerKind { type_name: "GRU", keys: &RECURRENT_KEYS, layer_of: None, parse: Some(parse_recurrent) };

fn parse_recurrent(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    use toml::de::DeValue;
    let input_size = f.optional_size("input_size")?;
    let hidden_size = f.required("hidden_size");
    let kind = match f.ty {
        "LSTM" => RecurrentKind::Lstm,
        "GRU" => RecurrentKind::Gru,
        _ => match f.get("nonlinearity").map(|v| (v.get_ref(), v.span())) {
            None => RecurrentKind::RnnTanh,
            Some((DeValue::String(n), _)) if n.as_ref() == "tanh" => RecurrentKind::RnnTanh,
            Some((DeValue::String(n), _)) if n.as_ref() == "relu" => RecurrentKind::RnnRelu,
            Some((_, sp)) => {
                f.error(sp, "`nonlinearity` must be \"tanh\" or \"relu\"".into(), None);
                RecurrentKind::RnnTanh
            }
        },
    };
    let mut r = RecurrentSpec::new(kind, input_size, hidden_size?);
    r.num_layers = match f.get("num_layers") {
        Some(_) => f.positive("num_layers")?,
        None => 1,
    };
    r.bias = f.boolean("bias", true);
    r.batch_first = f.boolean("batch_first", false);
    r.bidirectional = f.boolean("bidirectional", false);
    r.dropout = f.float("dropout", 0.0);
    if !(0.0..1.0).contains(&r.dropout) {
        let span = f.span_of("dropout");
        f.error(
            span,
            format!("`dropout` must be in [0, 1), got {}", r.dropout),
            Some("dropout is the probability of zeroing a value between stacked layers".into()),
        );
        return None;
    }
    Some(LayerSpec::Recurrent(r))
}

/// A recurrent layer in a model spec.
///
/// # Shapes
/// - input: `[N, T, input_size]` (batch first) or `[T, N, input_size]`
/// - output: the same with `D·hidden_size` features (`D` = 2 when bidirectional)
/// - parameters: per layer `k` and direction, `weight_ih_l{k}` `[G·H, in_k]`, `weight_hh_l{k}`
///   `[G·H, H]`, `bias_ih_l{k}`, `bias_hh_l{k}` `[G·H]` (`_reverse` for the second direction;
///   `G` = 1, 4, 3 gates for RNN, LSTM, GRU)
impl Layer for RecurrentSpec {
    fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    fn describe(&self) -> String {
        let mut s = match self.input_size {
            Some(i) => format!("{}({}, {}", self.type_name(), Dim::Fixed(i), self.hidden_size),
            None => format!("{}(?, {}", self.type_name(), self.hidden_size),
        };
        if self.num_layers != 1 {
            s.push_str(&format!(", num_layers={}", self.num_layers));
        }
        if self.kind == RecurrentKind::RnnRelu {
            s.push_str(", nonlinearity='relu'");
        }
        if !self.bias {
            s.push_str(", bias=False");
        }
        if self.batch_first {
            s.push_str(", batch_first=True");
        }
        s.push_str(&super::dropout_repr(self.dropout, self.num_layers));
        if self.bidirectional {
            s.push_str(", bidirectional=True");
        }
        s.push(')');
        s
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let (kind, out, path) = (self.type_name(), self.output_features(), cx.path);
        if x.rank() != 3 {
            let mut fixes = vec![];
            let layout = if self.batch_first { "[N, T, features]" } else { "[T, N, features]" };
            if x.rank() == 4 && x.0[1] == Dim::Fixed(1) {
                fixes.push(Fix {
                    text: format!(
                        "insert Flatten(start_dim=1, end_dim=2) before {path} (it turns {x} into [N, {}, {}]: rows as time steps)",
                        fixed(x, 2),
                        fixed(x, 3)
                    ),
                    edits: vec![Edit::InsertBefore {
                        path: path.into(),
                        name: "flatten".into(),
                        spec: LayerSpec::Flatten { start_dim: 1, end_dim: 2 },
                    }],
                });
            } else if let (2, Producer::Input, Some(f), Some(i)) = (x.rank(), &*cx.producer, x.last(), self.input_size)
                && f.is_multiple_of(i)
            {
                let sample = vec![f / i, i];
                fixes.push(Fix {
                    text: format!("feed sequences of {} steps of {i} features: input {sample:?}", f / i),
                    edits: vec![Edit::SetInput { sample }],
                });
            }
            let needs = format!(
                "{layout}: a batch of sequences ({kind} reads dimension {} as time)",
                if self.batch_first { 1 } else { 0 }
            );
            cx.fail(ShapeErrorKind::TooFewDims { needs }, fixes);
            return SymShape(vec![x.0[0], Dim::Fixed(1), Dim::Fixed(out)]);
        }
        let got = fixed(x, 2);
        match self.input_size {
            None => self.input_size = Some(got),
            Some(expected) if expected == got => {}
            Some(expected) => {
                let mut fixes = vec![Fix {
                    text: format!("make {path} {kind}({got}, {})", self.hidden_size),
                    edits: vec![Edit::SetInputSize { path: path.into(), value: got }],
                }];
                fixes.extend(cx.feature_producer_fix(x, expected));
                let producer = cx.producer.clone();
                cx.fail(ShapeErrorKind::FeatureMismatch { expected, got, producer }, fixes);
            }
        }
        x.with_last(out)
    }

    fn produces(&self, layer: &LayerRef) -> Option<Producer> {
        Some(Producer::Recurrent(layer.clone(), self.directions()))
    }

    fn expected_features(&self) -> Option<usize> {
        self.input_size
    }

    fn init_targets(&self) -> Option<InitTargets> {
        Some(InitTargets { weight_dims: 2, bias: self.bias, inherits: true })
    }

    fn parameter_shapes(&self) -> Option<TensorShapes> {
        let gh = self.kind.gates() * self.hidden_size;
        let mut p = vec![];
        for k in 0..self.num_layers {
            let input = self.layer_input(k)?;
            for dir in 0..self.directions() {
                let sfx = format!("l{k}{}", if dir == 1 { "_reverse" } else { "" });
                p.push((format!("weight_ih_{sfx}"), vec![gh, input]));
                p.push((format!("weight_hh_{sfx}"), vec![gh, self.hidden_size]));
                if self.bias {
                    p.push((format!("bias_ih_{sfx}"), vec![gh]));
                    p.push((format!("bias_hh_{sfx}"), vec![gh]));
                }
            }
        }
        Some(p)
    }

    /// Input and hidden projections at every step: T·Σ_k D·G·H·(in_k + H).
    fn macs(&self, output: &SymShape) -> usize {
        let steps: usize = output.sample().map_or(1, |s| saturating_product(&s[..s.len().saturating_sub(1)]));
        let per_step: usize = (0..self.num_layers)
            .map(|k| {
                saturating_product(&[
                    self.directions(),
                    self.kind.gates(),
                    self.hidden_size,
                    self.layer_input(k).unwrap_or(0).saturating_add(self.hidden_size),
                ])
            })
            .fold(0, usize::saturating_add);
        steps.saturating_mul(per_step)
    }

    fn has_inferred(&self) -> bool {
        self.input_size.is_none()
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        let i = self.input_size.ok_or_else(|| cx.unknown("input_size"))?;
        let opts = RecurrentOptions::new()
            .num_layers(self.num_layers)
            .bias(self.bias)
            .batch_first(self.batch_first)
            .dropout(self.dropout)
            .bidirectional(self.bidirectional)
            .dtype(cx.dtype);
        let h = self.hidden_size;
        with_default_generator(|g| -> Result<Box<dyn Module>> {
            Ok(match self.kind {
                RecurrentKind::RnnTanh => Box::new(RNN::with_options(i, h, Nonlinearity::Tanh, opts, g)?),
                RecurrentKind::RnnRelu => Box::new(RNN::with_options(i, h, Nonlinearity::Relu, opts, g)?),
                RecurrentKind::Lstm => Box::new(LSTM::with_options(i, h, opts, g)?),
                RecurrentKind::Gru => Box::new(GRU::with_options(i, h, opts, g)?),
            })
        })
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        if let Some(i) = self.input_size {
            fields.push(format!("input_size = {i}"));
        }
        fields.push(format!("hidden_size = {}", self.hidden_size));
        fields.push(format!("num_layers = {}", self.num_layers));
        fields.push(format!("bias = {}", self.bias));
        fields.push(format!("batch_first = {}", self.batch_first));
        // Written only when set, so files from before the option read and write back unchanged.
        if self.dropout != 0.0 {
            fields.push(format!("dropout = {:?}", self.dropout));
        }
        fields.push(format!("bidirectional = {}", self.bidirectional));
        if self.kind == RecurrentKind::RnnRelu {
            fields.push("nonlinearity = \"relu\"".into());
        }
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetInputSize { value, .. } => self.input_size = Some(*value),
            Edit::SetHiddenSize { value, .. } => self.hidden_size = *value,
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Recurrent(self.clone())
    }
}
