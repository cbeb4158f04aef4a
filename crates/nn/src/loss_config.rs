//! A loss chosen by name, as a run file's `[loss]` section gives it: [`LossConfig`] (serde, with
//! PyTorch's option names) checks its options and builds a [`Loss`] a training loop calls as
//! `loss.loss(&logits, &labels)` whatever was chosen. The labels are always class indices; the
//! losses that compare the output with a tensor of its own shape (`mse`, `bce_with_logits`) get
//! them one-hot encoded by [`OneHotTargets`], as Keras's categorical targets.

use crate::loss::{BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss, NLLLoss};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use strata_core::{DType, Device, Reduction, Tensor, embedding};

/// The loss names a [`LossConfig`] takes.
pub const LOSS_NAMES: [&str; 4] = ["cross_entropy", "nll", "mse", "bce_with_logits"];

/// A loss and its options, by name (`name = "cross_entropy"`, the default, with no options:
/// exactly `nn.CrossEntropyLoss()`).
///
/// - `cross_entropy`: `nn.CrossEntropyLoss` on the model's logits; options `weight`,
///   `label_smoothing`, `ignore_index`.
/// - `nll`: `nn.NLLLoss`, which takes **log-probabilities**: the model must end in a
///   `LogSoftmax` (together they are `cross_entropy`); options `weight`, `ignore_index`.
/// - `mse`: `nn.MSELoss` between the model's outputs and the one-hot encoded labels.
/// - `bce_with_logits`: `nn.BCEWithLogitsLoss` between the model's logits and the one-hot
///   encoded labels (one binary problem per class); option `pos_weight`.
///
/// Every loss takes `reduction` (`"mean"`, the default, or `"sum"`). An option the chosen loss
/// does not have is an error, not ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// `cross_entropy`, `nll`, `mse` or `bce_with_logits`.
    pub name: String,
    /// A weight per class (`cross_entropy`, `nll`): PyTorch's `weight`, `[C]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<Vec<f64>>,
    /// ε in `[0, 1]` (`cross_entropy`): how much of the uniform distribution is mixed into the
    /// target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f64>,
    /// A class whose samples count for nothing (`cross_entropy`, `nll`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_index: Option<i64>,
    /// The weight of positive examples per class (`bce_with_logits`): PyTorch's `pos_weight`, `[C]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos_weight: Option<Vec<f64>>,
    /// `mean` or `sum`: how the batch's losses combine.
    pub reduction: String,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            name: "cross_entropy".into(),
            weight: None,
            label_smoothing: None,
            ignore_index: None,
            pos_weight: None,
            reduction: "mean".into(),
        }
    }
}

/// `loss: key must be expected, got value`.
fn bad(key: &'static str, value: impl std::fmt::Display, expected: impl Into<String>) -> Error {
    Error::option("loss", key, value, expected)
}

/// A list of numbers as the run file writes it, the first ten at most.
fn list(values: &[f64]) -> String {
    let shown: Vec<String> = values.iter().take(10).map(|v| v.to_string()).collect();
    let more = if values.len() > 10 { format!(", … ({} values)", values.len()) } else { String::new() };
    format!("[{}{more}]", shown.join(", "))
}

impl LossConfig {
    /// Whether this is the default (`cross_entropy`, no options), for writing configs without it.
    pub fn is_default(&self) -> bool {
        *self == LossConfig::default()
    }

