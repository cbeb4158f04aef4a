//! `LastStep`: the last time step of a sequence, so a recurrent layer can feed a classifier
//! inside a `Sequential` (PyTorch code writes `out[:, -1, :]` in `forward`).

use crate::Result;
use crate::check::context::CheckContext;
use crate::check::error::ShapeErrorKind;
use crate::check::shape::SymShape;
use crate::layer::{BuildContext, Layer, LayerKind};
use crate::module::Module;
use crate::spec::LayerSpec;
use strata_core::Tensor;

/// Selects the last time step of a sequence: `x[:, -1, :]` for batch-first `[N, T, F]` input
/// (the default), `x[-1]` for time-major `[T, N, F]`. With it, `LSTM(28 → 128, batch_first)
/// → LastStep → Linear(128, 10)` is a `Sequential` that classifies MNIST read row by row.
///
/// For a bidirectional layer this is PyTorch's `out[:, -1]` too: the forward direction's last
/// state beside the backward direction's *first* (it has read one step).
///
/// # Shapes
/// - input: `[N, T, F]` (batch_first) or `[T, N, F]` (time-major), T ≥ 1
/// - output: `[N, F]`
///
/// ```
/// use strata_nn::{LastStep, Module};
/// use strata_core::{DType, Tensor};
/// let x = Tensor::zeros(&[64, 28, 128], DType::F32);
/// assert_eq!(LastStep::new().forward(&x)?.dims(), &[64, 128]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LastStep {
    batch_first: bool,
}

impl Default for LastStep {
    fn default() -> Self {
        LastStep { batch_first: true }
    }
}

impl LastStep {
    /// For batch-first `[N, T, F]` sequences.
    pub fn new() -> Self {
        Self::default()
    }
    /// For `[N, T, F]` (`batch_first = true`) or `[T, N, F]` (`false`) sequences.
    pub fn with_batch_first(batch_first: bool) -> Self {
        LastStep { batch_first }
    }
}

impl Module for LastStep {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let time_dim = if self.batch_first { 1 } else { 0 };
        let layout = if self.batch_first { "[N, T, F]" } else { "[T, N, F]" };
        if x.ndim() != 3 || x.dims()[time_dim] == 0 {
            let why = if x.ndim() != 3 {
                format!("it has {} dimensions", x.ndim())
            } else {
                format!("dimension {time_dim} (time) is empty")
            };
            return Err(strata_core::Error::ShapeMismatch {
                op: "LastStep",
                what: "input",
                got: x.shape().clone(),
                expected: format!("{layout} with T ≥ 1: {why}"),
            }
            .into());
        }
        let t = x.dims()[time_dim];
        Ok(x.narrow(time_dim as isize, t - 1, 1)?.squeeze(time_dim as isize)?)
    }
    fn describe(&self) -> String {
        if self.batch_first { "LastStep".into() } else { "LastStep(batch_first=False)".into() }
    }

    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::LastStep { batch_first: self.batch_first })
    }
}

/// The config of a `LastStep(batch_first=True)` in a model spec.
///
/// # Shapes
/// - input: `[N, T, F]` (batch first) or `[T, N, F]`
/// - output: `[N, F]`
#[derive(Clone, Debug, PartialEq)]
pub struct LastStepSpec {
    /// `[N, T, F]` (true) or `[T, N, F]` (false) input.
    pub batch_first: bool,
}

/// `type = "LastStep"`, `batch_first` (default true).
pub static LAST_STEP_KIND: LayerKind = LayerKind {
    type_name: "LastStep",
    keys: &["name", "type", "batch_first"],
    layer_of: None,
    parse: Some(|f| Some(LayerSpec::LastStep { batch_first: f.boolean("batch_first", true) })),
};

impl Layer for LastStepSpec {
    fn type_name(&self) -> &'static str {
        "LastStep"
    }

    fn describe(&self) -> String {
        if self.batch_first { "LastStep".into() } else { "LastStep(batch_first=False)".into() }
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        if x.rank() != 3 {
            let layout = if self.batch_first { "[N, T, F]" } else { "[T, N, F]" };
            cx.fail(ShapeErrorKind::TooFewDims { needs: format!("{layout}: a batch of sequences") }, vec![]);
            if x.rank() >= 2 { SymShape(vec![x.0[0], x.0[x.rank() - 1]]) } else { x.clone() }
        } else if self.batch_first {
            SymShape(vec![x.0[0], x.0[2]])
        } else {
            SymShape(vec![x.0[1], x.0[2]])
        }
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(LastStep::with_batch_first(self.batch_first)))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("batch_first = {}", self.batch_first));
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::LastStep { batch_first: self.batch_first }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::DType;

    #[test]
    fn picks_the_last_step_in_either_layout() {
        let x = Tensor::from_vec((0..12).map(|v| v as f32).collect(), &[2, 3, 2]).unwrap();
        assert_eq!(LastStep::new().forward(&x).unwrap().to_vec::<f32>().unwrap(), [4., 5., 10., 11.]);
        assert_eq!(
            LastStep::with_batch_first(false).forward(&x).unwrap().to_vec::<f32>().unwrap(),
            [6., 7., 8., 9., 10., 11.]
        );
        let e = LastStep::new().forward(&Tensor::zeros(&[2, 3], DType::F32)).unwrap_err().to_string();
        assert_eq!(e, "LastStep: input has shape [2, 3], expected [N, T, F] with T ≥ 1: it has 2 dimensions");
    }
}
