//! Residual (skip) connections: `y = body(x) + shortcut(x)`, with the identity as the default
//! shortcut and a projection (any chain, typically one Linear or a 1×1 convolution) when the body
//! changes the shape. Against vanishing gradients: the sum passes the gradient to `x` unchanged.

use crate::module::Module;
use crate::spec::LayerSpec;
use crate::{Error, Result, Sequential};
use strata_core::Tensor;

/// A residual block, `body(x) + shortcut(x)`. Parameters are named `body.…` and `shortcut.…`.
///
/// # Shapes
/// - input: any shape the body accepts, `[N, *]`
/// - output: the body's output shape, which must equal the shortcut's (the input's, for the
///   identity shortcut); a mismatch is reported by the shape check and, at run time, as an
///   error naming both shapes
pub struct Residual {
    body: Sequential,
    shortcut: Option<Sequential>,
}

impl Residual {
    /// `body(x) + x`.
    pub fn new(body: Sequential) -> Self {
        Residual { body, shortcut: None }
    }

    /// `body(x) + shortcut(x)`: a projection shortcut for bodies that change the shape.
    pub fn with_shortcut(body: Sequential, shortcut: Sequential) -> Self {
        Residual { body, shortcut: Some(shortcut) }
    }
}

impl Residual {
    /// The body's and the shortcut's outputs, checked to have equal shapes.
    fn branches(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let y = self.body.forward(x).map_err(|e| e.in_layer("body", || "Sequential".into()))?;
        let s = match &self.shortcut {
            Some(p) => p.forward(x).map_err(|e| e.in_layer("shortcut", || "Sequential".into()))?,
            None => x.clone(),
        };
        // Equal shapes, not merely broadcastable: a [N, 1] body output must not silently spread.
        if y.shape() != s.shape() {
            let shortcut = if self.shortcut.is_some() { "shortcut" } else { "identity shortcut" };
            return Err(Error::BranchShapes {
                merge: "residual",
                outputs: vec![("body".into(), y.shape().clone()), (shortcut.into(), s.shape().clone())],
                need: "they must be equal to be added".into(),
            });
        }
        Ok((y, s))
    }
}

impl Module for Residual {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (y, s) = self.branches(x)?;
        Ok(y.add(&s)?)
    }
    fn forward_fused_relu(&self, x: &Tensor) -> Option<Result<Tensor>> {
        Some(self.branches(x).and_then(|(y, s)| Ok(strata_core::add_relu(&y, &s)?)))
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut c: Vec<(String, &dyn Module)> = vec![("body".into(), &self.body)];
        if let Some(p) = &self.shortcut {
            c.push(("shortcut".into(), p));
        }
        c
    }
    fn describe(&self) -> String {
        "Residual".into()
    }
    fn spec(&self) -> Option<LayerSpec> {
        let layers = |s: &Sequential| match s.spec()? {
            LayerSpec::Sequential(l) => Some(l),
            _ => None,
        };
        Some(LayerSpec::Residual {
            body: layers(&self.body)?,
            shortcut: match &self.shortcut {
                Some(p) => Some(layers(p)?),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Linear, ReLU};
    use strata_core::testing::{gradcheck, randn64};
    use strata_core::{DType, Generator};

    fn lin(i: usize, o: usize, rng: &mut Generator) -> Linear {
        Linear::with_options(i, o, true, DType::F64, rng).unwrap()
    }

    #[test]
    fn identity_and_projection_shortcuts() {
        let mut rng = Generator::new(2);
        let block =
            Residual::new(Sequential::new().add_module("fc1", lin(4, 4, &mut rng)).unwrap().append(ReLU).unwrap());
        let x = randn64(&[3, 4], &mut rng);
        let expected = block.body.forward(&x).unwrap().add(&x).unwrap().to_vec_f64();
        assert_eq!(block.forward(&x).unwrap().to_vec_f64(), expected);
        let names: Vec<String> = block.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["body.fc1.weight", "body.fc1.bias"]);

        let proj = Residual::with_shortcut(
            Sequential::new().add_module("fc1", lin(4, 6, &mut rng)).unwrap(),
            Sequential::new().add_module("proj", lin(4, 6, &mut rng)).unwrap(),
        );
        assert_eq!(proj.forward(&x).unwrap().dims(), &[3, 6]);
        let bad = Residual::new(Sequential::new().add_module("fc1", lin(4, 1, &mut rng)).unwrap());
        let e = bad.forward(&x).unwrap_err().to_string();
        assert!(e.contains("the body produces [3, 1] but the identity shortcut passes [3, 4]"), "{e}");
        // The gradient through a residual block (checked end to end on its parameters and input).
        let w = lin(4, 4, &mut rng);
        gradcheck(&[x, w.weight.detach()], |t| strata_core::linear(&t[0], &t[1], None)?.relu()?.add(&t[0]));
    }
}
