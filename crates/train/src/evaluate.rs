//! Evaluation: a model's mean loss and accuracy over a data set, in evaluation mode and
//! without recording the graph.

use crate::error::Result;
use crate::layout::InputLayout;
use strata_core::{DType, Tensor, no_grad};
use strata_data::{DataLoader, Dataset};
use strata_nn::{Loss, Module};

/// A model's figures on a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The mean loss per sample.
    pub loss: f64,
    /// The share of samples whose largest output is their label (classification: labels are
    /// class indices and the output is `[N, C]`); `None` otherwise.
    pub accuracy: Option<f64>,
    /// Samples evaluated.
    pub samples: usize,
}

/// Correct predictions in a batch: argmax of the outputs `[N, C]` equals the label `[N]`;
/// `None` when the batch is not a classification batch.
pub fn count_correct(output: &Tensor, labels: &Tensor) -> Result<Option<usize>> {
    if output.dims().len() != 2 || labels.dtype() != DType::I64 || labels.dims() != [output.dims()[0]] {
        return Ok(None);
    }
    let pred = output.argmax(1, false)?.to_vec::<i64>()?;
    let y = labels.to_vec::<i64>()?;
    Ok(Some(pred.iter().zip(&y).filter(|(p, t)| p == t).count()))
}

/// Mean loss and accuracy of `model` over `data`, `batch` samples at a time, in evaluation mode
/// (Dropout off, BatchNorm's running statistics) and without recording the graph; training
/// mode is restored afterwards. A loss that averages over the batch is weighted by each batch's
/// size, so the figure is the mean over samples whatever the batch size.
pub fn evaluate(
    model: &dyn Module,
    loss: &dyn Loss,
    data: &Dataset,
    layout: &InputLayout,
    batch: usize,
) -> Result<Evaluation> {
    model.eval();
    let result = no_grad(|| -> Result<(f64, Option<usize>)> {
        let (mut total, mut correct) = (0.0, Some(0));
        for b in DataLoader::new(data, batch.max(1)).epoch(0) {
            let out = model.forward(&layout.apply(&b.x)?)?;
            let y = layout.labels(&b.y)?;
            total += loss.loss(&out, &y)?.item()? * b.y.numel() as f64;
            correct = match (correct, count_correct(&out, &y)?) {
                (Some(c), Some(n)) => Some(c + n),
                _ => None,
            };
        }
        Ok((total, correct))
    });
    model.train(true);
    let (total, correct) = result?;
    let n = data.len().max(1) as f64;
    Ok(Evaluation { loss: total / n, accuracy: correct.map(|c| c as f64 / n), samples: data.len() })
}
