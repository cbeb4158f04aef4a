//! Declarative model files (TOML). SimpleNN in ten lines:
//!
//! ```toml
//! name = "SimpleNN"
//! input = [784]
//! layers = [
//!   { name = "fc1", type = "Linear", in_features = 784, out_features = 128 },
//!   { type = "ReLU" },
//!   { name = "fc2", type = "Linear", in_features = 128, out_features = 64 },
//!   { type = "ReLU" },
//!   { name = "fc3", type = "Linear", in_features = 64, out_features = 10 },
//! ]
//! ```
//!
//! A layer is a table with a `type` (PyTorch's class name), an optional `name` (else its
//! position, as in `nn.Sequential`) and the type's options; `type = "Sequential"` with its own
//! `layers` nests a block. `[[layers]]` array-of-tables syntax works too. Unknown keys, wrong
//! types and impossible values are errors with file, line and column, all reported at once.
//!
//! Types and keys are PyTorch's class names and constructor arguments: `Conv2d` (`in_channels`,
//! `out_channels`, `kernel_size`, `stride`, `padding`, `dilation`, `groups`, `bias`; sizes as an
//! int or an `[h, w]` pair), `MaxPool2d`, `AvgPool2d`, `AdaptiveAvgPool2d`, `BatchNorm1d`,
//! `BatchNorm2d` (`momentum = "None"` for a cumulative average), `LayerNorm`
//! (`normalized_shape` as an int or a list), `Embedding`, the activations, `RNN`, `LSTM`, `GRU`
//! and `LastStep`. `in_features`, `in_channels`, `num_features` and `input_size` may be left out
//! and are then inferred by the shape check.
//!
//! Branches applied to the same input and merged are `type = "Add"` (summed) or
//! `type = "Concat"` (joined along `dim`, default 1), with `branches = [[layers…], [layers…]]`;
//! an empty branch `[]` is the identity. A model fed token ids says `input_dtype = "i64"`; a
//! model in double precision (parameters, buffers and float activations) says `dtype = "f64"`.
//! `conv_algorithm = "fast"` lets every `Conv2d` use its fastest, less accurate algorithm
//! (`strata_core::ConvAlgorithm`).

use crate::branches::Merge;
use crate::spec::{BatchNormSpec, ConvSpec, LayerSpec, ModelSpec, NamedLayer, Origin, RecurrentKind, RecurrentSpec};
use std::fmt;
use std::path::Path;
use strata_core::{ConvAlgorithm, DType};

/// What a bad `conv_algorithm` is told.
fn conv_algorithm_message() -> String {
    "`conv_algorithm` must be \"default\" (as accurate as PyTorch) or \"fast\" (Winograd F(4×4) on \
     large planes: faster, ~10× PyTorch's f32 rounding error)"
        .into()
}
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem in a model file, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFileError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when the file could not be read at all).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    /// The offending source line, for display.
    pub source_line: String,
    /// How many characters to underline.
    pub width: usize,
}

impl fmt::Display for ModelFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if self.line == 0 {
            write!(f, "\n  --> {}", self.file)?;
        } else {
            let n = self.line.to_string();
            let pad = " ".repeat(n.len());
            write!(f, "\n{pad}--> {}:{}:{}", self.file, self.line, self.column)?;
            write!(f, "\n{pad} |\n{n} | {}", self.source_line)?;
            write!(f, "\n{pad} | {}{}", " ".repeat(self.column - 1), "^".repeat(self.width.max(1)))?;
        }
        if let Some(h) = &self.help {
            write!(f, "\n  = help: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in a model file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFileErrors(pub Vec<ModelFileError>);

impl fmt::Display for ModelFileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", parts.join("\n\n"))
    }
}

impl std::error::Error for ModelFileErrors {}

/// Reads and parses a model file.
pub fn load_model(path: &Path) -> Result<ModelSpec, ModelFileErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ModelFileErrors(vec![ModelFileError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the model file: {e}"),
            help: Some("check the path; examples/simple_nn.toml is a model file to start from".into()),
            source_line: String::new(),
            width: 0,
        }])
    })?;
    let default_name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    parse_model(&text, &file, &default_name)
}

/// Parses model-file text; `file` names it in errors, `default_name` is used when the file has
/// no `name`.
pub fn parse_model(text: &str, file: &str, default_name: &str) -> Result<ModelSpec, ModelFileErrors> {
    parse_model_at(text, file, default_name, None).map(|m| m.expect("the root is a table"))
}

/// Parses the model in table `key` of a larger TOML document (a run file's inline `[model]`),
/// with errors located in the whole file. `Ok(None)` when `key` is absent or not a table (a run
/// file may give a path there instead).
pub fn parse_model_at(
    text: &str,
    file: &str,
    default_name: &str,
    key: Option<&str>,
) -> Result<Option<ModelSpec>, ModelFileErrors> {
    let mut p = Parser::new(text, file);
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            p.error(span, format!("not valid TOML: {}", e.message().trim_end()), None);
            return Err(ModelFileErrors(p.errors));
        }
    };
    let spec = match key {
        None => p.model(root.get_ref(), root.span(), default_name),
        Some(k) => match root.get_ref().get(k).map(|v| (v.get_ref(), v.span())) {
            Some((DeValue::Table(t), span)) => p.model(t, span, default_name),
            _ => return Ok(None),
        },
    };
    if p.errors.is_empty() { Ok(Some(spec)) } else { Err(ModelFileErrors(p.errors)) }
}

