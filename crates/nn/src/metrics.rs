//! Classification metrics accumulated over batches: a [`ConfusionMatrix`] (accuracy, per-class
//! precision, recall, F1 and support, their macro and weighted averages, and
//! `sklearn.metrics.classification_report`'s table) and [`TopK`] accuracy.
//!
//! The definitions are scikit-learn's (checked against scikit-learn 1.9 by
//! `tools/make_metrics_fixtures.py`):
//!
//! - per class `c`, with `tp` the samples of class `c` predicted `c`, `support` the samples of
//!   class `c` and `predicted` the samples predicted `c`: precision `tp / predicted`, recall
//!   `tp / support`, F1 `2·tp / (support + predicted)`; a zero denominator gives 0
//!   (`zero_division=0`, sklearn's default value after its warning);
//! - **macro** averages are the plain mean over the classes *present*: those with support or
//!   with predictions (`sklearn.utils.multiclass.unique_labels(y_true, y_pred)`, what
//!   `f1_score(average="macro")` uses when `labels` is not given). A class that never occurs and
//!   is never predicted says nothing about the model and is left out; one that is predicted but
//!   never occurs counts, with precision, recall and F1 0;
//! - **weighted** averages weight each class by its support;
//! - with nothing counted yet every score is 0 (sklearn refuses empty input).
//!
//! Each `update` reads from the device once per batch: the predictions (the argmax is taken
//! where the logits are) together with the labels when they live on the same device.

use crate::{Error, Result};
use strata_core::{DType, Device, Tensor};

/// Precision, recall, F1 and support of one class (see the module's definitions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    /// Of the samples predicted as this class, the fraction that are (0 when none are predicted).
    pub precision: f64,
    /// Of the samples of this class, the fraction predicted as it (0 when there are none).
    pub recall: f64,
    /// The harmonic mean of precision and recall, `2·tp / (support + predicted)` (0 when both are 0).
    pub f1: f64,
    /// How many samples of this class were counted.
    pub support: u64,
}

