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

use crate::spec::{LayerSpec, ModelSpec, NamedLayer, Origin};
use std::fmt;
use std::path::Path;
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
    let mut p = Parser { text, file, errors: vec![] };
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
        LayerSpec::ReLU => {}
        LayerSpec::Flatten { start_dim, end_dim } => {
            fields.push(format!("start_dim = {start_dim}, end_dim = {end_dim}"))
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

const LAYER_TYPES: [&str; 5] = ["Linear", "ReLU", "Flatten", "Sequential", "Residual"];
const TOP_KEYS: [&str; 3] = ["name", "input", "layers"];
/// Largest size accepted for a dimension or a layer width (larger is surely a typo).
const MAX_SIZE: i64 = 1 << 31;

fn keys_for(ty: &str) -> &'static [&'static str] {
    match ty {
        "Linear" => &["name", "type", "in_features", "out_features", "bias"],
        "Flatten" => &["name", "type", "start_dim", "end_dim"],
        "Sequential" => &["name", "type", "layers"],
        "Residual" => &["name", "type", "layers", "shortcut"],
        _ => &["name", "type"],
    }
}

struct Parser<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<ModelFileError>,
}

type Span = std::ops::Range<usize>;

impl Parser<'_> {
    fn error(&mut self, span: Span, message: String, help: Option<String>) {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..].find('\n').map_or(self.text.len(), |i| start + i);
        let line = self.text[..start].matches('\n').count() + 1;
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
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        Origin {
            file: self.file.into(),
            line: self.text[..start].matches('\n').count() + 1,
            column: self.text[line_start..start].chars().count() + 1,
        }
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
        let layers = match root.get("layers") {
            Some(v) => self.layers(v),
            None => {
                self.error(
                    span.start..span.start,
                    "the model file has no `layers`".into(),
                    Some("add `layers = [ { type = \"Linear\", in_features = 784, out_features = 10 } ]`".into()),
                );
                vec![]
            }
        };
        ModelSpec { name, input, layers }
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

    fn layers(&mut self, v: &Spanned<DeValue>) -> Vec<NamedLayer> {
        let DeValue::Array(a) = v.get_ref() else {
            self.error(
                v.span(),
                format!("`layers` must be an array of layer tables, found {}", v.get_ref().type_str()),
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
        let meant = self.unknown_keys(t, keys_for(&ty), &format!("a {ty} layer"));
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
            "Flatten" => {
                let start_dim = t.get("start_dim").and_then(|v| self.int(v, "start_dim")).unwrap_or(1);
                let end_dim = t.get("end_dim").and_then(|v| self.int(v, "end_dim")).unwrap_or(-1);
                LayerSpec::Flatten { start_dim: start_dim as isize, end_dim: end_dim as isize }
            }
            _ => match t.get("layers") {
                Some(v) if ty == "Residual" => {
                    LayerSpec::Residual { body: self.layers(v), shortcut: t.get("shortcut").map(|s| self.layers(s)) }
                }
                Some(v) => LayerSpec::Sequential(self.layers(v)),
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
}