/// The model file text for a spec: what `parse_model` reads back to an equal spec (without
/// origins). Checkpoints store it so `strata eval` can rebuild the model.
pub fn to_toml(spec: &ModelSpec) -> String {
    let mut s = format!("name = {:?}\n", spec.name);
    if let Some(input) = &spec.input {
        s.push_str(&format!("input = {input:?}\n"));
    }
    if spec.input_dtype != DType::F32 {
        s.push_str(&format!("input_dtype = {:?}\n", crate::check::dtype_name(spec.input_dtype)));
    }
    if spec.conv_algorithm != ConvAlgorithm::Default {
        s.push_str(&format!("conv_algorithm = {:?}\n", spec.conv_algorithm.name()));
    }
    if spec.dtype != DType::F32 {
        s.push_str(&format!("dtype = {:?}\n", crate::check::dtype_name(spec.dtype)));
    }
    s.push_str("layers = [\n");
    for l in &spec.layers {
        s.push_str(&format!("  {},\n", layer_toml(l)));
    }
    s.push_str("]\n");
    s
}

fn chain_toml(layers: &[NamedLayer]) -> String {
    layers.iter().map(layer_toml).collect::<Vec<_>>().join(", ")
}

fn layer_toml(l: &NamedLayer) -> String {
    let mut fields = vec![format!("name = {:?}", l.name), format!("type = {:?}", l.spec.type_name())];
    match &l.spec {
        LayerSpec::Linear { in_features, out_features, bias } => {
            if let Some(i) = in_features {
                fields.push(format!("in_features = {i}"));
            }
            fields.push(format!("out_features = {out_features}"));
            if !bias {
                fields.push("bias = false".into());
            }
        }
        LayerSpec::ReLU | LayerSpec::Sigmoid | LayerSpec::Tanh | LayerSpec::GELU => {}
        LayerSpec::Conv2d(c) => {
            if let Some(i) = c.in_channels {
                fields.push(format!("in_channels = {i}"));
            }
            fields.push(format!("out_channels = {}", c.out_channels));
            fields.push(format!("kernel_size = {}", pair_toml(c.kernel_size)));
            fields.push(format!("stride = {}", pair_toml(c.stride)));
            fields.push(format!("padding = {}", pair_toml(c.padding)));
            fields.push(format!("dilation = {}", pair_toml(c.dilation)));
            fields.push(format!("groups = {}", c.groups));
            fields.push(format!("bias = {}", c.bias));
        }
        LayerSpec::MaxPool2d { kernel_size, stride, padding, dilation } => {
            fields.push(format!("kernel_size = {}", pair_toml(*kernel_size)));
            fields.push(format!("stride = {}", pair_toml(*stride)));
            fields.push(format!("padding = {}", pair_toml(*padding)));
            fields.push(format!("dilation = {}", pair_toml(*dilation)));
        }
        LayerSpec::AvgPool2d { kernel_size, stride, padding, count_include_pad } => {
            fields.push(format!("kernel_size = {}", pair_toml(*kernel_size)));
            fields.push(format!("stride = {}", pair_toml(*stride)));
            fields.push(format!("padding = {}", pair_toml(*padding)));
            fields.push(format!("count_include_pad = {count_include_pad}"));
        }
        LayerSpec::AdaptiveAvgPool2d { output_size } => {
            fields.push(format!("output_size = {}", pair_toml(*output_size)))
        }
        LayerSpec::BatchNorm1d(b) | LayerSpec::BatchNorm2d(b) => {
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
        LayerSpec::LeakyReLU { negative_slope } => fields.push(format!("negative_slope = {negative_slope:?}")),
        LayerSpec::ELU { alpha } => fields.push(format!("alpha = {alpha:?}")),
        LayerSpec::Softmax { dim } | LayerSpec::LogSoftmax { dim } => fields.push(format!("dim = {dim}")),
        LayerSpec::Recurrent(r) => {
            if let Some(i) = r.input_size {
                fields.push(format!("input_size = {i}"));
            }
            fields.push(format!("hidden_size = {}", r.hidden_size));
            fields.push(format!("num_layers = {}", r.num_layers));
            fields.push(format!("bias = {}", r.bias));
            fields.push(format!("batch_first = {}", r.batch_first));
            fields.push(format!("bidirectional = {}", r.bidirectional));
            if r.kind == RecurrentKind::RnnRelu {
                fields.push("nonlinearity = \"relu\"".into());
            }
        }
        LayerSpec::LastStep { batch_first } => fields.push(format!("batch_first = {batch_first}")),
        LayerSpec::Dropout { p } => fields.push(format!("p = {p:?}")),
        LayerSpec::Flatten { start_dim, end_dim } => {
            fields.push(format!("start_dim = {start_dim}, end_dim = {end_dim}"))
        }
        LayerSpec::LayerNorm { normalized_shape, eps, elementwise_affine } => {
            fields.push(format!("normalized_shape = {normalized_shape:?}"));
            fields.push(format!("eps = {eps:?}"));
            fields.push(format!("elementwise_affine = {elementwise_affine}"));
        }
        LayerSpec::Embedding { num_embeddings, embedding_dim, padding_idx } => {
            fields.push(format!("num_embeddings = {num_embeddings}"));
            fields.push(format!("embedding_dim = {embedding_dim}"));
            if let Some(p) = padding_idx {
                fields.push(format!("padding_idx = {p}"));
            }
        }
        LayerSpec::Branches { branches, merge } => {
            if let Merge::Concat { dim } = merge {
                fields.push(format!("dim = {dim}"));
            }
            let chains: Vec<String> = branches.iter().map(|b| format!("[{}]", chain_toml(b))).collect();
            fields.push(format!("branches = [{}]", chains.join(", ")));
        }
        LayerSpec::Sequential(inner) => fields.push(format!("layers = [{}]", chain_toml(inner))),
        LayerSpec::Residual { body, shortcut } => {
            fields.push(format!("layers = [{}]", chain_toml(body)));
            if let Some(s) = shortcut {
                fields.push(format!("shortcut = [{}]", chain_toml(s)));
            }
        }
    }
    format!("{{ {} }}", fields.join(", "))
}

/// `3` or `[3, 2]`.
fn pair_toml((a, b): (usize, usize)) -> String {
    if a == b { a.to_string() } else { format!("[{a}, {b}]") }
}

const LAYER_TYPES: [&str; 27] = [
    "Linear",
    "ReLU",
    "Flatten",
    "Sequential",
    "Residual",
    "Add",
    "Concat",
    "LayerNorm",
    "Embedding",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Sigmoid",
    "Tanh",
    "GELU",
    "LeakyReLU",
    "ELU",
    "Softmax",
    "LogSoftmax",
    "RNN",
    "LSTM",
    "GRU",
    "LastStep",
    "Dropout",
];
const TOP_KEYS: [&str; 6] = ["name", "input", "input_dtype", "dtype", "conv_algorithm", "layers"];
/// Largest size accepted for a dimension or a layer width (larger is surely a typo).
const MAX_SIZE: i64 = 1 << 31;

fn keys_for(ty: &str) -> &'static [&'static str] {
    match ty {
        "Linear" => &["name", "type", "in_features", "out_features", "bias"],
        "Flatten" => &["name", "type", "start_dim", "end_dim"],
        "Sequential" => &["name", "type", "layers"],
        "Residual" => &["name", "type", "layers", "shortcut"],
        "Add" => &["name", "type", "branches"],
        "Concat" => &["name", "type", "branches", "dim"],
        "LayerNorm" => &["name", "type", "normalized_shape", "eps", "elementwise_affine"],
        "Embedding" => &["name", "type", "num_embeddings", "embedding_dim", "padding_idx"],
        "Conv2d" => &[
            "name",
            "type",
            "in_channels",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "groups",
            "bias",
        ],
        "MaxPool2d" => &["name", "type", "kernel_size", "stride", "padding", "dilation"],
        "AvgPool2d" => &["name", "type", "kernel_size", "stride", "padding", "count_include_pad"],
        "AdaptiveAvgPool2d" => &["name", "type", "output_size"],
        "BatchNorm1d" | "BatchNorm2d" => {
            &["name", "type", "num_features", "eps", "momentum", "affine", "track_running_stats"]
        }
        "LeakyReLU" => &["name", "type", "negative_slope"],
        "ELU" => &["name", "type", "alpha"],
        "Softmax" | "LogSoftmax" => &["name", "type", "dim"],
        "RNN" => &[
            "name",
            "type",
            "input_size",
            "hidden_size",
            "num_layers",
            "nonlinearity",
            "bias",
            "batch_first",
            "bidirectional",
        ],
        "LSTM" | "GRU" => {
            &["name", "type", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional"]
        }
        "LastStep" => &["name", "type", "batch_first"],
        "Dropout" => &["name", "type", "p"],
        _ => &["name", "type"],
    }
}

struct Parser<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<ModelFileError>,
    /// Byte offsets where each line starts: a position's line is a binary search away, so
    /// locating every layer keeps parsing linear in the file's size (counting newlines from the
    /// start each time made a file of 40,000 layers take 8 s).
    line_starts: Vec<usize>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, file: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Parser { text, file, errors: vec![], line_starts }
    }

    /// `(line number from 1, byte offset of that line's start)` of byte `start`.
    fn locate(&self, start: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= start).max(1);
        (line, self.line_starts[line - 1])
    }
}

