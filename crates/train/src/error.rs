//! The training library's errors: the engine's, the layers', the data's, files', and the
//! run's own (a divergence, a damaged checkpoint, an option out of range), each saying what,
//! where and how to fix it.

use std::path::Path;

/// What went wrong in training, checkpointing or logging.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the tensor engine.
    #[error(transparent)]
    Core(#[from] strata_core::Error),
    /// From a layer, loss, optimizer or state_dict.
    #[error(transparent)]
    Nn(#[from] strata_nn::Error),
    /// From a data set or loader.
    #[error(transparent)]
    Data(#[from] strata_data::DataError),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that cannot be used: damaged, not strata's, or out of range. The message
    /// names the file, the field and the fix.
    #[error("{0}")]
    Checkpoint(String),
    /// A trainer option out of range, or options that contradict each other.
    #[error("{0}")]
    InvalidOption(String),
    /// A non-finite loss, gradient or parameter stopped the run.
    #[error(
        "training diverged at epoch {epoch}, step {step} (batch {batch} of {batches}): a non-finite loss, gradient or parameter\n  first non-finite: {report}"
    )]
    Diverged {
        /// The epoch (1-based).
        epoch: usize,
        /// The optimizer step (1-based) that diverged.
        step: usize,
        /// The batch of the epoch (1-based).
        batch: usize,
        /// Batches per epoch.
        batches: usize,
        /// Where it first went non-finite, in words (see [`crate::diagnose`]).
        report: String,
    },
    /// Under [`crate::OnDivergence::Skip`], every step of an epoch was skipped.
    #[error(
        "training diverged: every step of epoch {epoch} had a non-finite loss or gradient and was skipped ({skipped} skipped in all)"
    )]
    AllStepsSkipped {
        /// The epoch (1-based).
        epoch: usize,
        /// Steps skipped in the whole run.
        skipped: usize,
    },
    /// A callback failed.
    #[error("{0}")]
    Callback(String),
}

/// Results of the training library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error, with what was being done to which file.
    pub fn io(what: &str, path: &Path, source: std::io::Error) -> Error {
        Error::Io { context: format!("{what} {}", path.display()), source }
    }
}
