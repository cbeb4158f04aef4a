//! `embedding`: row lookup in a weight table by integer index (`F.embedding`). Backward adds
//! each output row's gradient into the row it came from, in index order, so repeated indices
//! accumulate and the result is the same on every run; a `padding_idx` row gets no gradient.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernels, `gpu.rs` and its
//! `.wgsl` the GPU ones (the `gpu` feature).

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;

use crate::device::DType;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Gathers rows of `weight` by `indices`, as `torch.nn.functional.embedding(indices, weight)`.
///
/// Indices out of range are an error that names the index, where it is and the valid range; on a
/// GPU, where the indices are not read back to check them, such an index gives a row of NaN (as a
/// bad class index gives a NaN loss there), which a training loop's finiteness check reports.
///
/// # Shapes
/// - `indices`: any shape `[*]`, `i64`
/// - `weight`: `[num_embeddings, embedding_dim]`, float
/// - output: `[*, embedding_dim]`
///
/// ```
/// # use strata_core::{Tensor, embedding};
/// let w = Tensor::from_vec(vec![0.0f32, 1.0, 10.0, 11.0, 20.0, 21.0], &[3, 2])?;
/// let i = Tensor::from_vec(vec![2i64, 0, 2], &[3])?;
/// assert_eq!(embedding(&i, &w)?.to_vec::<f32>()?, [20., 21., 0., 1., 20., 21.]);
/// # Ok::<(), strata_core::Error>(())
/// ```
pub fn embedding(indices: &Tensor, weight: &Tensor) -> Result<Tensor> {
    embedding_padded(indices, weight, None)
}

/// [`embedding`] with PyTorch's `padding_idx`: positions holding that index still read its row,
/// but add nothing to its gradient (`F.embedding(indices, weight, padding_idx)`), so a padding
/// vector initialised to zeros stays zero in training.
///
/// # Shapes
/// - as [`embedding`]; `padding_idx` is a row of `weight`, `0..num_embeddings`
pub fn embedding_padded(indices: &Tensor, weight: &Tensor, padding_idx: Option<usize>) -> Result<Tensor> {
    if indices.dtype() != DType::I64 {
        return Err(Error::UnsupportedDType {
            op: "embedding",
            dtype: indices.dtype(),
            hint: " as indices (they must be I64 integers; convert with `.to_dtype(DType::I64)`)",
        });
    }
    if indices.device() != weight.device() {
        return Err(Error::DeviceMismatch { op: "embedding", lhs: indices.device(), rhs: weight.device() });
    }
    if weight.ndim() != 2 {
        return Err(Error::ShapeMismatch {
            op: "embedding",
            what: "weight",
            got: weight.shape().clone(),
            expected: "[num_embeddings, embedding_dim]".into(),
        });
    }
    let (rows, dim) = (weight.dims()[0], weight.dims()[1]);
    if let Some(p) = padding_idx.filter(|&p| p >= rows) {
        crate::bail_arg!("embedding", "padding_idx {p} is not a row of a weight of shape {}", weight.shape());
    }
    let mut out_dims = indices.dims().to_vec();
    out_dims.push(dim);
    #[cfg(feature = "gpu")]
    if weight.device().is_gpu() {
        // The indices stay on the device: no range check there (a bad index gives a NaN row).
        return gpu::embedding(indices, weight, padding_idx, out_dims);
    }
    let idx = indices.to_vec::<i64>()?;
    if let Some(pos) = idx.iter().position(|&i| i < 0 || i as u64 >= rows as u64) {
        crate::bail_arg!(
            "embedding",
            "index {} at position {:?} of the indices (shape {}) is out of range for a weight of shape {} \
             (valid indices: 0..={} along dimension 0)",
            idx[pos],
            unravel(pos, indices.dims()),
            indices.shape(),
            weight.shape(),
            rows as i64 - 1
        );
    }
    let storage = cpu::embedding(weight, &idx, dim)?;
    let weight_shape = weight.shape().clone();
    Ok(Tensor::from_op(storage, Shape(out_dims), "embedding", &[weight], move |g| {
        // d_weight[idx[p]] += g[p], in order of p, except at padding positions.
        let pad = padding_idx.map(|p| p as i64);
        let d_weight = cpu::embedding_backward(g, &idx, pad, rows, dim)?;
        Ok(vec![Some(Tensor::from_storage(d_weight, weight_shape))])
    }))
}