type Span = std::ops::Range<usize>;

impl Parser<'_> {
    fn error(&mut self, span: Span, message: String, help: Option<String>) {
        let start = span.start.min(self.text.len());
        let (line, line_start) = self.locate(start);
        let line_end = self.text[start..].find('\n').map_or(self.text.len(), |i| start + i);
        let column = self.text[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        self.errors.push(ModelFileError {
            file: self.file.to_string(),
            line,
            column,
            message,
            help,
            source_line: self.text[line_start..line_end].trim_end().to_string(),
            width: self.text[start..end].chars().count(),
        });
    }

    fn origin(&self, span: &Span) -> Origin {
        let start = span.start.min(self.text.len());
        let (line, line_start) = self.locate(start);
        Origin { file: self.file.into(), line, column: self.text[line_start..start].chars().count() + 1 }
    }

    /// Reports keys not in `allowed`; returns the allowed keys they were probably meant to be,
    /// so a misspelt required key is not reported a second time as missing.
    fn unknown_keys(&mut self, table: &DeTable, allowed: &[&str], what: &str) -> Vec<String> {
        let mut meant = vec![];
        for (k, _) in table.iter() {
            let key = k.get_ref().as_ref();
            if !allowed.contains(&key) {
                let help = match closest(key, allowed) {
                    Some(c) => {
                        meant.push(c.to_string());
                        format!("did you mean `{c}`? {what} takes: {}", allowed.join(", "))
                    }
                    None => format!("{what} takes: {}", allowed.join(", ")),
                };
                self.error(k.span(), format!("unknown key `{key}` in {what}"), Some(help));
            }
        }
        meant
    }

    fn model(&mut self, root: &DeTable, span: Span, default_name: &str) -> ModelSpec {
        self.unknown_keys(root, &TOP_KEYS, "a model file");
        let name = self.string(root, "name").unwrap_or_else(|| default_name.to_string());
        let input = root.get("input").and_then(|v| self.sizes(v, "input"));
        let input_dtype = match root.get("input_dtype").map(|v| (v.get_ref(), v.span())) {
            None => DType::F32,
            Some((DeValue::String(d), _)) if d.as_ref() == "f32" => DType::F32,
            Some((DeValue::String(d), _)) if d.as_ref() == "i64" => DType::I64,
            Some((value, span)) => {
                let text = match value {
                    DeValue::String(d) => d.to_lowercase(),
                    _ => String::new(),
                };
                let help = if text.contains("int") || text.contains("long") {
                    Some("token ids are \"i64\" (PyTorch's torch.long)".to_string())
                } else if text.contains("float") || text.contains("f64") {
                    Some("float features are \"f32\" (the default)".to_string())
                } else {
                    None
                };
                self.error(
                    span,
                    "`input_dtype` must be \"f32\" (float features, the default) or \"i64\" (integer token ids, for an Embedding)".into(),
                    help,
                );
                DType::F32
            }
        };
        let layers = match root.get("layers") {
            Some(v) => self.layers(v, "`layers`"),
            None => {
                self.error(
                    span.start..span.start,
                    "the model file has no `layers`".into(),
                    Some("add `layers = [ { type = \"Linear\", in_features = 784, out_features = 10 } ]`".into()),
                );
                vec![]
            }
        };
        let dtype = match root.get("dtype").map(|v| (v.get_ref(), v.span())) {
            None => DType::F32,
            Some((DeValue::String(d), _)) if d.as_ref() == "f32" => DType::F32,
            Some((DeValue::String(d), _)) if d.as_ref() == "f64" => DType::F64,
            Some((_, span)) => {
                self.error(
                    span,
                    "`dtype` must be \"f32\" (the default) or \"f64\" (double precision, PyTorch's model.double())"
                        .into(),
                    None,
                );
                DType::F32
            }
        };
        let conv_algorithm = match root.get("conv_algorithm").map(|v| (v.get_ref(), v.span())) {
            None => ConvAlgorithm::Default,
            Some((DeValue::String(d), span)) => ConvAlgorithm::from_name(d).unwrap_or_else(|| {
                self.error(span, conv_algorithm_message(), None);
                ConvAlgorithm::Default
            }),
            Some((_, span)) => {
                self.error(span, conv_algorithm_message(), None);
                ConvAlgorithm::Default
            }
        };
        ModelSpec { name, input, input_dtype, dtype, conv_algorithm, layers }
    }

    fn string(&mut self, t: &DeTable, key: &str) -> Option<String> {
        let v = t.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.error(v.span(), format!("`{key}` must be a string, found {}", other.type_str()), None);
                None
            }
        }
    }

    fn int(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                let digits = digits.trim_start_matches(['0', 'x', 'o', 'b']).to_string();
                let (neg, body) = match i.as_str().strip_prefix('-') {
                    Some(b) => (true, b.replace('_', "")),
                    None => (false, i.as_str().trim_start_matches('+').replace('_', "")),
                };
                let body = if i.radix() == 10 { body } else { digits };
                match i64::from_str_radix(&body, i.radix()) {
                    Ok(n) => Some(if neg { -n } else { n }),
                    Err(_) => {
                        self.error(v.span(), format!("`{key}` is too large"), None);
                        None
                    }
                }
            }
            other => {
                self.error(v.span(), format!("`{key}` must be an integer, found {}", other.type_str()), None);
                None
            }
        }
    }

    fn positive(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<usize> {
        let n = self.int(v, key)?;
        if n <= 0 || n > MAX_SIZE {
            self.error(v.span(), format!("`{key}` must be a positive integer (at most {MAX_SIZE}), got {n}"), None);
            return None;
        }
        Some(n as usize)
    }

    /// A required key: reported as missing unless it was already reported as misspelt.
    fn required(&mut self, t: &DeTable, key: &str, meant: &[String], span: &Span, ty: &str) -> Option<usize> {
        match t.get(key) {
            Some(v) => self.positive(v, key),
            None if meant.iter().any(|m| m == key) => None,
            None => {
                self.error(
                    span.clone(),
                    format!("this {ty} layer has no `{key}`"),
                    Some(format!("add {key} = <size>")),
                );
                None
            }
        }
    }

    /// An optional size that, when given, must be valid: `Err(())` when it is given but bad.
    fn optional_size(&mut self, t: &DeTable, key: &str) -> Result<Option<usize>, ()> {
        match t.get(key) {
            None => Ok(None),
            Some(v) => self.positive(v, key).map(Some).ok_or(()),
        }
    }

    /// A boolean key with a default.
    fn boolean(&mut self, t: &DeTable, key: &str, default: bool) -> bool {
        match t.get(key) {
            None => default,
            Some(v) => match v.get_ref() {
                DeValue::Boolean(b) => *b,
                other => {
                    self.error(v.span(), format!("`{key}` must be true or false, found {}", other.type_str()), None);
                    default
                }
            },
        }
    }

    /// A number key (float or integer) with a default.
    fn float(&mut self, t: &DeTable, key: &str, default: f64) -> f64 {
        let Some(v) = t.get(key) else { return default };
        match v.get_ref() {
            DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
                Ok(x) if x.is_finite() => x,
                _ => {
                    self.error(v.span(), format!("`{key}` must be a finite number"), None);
                    default
                }
            },
            DeValue::Integer(_) => self.int(v, key).map_or(default, |i| i as f64),
            other => {
                self.error(v.span(), format!("`{key}` must be a number, found {}", other.type_str()), None);
                default
            }
        }
    }

    /// An int-or-`[h, w]` size with a default; `min` is the smallest value allowed (0 for padding).
    fn pair(&mut self, t: &DeTable, key: &str, default: (usize, usize), min: i64) -> (usize, usize) {
        let Some(v) = t.get(key) else { return default };
        let one = |p: &mut Self, x: &Spanned<DeValue>| -> Option<usize> {
            let n = p.int(x, key)?;
            if n < min || n > MAX_SIZE {
                p.error(x.span(), format!("`{key}` must be at least {min} (and at most {MAX_SIZE}), got {n}"), None);
                return None;
            }
            Some(n as usize)
        };
        match v.get_ref() {
            DeValue::Array(a) if a.len() == 2 => match (one(self, &a[0]), one(self, &a[1])) {
                (Some(h), Some(w)) => (h, w),
                _ => default,
            },
            DeValue::Integer(_) => one(self, v).map_or(default, |n| (n, n)),
            _ => {
                self.error(
                    v.span(),
                    format!("`{key}` must be an integer or an [height, width] pair such as [3, 3]"),
                    None,
                );
                default
            }
        }
    }

    fn sizes(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<Vec<usize>> {
        let DeValue::Array(a) = v.get_ref() else {
            self.error(
                v.span(),
                format!(
                    "`{key}` must be an array of sizes such as [784] or [1, 28, 28], found {}",
                    v.get_ref().type_str()
                ),
                None,
            );
            return None;
        };
        if a.is_empty() {
            self.error(v.span(), format!("`{key}` must list at least one size, e.g. [784]"), None);
            return None;
        }
        let dims: Vec<Option<usize>> = a.iter().map(|d| self.positive(d, key)).collect();
        dims.into_iter().collect()
    }

    /// The `branches` of an `Add` or `Concat`: at least two chains of layers.
    fn branches(&mut self, v: &Spanned<DeValue>, ty: &str) -> Option<Vec<Vec<NamedLayer>>> {
        let DeValue::Array(a) = v.get_ref() else {
            self.error(
                v.span(),
                format!(
                    "`branches` must be an array of branches, each an array of layers, found {}",
                    v.get_ref().type_str()
                ),
                Some("e.g. branches = [[{ type = \"Linear\", out_features = 64 }], []] ([] is the identity)".into()),
            );
            return None;
        };
        if a.len() < 2 {
            self.error(
                v.span(),
                format!("{} {ty} layer needs at least 2 branches, found {}", crate::spec::article(ty), a.len()),
                Some("each branch is an array of layers; [] is the identity".into()),
            );
            return None;
        }
        Some(a.iter().map(|b| self.layers(b, "a branch")).collect())
    }

    /// A chain of layers; `what` names it in messages (`` `layers` ``, `a branch`).
    fn layers(&mut self, v: &Spanned<DeValue>, what: &str) -> Vec<NamedLayer> {
        let DeValue::Array(a) = v.get_ref() else {
            self.error(
                v.span(),
                format!("{what} must be an array of layer tables, found {}", v.get_ref().type_str()),
                None,
            );
            return vec![];
        };
        let mut out: Vec<NamedLayer> = Vec::with_capacity(a.len());
        let mut seen: Vec<(String, Span)> = vec![];
        for (i, item) in a.iter().enumerate() {
            let DeValue::Table(t) = item.get_ref() else {
                self.error(
                    item.span(),
                    format!("a layer must be a table like {{ type = \"ReLU\" }}, found {}", item.get_ref().type_str()),
                    None,
                );
                continue;
            };
            let name_span = t.get("name").map(|n| n.span()).unwrap_or(item.span());
            let name = match t.get("name").map(|n| n.get_ref()) {
                Some(DeValue::String(n)) => n.to_string(),
                _ => i.to_string(),
            };
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                let first = self.origin(first);
                self.error(
                    name_span.clone(),
                    format!("two layers in this chain are named `{name}`"),
                    Some(format!("the first is at line {}; names must be unique within a chain (unnamed layers are named by position)", first.line)),
                );
            }
            seen.push((name, name_span));
            if let Some(layer) = self.layer(t, item.span(), i) {
                out.push(layer);
            }
        }
        out
    }

    fn layer(&mut self, t: &DeTable, span: Span, index: usize) -> Option<NamedLayer> {
        let ty = match t.get("type") {
            None => {
                self.error(
                    span,
                    "this layer has no `type`".into(),
                    Some(format!("add type = \"...\" with one of: {}", LAYER_TYPES.join(", "))),
                );
                return None;
            }
            Some(v) => match v.get_ref() {
                DeValue::String(s) if LAYER_TYPES.contains(&s.as_ref()) => s.to_string(),
                DeValue::String(s) => {
                    let help = match closest(s, &LAYER_TYPES) {
                        Some(c) => format!("did you mean `{c}`? Known layer types: {}", LAYER_TYPES.join(", ")),
                        None => format!("known layer types: {}", LAYER_TYPES.join(", ")),
                    };
                    self.error(v.span(), format!("unknown layer type `{s}`"), Some(help));
                    return None;
                }
                other => {
                    self.error(v.span(), format!("`type` must be a string, found {}", other.type_str()), None);
                    return None;
                }
            },
        };
        let meant = self.unknown_keys(t, keys_for(&ty), &format!("{} {ty} layer", crate::spec::article(&ty)));
        let name = match self.string(t, "name") {
            Some(n) => {
                if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    let s = t.get("name").map(|v| v.span()).unwrap_or(span.clone());
                    self.error(s, format!("layer name `{n}` is not allowed"), Some("use letters, digits and underscores (the name becomes part of parameter keys like fc1.weight)".into()));
                }
                n
            }
            None => index.to_string(),
        };
        let spec = match ty.as_str() {
            "Linear" => {
                let in_features = t.get("in_features").and_then(|v| self.positive(v, "in_features"));
                let out_features = match t.get("out_features") {
                    Some(v) => self.positive(v, "out_features"),
                    // Already reported as a misspelt key.
                    None if meant.iter().any(|m| m == "out_features") => None,
                    None => {
                        self.error(
                            span.clone(),
                            "this Linear layer has no `out_features`".into(),
                            Some("add out_features = <size of its output>".into()),
                        );
                        None
                    }
                };
                let bias = match t.get("bias") {
                    None => true,
                    Some(v) => match v.get_ref() {
                        DeValue::Boolean(b) => *b,
                        other => {
                            self.error(
                                v.span(),
                                format!("`bias` must be true or false, found {}", other.type_str()),
                                None,
                            );
                            true
                        }
                    },
                };
                if t.get("in_features").is_some() && in_features.is_none() {
                    return None;
                }
                LayerSpec::Linear { in_features, out_features: out_features?, bias }
            }
            "ReLU" => LayerSpec::ReLU,
            "Sigmoid" => LayerSpec::Sigmoid,
            "Tanh" => LayerSpec::Tanh,
            "GELU" => LayerSpec::GELU,
            "LeakyReLU" => LayerSpec::LeakyReLU { negative_slope: self.float(t, "negative_slope", 0.01) },
            "ELU" => LayerSpec::ELU { alpha: self.float(t, "alpha", 1.0) },
            "Softmax" | "LogSoftmax" => {
                let dim = match t.get("dim") {
                    Some(v) => self.int(v, "dim")? as isize,
                    None => {
                        self.error(
                            span.clone(),
                            format!("this {ty} layer has no `dim`"),
                            Some("add dim = 1 (the class dimension of [N, C] logits)".into()),
                        );
                        return None;
                    }
                };
                if ty == "Softmax" { LayerSpec::Softmax { dim } } else { LayerSpec::LogSoftmax { dim } }
            }
            "Conv2d" => {
                let in_channels = self.optional_size(t, "in_channels").ok()?;
                let out_channels = self.required(t, "out_channels", &meant, &span, &ty);
                let kernel_size = match t.get("kernel_size") {
                    Some(_) => Some(self.pair(t, "kernel_size", (1, 1), 1)),
                    None if meant.iter().any(|m| m == "kernel_size") => None,
                    None => {
                        self.error(
                            span.clone(),
                            "this Conv2d layer has no `kernel_size`".into(),
                            Some("add kernel_size = 3 (or [3, 3])".into()),
                        );
                        None
                    }
                };
                let mut c = ConvSpec::new(in_channels, out_channels?, kernel_size?);
                c.stride = self.pair(t, "stride", (1, 1), 1);
                c.padding = self.pair(t, "padding", (0, 0), 0);
                c.dilation = self.pair(t, "dilation", (1, 1), 1);
                c.groups = match t.get("groups") {
                    Some(v) => self.positive(v, "groups")?,
                    None => 1,
                };
                c.bias = self.boolean(t, "bias", true);
                LayerSpec::Conv2d(c)
            }
            "MaxPool2d" | "AvgPool2d" => {
                let kernel_size = match t.get("kernel_size") {
                    Some(_) => self.pair(t, "kernel_size", (1, 1), 1),
                    None if meant.iter().any(|m| m == "kernel_size") => return None,
                    None => {
                        self.error(
                            span.clone(),
                            format!("this {ty} layer has no `kernel_size`"),
                            Some("add kernel_size = 2 (or [2, 2])".into()),
                        );
                        return None;
                    }
                };
                let stride = self.pair(t, "stride", kernel_size, 1);
                let padding = self.pair(t, "padding", (0, 0), 0);
                if ty == "MaxPool2d" {
                    LayerSpec::MaxPool2d { kernel_size, stride, padding, dilation: self.pair(t, "dilation", (1, 1), 1) }
                } else {
                    LayerSpec::AvgPool2d {
                        kernel_size,
                        stride,
                        padding,
                        count_include_pad: self.boolean(t, "count_include_pad", true),
                    }
                }
            }
            "AdaptiveAvgPool2d" => match t.get("output_size") {
                Some(_) => LayerSpec::AdaptiveAvgPool2d { output_size: self.pair(t, "output_size", (1, 1), 1) },
                None if meant.iter().any(|m| m == "output_size") => return None,
                None => {
                    self.error(
                        span.clone(),
                        "this AdaptiveAvgPool2d layer has no `output_size`".into(),
                        Some("add output_size = 1 (global average pooling)".into()),
                    );
                    return None;
                }
            },
            "BatchNorm1d" | "BatchNorm2d" => {
                let mut b = BatchNormSpec::new(self.optional_size(t, "num_features").ok()?);
                b.eps = self.float(t, "eps", 1e-5);
                b.momentum = match t.get("momentum").map(|v| (v.get_ref(), v.span())) {
                    Some((DeValue::String(m), _)) if m.as_ref() == "None" => None,
                    Some((DeValue::String(_), sp)) => {
                        self.error(
                            sp,
                            "`momentum` must be a number, or \"None\" for a cumulative average".into(),
                            None,
                        );
                        Some(0.1)
                    }
                    _ => Some(self.float(t, "momentum", 0.1)),
                };
                b.affine = self.boolean(t, "affine", true);
                b.track_running_stats = self.boolean(t, "track_running_stats", true);
                if ty == "BatchNorm1d" { LayerSpec::BatchNorm1d(b) } else { LayerSpec::BatchNorm2d(b) }
            }
            "RNN" | "LSTM" | "GRU" => {
                let input_size = self.optional_size(t, "input_size").ok()?;
                let hidden_size = self.required(t, "hidden_size", &meant, &span, &ty);
                let kind = match ty.as_str() {
                    "LSTM" => RecurrentKind::Lstm,
                    "GRU" => RecurrentKind::Gru,
                    _ => match t.get("nonlinearity").map(|v| (v.get_ref(), v.span())) {
                        None => RecurrentKind::RnnTanh,
                        Some((DeValue::String(n), _)) if n.as_ref() == "tanh" => RecurrentKind::RnnTanh,
                        Some((DeValue::String(n), _)) if n.as_ref() == "relu" => RecurrentKind::RnnRelu,
                        Some((_, sp)) => {
                            self.error(sp, "`nonlinearity` must be \"tanh\" or \"relu\"".into(), None);
                            RecurrentKind::RnnTanh
                        }
                    },
                };
                let mut r = RecurrentSpec::new(kind, input_size, hidden_size?);
                r.num_layers = match t.get("num_layers") {
                    Some(v) => self.positive(v, "num_layers")?,
                    None => 1,
                };
                r.bias = self.boolean(t, "bias", true);
                r.batch_first = self.boolean(t, "batch_first", false);
                r.bidirectional = self.boolean(t, "bidirectional", false);
                LayerSpec::Recurrent(r)
            }
            "LastStep" => LayerSpec::LastStep { batch_first: self.boolean(t, "batch_first", true) },
            "LayerNorm" => {
                let normalized_shape = match t.get("normalized_shape") {
                    Some(v) if matches!(v.get_ref(), DeValue::Integer(_)) => {
                        vec![self.positive(v, "normalized_shape")?]
                    }
                    Some(v) => self.sizes(v, "normalized_shape")?,
                    None if meant.iter().any(|m| m == "normalized_shape") => return None,
                    None => {
                        self.error(
                            span.clone(),
                            "this LayerNorm layer has no `normalized_shape`".into(),
                            Some("add normalized_shape = 64 (the size of the last dimension), or [28, 64] for the last two".into()),
                        );
                        return None;
                    }
                };
                let eps = self.float(t, "eps", 1e-5);
                if eps < 0.0 {
                    let span = t.get("eps").map(|v| v.span()).unwrap_or(span.clone());
                    self.error(span, format!("`eps` must be at least 0, got {eps}"), None);
                }
                LayerSpec::LayerNorm {
                    normalized_shape,
                    eps,
                    elementwise_affine: self.boolean(t, "elementwise_affine", true),
                }
            }
            "Embedding" => {
                let num_embeddings = self.required(t, "num_embeddings", &meant, &span, &ty);
                let embedding_dim = self.required(t, "embedding_dim", &meant, &span, &ty);
                let padding_idx = match (t.get("padding_idx"), num_embeddings) {
                    (Some(v), Some(n)) => {
                        let (p, n) = (self.int(v, "padding_idx")?, n as i64);
                        if p >= n || p < -n {
                            self.error(
                                v.span(),
                                format!("`padding_idx` must be within num_embeddings ({n}), got {p}"),
                                Some("a row of the table; negative values count from the end, as in PyTorch".into()),
                            );
                            return None;
                        }
                        // PyTorch keeps the non-negative form too.
                        Some(if p < 0 { p + n } else { p } as usize)
                    }
                    _ => None,
                };
                LayerSpec::Embedding { num_embeddings: num_embeddings?, embedding_dim: embedding_dim?, padding_idx }
            }
            "Add" | "Concat" => {
                let merge = match (ty.as_str(), t.get("dim")) {
                    ("Add", _) => Merge::Add,
                    (_, Some(v)) => Merge::Concat { dim: self.int(v, "dim")? as isize },
                    (_, None) => Merge::Concat { dim: 1 },
                };
                let branches = match t.get("branches") {
                    Some(v) => self.branches(v, &ty)?,
                    None if meant.iter().any(|m| m == "branches") => return None,
                    None => {
                        self.error(
                            span.clone(),
                            format!("this {ty} layer has no `branches`"),
                            Some("add branches = [[ layers of the first branch ], [ layers of the second ]] ([] is the identity)".into()),
                        );
                        return None;
                    }
                };
                LayerSpec::Branches { branches, merge }
            }
            "Dropout" => {
                let p = self.float(t, "p", 0.5);
                if !(0.0..1.0).contains(&p) {
                    let span = t.get("p").map(|v| v.span()).unwrap_or(span.clone());
                    self.error(
                        span,
                        format!("`p` must be in [0, 1), got {p}"),
                        Some("p is the probability of zeroing a value".into()),
                    );
                    return None;
                }
                LayerSpec::Dropout { p }
            }
            "Flatten" => {
                let start_dim = t.get("start_dim").and_then(|v| self.int(v, "start_dim")).unwrap_or(1);
                let end_dim = t.get("end_dim").and_then(|v| self.int(v, "end_dim")).unwrap_or(-1);
                LayerSpec::Flatten { start_dim: start_dim as isize, end_dim: end_dim as isize }
            }
            _ => match t.get("layers") {
                Some(v) if ty == "Residual" => {
                    let body = self.layers(v, "`layers`");
                    LayerSpec::Residual { body, shortcut: t.get("shortcut").map(|s| self.layers(s, "`shortcut`")) }
                }
                Some(v) => LayerSpec::Sequential(self.layers(v, "`layers`")),
                None => {
                    self.error(
                        span.clone(),
                        format!("this {ty} block has no `layers`"),
                        Some("add layers = [ ... ] with the block's layers".into()),
                    );
                    return None;
                }
            },
        };
        Some(NamedLayer { name, spec, origin: Some(self.origin(&span)) })
    }
}

