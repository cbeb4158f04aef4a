//! The fused, numerically stable cross-entropy of logits against class indices, as
//! `torch.nn.functional.cross_entropy`: `loss_i = logsumexp(x_i) − x_i[t_i]`, computed as
//! `m + ln Σ exp(x − m)` with m the row maximum, so logits of ±1e4 neither overflow nor lose the
//! answer. Backward: d x_i = (softmax(x_i) − onehot(t_i)) · g / N for the mean.
//!
//! Beside it, as PyTorch computes them: [`cross_entropy_with`] (class weights, `ignore_index`,
//! label smoothing), [`nll_loss`] on log-probabilities, and the stable
//! [`binary_cross_entropy_with_logits`] (optional `pos_weight`).

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;
use crate::device::DType;
use crate::error::{Error, Result};
use crate::shape::Shape;
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
    if target.device() != logits.device() {
        return Err(Error::DeviceMismatch { op: OP, lhs: logits.device(), rhs: target.device() });
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
    #[cfg(feature = "gpu")]
    if logits.device().is_gpu() {
        // Per-row losses, then the reduction as ops (their backward scales the rows).
        let rows = gpu::rows(logits, target)?;
        return match reduction {
            Reduction::None => Ok(rows),
            Reduction::Sum => rows.sum_all(),
            Reduction::Mean => rows.mean_all(),
        };
    }
    cpu::cross_entropy(logits, target, reduction, (n, c))
}

// ------------------------------------------------------------------ weights, smoothing, NLL

/// PyTorch's keyword arguments of `F.cross_entropy` beyond the reduction.
///
/// `weight` (`[C]`, the logits' type) rescales each class; `ignore_index` names a target value
/// whose rows contribute nothing (PyTorch's default is −100; here `None` ignores nothing and
/// such a target is an error); `label_smoothing` ε in `[0, 1]` mixes the one-hot target with
/// the uniform distribution.
#[derive(Clone, Debug, Default)]
pub struct CrossEntropyOptions {
    /// How per-sample losses are combined.
    pub reduction: Reduction,
    /// A weight per class, `[C]`.
    pub weight: Option<Tensor>,
    /// Rows whose target equals this value are left out (of the mean's denominator too).
    pub ignore_index: Option<i64>,
    /// ε: the loss becomes (1 − ε)·nll + ε·(mean over classes of −log p).
    pub label_smoothing: f64,
}

/// Cross-entropy with class weights, `ignore_index` and label smoothing, exactly as
/// `F.cross_entropy(logits, target, weight=, ignore_index=, reduction=, label_smoothing=)`.
///
/// With `logp = log_softmax(x)`, `w` the class weights (ones when absent) and `ε` the smoothing,
/// each row that is not ignored has
/// `loss_i = (1 − ε)·w[t_i]·(−logp[i, t_i]) + ε/C · Σ_c w[c]·(−logp[i, c])`;
/// the mean divides the sum by `Σ_i w[t_i]` over the rows not ignored (so it is NaN when every
/// row is ignored, as in PyTorch). Without options this is [`cross_entropy`].
///
/// # Shapes
/// - `logits`: `[N, C]`
/// - `target`: `[N]`, `i64` class indices in `0..C` (or `ignore_index`)
/// - `weight`: `[C]`
/// - output: `[]` for `Mean` and `Sum`, `[N]` for `None`
pub fn cross_entropy_with(logits: &Tensor, target: &Tensor, options: &CrossEntropyOptions) -> Result<Tensor> {
    if options.weight.is_none() && options.ignore_index.is_none() && options.label_smoothing == 0.0 {
        return cross_entropy(logits, target, options.reduction);
    }
    weighted_nll("cross_entropy", logits, target, options, true)
}