/// Counts of (true class, predicted class) pairs, accumulated batch by batch, as
/// `sklearn.metrics.confusion_matrix` (rows: true class, columns: predicted class).
///
/// ```
/// # use strata_core::Tensor;
/// # use strata_nn::metrics::ConfusionMatrix;
/// let mut cm = ConfusionMatrix::new(3);
/// // logits: [N, C] = [4, 3]; labels: [N] = [4]
/// let logits = Tensor::from_vec(vec![2.0f32, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0], &[4, 3])?;
/// cm.update(&logits, &Tensor::from_vec(vec![0i64, 1, 2, 1], &[4])?)?;
/// assert_eq!(cm.accuracy(), 0.75);
/// assert_eq!(cm.get(1, 0), Some(1));
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// `counts[t * classes + p]`: samples of true class `t` predicted as `p`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix over `classes` classes (labels and predictions `0..classes`).
    pub fn new(classes: usize) -> ConfusionMatrix {
        ConfusionMatrix { classes, counts: vec![0; classes * classes] }
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes
    }

    /// Counts a batch. `output` is either the logits (or probabilities) `[N, C]`, float, with
    /// `C` the number of classes, whose argmax along dim 1 is the prediction (the first maximum
    /// on ties, as `torch.argmax`), or the predicted classes `[N]`, i64. `labels`: `[N]`, i64,
    /// each in `0..C`. Either may live on any device; nothing is counted when an argument is
    /// refused.
    pub fn update(&mut self, output: &Tensor, labels: &Tensor) -> Result<()> {
        let n = check_labels("ConfusionMatrix", labels)?;
        let preds = match output.ndim() {
            2 if output.dtype().is_float() => {
                if output.dims() != [n, self.classes] {
                    return Err(bad_tensor(
                        "logits",
                        output,
                        format!("[{n}, {}] (one score per class for each of the {n} labels)", self.classes),
                    ));
                }
                if n == 0 {
                    return Ok(());
                }
                // preds: [N], i64, on the logits' device.
                output.argmax(1, false)?
            }
            1 if output.dtype() == DType::I64 => {
                if output.dims()[0] != n {
                    return Err(bad_tensor("predictions", output, format!("[{n}] (one per label), i64")));
                }
                output.clone()
            }
            _ => {
                return Err(bad_tensor(
                    "output",
                    output,
                    format!("logits [N, {}] (float) or predicted classes [N] (i64)", self.classes),
                ));
            }
        };
        let (preds, labels) = read_pair(&preds, labels)?;
        self.update_indices(&preds, &labels)
    }

    /// Counts predicted and true classes already on the host (each in `0..C`, as many
    /// predictions as labels). Nothing is counted when a value is out of range.
    pub fn update_indices(&mut self, preds: &[i64], labels: &[i64]) -> Result<()> {
        if preds.len() != labels.len() {
            return Err(Error::InvalidOption {
                owner: "ConfusionMatrix",
                key: "predictions",
                value: format!("{} of them", preds.len()),
                expected: format!("one per label ({} labels)", labels.len()),
            });
        }
        let k = self.classes;
        check_range("labels", labels, k)?;
        check_range("predictions", preds, k)?;
        for (&p, &t) in preds.iter().zip(labels) {
            self.counts[t as usize * k + p as usize] += 1;
        }
        Ok(())
    }

    /// Forgets every count.
    pub fn reset(&mut self) {
        self.counts.fill(0);
    }

    /// Samples of true class `true_class` predicted as `predicted` (`None` out of range).
    pub fn get(&self, true_class: usize, predicted: usize) -> Option<u64> {
        (true_class < self.classes && predicted < self.classes)
            .then(|| self.counts[true_class * self.classes + predicted])
    }

    /// The row of true class `c`: how its samples were predicted (`None` out of range).
    pub fn row(&self, c: usize) -> Option<&[u64]> {
        (c < self.classes).then(|| &self.counts[c * self.classes..(c + 1) * self.classes])
    }

    /// All samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Samples predicted right (the diagonal).
    pub fn correct(&self) -> u64 {
        (0..self.classes).map(|c| self.counts[c * self.classes + c]).sum()
    }

    /// The fraction predicted right (top-1 accuracy); 0 with nothing counted.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    fn support(&self, c: usize) -> u64 {
        self.counts[c * self.classes..(c + 1) * self.classes].iter().sum()
    }

    fn predicted(&self, c: usize) -> u64 {
        (0..self.classes).map(|t| self.counts[t * self.classes + c]).sum()
    }

    /// The scores of class `c` (`None` out of range).
    pub fn class_scores(&self, c: usize) -> Option<ClassScores> {
        if c >= self.classes {
            return None;
        }
        let (tp, support, predicted) = (self.counts[c * self.classes + c], self.support(c), self.predicted(c));
        Some(ClassScores {
            precision: ratio(tp, predicted),
            recall: ratio(tp, support),
            f1: ratio(2 * tp, support + predicted),
            support,
        })
    }

    /// The scores of every class, in class order.
    pub fn per_class(&self) -> Vec<ClassScores> {
        (0..self.classes).filter_map(|c| self.class_scores(c)).collect()
    }

    /// The classes present: those that occur among the labels or the predictions (the classes
    /// the macro averages run over, and the rows of [`ConfusionMatrix::report`]).
    pub fn present(&self) -> Vec<usize> {
        (0..self.classes).filter(|&c| self.support(c) + self.predicted(c) > 0).collect()
    }

    /// The mean of `score` over the present classes (0 when none is).
    fn macro_of(&self, score: impl Fn(&ClassScores) -> f64) -> f64 {
        let present = self.present();
        if present.is_empty() {
            return 0.0;
        }
        let sum: f64 = present.iter().filter_map(|&c| self.class_scores(c)).map(|s| score(&s)).sum();
        sum / present.len() as f64
    }

    /// The mean of `score` weighted by support (0 with nothing counted).
    fn weighted_of(&self, score: impl Fn(&ClassScores) -> f64) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        self.per_class().iter().map(|s| score(s) * s.support as f64).sum::<f64>() / total as f64
    }

    /// Precision averaged over the present classes (`precision_score(average="macro")`).
    pub fn precision_macro(&self) -> f64 {
        self.macro_of(|s| s.precision)
    }

    /// Recall averaged over the present classes (`recall_score(average="macro")`).
    pub fn recall_macro(&self) -> f64 {
        self.macro_of(|s| s.recall)
    }

    /// F1 averaged over the present classes (`f1_score(average="macro")`).
    pub fn f1_macro(&self) -> f64 {
        self.macro_of(|s| s.f1)
    }

    /// Precision averaged with support as weights (`precision_score(average="weighted")`).
    pub fn precision_weighted(&self) -> f64 {
        self.weighted_of(|s| s.precision)
    }

    /// Recall averaged with support as weights (`recall_score(average="weighted")`; it equals
    /// the accuracy).
    pub fn recall_weighted(&self) -> f64 {
        self.weighted_of(|s| s.recall)
    }

    /// F1 averaged with support as weights (`f1_score(average="weighted")`).
    pub fn f1_weighted(&self) -> f64 {
        self.weighted_of(|s| s.f1)
    }

    /// `sklearn.metrics.classification_report(y_true, y_pred, target_names=…)` to the character,
    /// with its default two digits: see [`ConfusionMatrix::report_with_digits`].
    pub fn report(&self, class_names: Option<&[String]>) -> String {
        self.report_with_digits(class_names, 2)
    }

    /// `classification_report` with `digits` decimals: a row per present class (precision,
    /// recall, f1-score, support), then `accuracy`, `macro avg` and `weighted avg`. A class is
    /// named `class_names[c]`, or its index when the list is absent or too short.
    pub fn report_with_digits(&self, class_names: Option<&[String]>, digits: usize) -> String {
        let name = |c: usize| class_names.and_then(|n| n.get(c)).cloned().unwrap_or_else(|| c.to_string());
        let present = self.present();
        let names: Vec<String> = present.iter().map(|&c| name(c)).collect();
        let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let width = name_width.max("weighted avg".len()).max(digits);
        let d = digits;
        let row = |label: &str, p: f64, r: f64, f: f64, support: u64| {
            format!("{label:>width$}  {p:>9.d$} {r:>9.d$} {f:>9.d$} {support:>9}\n")
        };
        let mut s =
            format!("{:>width$}  {:>9} {:>9} {:>9} {:>9}\n\n", "", "precision", "recall", "f1-score", "support");
        for (&c, label) in present.iter().zip(&names) {
            let sc = self.class_scores(c).expect("present classes are in range");
            s.push_str(&row(label, sc.precision, sc.recall, sc.f1, sc.support));
        }
        s.push('\n');
        let total = self.total();
        s.push_str(&format!("{:>width$}  {:>9} {:>9} {:>9.d$} {total:>9}\n", "accuracy", "", "", self.accuracy()));
        s.push_str(&row("macro avg", self.precision_macro(), self.recall_macro(), self.f1_macro(), total));
        s.push_str(&row("weighted avg", self.precision_weighted(), self.recall_weighted(), self.f1_weighted(), total));
        s
    }
}

