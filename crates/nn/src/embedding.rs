//! `Embedding`: a lookup table of learned vectors indexed by token id, PyTorch's `nn.Embedding`.

use crate::check::context::{CheckContext, Failure};
use crate::check::error::{LayerRef, Producer, ShapeErrorKind};
use crate::check::fix::{Edit, Fix};
use crate::check::shape::{Dim, SymShape};
use crate::init::{InitTargets, LayerInit};
use crate::layer::{BuildContext, Layer, LayerKind, TensorShapes};
use crate::model_file::keys::LayerFields;
use crate::module::Module;
use crate::spec::LayerSpec;
use crate::{Error, Result};
use strata_core::{DType, Generator, Tensor, with_default_generator};

/// A table of `num_embeddings` vectors of size `embedding_dim`; the forward pass picks rows by
/// integer index. The weight starts N(0, 1), as PyTorch initialises it, and is named `weight`.
/// Its gradient adds up the gradients of every position that used a row. With a `padding_idx`
/// (PyTorch's), that row starts at zero and gets no gradient.
///
/// # Shapes
/// - input: `[*]` of `i64` indices in `0..num_embeddings` (usually `[N, T]` token ids)
/// - output: `[*, embedding_dim]`
/// - `weight`: `[num_embeddings, embedding_dim]`
#[derive(Debug, Clone)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
    padding_idx: Option<usize>,
}

impl Embedding {
    /// `nn.Embedding(num_embeddings, embedding_dim)`: f32, drawing from the default generator.
    pub fn new(num_embeddings: usize, embedding_dim: usize) -> Result<Embedding> {
        with_default_generator(|rng| Embedding::with_options(num_embeddings, embedding_dim, DType::F32, rng))
    }

    /// A table of the given float type, drawing its N(0, 1) weight from `rng`.
    pub fn with_options(
        num_embeddings: usize,
        embedding_dim: usize,
        dtype: DType,
        rng: &mut Generator,
    ) -> Result<Embedding> {
        for (key, v) in [("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)] {
            if v == 0 {
                return Err(Error::option("Embedding", key, 0, "at least 1"));
            }
        }
        let weight = Tensor::randn(&[num_embeddings, embedding_dim], 0.0, 1.0, dtype, rng)?.requires_grad_()?;
        Ok(Embedding { weight, padding_idx: None })
    }

    /// A table from an existing `[num_embeddings, embedding_dim]` float tensor (PyTorch's
    /// `from_pretrained(weight, freeze=False)`); it becomes a parameter.
    pub fn from_tensor(weight: Tensor) -> Result<Embedding> {
        if weight.ndim() != 2 || !weight.dtype().is_float() {
            return Err(Error::InvalidTensor {
                owner: "Embedding",
                name: "weight",
                got: format!("{} {:?}", weight.shape(), weight.dtype()),
                expected: "a float [num_embeddings, embedding_dim] tensor".into(),
            });
        }
        Ok(Embedding { weight: weight.detach().contiguous()?.detach().requires_grad_()?, padding_idx: None })
    }

    /// Sets PyTorch's `padding_idx`: row `padding_idx` is zeroed (as `nn.Embedding` initialises
    /// it) and gets no gradient. Negative values count from the end, as in PyTorch.
    pub fn padding_idx(mut self, padding_idx: i64) -> Result<Embedding> {
        let rows = self.num_embeddings() as i64;
        if padding_idx >= rows || padding_idx < -rows {
            let expected = format!("within num_embeddings ({rows}): in {}..{rows}", -rows);
            return Err(Error::option("Embedding", "padding_idx", padding_idx, expected));
        }
        let p = if padding_idx < 0 { padding_idx + rows } else { padding_idx } as usize;
        let dim = self.embedding_dim();
        let mut values = self.weight.to_vec_f64();
        values[p * dim..(p + 1) * dim].fill(0.0);
        let zeroed = Tensor::from_vec(values, self.weight.dims())?.to_dtype(self.weight.dtype())?;
        self.weight = zeroed.requires_grad_()?;
        self.padding_idx = Some(p);
        Ok(self)
    }

    /// The padding row, if any.
    pub fn padding_index(&self) -> Option<usize> {
        self.padding_idx
    }

    /// Number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Size of each vector.
    pub fn embedding_dim(&self) -> usize {
        self.weight.dims()[1]
    }
}

impl Module for Embedding {
    fn forward(&self, indices: &Tensor) -> Result<Tensor> {
        Ok(strata_core::embedding_padded(indices, &self.weight, self.padding_idx)?)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
    fn describe(&self) -> String {
        self.spec().map(|s| s.to_string()).unwrap_or_default()
    }
    fn spec(&self) -> Option<LayerSpec> {
        Some(LayerSpec::Embedding {
            num_embeddings: self.num_embeddings(),
            embedding_dim: self.embedding_dim(),
            padding_idx: self.padding_idx,
        })
    }
}

/// The config of `nn.Embedding(num_embeddings, embedding_dim, padding_idx=None)` in a model
/// spec.
///
/// # Shapes
/// - input: `[N, *]` of `i64` token ids
/// - output: `[N, *, embedding_dim]`
/// - parameters: `weight` `[num_embeddings, embedding_dim]`
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingSpec {
    /// Rows of the table: the vocabulary size (ids must be below it).
    pub num_embeddings: usize,
    /// Size of each vector.
    pub embedding_dim: usize,
    /// A row that starts at zero and gets no gradient (non-negative here).
    pub padding_idx: Option<usize>,
}

/// `type = "Embedding"`, `num_embeddings`, `embedding_dim`, `padding_idx` (negative counts from
/// the end, as in PyTorch).
pub static EMBEDDING_KIND: LayerKind = LayerKind {
    type_name: "Embedding",
    keys: &["name", "type", "num_embeddings", "embedding_dim", "padding_idx", "init"],
    layer_of: None,
    parse: Some(parse_embedding),
};

fn parse_embedding(f: &mut LayerFields<'_, '_>) -> Option<LayerSpec> {
    let num_embeddings = f.required("num_embeddings");
    let embedding_dim = f.required("embedding_dim");
    let padding_idx = match (f.get("padding_idx"), num_embeddings) {
        (Some(_), Some(n)) => {
            let (p, n) = (f.int("padding_idx")?, n as i64);
            if p >= n || p < -n {
                let span = f.span_of("padding_idx");
                f.error(
                    span,
                    format!("`padding_idx` must be within num_embeddings ({n}), got {p}"),
                    Some("a row of the table; negative values count from the end, as in PyTorch".into()),
                );
                return None;
            }
            // PyTorch keeps the non-negative form too.
            Some(if p < 0 { p + n } else { p } as usize)
        }
        _ => None,
    };
    Some(LayerSpec::Embedding { num_embeddings: num_embeddings?, embedding_dim: embedding_dim?, padding_idx })
}

impl Layer for EmbeddingSpec {
    fn type_name(&self) -> &'static str {
        "Embedding"
    }