/// The negative log-likelihood of log-probabilities against class indices, as
/// `F.nll_loss(log_probs, target, weight=, ignore_index=, reduction=)`:
/// `loss_i = −w[t_i]·x[i, t_i]`, the mean divided by `Σ_i w[t_i]` over the rows not ignored.
/// Meant to follow `log_softmax` (together they are [`cross_entropy`]).
///
/// # Shapes
/// - `log_probs`: `[N, C]`
/// - `target`: `[N]`, `i64` class indices in `0..C` (or `ignore_index`)
/// - `weight`: `[C]`
/// - output: `[]` for `Mean` and `Sum`, `[N]` for `None`
pub fn nll_loss(
    log_probs: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: Option<i64>,
    reduction: Reduction,
) -> Result<Tensor> {
    let options = CrossEntropyOptions { reduction, weight: weight.cloned(), ignore_index, label_smoothing: 0.0 };
    weighted_nll("nll_loss", log_probs, target, &options, false)
}

/// `(N, C, targets, class weights)`.
pub(crate) type ClassArgs = (usize, usize, Vec<i64>, Option<Vec<f64>>);

/// Checks the shapes, dtypes and devices of `x` `[N, C]`, `target` `[N]` (i64) and the
/// options, reading no values; returns `(N, C)`.
fn check_class_shapes(
    op: &'static str,
    x: &Tensor,
    target: &Tensor,
    options: &CrossEntropyOptions,
) -> Result<(usize, usize)> {
    if x.ndim() != 2 {
        return Err(Error::ShapeMismatch {
            op,
            what: "input",
            got: x.shape().clone(),
            expected: "[N, C] (a batch of class scores)".into(),
        });
    }
    let (n, c) = (x.dims()[0], x.dims()[1]);
    if target.dtype() != DType::I64 {
        return Err(Error::UnsupportedDType {
            op,
            dtype: target.dtype(),
            hint: " as target: class indices must be i64",
        });
    }
    if target.device() != x.device() {
        return Err(Error::DeviceMismatch { op, lhs: x.device(), rhs: target.device() });
    }
    if target.dims() != [n] {
        return Err(Error::ShapeMismatch {
            op,
            what: "target",
            got: target.shape().clone(),
            expected: format!("[{n}] (one class index per row of the input {})", x.shape()),
        });
    }
    if c == 0 {
        crate::bail_arg!(op, "the input {} has 0 classes", x.shape());
    }
    if let Some(w) = &options.weight {
        x.check_same(op, w)?;
        if w.dims() != [c] {
            return Err(Error::ShapeMismatch {
                op,
                what: "weight",
                got: w.shape().clone(),
                expected: format!("[{c}] (one weight per class of the input {})", x.shape()),
            });
        }
    }
    let eps = options.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        crate::bail_arg!(op, "label_smoothing must be in [0, 1], got {eps}");
    }
    Ok((n, c))
}

/// Checks `x` `[N, C]`, `target` `[N]` (i64, in range or ignored) and the options; returns
/// `(N, C, targets, class weights)`, read to the host.
fn check_class_args(op: &'static str, x: &Tensor, target: &Tensor, options: &CrossEntropyOptions) -> Result<ClassArgs> {
    let (n, c) = check_class_shapes(op, x, target, options)?;
    let weight = options.weight.as_ref().map(Tensor::to_vec_f64);
    let t = target.to_vec::<i64>()?;
    let bad = t.iter().enumerate().find(|&(_, &v)| Some(v) != options.ignore_index && (v < 0 || v as usize >= c));
    if let Some((index, &value)) = bad {
        return Err(Error::TargetOutOfRange { op, index, value, classes: c });
    }
    Ok((n, c, t, weight))
}

/// The weighted, smoothed negative log-likelihood behind [`cross_entropy_with`] (`softmax`:
/// the input is logits) and [`nll_loss`] (the input is log-probabilities). Computed in f64.
fn weighted_nll(
    op: &'static str,
    x: &Tensor,
    target: &Tensor,
    options: &CrossEntropyOptions,
    softmax: bool,
) -> Result<Tensor> {
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        // Targets stay on the device (one outside 0..C gives a NaN loss, as in `cross_entropy`).
        check_class_shapes(op, x, target, options)?;
        let (ignore, eps) = (options.ignore_index, options.label_smoothing);
        let (rows, row_weights) = gpu::weighted_rows(op, x, target, options.weight.as_ref(), ignore, eps, softmax)?;
        return match options.reduction {
            Reduction::None => Ok(rows),
            Reduction::Sum => rows.sum_all(),
            Reduction::Mean => rows.sum_all()?.div(&row_weights.sum_all()?),
        };
    }
    let args = check_class_args(op, x, target, options)?;
    cpu::weighted_nll(op, x, args, options, softmax)
}

