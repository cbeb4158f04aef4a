//! Losses: the measure a training loop minimises. `CrossEntropyLoss` (with class weights,
//! `ignore_index` and label smoothing), `NLLLoss`, `BCEWithLogitsLoss` and `MSELoss`, each as
//! PyTorch's class of the same name, with `reduction` none / mean / sum.

use crate::Result;
use strata_core::{
    CrossEntropyOptions, Error, Reduction, Tensor, binary_cross_entropy_with_logits, cross_entropy_with, nll_loss,
};

/// What a training loop needs of a loss: the loss of a batch's `output` against its `target`,
/// differentiable in `output`. Every loss here implements it, so a `Trainer` (or your own loop)
/// holds any of them as a `Box<dyn Loss>`.
///
/// # Shapes
/// Each implementation's own: `output` is the model's output for the batch, `target` the batch's
/// labels as the loss takes them; the result is a scalar `[]` under the default reduction.
pub trait Loss: Send + Sync + std::fmt::Debug {
    /// The loss of `output` against `target`.
    fn loss(&self, output: &Tensor, target: &Tensor) -> Result<Tensor>;

    /// PyTorch's class name, for logs and run headers (`CrossEntropyLoss`).
    fn name(&self) -> String;
}

macro_rules! impl_loss {
    ($($t:ident),*) => {$(
        impl Loss for $t {
            fn loss(&self, output: &Tensor, target: &Tensor) -> Result<Tensor> {
                self.forward(output, target)
            }
            fn name(&self) -> String {
                stringify!($t).to_string()
            }
        }
    )*};
}
impl_loss!(CrossEntropyLoss, NLLLoss, BCEWithLogitsLoss, MSELoss);

/// Cross-entropy of logits against class indices, PyTorch's `nn.CrossEntropyLoss`: the
/// negative log-probability of the right class under softmax, averaged over the batch
/// (`Reduction::Mean`, the default). Fused and numerically stable (logits of ±1e4 are fine).
///
/// Options, as PyTorch's: `weight` (one per class; the mean then divides by the sum of the
/// targets' weights), `ignore_index` (rows with that target count for nothing; `None` by
/// default, where PyTorch's default is −100) and `label_smoothing` ε
/// (`loss = (1 − ε)·nll + ε·mean over classes of −log p`, weighted as PyTorch weights it).
///
/// # Shapes
/// - logits: `[N, C]` (raw scores: no softmax before it)
/// - target: `[N]`, `i64` class indices in `0..C`
/// - weight: `[C]`
/// - output: `[]` (or `[N]` with `Reduction::None`)
#[derive(Debug, Clone, Default)]
pub struct CrossEntropyLoss {
    /// How per-sample losses combine.
    pub reduction: Reduction,
    /// A weight per class, `[C]`, the logits' type.
    pub weight: Option<Tensor>,
    /// A target value whose rows are left out.
    pub ignore_index: Option<i64>,
    /// ε in `[0, 1]`: how much of the uniform distribution is mixed into the target.
    pub label_smoothing: f64,
}

impl CrossEntropyLoss {
    /// The mean cross-entropy over the batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// With another reduction.
    pub fn with_reduction(reduction: Reduction) -> Self {
        CrossEntropyLoss { reduction, ..Self::default() }
    }

    /// With class weights `[C]`.
    pub fn weight(mut self, weight: Tensor) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Leaving out rows whose target is `index`.
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.ignore_index = Some(index);
        self
    }

    /// With label smoothing ε in `[0, 1]`.
    pub fn label_smoothing(mut self, epsilon: f64) -> Self {
        self.label_smoothing = epsilon;
        self
    }

    /// The loss of `logits` for classes `target`.
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        let options = CrossEntropyOptions {
            reduction: self.reduction,
            weight: self.weight.clone(),
            ignore_index: self.ignore_index,
            label_smoothing: self.label_smoothing,
        };
        Ok(cross_entropy_with(logits, target, &options)?)
    }
}

/// Negative log-likelihood of log-probabilities against class indices, PyTorch's
/// `nn.NLLLoss`: `loss_i = −weight[t_i]·x[i, t_i]`, the mean divided by the sum of the
/// targets' weights. Put a `LogSoftmax` before it (together they are [`CrossEntropyLoss`]).
///
/// # Shapes
/// - input: `[N, C]` log-probabilities
/// - target: `[N]`, `i64` class indices in `0..C` (or `ignore_index`)
/// - weight: `[C]`
/// - output: `[]` (or `[N]` with `Reduction::None`)
#[derive(Debug, Clone, Default)]
pub struct NLLLoss {
    /// How per-sample losses combine.
    pub reduction: Reduction,
    /// A weight per class, `[C]`, the input's type.
    pub weight: Option<Tensor>,
    /// A target value whose rows are left out.
    pub ignore_index: Option<i64>,
}

impl NLLLoss {
    /// The mean negative log-likelihood over the batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// With another reduction.
    pub fn with_reduction(reduction: Reduction) -> Self {
        NLLLoss { reduction, ..Self::default() }
    }

