//! One training step's helpers: the model's input layout, divergence diagnosis, accuracy, the
//! gradient norm, and evaluation.

use crate::config::RunConfig;
use anyhow::Result;
use strata_core::{DType, Device, Tensor, no_grad};
use strata_data::{DataLoader, Dataset};
use strata_nn::{CrossEntropyLoss, ModelSpec, Module};

/// How a batch from the data sets (`[B, *data sample]`, f32) becomes the model's input.
#[derive(Clone, Debug)]
pub struct InputLayout {
    /// The model's sample shape (same element count as the data's).
    pub sample: Vec<usize>,
    /// Where the batch goes: 0, or 1 for a model that reads time-major sequences `[T, N, F]`
    /// (`strata_nn::check::input_batch_dim`).
    pub batch_dim: usize,
    /// The model's element type.
    pub dtype: DType,
    /// The model's device: batches go there.
    pub device: Device,
    /// Where the model's output is (its last layer's device when layers are placed): labels go
    /// there, to meet the logits in the loss.
    pub labels_device: Device,
}

impl InputLayout {
    /// The layout `spec` takes for samples of shape `sample`.
    pub fn of(spec: &ModelSpec, sample: &[usize]) -> InputLayout {
        let batch_dim = strata_nn::check::input_batch_dim(spec, sample.len());
        InputLayout {
            sample: sample.to_vec(),
            batch_dim,
            dtype: spec.dtype,
            device: Device::Cpu,
            labels_device: Device::Cpu,
        }
    }

    /// This layout with batches sent to `device`.
    pub fn on(self, device: Device) -> InputLayout {
        InputLayout { device, labels_device: device, ..self }
    }

    /// This layout with labels sent to `device` (a placed model's output device).
    pub fn labels_on(self, labels_device: Device) -> InputLayout {
        InputLayout { labels_device, ..self }
    }

    /// A batch `[B, *data sample]` as the model's input: viewed as `[B, *model sample]`, the batch
    /// moved to `batch_dim` (`[T, B, F]` for a time-major model), in the model's element type,
    /// on the model's device.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = vec![x.dims()[0]];
        dims.extend_from_slice(&self.sample);
        let x = x.reshape(&dims)?;
        let x = if self.batch_dim == 1 { x.transpose(0, 1)? } else { x };
        Ok(x.to_dtype(self.dtype)?.to_device(self.device)?)
    }

    /// A batch's labels on the model's device.
    pub fn labels(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.to_device(self.labels_device)?)
    }
}

/// Where a diverged step first went non-finite, in words: the input, a parameter, the first
/// layer (in forward order) whose output did, the loss, or the first gradient backward reached.
pub(super) fn diagnose(model: &strata_nn::Sequential, input: &Tensor, target: &Tensor, loss: f64) -> String {
    /// The first layer under `m` (a Sequential) whose output is non-finite for input `x`: its path
    /// and description, descending into nested Sequential blocks; or `None` and the output.
    pub(super) fn first_bad(prefix: &str, m: &dyn Module, x: &Tensor) -> Result<std::result::Result<Tensor, String>> {
        let mut h = x.clone();
        for (name, child) in m.children() {
            let path = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
            let y = child.forward(&h)?;
            if !y.all_finite() {
                if matches!(child.spec(), Some(strata_nn::LayerSpec::Sequential(_)))
                    && let Err(inner) = first_bad(&path, child, &h)?
                {
                    return Ok(Err(inner));
                }
                return Ok(Err(format!("the output of layer `{path}` ({}), from a finite input", child.describe())));
            }
            h = y;
        }
        Ok(Ok(h))
    }
    let _no_grad = strata_core::NoGradGuard::new();
    let mut found = vec![];
    let bad_params: Vec<String> =
        model.named_parameters().into_iter().filter(|(_, p)| !p.all_finite()).map(|(n, _)| n).collect();
    if !bad_params.is_empty() {
        found.push(format!(
            "parameters already non-finite (the previous update made them so): {}",
            bad_params.join(", ")
        ));
    }
    if !input.all_finite() {
        found.push("the input batch holds non-finite values: check the data and its normalisation".into());
    } else {
        match first_bad("", model, input) {
            Ok(Err(where_)) => found.push(where_),
            Ok(Ok(logits)) if !loss.is_finite() => {
                let top = logits.to_vec_f64().iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let targets_ok = target.to_vec_f64().iter().all(|v| v.is_finite());
                found.push(format!(
                    "the loss: the logits are finite (largest magnitude {top:.3e}) but the loss is {loss}{}",
                    if targets_ok { "" } else { " (the targets hold non-finite values)" }
                ));
            }
            Ok(Ok(_)) => {}
            Err(e) => found.push(format!("(re-running the forward pass layer by layer failed: {e})")),
        }
    }
    if found.is_empty() || loss.is_finite() {
        // Backward reaches the last layers first: the last parameter in forward order with a
        // non-finite gradient is where the gradient first went non-finite.
        let bad_grads: Vec<String> = model
            .named_parameters()
            .into_iter()
            .filter(|(_, p)| p.grad().is_some_and(|g| !g.all_finite()))
            .map(|(n, _)| n)
            .collect();
        if let Some(last) = bad_grads.last() {
            found.push(format!(
                "the gradient, first at `{last}` (backward reaches it first; {} parameter gradient{} non-finite)",
                bad_grads.len(),
                if bad_grads.len() == 1 { " is" } else { "s are" }
            ));
        }
    }
    if found.is_empty() {
        found.push("the parameters after the update".into());
    }
    found.join("\n  first non-finite: ")
}

