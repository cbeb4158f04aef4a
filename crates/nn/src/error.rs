//! The nn layer's error type: engine errors pass through unchanged; files and state_dicts add
//! their own, each naming the file or key and what to do.

use std::path::PathBuf;

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
    Io { path: PathBuf, action: &'static str, error: std::io::Error },

    /// A file that is not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {message}")]
    SafeTensors { path: PathBuf, message: String },

    /// A tensor in a file with an element type strata does not read.
    #[error("{path}: tensor `{key}` has element type {dtype}, which strata cannot load (supported: F32, F64, I64)")]
    UnsupportedFileDType { path: PathBuf, key: String, dtype: String },

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

    /// A model that does not pass the shape check (every error, rendered).
    #[error("{0}")]
    ShapeCheck(String),

    /// An invalid hyper-parameter or argument.
    #[error("{what}: {message}")]
    InvalidConfig { what: &'static str, message: String },
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
