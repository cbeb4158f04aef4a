//! Losses: the measure a training loop minimises.

use crate::Result;
use strata_core::{Reduction, Tensor, cross_entropy};

/// Cross-entropy of logits against class indices, PyTorch's `nn.CrossEntropyLoss`: the
/// negative log-probability of the right class under softmax, averaged over the batch
/// (`Reduction::Mean`, the default). Fused and numerically stable (logits of ±1e4 are fine).
///
/// # Shapes
/// - logits: `[N, C]` (raw scores: no softmax before it)
/// - target: `[N]`, `i64` class indices in `0..C`
/// - output: `[]` (or `[N]` with `Reduction::None`)
#[derive(Debug, Clone, Copy, Default)]
pub struct CrossEntropyLoss {
    /// How per-sample losses combine.
    pub reduction: Reduction,
}

impl CrossEntropyLoss {
    /// The mean cross-entropy over the batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// With another reduction.
    pub fn with_reduction(reduction: Reduction) -> Self {
        CrossEntropyLoss { reduction }
    }

    /// The loss of `logits` for classes `target`.
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(cross_entropy(logits, target, self.reduction)?)
    }
}