    /// Checks the name and every option against the chosen loss, and the per-class lists
    /// against `classes` when it is known. Errors name the key (`loss: weight must be …`).
    pub fn validate(&self, classes: Option<usize>) -> Result<()> {
        let name = self.name.as_str();
        if !LOSS_NAMES.contains(&name) {
            return Err(bad("name", format!("`{name}`"), format!("one of {}", LOSS_NAMES.join(", "))));
        }
        if !["mean", "sum"].contains(&self.reduction.as_str()) {
            return Err(bad(
                "reduction",
                format!("`{}`", self.reduction),
                "mean or sum (a training step needs one number per batch)",
            ));
        }
        let class_losses = ["cross_entropy", "nll"];
        let per_class = |key: &'static str, values: &Option<Vec<f64>>, losses: &[&str], what: &str| -> Result<()> {
            let Some(values) = values else { return Ok(()) };
            if !losses.contains(&name) {
                return Err(bad(key, list(values), format!("unset for {name} ({what})")));
            }
            let count = classes.map_or(String::new(), |c| format!(" ({c} values, one per class)"));
            let ok = values.iter().all(|v| v.is_finite() && *v >= 0.0)
                && classes.is_none_or(|c| values.len() == c)
                && !values.is_empty();
            if !ok {
                return Err(bad(key, list(values), format!("a list of finite numbers ≥ 0{count}")));
            }
            Ok(())
        };
        per_class("weight", &self.weight, &class_losses, "class weights apply to cross_entropy and nll")?;
        if let Some(w) = &self.weight
            && w.iter().all(|v| *v == 0.0)
        {
            return Err(bad("weight", list(w), "a list with some weight > 0 (all zero leaves nothing to learn)"));
        }
        per_class("pos_weight", &self.pos_weight, &["bce_with_logits"], "it applies to bce_with_logits only")?;
        if let Some(e) = self.label_smoothing {
            if name != "cross_entropy" {
                return Err(bad("label_smoothing", e, format!("unset for {name} (it applies to cross_entropy only)")));
            }
            if !(0.0..=1.0).contains(&e) {
                return Err(bad("label_smoothing", e, "in [0, 1] (0.1 is usual)"));
            }
        }
        if let Some(i) = self.ignore_index
            && !class_losses.contains(&name)
        {
            return Err(bad("ignore_index", i, format!("unset for {name} (it applies to cross_entropy and nll)")));
        }
        Ok(())
    }

    /// The loss, checked against the model's `classes` outputs, its tensors (class weights,
    /// `pos_weight`, the one-hot table) in `dtype` on `device`: the model output's.
    pub fn build(&self, classes: usize, dtype: DType, device: Device) -> Result<Box<dyn Loss>> {
        self.validate(Some(classes))?;
        let tensor = |values: &Option<Vec<f64>>| -> Result<Option<Tensor>> {
            let Some(v) = values else { return Ok(None) };
            let t = Tensor::from_vec(v.clone(), &[v.len()])?.to_dtype(dtype)?.to_device(device)?;
            Ok(Some(t))
        };
        let reduction = if self.reduction == "sum" { Reduction::Sum } else { Reduction::Mean };
        Ok(match self.name.as_str() {
            "cross_entropy" => Box::new(CrossEntropyLoss {
                reduction,
                weight: tensor(&self.weight)?,
                ignore_index: self.ignore_index,
                label_smoothing: self.label_smoothing.unwrap_or(0.0),
            }),
            "nll" => Box::new(NLLLoss { reduction, weight: tensor(&self.weight)?, ignore_index: self.ignore_index }),
            "mse" => Box::new(OneHotTargets::new(MSELoss::with_reduction(reduction), classes, dtype, device)?),
            _ => Box::new(OneHotTargets::new(
                BCEWithLogitsLoss { reduction, pos_weight: tensor(&self.pos_weight)? },
                classes,
                dtype,
                device,
            )?),
        })
    }

    /// The loss in words, for run headers: PyTorch's class name with the options that differ
    /// from the defaults (`CrossEntropyLoss(label_smoothing=0.1)`, `MSELoss on one-hot targets`).
    pub fn describe(&self) -> String {
        let class = match self.name.as_str() {
            "cross_entropy" => "CrossEntropyLoss",
            "nll" => "NLLLoss",
            "mse" => "MSELoss",
            "bce_with_logits" => "BCEWithLogitsLoss",
            other => other,
        };
        let mut options = vec![];
        if let Some(w) = &self.weight {
            options.push(format!("weight={}", list(w)));
        }
        if let Some(i) = self.ignore_index {
            options.push(format!("ignore_index={i}"));
        }
        if let Some(e) = self.label_smoothing {
            options.push(format!("label_smoothing={e}"));
        }
        if let Some(w) = &self.pos_weight {
            options.push(format!("pos_weight={}", list(w)));
        }
        if self.reduction != "mean" {
            options.push(format!("reduction={}", self.reduction));
        }
        let mut s = if options.is_empty() { class.to_string() } else { format!("{class}({})", options.join(", ")) };
        match self.name.as_str() {
            "mse" | "bce_with_logits" => s.push_str(" on one-hot targets"),
            "nll" => s.push_str(" on log-probabilities"),
            _ => {}
        }
        s
    }
}