/// The multi-index of flat position `pos` in `dims`.
fn unravel(mut pos: usize, dims: &[usize]) -> Vec<usize> {
    let mut out = vec![0; dims.len()];
    for (o, &d) in out.iter_mut().zip(dims).rev() {
        *o = pos % d.max(1);
        pos /= d.max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{embedding, embedding_padded};
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    #[test]
    fn repeated_indices_accumulate() {
        let w = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]).unwrap().requires_grad_().unwrap();
        let i = Tensor::from_vec(vec![1i64, 1, 0, 1], &[2, 2]).unwrap();
        let y = embedding(&i, &w).unwrap();
        assert_eq!(y.dims(), &[2, 2, 2]);
        assert_eq!(y.to_vec::<f64>().unwrap(), [3., 4., 3., 4., 1., 2., 3., 4.]);
        y.sum_all().unwrap().backward().unwrap();
        assert_close(&w.grad().unwrap().to_vec_f64(), &[1., 1., 3., 3., 0., 0.], 0.0, 0.0);
    }

    #[test]
    fn padding_rows_are_read_but_get_no_gradient() {
        // F.embedding(i, w, padding_idx=1) in PyTorch: w.grad = [[1, 1], [0, 0], [0, 0]].
        let w = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]).unwrap().requires_grad_().unwrap();
        let i = Tensor::from_vec(vec![1i64, 1, 0, 1], &[2, 2]).unwrap();
        let y = embedding_padded(&i, &w, Some(1)).unwrap();
        assert_eq!(y.to_vec::<f64>().unwrap(), [3., 4., 3., 4., 1., 2., 3., 4.]);
        y.sum_all().unwrap().backward().unwrap();
        assert_close(&w.grad().unwrap().to_vec_f64(), &[1., 1., 0., 0., 0., 0.], 0.0, 0.0);
        let e = embedding_padded(&i, &w, Some(3)).unwrap_err().to_string();
        assert_eq!(e, "embedding: padding_idx 3 is not a row of a weight of shape [3, 2]");
    }

    #[test]
    fn errors_name_index_position_and_range() {
        let w = Tensor::zeros(&[10, 4], DType::F32);
        let i = Tensor::from_vec(vec![0i64, 3, 12, 1], &[2, 2]).unwrap();
        assert_eq!(
            embedding(&i, &w).unwrap_err().to_string(),
            "embedding: index 12 at position [1, 0] of the indices (shape [2, 2]) is out of range for a weight \
             of shape [10, 4] (valid indices: 0..=9 along dimension 0)"
        );
        let neg = Tensor::from_vec(vec![-1i64], &[1]).unwrap();
        assert!(embedding(&neg, &w).unwrap_err().to_string().contains("index -1 at position [0]"));
        let f = Tensor::zeros(&[2], DType::F32);
        assert!(embedding(&f, &w).unwrap_err().to_string().contains("must be I64"));
        assert!(
            embedding(&neg, &Tensor::zeros(&[3], DType::F32)).unwrap_err().to_string().contains("weight has shape [3]")
        );
    }

    #[test]
    fn gradcheck_embedding() {
        let mut rng = Generator::new(81);
        let w = randn64(&[5, 3], &mut rng);
        let i = Tensor::from_vec(vec![4i64, 0, 4, 2, 2, 2], &[2, 3]).unwrap();
        gradcheck(std::slice::from_ref(&w), |t| embedding(&i, &t[0]));
        // A transposed (strided) weight and a scalar index.
        gradcheck(&[randn64(&[3, 5], &mut rng)], |t| embedding(&Tensor::scalar(3i64), &t[0].t()?));
    }
}