// ------------------------------------------------------------------ binary cross-entropy

/// Binary cross-entropy of logits against targets in `[0, 1]`, as
/// `F.binary_cross_entropy_with_logits(input, target, pos_weight=, reduction=)`: with
/// `sp(z) = ln(1 + eᶻ)` computed stably as `max(z, 0) + ln(1 + e^(−|z|))` and `pw` the positive
/// weight (1 when absent), `loss = (1 − y)·x + (1 + (pw − 1)·y)·sp(−x)`, which is
/// `−[pw·y·ln σ(x) + (1 − y)·ln(1 − σ(x))]` without overflow for any `x`. Gradients flow to
/// `input` and `target`, not to `pos_weight`.
///
/// # Shapes
/// - `input`, `target`: the same shape, any rank
/// - `pos_weight`: broadcastable to the input (typically `[C]` for the last dimension)
/// - output: `[]` for `Mean` and `Sum`, the input's shape for `None`
pub fn binary_cross_entropy_with_logits(
    input: &Tensor,
    target: &Tensor,
    pos_weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    const OP: &str = "binary_cross_entropy_with_logits";
    input.check_same(OP, target)?;
    if !input.dtype().is_float() {
        return Err(Error::UnsupportedDType { op: OP, dtype: input.dtype(), hint: " (logits must be f32 or f64)" });
    }
    if target.shape() != input.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "target",
            got: target.shape().clone(),
            expected: format!("{} (the input's shape: one target per logit)", input.shape()),
        });
    }
    let pw = match pos_weight {
        None => None,
        Some(pw) => {
            input.check_same(OP, pw)?;
            if Shape::broadcast(OP, pw.shape(), input.shape())? != *input.shape() {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    what: "pos_weight",
                    got: pw.shape().clone(),
                    expected: format!("a shape that broadcasts to the input's {}", input.shape()),
                });
            }
            Some(pw.expand(input.dims())?)
        }
    };
    #[cfg(feature = "gpu")]
    if input.device().is_gpu() {
        let losses = gpu::bce_elements(input, target, pw.as_ref())?;
        return match reduction {
            Reduction::None => Ok(losses),
            Reduction::Sum => losses.sum_all(),
            Reduction::Mean => losses.mean_all(),
        };
    }
    cpu::binary_cross_entropy_with_logits(input, target, pw.as_ref(), reduction)
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

    #[test]
    fn weighted_smoothed_by_hand() {
        use super::{CrossEntropyOptions, cross_entropy_with};
        // Two equal logits over 2 classes: logp = ln ½ for both. Weights [1, 3], targets [0, 1]:
        // nll = (1·ln2 + 3·ln2)/(1 + 3) = ln 2; smoothing term per row (1 + 3)·ln 2 / 2 = 2 ln 2,
        // summed 4 ln 2, divided by 4 = ln 2; so with ε = 0.5 the mean is ln 2 too.
        let x = Tensor::from_vec(vec![0.5f64, 0.5, -1.0, -1.0], &[2, 2]).unwrap();
        let t = Tensor::from_vec(vec![0i64, 1], &[2]).unwrap();
        let weight = Some(Tensor::from_vec(vec![1.0f64, 3.0], &[2]).unwrap());
        let o = CrossEntropyOptions { weight, label_smoothing: 0.5, ..Default::default() };
        let l = cross_entropy_with(&x, &t, &o).unwrap().item().unwrap();
        assert_close(&[l], &[2f64.ln()], 1e-15, 0.0);
        // Per row with Reduction::None: row 0 = 0.5·1·ln2 + 0.25·4 ln2, row 1 = 0.5·3·ln2 + 0.25·4 ln2.
        let o = CrossEntropyOptions { reduction: Reduction::None, ..o };
        let l = cross_entropy_with(&x, &t, &o).unwrap().to_vec_f64();
        assert_close(&l, &[1.5 * 2f64.ln(), 2.5 * 2f64.ln()], 1e-15, 0.0);
    }

    #[test]
    fn gradcheck_weighted_nll_and_bce() {
        use super::{CrossEntropyOptions, binary_cross_entropy_with_logits, cross_entropy_with, nll_loss};
        let mut rng = Generator::new(62);
        let x = randn64(&[5, 4], &mut rng).mul_scalar(3.0).unwrap();
        let t = Tensor::from_vec(vec![0i64, 3, 1, -100, 2], &[5]).unwrap();
        let w = Tensor::from_vec(vec![0.5f64, 2.0, 1.0, 1.5], &[4]).unwrap();
        for r in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            for (weight, eps) in [(None, 0.1), (Some(w.clone()), 0.0), (Some(w.clone()), 0.3)] {
                let o = CrossEntropyOptions { reduction: r, weight, ignore_index: Some(-100), label_smoothing: eps };
                gradcheck(std::slice::from_ref(&x), |v| cross_entropy_with(&v[0], &t, &o));
            }
            gradcheck(std::slice::from_ref(&x), |v| nll_loss(&v[0], &t, Some(&w), Some(-100), r));
            let y = Tensor::rand_uniform(&[3, 4], 0.0, 1.0, crate::DType::F64, &mut rng).unwrap();
            gradcheck(&[x.narrow(0, 0, 3).unwrap(), y.clone()], |v| {
                binary_cross_entropy_with_logits(&v[0], &v[1], Some(&w), r)
            });
            gradcheck(&[x.narrow(0, 0, 3).unwrap(), y], |v| binary_cross_entropy_with_logits(&v[0], &v[1], None, r));
        }
    }

    #[test]
    fn option_errors_name_op_and_shapes() {
        use super::{CrossEntropyOptions, binary_cross_entropy_with_logits, cross_entropy_with, nll_loss};
        let x = Tensor::zeros(&[2, 3], crate::DType::F32);
        let t = Tensor::from_vec(vec![0i64, 3], &[2]).unwrap();
        let o = CrossEntropyOptions { ignore_index: Some(-100), ..Default::default() };
        assert_eq!(
            cross_entropy_with(&x, &t, &o).unwrap_err().to_string(),
            "cross_entropy: target 1 is class 3, but the input has 3 classes (valid: 0..=2)"
        );
        let o = CrossEntropyOptions { weight: Some(Tensor::ones(&[2], crate::DType::F32)), ..Default::default() };
        let t = Tensor::from_vec(vec![0i64, 2], &[2]).unwrap();
        assert_eq!(
            cross_entropy_with(&x, &t, &o).unwrap_err().to_string(),
            "cross_entropy: weight has shape [2], expected [3] (one weight per class of the input [2, 3])"
        );
        let o = CrossEntropyOptions { label_smoothing: 1.5, ..Default::default() };
        assert!(cross_entropy_with(&x, &t, &o).unwrap_err().to_string().contains("label_smoothing must be in [0, 1]"));
        assert_eq!(
            nll_loss(&x, &Tensor::from_vec(vec![0i64], &[1]).unwrap(), None, None, Reduction::Mean)
                .unwrap_err()
                .to_string(),
            "nll_loss: target has shape [1], expected [2] (one class index per row of the input [2, 3])"
        );
        assert_eq!(
            binary_cross_entropy_with_logits(&x, &Tensor::zeros(&[3, 2], crate::DType::F32), None, Reduction::Mean)
                .unwrap_err()
                .to_string(),
            "binary_cross_entropy_with_logits: target has shape [3, 2], expected [2, 3] (the input's shape: one target per logit)"
        );
    }
}