/// A loss that compares the output with a tensor of its shape (`MSELoss`, `BCEWithLogitsLoss`),
/// given class indices: each label becomes a one-hot row (1 at its class, 0 elsewhere) in the
/// output's type and on its device, as Keras's categorical targets, before `inner` sees it.
///
/// # Shapes
/// - output: `[N, C]`
/// - target: `[N]`, `i64` class indices in `0..C`
/// - what `inner` gets: output `[N, C]` and the one-hot target `[N, C]`
#[derive(Debug)]
pub struct OneHotTargets<L> {
    inner: L,
    /// The identity `[C, C]`: row c is class c's one-hot vector, looked up on the device.
    eye: Tensor,
}

impl<L: Loss> OneHotTargets<L> {
    /// `inner` on one-hot targets over `classes` classes, its table in `dtype` on `device`.
    pub fn new(inner: L, classes: usize, dtype: DType, device: Device) -> Result<Self> {
        if classes == 0 {
            return Err(Error::option("OneHotTargets", "classes", 0, "at least 1"));
        }
        let eye: Vec<f64> = (0..classes * classes).map(|i| if i % (classes + 1) == 0 { 1.0 } else { 0.0 }).collect();
        let eye = Tensor::from_vec(eye, &[classes, classes])?.to_dtype(dtype)?.to_device(device)?;
        Ok(OneHotTargets { inner, eye })
    }

    /// The wrapped loss.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// The one-hot rows of `target` `[N]` for `output` `[N, C]`, in its type on its device.
    pub fn one_hot(&self, output: &Tensor, target: &Tensor) -> Result<Tensor> {
        let classes = self.eye.dims()[0];
        if output.ndim() != 2 || output.dims()[1] != classes {
            return Err(Error::InvalidTensor {
                owner: "one-hot targets",
                name: "the output",
                got: output.shape().to_string(),
                expected: format!("[N, {classes}] (one score per class)"),
            });
        }
        if target.dtype() != DType::I64 || target.dims() != [output.dims()[0]] {
            return Err(Error::InvalidTensor {
                owner: "one-hot targets",
                name: "the target",
                got: format!("{} {:?}", target.shape(), target.dtype()),
                expected: format!("[{}] I64 class indices (one per output row)", output.dims()[0]),
            });
        }
        // On a GPU the labels are not read back to check them: a bad one gives a NaN row, which
        // makes the loss NaN (as `embedding` documents).
        if target.device() == Device::Cpu
            && let Some((i, c)) =
                target.to_vec::<i64>()?.into_iter().enumerate().find(|&(_, c)| !(0..classes as i64).contains(&c))
        {
            return Err(Error::InvalidTensor {
                owner: "one-hot targets",
                name: "every target",
                got: format!("{c} at position {i}"),
                expected: format!("a class index in 0..{classes}"),
            });
        }
        let eye = if self.eye.dtype() != output.dtype() || self.eye.device() != output.device() {
            self.eye.to_dtype(output.dtype())?.to_device(output.device())?
        } else {
            self.eye.clone()
        };
        // [N] indices into [C, C] → [N, C]
        Ok(embedding(&target.to_device(output.device())?, &eye)?)
    }
}

impl<L: Loss> Loss for OneHotTargets<L> {
    fn loss(&self, output: &Tensor, target: &Tensor) -> Result<Tensor> {
        self.inner.loss(output, &self.one_hot(output, target)?)
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}
