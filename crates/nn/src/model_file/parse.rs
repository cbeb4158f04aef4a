//! Parsing a model file: the model's keys, the chains and the containers here; each layer
//! kind's keys by the kind ([`crate::layer::LayerKind::parse`], found by type name in the
//! registry).

use super::error::{ModelFileError, ModelFileErrors};
use super::init::INIT_KEYS;
use super::keys::{LayerFields, Parser, Span};
use super::suggest::closest;
use crate::init::LayerInit;
use crate::registry;
use crate::spec::{LayerSpec, Merge, ModelSpec, NamedLayer, article};
use std::path::Path;
use strata_core::{ConvAlgorithm, DType};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// What a bad `conv_algorithm` is told.
fn conv_algorithm_message() -> String {
    "`conv_algorithm` must be \"default\" (as accurate as PyTorch) or \"fast\" (Winograd F(4×4) on \
     large planes: faster, ~10× PyTorch's f32 rounding error)"
        .into()
}

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

const TOP_KEYS: [&str; 9] =
    ["name", "input", "input_dtype", "dtype", "conv_algorithm", "device", "init", "bias_init", "layers"];

impl Parser<'_> {
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
        let device = self.device(root);
        let init = self.layer_init(root, "the model", None, false);
        ModelSpec { name, input, input_dtype, dtype, conv_algorithm, layers, device, init }
    }

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
                format!("{} {ty} layer needs at least 2 branches, found {}", article(ty), a.len()),
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
        // Names seen in this chain, for the duplicate check: a map, since a linear search made
        // a file of 200,000 layers take minutes.
        let mut seen: std::collections::HashMap<String, Span> = std::collections::HashMap::with_capacity(a.len());
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
            if let Some(first) = seen.get(&name) {
                let first = self.origin(first);
                self.error(
                    name_span.clone(),
                    format!("two layers in this chain are named `{name}`"),
                    Some(format!("the first is at line {}; names must be unique within a chain (unnamed layers are named by position)", first.line)),
                );
            }
            seen.entry(name).or_insert(name_span);
            if let Some(layer) = self.layer(t, item.span(), i) {
                out.push(layer);
            }
        }
        out
    }

    fn layer(&mut self, t: &DeTable, span: Span, index: usize) -> Option<NamedLayer> {
        let types = registry::type_names();
        let ty = match t.get("type") {
            None => {
                self.error(
                    span,
                    "this layer has no `type`".into(),
                    Some(format!("add type = \"...\" with one of: {}", types.join(", "))),
                );
                return None;
            }
            Some(v) => match v.get_ref() {
                DeValue::String(s) if registry::kind(s).is_some() => s.to_string(),
                DeValue::String(s) => {
                    let help = match closest(s, &types) {
                        Some(c) => format!("did you mean `{c}`? Known layer types: {}", types.join(", ")),
                        None => format!("known layer types: {}", types.join(", ")),
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
        let kind = registry::kind(&ty)?;
        // Every layer and block may say where it runs.
        let allowed: Vec<&str> = kind.keys.iter().copied().chain(["device"]).collect();
        let meant = self.unknown_keys(t, &allowed, &format!("{} {ty} layer", article(&ty)));
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
        let spec = match kind.parse {
            Some(parse) => {
                let mut fields = LayerFields { parser: self, table: t, span: span.clone(), ty: &ty, meant };
                parse(&mut fields)?
            }
            None => self.container(t, &span, &ty, &meant)?,
        };
        let device = self.device(t);
        // A block's choice is its layers' default; a layer's own must fit it.
        let init = if kind.keys.iter().any(|k| INIT_KEYS.contains(k)) {
            let whom = format!("{} `{name}`", if spec.is_block() { "block" } else { "layer" });
            let targets = spec.layer().and_then(|l| l.init_targets());
            self.layer_init(t, &whom, targets, !spec.is_block())
        } else {
            LayerInit::default()
        };
        Some(NamedLayer { name, spec, origin: Some(self.origin(&span)), device, init })
    }

    /// A container's keys: `branches` (and `dim`) of an `Add` or `Concat`, `layers` (and
    /// `shortcut`) of a `Sequential` or `Residual`.
    fn container(&mut self, t: &DeTable, span: &Span, ty: &str, meant: &[String]) -> Option<LayerSpec> {
        if ty == "Add" || ty == "Concat" {
            let merge = match (ty, t.get("dim")) {
                ("Add", _) => Merge::Add,
                (_, Some(v)) => Merge::Concat { dim: self.int(v, "dim")? as isize },
                (_, None) => Merge::Concat { dim: 1 },
            };
            let branches = match t.get("branches") {
                Some(v) => self.branches(v, ty)?,
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
            return Some(LayerSpec::Branches { branches, merge });
        }
        match t.get("layers") {
            Some(v) if ty == "Residual" => {
                let body = self.layers(v, "`layers`");
                Some(LayerSpec::Residual { body, shortcut: t.get("shortcut").map(|s| self.layers(s, "`shortcut`")) })
            }
            Some(v) => Some(LayerSpec::Sequential(self.layers(v, "`layers`"))),
            None => {
                self.error(
                    span.clone(),
                    format!("this {ty} block has no `layers`"),
                    Some("add layers = [ ... ] with the block's layers".into()),
                );
                None
            }
        }
    }
}