    /// With class weights `[C]`.
    pub fn weight(mut self, weight: Tensor) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Leaving out rows whose target is `index`.
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.ignore_index = Some(index);
        self
    }

    /// The loss of log-probabilities `input` for classes `target`.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(nll_loss(input, target, self.weight.as_ref(), self.ignore_index, self.reduction)?)
    }
}

/// Binary cross-entropy on logits, PyTorch's `nn.BCEWithLogitsLoss`: a sigmoid and the binary
/// cross-entropy in one numerically stable op (`max(x, 0) − x·y + ln(1 + e^(−|x|))` without
/// `pos_weight`), for multi-label targets in `[0, 1]`. `pos_weight` multiplies the positive
/// term, broadcast against the input (one per class in the last dimension, typically).
///
/// # Shapes
/// - input: any shape (logits)
/// - target: the input's shape, values in `[0, 1]`
/// - pos_weight: broadcastable to the input, e.g. `[C]`
/// - output: `[]` (or the input's shape with `Reduction::None`)
#[derive(Debug, Clone, Default)]
pub struct BCEWithLogitsLoss {
    /// How per-element losses combine.
    pub reduction: Reduction,
    /// The weight of positive examples, e.g. `[C]`.
    pub pos_weight: Option<Tensor>,
}

impl BCEWithLogitsLoss {
    /// The mean over all elements.
    pub fn new() -> Self {
        Self::default()
    }

    /// With another reduction.
    pub fn with_reduction(reduction: Reduction) -> Self {
        BCEWithLogitsLoss { reduction, ..Self::default() }
    }

    /// With a positive weight.
    pub fn pos_weight(mut self, pos_weight: Tensor) -> Self {
        self.pos_weight = Some(pos_weight);
        self
    }

    /// The loss of logits `input` against `target`.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(binary_cross_entropy_with_logits(input, target, self.pos_weight.as_ref(), self.reduction)?)
    }
}

/// Mean squared error, PyTorch's `nn.MSELoss`: `(x − y)²` per element, averaged (or summed, or
/// not reduced). Gradients flow to both input and target.
///
/// # Shapes
/// - input: any shape
/// - target: the input's shape (no broadcasting: a mismatch is an error, where PyTorch warns)
/// - output: `[]` (or the input's shape with `Reduction::None`)
#[derive(Debug, Clone, Copy, Default)]
pub struct MSELoss {
    /// How per-element losses combine.
    pub reduction: Reduction,
}

impl MSELoss {
    /// The mean over all elements.
    pub fn new() -> Self {
        Self::default()
    }

    /// With another reduction.
    pub fn with_reduction(reduction: Reduction) -> Self {
        MSELoss { reduction }
    }

    /// The loss of `input` against `target`.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        const OP: &str = "mse_loss";
        if input.dtype() != target.dtype() {
            return Err(Error::DTypeMismatch { op: OP, lhs: input.dtype(), rhs: target.dtype() }.into());
        }
        if input.shape() != target.shape() {
            return Err(Error::ShapeMismatch {
                op: OP,
                what: "target",
                got: target.shape().clone(),
                expected: format!("{} (the input's shape)", input.shape()),
            }
            .into());
        }
        let d = input.sub(target)?;
        let sq = d.mul(&d)?;
        Ok(match self.reduction {
            Reduction::Mean => sq.mean_all()?,
            Reduction::Sum => sq.sum_all()?,
            Reduction::None => sq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::testing::{assert_close, gradcheck, randn64};
    use strata_core::{DType, Generator};

    #[test]
    fn gradcheck_losses() {
        let mut rng = Generator::new(71);
        let (x, y) = (randn64(&[3, 4], &mut rng), randn64(&[3, 4], &mut rng));
        let t = Tensor::from_vec(vec![2i64, 0, 3], &[3]).unwrap();
        let w = Tensor::from_vec(vec![1.0f64, 0.5, 2.0, 1.5], &[4]).unwrap();
        for r in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            gradcheck(&[x.clone(), y.clone()], |v| {
                MSELoss::with_reduction(r).forward(&v[0], &v[1]).map_err(unwrap_core)
            });
            let ce = CrossEntropyLoss::with_reduction(r).weight(w.clone()).label_smoothing(0.2);
            gradcheck(std::slice::from_ref(&x), |v| ce.forward(&v[0], &t).map_err(unwrap_core));
            let nll = NLLLoss::with_reduction(r).weight(w.clone());
            gradcheck(std::slice::from_ref(&x), |v| nll.forward(&v[0].log_softmax(1)?, &t).map_err(unwrap_core));
        }
    }

    fn unwrap_core(e: crate::Error) -> strata_core::Error {
        match e {
            crate::Error::Core(e) => e,
            e => panic!("{e}"),
        }
    }

    #[test]
    fn mse_by_hand_and_errors() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
        let y = Tensor::from_vec(vec![1.0f32, 0.0, 6.0], &[3]).unwrap();
        assert_close(&[MSELoss::new().forward(&x, &y).unwrap().item().unwrap()], &[13.0 / 3.0], 1e-7, 0.0);
        let e = MSELoss::new().forward(&x, &Tensor::zeros(&[3, 1], DType::F32)).unwrap_err().to_string();
        assert_eq!(e, "mse_loss: target has shape [3, 1], expected [3] (the input's shape)");
    }
}
