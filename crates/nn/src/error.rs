//! The nn layer's error type: engine errors pass through unchanged; files and state_dicts add
//! their own, each naming the file or key and what to do.

use crate::check::error::ShapeError;
use std::path::PathBuf;
use strata_core::Shape;

/// Everything a module, optimizer or state_dict operation can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from a tensor op.
    #[error(transparent)]
    Core(#[from] strata_core::Error),

    /// A file that could not be read or written.
    // The cause is part of the message and deliberately not a `source()`, so error chains
    // (anyhow's `{:#}`) do not print it twice.
    #[error("{path}: {action} failed: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`reading the state_dict`, `writing`, …).
        action: &'static str,
        /// The operating system's error.
        error: std::io::Error,
    },

    /// A file that is not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {message}")]
    SafeTensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors reader found wrong.
        message: String,
    },

    /// A tensor in a file with an element type strata does not read.
    #[error(
        "{path}: tensor `{key}` has element type {dtype}, which strata cannot load (supported: F32, F64, I64; F16 and BF16 widened to F32; the other integer types and BOOL widened to I64)"
    )]
    UnsupportedFileDType {
        /// The file.
        path: PathBuf,
        /// The tensor's name in the file.
        key: String,
        /// Its element type, as the file names it (`F16`, `BF16`, …).
        dtype: String,
    },

    /// A state_dict that does not fit the model: every problem found, not only the first.
    #[error("{}", format_mismatch(.source_name, .missing, .unexpected, .shape_mismatches))]
    StateDictMismatch {
        /// Where the state_dict came from (a path, or "state_dict").
        source_name: String,
        /// Keys the model has and the state_dict lacks.
        missing: Vec<String>,
        /// Keys the state_dict has and the model lacks.
        unexpected: Vec<String>,
        /// `(key, shape in model, shape in state_dict)`.
        shape_mismatches: Vec<(String, String, String)>,
    },

    /// A model file with problems (all of them, located).
    #[error("{0}")]
    ModelFile(#[from] crate::model_file::ModelFileErrors),

    /// An error inside a layer of a container, with the layer's full path.
    #[error("in layer `{path}` ({desc}): {error}")]
    InLayer {
        /// Dotted path from the outermost container.
        path: String,
        /// The layer's description, e.g. `Linear 128 → 64`.
        desc: String,
        /// What went wrong (part of the message, not a `source()`, to print once).
        error: Box<Error>,
    },

    /// A model that does not pass the shape check: every error, each with its layer, the shape it
    /// receives, what went wrong and the suggested fixes.
    #[error("{}", render_shape_errors(.0))]
    ShapeCheck(Vec<ShapeError>),

    /// The branches of an `Add`, a `Concat` or a residual block (body and shortcut) produced
    /// tensors that cannot be merged (found while running, in a model built without a spec).
    #[error("{}", render_branches(.merge, .outputs, .need))]
    BranchShapes {
        /// `add`, `concat` or `residual`.
        merge: &'static str,
        /// Each branch's name and output shape, in order (`branch 0`, …; a residual block's
        /// `body`, then its `shortcut` or `identity shortcut`).
        outputs: Vec<(String, Shape)>,
        /// What the merge needs of them.
        need: String,
    },

    /// A layer or optimizer option with a value it cannot take.
    #[error("{owner}: {key} must be {expected}, got {value}")]
    InvalidOption {
        /// The layer kind or optimizer (`Linear`, `SGD`, `model`).
        owner: &'static str,
        /// The option, by its PyTorch name (`in_features`, `p`, `momentum`).
        key: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        expected: String,
    },

    /// A tensor handed to a layer (its weight or bias) with the wrong shape or element type.
    #[error("{owner}: {name} must be {expected}, got {got}")]
    InvalidTensor {
        /// The layer kind.
        owner: &'static str,
        /// The tensor's name (`weight`, `bias`).
        name: &'static str,
        /// Its shape and element type.
        got: String,
        /// What the layer needs.
        expected: String,
    },

    /// A layer name a container cannot take: empty, containing `.` (which separates the levels
    /// of parameter names), or already used in the same chain (both layers' parameters would be
    /// saved under the same state_dict keys, one of them lost).
    #[error("{container}: layer name `{name}` {reason}")]
    LayerName {
        /// The container and where in the model (`Sequential`, ``model `m`, block `enc` ``).
        container: String,
        /// The name given.
        name: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },

    /// Saved state (an optimizer's, a Dropout's generator position, a module's extra state)
    /// that does not fit what loads it.
    #[error("{owner}: saved state `{key}`: {reason}")]
    InvalidState {
        /// What loads it (`SGD state`, `Adam state`, `Dropout`, `load_extra_state`).
        owner: &'static str,
        /// The entry (a state key or module name).
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A layer the ONNX exporter cannot express (see [`crate::onnx`]).
    #[error("cannot export layer `{path}` ({kind}) to ONNX: {reason}")]
    OnnxExport {
        /// The layer's dotted path (`block1.gn`).
        path: String,
        /// Its type (`GroupNorm`).
        kind: String,
        /// Why, and what would work.
        reason: String,
    },

    /// A model the ONNX exporter cannot take as a whole (no input shape, token-id input).
    #[error("cannot export the model to ONNX: {0}")]
    OnnxModel(String),

    /// A PyTorch (`torch.save`) file that was refused or could not be read
    /// ([`crate::torch_file`]).
    #[error("{path}: {error}")]
    TorchFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: crate::torch_file::TorchFileError,
    },

    /// A layer whose size is still to be inferred, used before the model was checked.
    #[error("layer `{layer}`: {what} is not known; check the model with an input shape first")]
    Unresolved {
        /// The layer's name.
        layer: String,
        /// What is missing (`in_features`).
        what: String,
    },

    /// An ONNX graph with nodes the importer cannot express as strata layers: every one of
    /// them, not only the first (see `strata_nn::onnx::import`).
    #[error("{}", render_unsupported_nodes(.0))]
    OnnxImport(Vec<UnsupportedNode>),

    /// An ONNX model the importer cannot take as a whole (not decodable, no graph, several
    /// inputs or outputs, a symbolic sample dimension).
    #[error("cannot import the ONNX model: {0}")]
    OnnxImportModel(String),
}