/// Top-k accuracy accumulated batch by batch: a sample counts when its true class is among the
/// `k` highest-scoring classes.
///
/// Ties: the classes are ranked by score, higher first, and among equal scores by index, lower
/// first (NaN ranks above every number, as in PyTorch), so the true class `t` is in the top k
/// when fewer than `k` classes score above it or equal it with a lower index. This is
/// `torch.argmax`'s rule (the first maximum), so top-1 accuracy equals
/// [`ConfusionMatrix::accuracy`], and `torch.sort(stable=True, descending=True)`'s order.
/// `torch.topk` itself promises no order among equal values and follows none: on torch 2.15's
/// CPU, `torch.topk(torch.tensor([1., 1., 0., 0., 0.]), 1)` picks index 1 where `argmax`
/// picks 0, and which of several tied classes it keeps changes with the number of classes.
/// (`sklearn.metrics.top_k_accuracy_score` ranks the higher index first.) Without ties all
/// three agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopK {
    k: usize,
    correct: u64,
    total: u64,
}

impl TopK {
    /// An empty accumulator of top-`k` accuracy; `k` must be at least 1.
    pub fn new(k: usize) -> Result<TopK> {
        if k == 0 {
            return Err(Error::InvalidOption {
                owner: "TopK",
                key: "k",
                value: "0".into(),
                expected: "at least 1 (top-1 is plain accuracy)".into(),
            });
        }
        Ok(TopK { k, correct: 0, total: 0 })
    }

    /// The `k` counted.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Counts a batch: `logits` `[N, C]` (float, `C ≥ k`), `labels` `[N]` (i64, each in
    /// `0..C`), on any device. Reads the logits back once (with the labels, when they are on the
    /// same device). Nothing is counted when an argument is refused.
    pub fn update(&mut self, logits: &Tensor, labels: &Tensor) -> Result<()> {
        let n = check_labels("TopK", labels)?;
        if logits.ndim() != 2 || !logits.dtype().is_float() || logits.dims()[0] != n {
            return Err(bad_tensor("logits", logits, format!("[{n}, C] (float; one score per class for each label)")));
        }
        let classes = logits.dims()[1];
        self.check_classes(classes)?;
        if n == 0 {
            return Ok(());
        }
        let device = logits.device();
        let (scores, labels) = if device.is_gpu() && labels.device() == device {
            // One read: the labels as a last column. scores: [N, C + 1] (the GPU holds f32, exact
            // for labels below 2^24).
            let y = labels.to_dtype(logits.dtype())?.reshape(&[n, 1])?;
            let both = host_f64(&strata_core::cat(&[logits, &y], 1)?)?;
            let (mut scores, mut ys) = (Vec::with_capacity(n * classes), Vec::with_capacity(n));
            for r in both.chunks(classes + 1) {
                scores.extend_from_slice(&r[..classes]);
                ys.push(r[classes] as i64);
            }
            (scores, ys)
        } else {
            (host_f64(logits)?, labels.to_vec::<i64>()?)
        };
        self.update_scores(&scores, classes, &labels)
    }

