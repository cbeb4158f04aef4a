//! `Embedding`: a lookup table of learned vectors indexed by token id, PyTorch's `nn.Embedding`.

use crate::module::Module;
use crate::{Error, Result};
use strata_core::{DType, Generator, Tensor, with_default_generator};

/// A table of `num_embeddings` vectors of size `embedding_dim`; the forward pass picks rows by
/// integer index. The weight starts N(0, 1), as PyTorch initialises it, and is named `weight`.
/// Its gradient adds up the gradients of every position that used a row.
///
/// # Shapes
/// - input: `[*]` of `i64` indices in `0..num_embeddings` (usually `[N, T]` token ids)
/// - output: `[*, embedding_dim]`
/// - `weight`: `[num_embeddings, embedding_dim]`
#[derive(Debug, Clone)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
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
        if num_embeddings == 0 || embedding_dim == 0 {
            return Err(Error::InvalidConfig {
                what: "Embedding",
                message: format!(
                    "num_embeddings and embedding_dim must be at least 1, got Embedding({num_embeddings}, {embedding_dim})"
                ),
            });
        }
        let weight = Tensor::randn(&[num_embeddings, embedding_dim], 0.0, 1.0, dtype, rng)?.requires_grad_()?;
        Ok(Embedding { weight })
    }

    /// A table from an existing `[num_embeddings, embedding_dim]` float tensor (PyTorch's
    /// `from_pretrained(weight, freeze=False)`); it becomes a parameter.
    pub fn from_tensor(weight: Tensor) -> Result<Embedding> {
        if weight.ndim() != 2 || !weight.dtype().is_float() {
            return Err(Error::InvalidConfig {
                what: "Embedding",
                message: format!(
                    "weight must be a float [num_embeddings, embedding_dim] tensor, got {} {:?}",
                    weight.shape(),
                    weight.dtype()
                ),
            });
        }
        Ok(Embedding { weight: weight.detach().contiguous()?.detach().requires_grad_()? })
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
        Ok(strata_core::embedding(indices, &self.weight)?)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
    fn describe(&self) -> String {
        format!("Embedding({}, {})", self.num_embeddings(), self.embedding_dim())
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
}