    fn describe(&self) -> String {
        match self.padding_idx {
            Some(p) => format!("Embedding({}, {}, padding_idx={p})", self.num_embeddings, self.embedding_dim),
            None => format!("Embedding({}, {})", self.num_embeddings, self.embedding_dim),
        }
    }

    fn check(&mut self, cx: &mut CheckContext<'_>, x: &SymShape) -> SymShape {
        if cx.dtype.is_float() && cx.float_from.is_some() && x.last().is_some() {
            // Carry on as the suggested Linear would: features projected, not looked up.
            x.with_last(self.embedding_dim)
        } else {
            let mut v = x.0.clone();
            v.push(Dim::Fixed(self.embedding_dim));
            SymShape(v)
        }
    }

    fn produces(&self, layer: &LayerRef) -> Option<Producer> {
        Some(Producer::Embedding(layer.clone()))
    }

    /// An Embedding takes token ids and nothing else.
    fn dtype_error(&self, cx: &CheckContext<'_>, x: &SymShape) -> Option<Failure> {
        if !cx.dtype.is_float() {
            return None;
        }
        let (path, embedding_dim) = (cx.path, self.embedding_dim);
        let fixes = match (cx.float_from, x.last()) {
            (None, _) => vec![Fix {
                text: "the model input holds token ids: set input_dtype = \"i64\"".into(),
                edits: vec![Edit::SetInputDType { dtype: DType::I64 }],
            }],
            (Some(_), Some(f)) => vec![Fix {
                text: format!(
                    "replace {path} with Linear({f}, {embedding_dim}) (a Linear projects float features; an Embedding looks up integer ids)"
                ),
                edits: vec![Edit::Replace {
                    path: path.into(),
                    spec: LayerSpec::Linear { in_features: Some(f), out_features: embedding_dim, bias: true },
                }],
            }],
            (Some(_), None) => vec![],
        };
        let kind = ShapeErrorKind::WrongDType {
            expected: DType::I64,
            got: cx.dtype,
            float_from: cx.float_from.cloned(),
            layer_type: "Embedding".into(),
        };
        Some((kind, fixes))
    }

