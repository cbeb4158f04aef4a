//! Reading a layer table's keys with their types checked: the parser's state (the text, the
//! errors so far) and the typed readers every layer kind uses through [`LayerFields`].

use super::error::ModelFileError;
use super::suggest::closest;
use crate::spec::Origin;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Largest size accepted for a dimension or a layer width (larger is surely a typo).
pub const MAX_SIZE: i64 = 1 << 31;

/// The parser's state: the text (for locating errors), the file name and the errors so far.
pub struct Parser<'a> {
    text: &'a str,
    file: &'a str,
    pub(crate) errors: Vec<ModelFileError>,
    /// Byte offsets where each line starts: a position's line is a binary search away, so
    /// locating every layer keeps parsing linear in the file's size (counting newlines from the
    /// start each time made a file of 40,000 layers take 8 s).
    line_starts: Vec<usize>,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(text: &'a str, file: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Parser { text, file, errors: vec![], line_starts }
    }

    /// `(line number from 1, byte offset of that line's start)` of byte `start`.
    pub(crate) fn locate(&self, start: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= start).max(1);
        (line, self.line_starts[line - 1])
    }
}

/// A byte range of the text.
pub type Span = std::ops::Range<usize>;

impl Parser<'_> {
    pub(crate) fn error(&mut self, span: Span, message: String, help: Option<String>) {
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

    pub(crate) fn origin(&self, span: &Span) -> Origin {
        let start = span.start.min(self.text.len());
        let (line, line_start) = self.locate(start);
        Origin { file: self.file.into(), line, column: self.text[line_start..start].chars().count() + 1 }
    }

    /// Reports keys not in `allowed`; returns the allowed keys they were probably meant to be,
    /// so a misspelt required key is not reported a second time as missing.
    pub(crate) fn unknown_keys(&mut self, table: &DeTable, allowed: &[&str], what: &str) -> Vec<String> {
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
    /// The `device` key of a layer, a block or the model (`"cpu"`, `"gpu"`, `"gpu:N"`), if set
    /// and well formed; whether that device exists is the shape check's question.
    pub(crate) fn device(&mut self, t: &DeTable) -> Option<strata_core::Device> {
        let text = self.string(t, "device")?;
        match text.parse() {
            Ok(d) => Some(d),
            Err(message) => {
                let span = t.get("device").map(|v| v.span()).unwrap_or_default();
                self.error(span, message, Some("`strata devices` lists this machine's devices".into()));
                None
            }
        }
    }

    pub(crate) fn string(&mut self, t: &DeTable, key: &str) -> Option<String> {
        let v = t.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.error(v.span(), format!("`{key}` must be a string, found {}", other.type_str()), None);
                None
            }
        }
    }

    pub(crate) fn int(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => {
                // For TOML's other radixes the text is the digits without `0x`/`0o`/`0b` (and
                // without a sign): nothing to strip (`0xb1` is 177; stripping leading `b`s read 1).
                let digits = i.as_str().replace('_', "");
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

    pub(crate) fn positive(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<usize> {
        let n = self.int(v, key)?;
        if n <= 0 || n > MAX_SIZE {
            self.error(v.span(), format!("`{key}` must be a positive integer (at most {MAX_SIZE}), got {n}"), None);
            return None;
        }
        Some(n as usize)
    }

    /// A required key: reported as missing unless it was already reported as misspelt.
    pub(crate) fn required(
        &mut self,
        t: &DeTable,
        key: &str,
        meant: &[String],
        span: &Span,
        ty: &str,
    ) -> Option<usize> {
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
    pub(crate) fn optional_size(&mut self, t: &DeTable, key: &str) -> Result<Option<usize>, ()> {
        match t.get(key) {
            None => Ok(None),
            Some(v) => self.positive(v, key).map(Some).ok_or(()),
        }
    }

    /// A boolean key with a default.
    pub(crate) fn boolean(&mut self, t: &DeTable, key: &str, default: bool) -> bool {
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
    pub(crate) fn float(&mut self, t: &DeTable, key: &str, default: f64) -> f64 {
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
    pub(crate) fn pair(&mut self, t: &DeTable, key: &str, default: (usize, usize), min: i64) -> (usize, usize) {
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

    pub(crate) fn sizes(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<Vec<usize>> {
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
}

/// `3` or `[3, 2]`.
pub fn pair_toml((a, b): (usize, usize)) -> String {
    if a == b { a.to_string() } else { format!("[{a}, {b}]") }
}

/// One layer table while its kind reads it: the parser, the table, where it is, its type and
/// the keys already reported as misspelt (so they are not reported again as missing).
pub struct LayerFields<'p, 'a> {
    pub(crate) parser: &'p mut Parser<'a>,
    pub(crate) table: &'p DeTable<'p>,
    /// The table's span (errors about a missing key point at it).
    pub span: Span,
    /// The layer's `type`.
    pub ty: &'p str,
    pub(crate) meant: Vec<String>,
}

impl<'p, 'a> LayerFields<'p, 'a> {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'p Spanned<DeValue<'p>>> {
        self.table.get(key)
    }

    /// Whether a misspelt key was already reported as probably meaning `key`.
    pub fn meant(&self, key: &str) -> bool {
        self.meant.iter().any(|m| m == key)
    }

    /// Reports an error at `span`.
    pub fn error(&mut self, span: Span, message: String, help: Option<String>) {
        self.parser.error(span, message, help);
    }

    /// Reports that the layer lacks `key` (pointing at the table), with a help line.
    pub fn missing(&mut self, key: &str, help: &str) {
        let span = self.span.clone();
        let ty = self.ty;
        self.parser.error(span, format!("this {ty} layer has no `{key}`"), Some(help.into()));
    }

    /// The span of `key`'s value, or of the table when it is absent.
    pub fn span_of(&self, key: &str) -> Span {
        self.table.get(key).map(|v| v.span()).unwrap_or(self.span.clone())
    }

    /// An integer key's value (any sign); errors reported.
    pub fn int(&mut self, key: &str) -> Option<i64> {
        let v = self.table.get(key)?;
        self.parser.int(v, key)
    }

    /// A positive size at `key` (at most [`MAX_SIZE`]); `None` when absent or bad.
    pub fn positive(&mut self, key: &str) -> Option<usize> {
        let v = self.table.get(key)?;
        self.parser.positive(v, key)
    }

    /// A required size: reported as missing unless it was already reported as misspelt.
    pub fn required(&mut self, key: &str) -> Option<usize> {
        self.parser.required(self.table, key, &self.meant, &self.span, self.ty)
    }

    /// An optional size that, when given, must be valid: `Some(None)` when absent, `None` when
    /// it is given but bad (already reported).
    pub fn optional_size(&mut self, key: &str) -> Option<Option<usize>> {
        self.parser.optional_size(self.table, key).ok()
    }

    /// A boolean key with a default.
    pub fn boolean(&mut self, key: &str, default: bool) -> bool {
        self.parser.boolean(self.table, key, default)
    }

    /// A number key (float or integer) with a default.
    pub fn float(&mut self, key: &str, default: f64) -> f64 {
        self.parser.float(self.table, key, default)
    }

    /// An int-or-`[h, w]` size with a default; `min` is the smallest value allowed.
    pub fn pair(&mut self, key: &str, default: (usize, usize), min: i64) -> (usize, usize) {
        self.parser.pair(self.table, key, default, min)
    }

    /// A list of positive sizes at `key` (present).
    pub fn sizes(&mut self, key: &str) -> Option<Vec<usize>> {
        let v = self.table.get(key)?;
        self.parser.sizes(v, key)
    }
}