/// The allowed word closest to `word` by edit distance, if it is close enough to be a typo.
fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    allowed
        .iter()
        .map(|a| (edit_distance(&lower, &a.to_lowercase()), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_toml_round_trips() {
        let text = "name = \"m\"\ninput = [1, 4, 4]\n[[layers]]\ntype = \"Flatten\"\n[[layers]]\nname = \"b\"\ntype = \"Sequential\"\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 16, out_features = 3, bias = false }, { type = \"ReLU\" }]\n";
        let spec = parse_model(text, "t.toml", "m").unwrap();
        let again = parse_model(&to_toml(&spec), "u.toml", "x").unwrap();
        let strip = |s: &ModelSpec| {
            let mut s = s.clone();
            fn clear(l: &mut [NamedLayer]) {
                for x in l {
                    x.origin = None;
                    if let LayerSpec::Sequential(inner) = &mut x.spec {
                        clear(inner);
                    }
                }
            }
            clear(&mut s.layers);
            s
        };
        assert_eq!(strip(&spec), strip(&again));
    }

    #[test]
    fn dtype_and_conv_algorithm_are_read_written_and_checked() {
        let text = "dtype = \"f64\"\nconv_algorithm = \"fast\"\nlayers = [{ type = \"Conv2d\", in_channels = 1, out_channels = 2, kernel_size = 3 }]\n";
        let spec = parse_model(text, "t.toml", "m").unwrap();
        assert_eq!((spec.dtype, spec.conv_algorithm), (DType::F64, ConvAlgorithm::Fast));
        let again = parse_model(&to_toml(&spec), "u.toml", "m").unwrap();
        assert_eq!((again.dtype, again.conv_algorithm), (DType::F64, ConvAlgorithm::Fast));
        let model = spec.build().unwrap();
        assert!(crate::Module::parameters(&model).iter().all(|p| p.dtype() == DType::F64));
        let plain = parse_model("layers = []\n", "t.toml", "m").unwrap();
        assert_eq!((plain.dtype, plain.conv_algorithm), (DType::F32, ConvAlgorithm::Default));
        assert!(!to_toml(&plain).contains("dtype") && !to_toml(&plain).contains("conv_algorithm"));
        let e = parse_model("dtype = \"f16\"\nconv_algorithm = \"winograd\"\nlayers = []\n", "bad.toml", "m")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.toml:1:9") && e.contains("`dtype` must be \"f32\""), "{e}");
        assert!(e.contains("bad.toml:2:18") && e.contains("`conv_algorithm` must be \"default\""), "{e}");
    }
}