    /// Counts scores already on the host: `scores` row-major `[N, classes]`, `labels` `[N]`.
    pub fn update_scores(&mut self, scores: &[f64], classes: usize, labels: &[i64]) -> Result<()> {
        self.check_classes(classes)?;
        if scores.len() != labels.len() * classes {
            return Err(Error::InvalidOption {
                owner: "TopK",
                key: "scores",
                value: format!("{} values", scores.len()),
                expected: format!("{classes} per label ({} labels)", labels.len()),
            });
        }
        check_range("labels", labels, classes)?;
        for (row, &t) in scores.chunks(classes.max(1)).zip(labels) {
            let t = t as usize;
            let s = row[t];
            // Classes ranked above the true one: higher scores, and equal ones with a lower index.
            let above = row.iter().enumerate().filter(|&(j, &v)| ranks_above(v, s) || (j < t && same(v, s))).count();
            self.correct += u64::from(above < self.k);
        }
        self.total += labels.len() as u64;
        Ok(())
    }

    fn check_classes(&self, classes: usize) -> Result<()> {
        if classes < self.k {
            return Err(Error::InvalidOption {
                owner: "TopK",
                key: "k",
                value: self.k.to_string(),
                expected: format!("at most the number of classes, {classes} (as torch.topk)"),
            });
        }
        Ok(())
    }

    /// Samples whose true class was in the top k.
    pub fn correct(&self) -> u64 {
        self.correct
    }

    /// All samples counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The fraction of samples whose true class was in the top k; 0 with nothing counted.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.total)
    }

    /// Forgets every count.
    pub fn reset(&mut self) {
        (self.correct, self.total) = (0, 0);
    }
}

/// `a` ranks above `b`: larger, or NaN over a number (NaN is the largest, as in PyTorch).
fn ranks_above(a: f64, b: f64) -> bool {
    a > b || (a.is_nan() && !b.is_nan())
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The labels' count, once they are `[N]` i64.
fn check_labels(owner: &'static str, labels: &Tensor) -> Result<usize> {
    if labels.ndim() != 1 || labels.dtype() != DType::I64 {
        return Err(Error::InvalidTensor {
            owner,
            name: "labels",
            got: format!("{} {:?}", labels.shape(), labels.dtype()),
            expected: "[N], i64 (one class index per sample)".into(),
        });
    }
    Ok(labels.dims()[0])
}

fn bad_tensor(name: &'static str, t: &Tensor, expected: String) -> Error {
    Error::InvalidTensor { owner: "metrics", name, got: format!("{} {:?}", t.shape(), t.dtype()), expected }
}

/// Every value in `0..classes`, or an error naming the first that is not.
fn check_range(what: &'static str, values: &[i64], classes: usize) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|&(_, &v)| v < 0 || v as u64 >= classes as u64) {
        return Err(Error::InvalidOption {
            owner: "metrics",
            key: what,
            value: format!("{v} (position {i})"),
            expected: format!("class indices in 0..{classes}"),
        });
    }
    Ok(())
}

/// Two i64 tensors `[N]` on the host, read back together when they share a GPU.
fn read_pair(a: &Tensor, b: &Tensor) -> Result<(Vec<i64>, Vec<i64>)> {
    if a.device() == b.device() && a.device() != Device::Cpu {
        let mut both = strata_core::cat(&[a, b], 0)?.to_vec::<i64>()?;
        let second = both.split_off(a.numel());
        return Ok((both, second));
    }
    Ok((a.to_vec::<i64>()?, b.to_vec::<i64>()?))
}

/// A float tensor's values as f64 on the host (an error, not NaN, should the device fail).
fn host_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(match t.dtype() {
        DType::F64 => t.to_vec::<f64>()?,
        _ => t.to_dtype(DType::F32)?.to_vec::<f32>()?.into_iter().map(f64::from).collect(),
    })
}