    fn init_targets(&self) -> Option<InitTargets> {
        Some(InitTargets { weight_dims: 2, bias: false, inherits: true })
    }

    fn parameter_shapes(&self) -> Option<TensorShapes> {
        Some(vec![("weight".into(), vec![self.num_embeddings, self.embedding_dim])])
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Module>> {
        let (n, d, dtype) = (self.num_embeddings, self.embedding_dim, cx.dtype);
        let e = with_default_generator(|g| Embedding::with_options(n, d, dtype, g))?;
        Ok(Box::new(match self.padding_idx {
            Some(p) => e.padding_idx(p as i64)?,
            None => e,
        }))
    }

    /// The scheme, then the padding row back to zero: it starts at zero whatever the scheme,
    /// as `nn.Embedding` initialises it.
    fn reinit(&self, module: &dyn Module, init: &LayerInit, rng: &mut Generator) -> Result<()> {
        crate::init::apply_own(module, init, rng)?;
        let (Some(p), Some((_, weight))) = (self.padding_idx, module.own_parameters().into_iter().next()) else {
            return Ok(());
        };
        // weight: [num_embeddings, embedding_dim]; row p is the padding row.
        let row = p * self.embedding_dim..(p + 1) * self.embedding_dim;
        match weight.dtype() {
            DType::F32 => weight.update_::<f32, _>(|d| d[row].fill(0.0))?,
            _ => weight.update_::<f64, _>(|d| d[row].fill(0.0))?,
        }
        Ok(())
    }

    fn write_toml(&self, fields: &mut Vec<String>) {
        fields.push(format!("num_embeddings = {}", self.num_embeddings));
        fields.push(format!("embedding_dim = {}", self.embedding_dim));
        if let Some(p) = self.padding_idx {
            fields.push(format!("padding_idx = {p}"));
        }
    }

    fn apply_edit(&mut self, edit: &Edit) -> bool {
        match edit {
            Edit::SetEmbeddingDim { value, .. } => self.embedding_dim = *value,
            _ => return false,
        }
        true
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Embedding {
            num_embeddings: self.num_embeddings,
            embedding_dim: self.embedding_dim,
            padding_idx: self.padding_idx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_normal_init_names_and_lookup() {
        let mut rng = Generator::new(4);
        let e = Embedding::with_options(1000, 16, DType::F32, &mut rng).unwrap();
        let w = e.weight.to_vec_f64();
        let mean = w.iter().sum::<f64>() / w.len() as f64;
        let var = w.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / w.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        let names: Vec<_> = e.named_parameters().into_iter().map(|(n, t)| (n, t.dims().to_vec())).collect();
        assert_eq!(names, [("weight".to_string(), vec![1000, 16])]);
        let ids = Tensor::from_vec(vec![3i64, 999, 0, 3], &[2, 2]).unwrap();
        assert_eq!(e.forward(&ids).unwrap().dims(), &[2, 2, 16]);
        let bad = Tensor::from_vec(vec![1000i64], &[1]).unwrap();
        assert!(e.forward(&bad).unwrap_err().to_string().contains("index 1000 at position [0]"));
        assert_eq!(e.describe(), "Embedding(1000, 16)");
        assert!(Embedding::new(0, 3).unwrap_err().to_string().contains("at least 1"));
    }

    #[test]
    fn padding_row_starts_at_zero_and_stays_there() {
        // nn.Embedding(4, 3, padding_idx=-1): row 3 is zero, and its gradient too.
        let e = Embedding::with_options(4, 3, DType::F64, &mut Generator::new(1)).unwrap().padding_idx(-1).unwrap();
        assert_eq!(e.padding_index(), Some(3));
        assert_eq!(&e.weight.to_vec_f64()[9..], [0.0; 3]);
        assert!(e.weight.to_vec_f64()[..9].iter().all(|v| *v != 0.0));
        let ids = Tensor::from_vec(vec![3i64, 1, 3], &[1, 3]).unwrap();
        e.forward(&ids).unwrap().sum_all().unwrap().backward().unwrap();
        let g = e.weight.grad().unwrap().to_vec_f64();
        assert_eq!(g, [0., 0., 0., 1., 1., 1., 0., 0., 0., 0., 0., 0.]);
        assert_eq!(e.describe(), "Embedding(4, 3, padding_idx=3)");
        assert!(
            e.padding_idx(4)
                .unwrap_err()
                .to_string()
                .contains("padding_idx must be within num_embeddings (4): in -4..4, got 4")
        );
    }
}