/// The error of a diverged run: where, what went non-finite, and what to try.
pub(super) fn divergence_message(
    epoch: usize,
    step: usize,
    batch: usize,
    batches: usize,
    report: &str,
    config: &RunConfig,
) -> String {
    let o = &config.optimizer;
    let clip = match config.training.clip_grad_norm {
        Some(c) => format!("a smaller training.clip_grad_norm (now {c})"),
        None => "gradient clipping (training.clip_grad_norm = 1.0, or --set training.clip_grad_norm=1.0)".into(),
    };
    format!(
        "training diverged at epoch {epoch}, step {step} (batch {batch} of {batches}): a non-finite loss, gradient or parameter\n  \
         first non-finite: {report}\n  \
         nothing from this step on was saved (checkpoints and `best` hold the last finite model)\n  \
         try: a lower learning rate (--lr, now {}), {clip}, or training.on_divergence = \"skip\" to skip such steps",
        o.lr
    )
}

/// Correct predictions in a batch: argmax of the logits equals the label.
pub(super) fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(1, false)?.to_vec::<i64>()?;
    let y = labels.to_vec::<i64>()?;
    Ok(pred.iter().zip(&y).filter(|(p, t)| p == t).count())
}

/// The L2 norm of all gradients together (what `clip_grad_norm_` measures).
pub(super) fn grad_norm(model: &dyn Module) -> Result<f64> {
    let mut sum = 0.0;
    for p in model.parameters() {
        if let Some(g) = p.grad() {
            sum += g.to_vec_f64().iter().map(|v| v * v).sum::<f64>();
        }
    }
    Ok(sum.sqrt())
}

/// Mean loss and accuracy over a data set, in evaluation mode and without recording the graph.
pub fn evaluate(model: &dyn Module, data: &Dataset, layout: &InputLayout) -> Result<(f64, f64)> {
    model.eval();
    let criterion = CrossEntropyLoss::with_reduction(strata_core::Reduction::Sum);
    let result = no_grad(|| -> Result<(f64, usize)> {
        let (mut loss, mut correct) = (0.0, 0);
        for batch in DataLoader::new(data, 1000).epoch(0) {
            let logits = model.forward(&layout.apply(&batch.x)?)?;
            let y = layout.labels(&batch.y)?;
            loss += criterion.forward(&logits, &y)?.item()?;
            correct += count_correct(&logits, &y)?;
        }
        Ok((loss, correct))
    });
    model.train(true);
    let (loss, correct) = result?;
    let n = data.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}
