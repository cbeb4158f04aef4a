//! Dropout, PyTorch's `nn.Dropout`: random zeroing in training mode, the identity in evaluation
//! mode, with masks that are reproducible from a seed.

use crate::check::context::CheckContext;
use crate::check::shape::SymShape;
use crate::layer::{BuildContext, Layer, LayerKind};
use crate::module::Module;
use crate::spec::LayerSpec;
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use strata_core::{Generator, Tensor, dropout, with_default_generator};

/// Dropout, PyTorch's `nn.Dropout(p)`: in training mode each element is zeroed with
/// probability `p` and the others are scaled by `1/(1 − p)`; in evaluation mode
/// ([`Module::eval`]) the input passes unchanged. No parameters.
///
/// Reproducible: the layer holds a seed and counts its training-mode calls; call k draws its
/// mask from `Generator::new(seed).fork(k)`, a counter-based stream, so a run repeats exactly
/// whatever the number of threads. [`Dropout::new`] takes the seed from the default generator
/// (set by `strata_core::manual_seed`); [`Dropout::with_seed`] fixes it.
///
/// # Shapes
/// - input: any shape
/// - output: the same shape
///
/// ```
/// use strata_nn::{Dropout, Module};
/// use strata_core::{DType, Tensor};
/// let drop = Dropout::with_seed(0.5, 7)?;
/// let x = Tensor::ones(&[2, 8], DType::F32);
/// assert_eq!(drop.forward(&x)?.dims(), &[2, 8]);
/// drop.eval();
/// assert_eq!(drop.forward(&x)?.to_vec::<f32>()?, vec![1.0; 16]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    seed: AtomicU64,
    step: AtomicU64,
    training: AtomicBool,
}

impl Dropout {
    /// `nn.Dropout(p)`, its seed drawn from the default generator. `p` must be in `[0, 1)`.
    pub fn new(p: f64) -> Result<Dropout> {
        let seed = with_default_generator(|g| g.next_u64());
        Dropout::with_seed(p, seed)
    }

    /// Dropout with probability `p` in `[0, 1)` and masks drawn from `seed`.
    pub fn with_seed(p: f64, seed: u64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::option("Dropout", "p", p, "in [0, 1) (the probability of zeroing an element)"));
        }
        Ok(Dropout { p, seed: AtomicU64::new(seed), step: AtomicU64::new(0), training: AtomicBool::new(true) })
    }

    /// The probability of zeroing an element.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// The seed the masks are drawn from.
    pub fn seed(&self) -> u64 {
        self.seed.load(Ordering::Relaxed)
    }

    /// Training-mode calls so far: the next mask is drawn from `Generator::new(seed).fork(step)`.
    pub fn step(&self) -> u64 {
        self.step.load(Ordering::Relaxed)
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.is_training() || self.p == 0.0 {
            return Ok(x.clone());
        }
        let step = self.step.fetch_add(1, Ordering::Relaxed);
        Ok(dropout(x, self.p, &mut Generator::new(self.seed()).fork(step))?)
    }
    fn set_own_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
    fn describe(&self) -> String {
        format!("Dropout p={}", self.p)
    }
    /// `seed=<u64>,step=<u64>`: where the mask stream stands, so a resumed run draws the masks
    /// the uninterrupted run would have drawn.
    fn own_extra_state(&self) -> Option<String> {
        Some(format!("seed={},step={}", self.seed(), self.step()))
    }
    fn set_own_extra_state(&self, state: &str) -> Result<()> {
        let parsed = state
            .split_once(',')
            .and_then(|(a, b)| Some((a.strip_prefix("seed=")?.parse().ok()?, b.strip_prefix("step=")?.parse().ok()?)));
        let Some((seed, step)) = parsed else {
            return Err(Error::InvalidState {
                owner: "Dropout",
                key: state.to_string(),
                reason: "not a generator position: expected `seed=<integer>,step=<integer>`".into(),
            });
        };
        self.seed.store(seed, Ordering::Relaxed);
        self.step.store(step, Ordering::Relaxed);
        Ok(())
    }
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::Dropout { p: self.p })
    }
}

/// The config of `nn.Dropout(p=0.5)` in a model spec.
///
/// # Shapes
/// - input: any shape
/// - output: the same shape
#[derive(Clone, Debug, PartialEq)]
pub struct DropoutSpec {
    /// The probability of zeroing each value, in `[0, 1)`.
    pub p: f64,
}

/// `type = "Dropout"`, `p` (default 0.5).
pub static DROPOUT_KIND: LayerKind = LayerKind {
    type_name: "Dropout",
    keys: &["name", "type", "p"],
    layer_of: None,
    parse: Some(|f| {
        let p = f.float("p", 0.5);
        if !(0.0..1.0).contains(&p) {
            let span = f.span_of("p");
            f.error(
                span,
                format!("`p` must be in [0, 1), got {p}"),
                Some("p is the probability of zeroing a value".into()),
            );
            return None;
        }
        Some(LayerSpec::Dropout { p })
    }),
};

impl Layer for DropoutSpec {
    fn type_name(&self) -> &'static str {
        "Dropout"
    }

    fn describe(&self) -> String {
        format!("Dropout p={}", self.p)
    }

    fn check(&mut self, _cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        x.clone()
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(Dropout::new(self.p)?))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("p = {:?}", self.p));
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Dropout { p: self.p }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::DType;

    #[test]
    fn modes_steps_and_errors() {
        let d = Dropout::with_seed(0.5, 1).unwrap();
        let x = Tensor::ones(&[64], DType::F32);
        let (a, b) = (d.forward(&x).unwrap().to_vec::<f32>().unwrap(), d.forward(&x).unwrap().to_vec::<f32>().unwrap());
        assert_ne!(a, b, "each call draws a new mask");
        assert_eq!(d.step(), 2);
        d.eval();
        assert!(d.forward(&x).unwrap().same(&x));
        assert_eq!(d.step(), 2);
        assert_eq!(d.describe(), "Dropout p=0.5");
        assert_eq!(
            Dropout::new(1.0).unwrap_err().to_string(),
            "Dropout: p must be in [0, 1) (the probability of zeroing an element), got 1"
        );
    }

    #[test]
    fn extra_state_continues_the_mask_stream() {
        use crate::{Linear, Module, Sequential};
        let model = || {
            Sequential::new()
                .add_module("fc", Linear::new(4, 4).unwrap())
                .unwrap()
                .add_module("drop", Dropout::with_seed(0.5, 11).unwrap())
                .unwrap()
        };
        let x = Tensor::ones(&[3, 4], DType::F32);
        let (a, b) = (model(), model());
        b.load_state_dict(&a.state_dict(), true).unwrap();
        a.forward(&x).unwrap();
        a.forward(&x).unwrap();
        let saved = a.extra_state();
        assert_eq!(saved.get("drop").map(String::as_str), Some("seed=11,step=2"));
        b.load_extra_state(&saved).unwrap();
        assert_eq!(a.forward(&x).unwrap().to_vec::<f32>().unwrap(), b.forward(&x).unwrap().to_vec::<f32>().unwrap());

        let mut wrong = saved.clone();
        wrong.insert("head".into(), "seed=1,step=0".into());
        assert_eq!(
            b.load_extra_state(&wrong).unwrap_err().to_string(),
            "load_extra_state: saved state `head`: names a module this model does not have"
        );
        let bad = [("drop".to_string(), "step=3".to_string())].into_iter().collect();
        assert_eq!(
            b.load_extra_state(&bad).unwrap_err().to_string(),
            "Dropout: saved state `step=3`: not a generator position: expected `seed=<integer>,step=<integer>`"
        );
    }
}
