//! `Flatten`: turns images (or any multi-dimensional samples) into feature vectors.

use crate::Result;
use crate::check::context::{CheckContext, Failure};
use crate::check::error::{Producer, ShapeErrorKind};
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape, saturating_product};
use crate::layer::{BuildContext, Layer, LayerKind};
use crate::module::Module;
use crate::spec::LayerSpec;
use strata_core::Tensor;

/// Flattens dimensions `start_dim..=end_dim` into one, PyTorch's `nn.Flatten` (default
/// `start_dim = 1, end_dim = -1`: everything but the batch dimension).
///
/// # Shapes
/// - input: `[N, d1, d2, …]`, e.g. `[N, 1, 28, 28]`
/// - output: `[N, d1·d2·…]`, e.g. `[N, 784]`
#[derive(Debug, Clone, Copy)]
pub struct Flatten {
    start_dim: isize,
    end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1, end_dim: -1 }
    }
}

impl Flatten {
    /// `nn.Flatten()`: keeps the batch dimension, flattens the rest.
    pub fn new() -> Self {
        Self::default()
    }
    /// Flattens `start_dim..=end_dim` (negative indices count from the end).
    pub fn with_dims(start_dim: isize, end_dim: isize) -> Self {
        Flatten { start_dim, end_dim }
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.flatten(self.start_dim, self.end_dim)?)
    }
    fn describe(&self) -> String {
        "Flatten".into()
    }
    fn spec(&self) -> Option<crate::spec::LayerSpec> {
        Some(crate::spec::LayerSpec::Flatten { start_dim: self.start_dim, end_dim: self.end_dim })
    }
}

/// The config of `nn.Flatten(start_dim=1, end_dim=-1)` in a model spec.
///
/// # Shapes
/// - input: `[N, d1, …, dk]`
/// - output: dimensions `start_dim..=end_dim` merged into one, e.g. `[N, 1, 28, 28]` → `[N, 784]`
#[derive(Clone, Debug, PartialEq)]
pub struct FlattenSpec {
    /// First dimension flattened (1 keeps the batch dimension).
    pub start_dim: isize,
    /// Last dimension flattened (−1 is the last).
    pub end_dim: isize,
}

/// `type = "Flatten"`, `start_dim` (default 1), `end_dim` (default −1).
pub static FLATTEN_KIND: LayerKind = LayerKind {
    type_name: "Flatten",
    keys: &["name", "type", "start_dim", "end_dim"],
    layer_of: None,
    parse: Some(|f| {
        let start_dim = f.int("start_dim").unwrap_or(1);
        let end_dim = f.int("end_dim").unwrap_or(-1);
        Some(LayerSpec::Flatten { start_dim: start_dim as isize, end_dim: end_dim as isize })
    }),
};

impl Layer for FlattenSpec {
    fn type_name(&self) -> &'static str {
        "Flatten"
    }

    fn describe(&self) -> String {
        match (self.start_dim, self.end_dim) {
            (1, -1) => "Flatten".into(),
            (s, e) => format!("Flatten {s}..={e}"),
        }
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        let (start_dim, end_dim, path) = (self.start_dim, self.end_dim, cx.path);
        let r = x.rank() as isize;
        let s = if start_dim < 0 { start_dim + r } else { start_dim };
        let e = if end_dim < 0 { end_dim + r } else { end_dim };
        let default_fix = || Fix {
            text: format!("make {path} Flatten() (start_dim = 1, end_dim = -1)"),
            edits: vec![Edit::SetFlattenRange { path: path.into(), start_dim: 1, end_dim: -1 }],
        };
        if x.rank() < 2 {
            cx.fail(ShapeErrorKind::TooFewDims { needs: "at least [N, d]: a batch of samples".into() }, vec![]);
            x.clone()
        } else if s == 0 {
            let reason =
                "start_dim 0 would merge the batch dimension N into the features; PyTorch's nn.Flatten() starts at 1"
                    .into();
            cx.fail(ShapeErrorKind::BadFlattenRange { reason }, vec![default_fix()]);
            // Carry on with what Flatten() would give, so later layers are checked sensibly.
            SymShape(vec![Dim::Batch, Dim::Fixed(x.sample_numel())])
        } else if s < 0 || e >= r || s > e {
            let reason =
                format!("start_dim {start_dim} and end_dim {end_dim} do not name a range of {x}'s {r} dimensions");
            cx.fail(ShapeErrorKind::BadFlattenRange { reason }, vec![default_fix()]);
            SymShape(vec![Dim::Batch, Dim::Fixed(x.sample_numel())])
        } else {
            let (s, e) = (s as usize, e as usize);
            let dims = x.sample().unwrap_or_default();
            let merged: Vec<usize> = dims[s - 1..e].to_vec();
            let mut out = x.0[..s].to_vec();
            // Saturating, as `sample_numel`: sizes that overflow are refused by the memory check
            // (a model file can ask for any size), not a panic here.
            out.push(Dim::Fixed(saturating_product(&merged)));
            out.extend_from_slice(&x.0[e + 1..]);
            if e + 1 == x.rank() {
                let from = merged.iter().map(ToString::to_string).collect::<Vec<_>>().join("×");
                *cx.producer = Producer::Flatten(cx.layer.clone(), from);
            }
            SymShape(out)
        }
    }

    /// Flatten passes token ids on (to an Embedding after it).
    fn keeps_element_type(&self) -> bool {
        true
    }

    fn dtype_error(&self, _cx: &CheckContext<'_>, _x: &SymShape) -> Option<Failure> {
        None
    }

    fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        Ok(Box::new(Flatten::with_dims(self.start_dim, self.end_dim)))
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("start_dim = {}, end_dim = {}", self.start_dim, self.end_dim));
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetFlattenRange { start_dim, end_dim, .. } => (self.start_dim, self.end_dim) = (*start_dim, *end_dim),
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Flatten { start_dim: self.start_dim, end_dim: self.end_dim }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::DType;

    #[test]
    fn flattens_images_to_vectors() {
        let x = Tensor::zeros(&[5, 1, 28, 28], DType::F32);
        assert_eq!(Flatten::new().forward(&x).unwrap().dims(), &[5, 784]);
        assert_eq!(Flatten::with_dims(0, 1).forward(&x).unwrap().dims(), &[5, 28, 28]);
    }
}
