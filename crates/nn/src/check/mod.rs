//! The shape contract: a model is checked end to end before it runs. Each layer maps an input
//! shape (with a symbolic batch dimension `N`) to an output shape or a structured error; the
//! chain propagates shapes, remembers which layer produced the current feature count, and on a
//! mismatch reports the layer, its position, the shape it receives, who produced it, and a
//! concrete fix. After an error the layer's intended output is assumed, so *every* mismatch in
//! the model is reported in one run, not only the first.
//!
//! The parts: `shape.rs` (symbolic shapes), `error.rs` (errors and their rendering), `fix.rs`
//! and `edit.rs` (fixes and applying them), `context.rs` (what a layer's rule sees),
//! `walker.rs` (the walk and the containers), `merge.rs` (the rules of `Add`, `Concat` and
//! `Residual`), `report.rs` (the trace), `memory.rs` and `checkpoint.rs` (the checks after the
//! shapes). Each layer kind's own rule is in its file ([`crate::layer::Layer::check`]).

pub mod checkpoint;
pub mod context;
pub mod edit;
pub mod error;
pub mod fix;
pub mod memory;
pub mod merge;
pub mod report;
pub mod shape;
pub mod walker;

pub use checkpoint::check_checkpoint;
pub use error::{BranchOutput, LayerRef, Producer, ShapeError, ShapeErrorKind};
pub use fix::{Edit, Fix};
pub use memory::{TRAINING_COPIES, check_memory, check_memory_copies};
pub use report::{CheckReport, TraceRow};
pub use shape::{Dim, SymShape, dtype_name, saturating_product};
pub use walker::{check_shapes, check_spec, check_spec_to_run, input_batch_dim};

use crate::spec::ModelSpec;

impl ModelSpec {
    /// Checks the whole chain for `input` (or the spec's own input shape when `None`), reporting
    /// every mismatch; see [`crate::check`].
    pub fn check(&self, input: Option<&SymShape>) -> std::result::Result<CheckReport, Box<CheckReport>> {
        let report = check_spec(self, input, None);
        if report.errors.is_empty() { Ok(report) } else { Err(Box::new(report)) }
    }

    /// The spec with every inferred size filled in (checked first).
    pub fn resolve(&self, input: Option<&SymShape>) -> std::result::Result<ModelSpec, Box<CheckReport>> {
        self.check(input).map(|r| r.resolved)
    }
}
