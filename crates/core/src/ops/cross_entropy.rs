//! The fused, numerically stable cross-entropy of logits against class indices, as
//! `torch.nn.functional.cross_entropy`: loss_i = logsumexp(x_i) − x_i[t_i], computed as
//! m + ln Σ exp(x − m) with m the row maximum, so logits of ±1e4 neither overflow nor lose the
//! answer. Backward: d x_i = (softmax(x_i) − onehot(t_i)) · g / N for the mean.

use super::with_float;
use crate::device::DType;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;

/// How per-sample losses are combined, as PyTorch's `reduction=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean over samples (the default).
    #[default]
    Mean,
    /// The sum over samples.
    Sum,
    /// No reduction: one loss per sample, shape `[N]`.
    None,
}

/// Cross-entropy between `logits` and class indices `target`.
///
/// # Shapes
/// - `logits`: `[N, C]` (unnormalised scores; no softmax before it)
/// - `target`: `[N]`, `i64` class indices in `0..C`
/// - output: `[]` for `Mean` and `Sum`, `[N]` for `None`
pub fn cross_entropy(logits: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    if logits.ndim() != 2 {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "logits",
            got: logits.shape().clone(),
            expected: "[N, C] (a batch of class scores)".into(),
        });
    }
    let (n, c) = (logits.dims()[0], logits.dims()[1]);
    if target.dtype() != DType::I64 {
        return Err(Error::UnsupportedDType {
            op: OP,
            dtype: target.dtype(),
            hint: " as target: class indices must be i64",
        });
    }
    if target.dims() != [n] {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "target",
            got: target.shape().clone(),
            expected: format!("[{n}] (one class index per row of the logits)"),
        });
    }
    if c == 0 {
        crate::bail_arg!(OP, "the logits have 0 classes");
    }
    let t = target.to_vec::<i64>()?;
    if let Some((index, &value)) = t.iter().enumerate().find(|&(_, &v)| v < 0 || v as usize >= c) {
        return Err(Error::TargetOutOfRange { op: OP, index, value, classes: c });
    }
    let x = logits.contiguous()?;
    let s = x.storage();
    let o = x.layout().offset;
    let (losses, probs) = with_float!(s, OP, |v: T| {
        let (l, p) = ce_forward::<T>(&v[o..o + n * c], &t, c);
        Ok((l, T::wrap(p)))
    })?;
    let (value, shape) = match reduction {
        Reduction::Mean => (vec![losses.iter().sum::<f64>() / n as f64], Shape(vec![])),
        Reduction::Sum => (vec![losses.iter().sum::<f64>()], Shape(vec![])),
        Reduction::None => (losses, Shape(vec![n])),
    };
    let storage = match logits.dtype() {
        DType::F32 => CpuStorage::F32(value.iter().map(|&v| v as f32).collect()),
        _ => CpuStorage::F64(value),
    };
    let probs = Tensor::from_storage(probs, Shape(vec![n, c]));
    Ok(Tensor::from_op(storage, shape, OP, &[logits], move |g| {
        // (softmax − onehot), scaled per row by the upstream gradient (and 1/N for the mean).
        let g = g.to_vec_f64();
        let scale: Vec<f64> = match reduction {
            Reduction::Mean => vec![g[0] / n as f64; n],
            Reduction::Sum => vec![g[0]; n],
            Reduction::None => g,
        };
        let ps = probs.storage();
        let d = with_float!(ps, OP, |p: T| {
            let mut d = p.to_vec();
            for (i, row) in d.chunks_exact_mut(c).enumerate() {
                row[t[i] as usize] -= T::ONE;
                let s = T::from_f64(scale[i]);
                row.iter_mut().for_each(|v| *v *= s);
            }
            Ok(T::wrap(d))
        })?;
        Ok(vec![Some(Tensor::from_storage(d, Shape(vec![n, c])))])
    }))
}

/// Per-row losses (in f64) and softmax probabilities for logits `x` [n, c].
fn ce_forward<T: Float>(x: &[T], target: &[i64], c: usize) -> (Vec<f64>, Vec<T>) {
    let mut losses = Vec::with_capacity(target.len());
    let mut probs = Vec::with_capacity(x.len());
    for (row, &t) in x.chunks_exact(c).zip(target) {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.to_f64()));
        let sum: f64 = row.iter().map(|&v| (v.to_f64() - m).exp()).sum();
        let lse = m + sum.ln();
        losses.push(lse - row[t as usize].to_f64());
        probs.extend(row.iter().map(|&v| T::from_f64((v.to_f64() - lse).exp())));
    }
    (losses, probs)
}

#[cfg(test)]
mod tests {
    use super::{Reduction, cross_entropy};
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{Generator, Tensor};

    #[test]
    fn hand_derived_values() {
        // Two equal logits: loss ln 2 whatever the target.
        let x = Tensor::from_vec(vec![3.0f64, 3.0], &[1, 2]).unwrap();
        let t = Tensor::from_vec(vec![1i64], &[1]).unwrap();
        assert_close(&[cross_entropy(&x, &t, Reduction::Mean).unwrap().item().unwrap()], &[2f64.ln()], 1e-15, 0.0);
        // Logits of ±1e4 stay finite in f32.
        let x = Tensor::from_vec(vec![1e4f32, -1e4, 1e4], &[1, 3]).unwrap();
        let t = Tensor::from_vec(vec![1i64], &[1]).unwrap();
        let l = cross_entropy(&x, &t, Reduction::Mean).unwrap().item().unwrap();
        assert!((l - (2e4 + 2f64.ln())).abs() < 1e-2, "{l}");
    }

    #[test]
    fn bad_targets_are_errors() {
        let x = Tensor::zeros(&[2, 3], crate::DType::F32);
        let t = Tensor::from_vec(vec![0i64, 3], &[2]).unwrap();
        assert_eq!(
            cross_entropy(&x, &t, Reduction::Mean).unwrap_err().to_string(),
            "cross_entropy: target 1 is class 3, but the input has 3 classes (valid: 0..=2)"
        );
        let t = Tensor::from_vec(vec![0i64], &[1]).unwrap();
        assert!(
            cross_entropy(&x, &t, Reduction::Mean)
                .unwrap_err()
                .to_string()
                .contains("target has shape [1], expected [2]")
        );
        let t = Tensor::from_vec(vec![0.0f32, 1.0], &[2]).unwrap();
        assert!(cross_entropy(&x, &t, Reduction::Mean).unwrap_err().to_string().contains("class indices must be i64"));
    }

    #[test]
    fn gradcheck_cross_entropy() {
        let mut rng = Generator::new(61);
        let x = randn64(&[5, 4], &mut rng).mul_scalar(3.0).unwrap();
        let t = Tensor::from_vec(vec![0i64, 3, 1, 1, 2], &[5]).unwrap();
        for r in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            gradcheck(std::slice::from_ref(&x), |v| cross_entropy(&v[0], &t, r));
        }
    }
}