/// One ONNX node the importer cannot express, for [`Error::OnnxImport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedNode {
    /// The node's name (`/fc1/Gemm`), or `(unnamed node k)` when it has none.
    pub name: String,
    /// Its operator (`Gemm`).
    pub op_type: String,
    /// Why, and what would work.
    pub reason: String,
}

/// `cannot import the ONNX graph: 2 nodes are not supported` and one line per node.
fn render_unsupported_nodes(nodes: &[UnsupportedNode]) -> String {
    let count = match nodes.len() {
        1 => "1 node is".to_string(),
        n => format!("{n} nodes are"),
    };
    let mut s = format!("cannot import the ONNX graph: {count} not supported");
    for n in nodes {
        s.push_str(&format!("\n  `{}` ({}): {}", n.name, n.op_type, n.reason));
    }
    s.push_str("\n  help: README.md, \"Import from ONNX\", lists the ops and patterns strata imports");
    s
}

/// The shape errors, separated by blank lines (as `strata check` prints them).
fn render_shape_errors(errors: &[ShapeError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n\n")
}

/// `add: the branches produce [2, 3] (branch 0) and [2, 4] (branch 1); …`, or for a residual
/// block `residual: the body produces [2, 3] but the shortcut passes [2, 4]; …`.
fn render_branches(merge: &str, outputs: &[(String, Shape)], need: &str) -> String {
    if let [(_, body), (shortcut, passed)] = outputs
        && merge == "residual"
    {
        return format!("residual: the body produces {body} but the {shortcut} passes {passed}; {need}");
    }
    let parts: Vec<String> = outputs.iter().map(|(name, shape)| format!("{shape} ({name})")).collect();
    let phrase = match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => parts.join(""),
    };
    format!("{merge}: the branches produce {phrase}; {need}")
}

fn format_mismatch(
    source: &str,
    missing: &[String],
    unexpected: &[String],
    shapes: &[(String, String, String)],
) -> String {
    let mut s = format!("{source} does not fit the model:");
    for (key, model, file) in shapes {
        s.push_str(&format!("\n  `{key}`: the model has shape {model}, the state_dict has {file}"));
    }
    if !missing.is_empty() {
        s.push_str(&format!("\n  missing from the state_dict: {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        s.push_str(&format!("\n  not in the model: {}", unexpected.join(", ")));
    }
    s.push_str("\n  fix: load a state_dict saved from the same architecture, or pass strict = false to load only the matching keys");
    s
}

impl Error {
    /// [`Error::InvalidOption`]: `owner`'s option `key` has `value`, and must be `expected`.
    pub fn option(
        owner: &'static str,
        key: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Error {
        Error::InvalidOption { owner, key, value: value.to_string(), expected: expected.into() }
    }

    /// This error as raised inside the child `name` of a container: paths compose
    /// (`encoder` + `fc1` → `encoder.fc1`), so the message names the innermost layer by its
    /// full path.
    pub fn in_layer(self, name: &str, desc: impl FnOnce() -> String) -> Error {
        match self {
            Error::InLayer { path, desc, error } => Error::InLayer { path: format!("{name}.{path}"), desc, error },
            other => Error::InLayer { path: name.to_string(), desc: desc(), error: Box::new(other) },
        }
    }
}

/// `Result` with the nn [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
