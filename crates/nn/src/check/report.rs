//! The result of a check — the trace (one row per layer) and every error — and its rendering
//! as a table.

use super::error::{LayerRef, ShapeError};
use super::shape::{SymShape, dtype_name};
use crate::spec::{LayerSpec, ModelSpec};
use strata_core::{DType, Device};

/// One row of the shape trace: a layer, what it receives and what it produces.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRow {
    /// The layer.
    pub layer: LayerRef,
    /// Nesting depth (0 at the top level).
    pub depth: usize,
    /// Position label like `2.1` for nested layers.
    pub position_label: String,
    /// Its input.
    pub input: SymShape,
    /// Its output (the intended one when it has an error).
    pub output: SymShape,
    /// The resolved spec (inferred sizes filled in).
    pub spec: LayerSpec,
    /// Index into the report's errors when this layer has one.
    pub error: Option<usize>,
    /// Where it runs when the model is placed (its own `device`, its block's or the model's);
    /// `None`: wherever the model is moved.
    pub device: Option<Device>,
}

/// The result of a check: the trace, every error, and the resolved spec.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// The model's name.
    pub name: String,
    /// The input checked.
    pub input: Option<SymShape>,
    /// The input's element type (`I64` for token ids).
    pub input_dtype: DType,
    /// One row per layer (blocks first, then their layers).
    pub trace: Vec<TraceRow>,
    /// Every mismatch found.
    pub errors: Vec<ShapeError>,
    /// The model's output shape.
    pub output: Option<SymShape>,
    /// The spec with inferred sizes filled in.
    pub resolved: ModelSpec,
}

impl CheckReport {
    /// All errors, separated by blank lines.
    pub fn render_errors(&self) -> String {
        self.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n\n")
    }

    /// The shape trace as a table, errors marked by number.
    pub fn render_trace(&self) -> String {
        // A device column only for a placed model (the others read as before).
        let placed = self.trace.iter().any(|r| r.device.is_some());
        let mut header: Vec<String> = vec!["#".into(), "layer".into(), "type".into(), "output".into()];
        if placed {
            header.push("device".into());
        }
        let mut rows: Vec<Vec<String>> = vec![header];
        for r in &self.trace {
            let mut out = r.output.to_string();
            if let Some(e) = r.error {
                out.push_str(&format!("   ✗ error {}", e + 1));
            }
            let mut row = vec![
                r.position_label.clone(),
                format!("{}{}", "  ".repeat(r.depth), short_name(&r.layer.path)),
                r.spec.to_string(),
                out,
            ];
            if placed {
                row.push(r.device.map_or("(model's)".into(), |d| d.to_string()));
            }
            rows.push(row);
        }
        let mut s = match &self.input {
            Some(i) => format!("{}: input {i}{}\n", self.name, dtype_note(self.input_dtype)),
            None => format!("{}: no input shape\n", self.name),
        };
        s.push_str(&table(&rows, &[false; 5][..rows[0].len()]));
        s
    }
}

/// ` of i64 token ids` after an input shape that holds them; nothing for float features.
pub(crate) fn dtype_note(d: DType) -> String {
    if d.is_float() { String::new() } else { format!(" of {} token ids", dtype_name(d)) }
}

/// The last part of a path, or `branches.1` for a branch.
fn short_name(path: &str) -> &str {
    match path.rsplit_once('.') {
        Some((head, index)) if head.ends_with("branches") && index.parse::<usize>().is_ok() => {
            &path[head.len() - "branches".len()..]
        }
        Some((_, last)) => last,
        None => path,
    }
}

/// Left- or right-aligned columns separated by two spaces.
pub(crate) fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let cols = right.len();
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for c in 0..cols {
            let pad = widths[c] - r[c].chars().count();
            if right[c] {
                line.push_str(&" ".repeat(pad));
                line.push_str(&r[c]);
            } else {
                line.push_str(&r[c]);
                if c + 1 < cols {
                    line.push_str(&" ".repeat(pad));
                }
            }
            if c + 1 < cols {
                line.push_str("  ");
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}
