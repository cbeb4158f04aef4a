//! Evaluation: a model's mean loss, accuracy, top-k accuracy and F1 scores over a data set, in
//! evaluation mode and without recording the graph.

use crate::error::{Error, Result};
use crate::layout::InputLayout;
use strata_core::{DType, Tensor, no_grad};
use strata_data::{DataLoader, Dataset};
use strata_nn::metrics::{ConfusionMatrix, TopK};
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
    /// Classification only: macro-averaged F1 over the classes present (scikit-learn's
    /// `f1_score(average="macro")`).
    pub f1_macro: Option<f64>,
    /// Classification only: F1 averaged with each class's support as its weight.
    pub f1_weighted: Option<f64>,
    /// Classification with more than 5 classes: `(5, top-5 accuracy)`.
    pub top_k: Option<(usize, f64)>,
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
/// size, so the figure is the mean over samples whatever the batch size. An empty `data` is an
/// error ([`Error::InvalidOption`]): there is no mean of no samples.
pub fn evaluate(
    model: &dyn Module,
    loss: &dyn Loss,
    data: &Dataset,
    layout: &InputLayout,
    batch: usize,
) -> Result<Evaluation> {
    if data.is_empty() {
        // A loss of 0 and no accuracy would read as figures; they are of no samples.
        return Err(Error::InvalidOption(
            "evaluating an empty data set: its loss and accuracy would be figures of no samples; give data with samples".into(),
        ));
    }
    model.eval();
    // Classification figures for `[N, C]` outputs against class labels; `None` otherwise.
    let mut confusion: Option<ConfusionMatrix> = None;
    let mut top: Option<TopK> = None;
    let mut classification = true;
    let result = no_grad(|| -> Result<f64> {
        let mut total = 0.0;
        for b in DataLoader::new(data, batch.max(1)).epoch(0) {
            let out = model.forward(&layout.apply(&b.x)?)?;
            let y = layout.labels(&b.y)?;
            total += loss.loss(&out, &y)?.item()? * b.y.numel() as f64;
            classification &= count_correct(&out, &y)?.is_some();
            if classification {
                let classes = out.dims()[1];
                confusion.get_or_insert_with(|| ConfusionMatrix::new(classes)).update(&out, &y)?;
                if classes > 5 {
                    top.get_or_insert(TopK::new(5)?).update(&out, &y)?;
                }
            }
        }
        Ok(total)
    });
    model.train(true);
    let total = result?;
    let n = data.len() as f64;
    let confusion = confusion.filter(|_| classification);
    Ok(Evaluation {
        loss: total / n,
        accuracy: confusion.as_ref().map(|c| c.accuracy()),
        samples: data.len(),
        f1_macro: confusion.as_ref().map(|c| c.f1_macro()),
        f1_weighted: confusion.as_ref().map(|c| c.f1_weighted()),
        top_k: top.filter(|_| classification).map(|t| (t.k(), t.accuracy())),
    })
}
