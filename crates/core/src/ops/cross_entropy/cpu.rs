//! The CPU kernels of the classification losses: fused softmax + NLL rows (`cross_entropy`),
//! the weighted, smoothed NLL (`cross_entropy_with`, `nll_loss`; in f64) and binary
//! cross-entropy with logits (in f64), each with its backward. Shapes are checked in `mod.rs`.

use super::super::with_float;
use super::{ClassArgs, CrossEntropyOptions, Reduction};
use crate::device::DType;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;

/// [`super::cross_entropy`] on the CPU: `logits` `[n, c]`, `target` `[n]` i64 (checked here to
/// be in `0..c`).
pub(super) fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    (n, c): (usize, usize),
) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    // Targets are read in place (no copy); the tensor is kept for the backward.
    let target = target.contiguous()?;
    let bad = target.with_slice::<i64, _>(|t| {
        t.iter().enumerate().find(|&(_, &v)| v < 0 || v as usize >= c).map(|(i, &v)| (i, v))
    })?;
    if let Some((index, value)) = bad {
        return Err(Error::TargetOutOfRange { op: OP, index, value, classes: c });
    }
    let x = logits.contiguous()?;
    let s = x.cpu_storage("cross_entropy")?;
    let o = x.layout().offset;
    let (value, probs) = with_float!(s, OP, |v: T| {
        let mut probs = T::take_buffer(n * c);
        let mut total = 0.0;
        let mut per_row = if reduction == Reduction::None { Vec::with_capacity(n) } else { Vec::new() };
        target.with_slice::<i64, _>(|t| {
            ce_forward::<T>(&v[o..o + n * c], t, c, &mut probs, |l| {
                total += l;
                if reduction == Reduction::None {
                    per_row.push(l);
                }
            })
        })?;
        let value = match reduction {
            Reduction::Mean => vec![total / n as f64],
            Reduction::Sum => vec![total],
            Reduction::None => per_row,
        };
        Ok((value, T::wrap(probs)))
    })?;
    let shape = if reduction == Reduction::None { Shape(vec![n]) } else { Shape(vec![]) };
    let storage = match logits.dtype() {
        DType::F32 => CpuStorage::F32(value.iter().map(|&v| v as f32).collect()),
        _ => CpuStorage::F64(value),
    };
    let probs = Tensor::from_storage(probs, Shape(vec![n, c]));
    Ok(Tensor::from_op(storage, shape, OP, &[logits], move |g| {
        // (softmax − onehot), scaled per row by the upstream gradient (and 1/N for the mean).
        let g = g.to_vec_f64();
        let scale = |i: usize| match reduction {
            Reduction::Mean => g[0] / n as f64,
            Reduction::Sum => g[0],
            Reduction::None => g[i],
        };
        let ps = probs.cpu_storage("cross_entropy")?;
        let d = with_float!(ps, OP, |p: T| {
            let mut d = T::take_buffer(n * c);
            d.copy_from_slice(&p[..n * c]);
            target.with_slice::<i64, _>(|t| {
                for (i, row) in d.chunks_exact_mut(c).enumerate() {
                    row[t[i] as usize] -= T::ONE;
                    let s = T::from_f64(scale(i));
                    row.iter_mut().for_each(|v| *v *= s);
                }
            })?;
            Ok(T::wrap(d))
        })?;
        Ok(vec![Some(Tensor::from_storage(d, Shape(vec![n, c])))])
    }))
}

/// For logits `x` `[n, c]`: the softmax probabilities into `probs` `[n, c]`, and each row's
/// loss (in f64, in row order) to `loss`.
fn ce_forward<T: Float>(x: &[T], target: &[i64], c: usize, probs: &mut [T], mut loss: impl FnMut(f64)) {
    for ((row, p), &t) in x.chunks_exact(c).zip(probs.chunks_exact_mut(c)).zip(target) {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.to_f64()));
        // One exp per element (they dominate the cost): p holds e^(v − m) until it is scaled by
        // 1/Σ, rather than computing e^(v − lse) afresh.
        let mut sum = 0.0;
        for (p, &v) in p.iter_mut().zip(row) {
            let e = (v.to_f64() - m).exp();
            sum += e;
            *p = T::from_f64(e);
        }
        let lse = m + sum.ln();
        loss(lse - row[t as usize].to_f64());
        let inv = 1.0 / sum;
        p.iter_mut().for_each(|p| *p = T::from_f64(p.to_f64() * inv));
    }
}

/// The weighted, smoothed negative log-likelihood on the CPU, in f64, from the checked
/// arguments `(N, C, targets, class weights)`.
pub(super) fn weighted_nll(
    op: &'static str,
    x: &Tensor,
    args: ClassArgs,
    options: &CrossEntropyOptions,
    softmax: bool,
) -> Result<Tensor> {
    let (n, c, t, weight) = args;
    let xv = x.to_vec_f64();
    let (eps, reduction, ignore) = (options.label_smoothing, options.reduction, options.ignore_index);
    let w = move |k: usize| weight.as_ref().map_or(1.0, |w| w[k]);
    // Row i's log-probabilities: x − logsumexp(x) for logits, x itself otherwise.
    let log_probs = move |i: usize| -> Vec<f64> {
        let row = &xv[i * c..(i + 1) * c];
        if !softmax {
            return row.to_vec();
        }
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let lse = m + row.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
        row.iter().map(|&v| v - lse).collect()
    };
    let mut losses = vec![0.0; n];
    let mut denom = 0.0; // Σ w[t_i] over the rows not ignored
    for (i, &ti) in t.iter().enumerate() {
        if Some(ti) == ignore {
            continue;
        }
        let lp = log_probs(i);
        let wt = w(ti as usize);
        denom += wt;
        let mut loss = (1.0 - eps) * wt * -lp[ti as usize];
        if eps != 0.0 {
            // Skipped at ε = 0 so that a −∞ log-probability of another class does not give 0·∞.
            loss += eps / c as f64 * -(0..c).map(|k| w(k) * lp[k]).sum::<f64>();
        }
        losses[i] = loss;
    }
    let (value, shape) = match reduction {
        Reduction::Mean => (vec![losses.iter().sum::<f64>() / denom], Shape(vec![])),
        Reduction::Sum => (vec![losses.iter().sum::<f64>()], Shape(vec![])),
        Reduction::None => (losses, Shape(vec![n])),
    };
    let storage = match x.dtype() {
        DType::F32 => CpuStorage::F32(value.iter().map(|&v| v as f32).collect()),
        _ => CpuStorage::F64(value),
    };
    let dtype = x.dtype();
    Ok(Tensor::from_op(storage, shape, op, &[x], move |g| {
        // d loss_i / d logp_ik = −[(1 − ε)·w[t_i]·[k = t_i] + ε/C·w[k]]; through log_softmax,
        // d/dx_ik = Σ_j (d/d logp_ij)(δ_jk − p_ik) = (1 − ε)·w[t_i]·(p_ik − [k = t_i]) + ε/C·(W·p_ik − w[k])
        // with W = Σ_k w[k]. Each row is scaled by the upstream gradient (÷ Σ w[t_i] for the mean).
        let g = g.to_vec_f64();
        let total_w: f64 = (0..c).map(&w).sum();
        let mut d = vec![0.0; n * c];
        for (i, &ti) in t.iter().enumerate() {
            if Some(ti) == ignore {
                continue;
            }
            let s = match reduction {
                Reduction::Mean => g[0] / denom,
                Reduction::Sum => g[0],
                Reduction::None => g[i],
            };
            let (row, wt) = (&mut d[i * c..(i + 1) * c], w(ti as usize));
            if softmax {
                let p: Vec<f64> = log_probs(i).iter().map(|v| v.exp()).collect();
                for (k, dk) in row.iter_mut().enumerate() {
                    let hit = if k == ti as usize { 1.0 } else { 0.0 };
                    *dk = s * ((1.0 - eps) * wt * (p[k] - hit) + eps / c as f64 * (total_w * p[k] - w(k)));
                }
            } else {
                for (k, dk) in row.iter_mut().enumerate() {
                    let hit = if k == ti as usize { 1.0 } else { 0.0 };
                    *dk = -s * ((1.0 - eps) * wt * hit + eps / c as f64 * w(k));
                }
            }
        }
        let d = match dtype {
            DType::F32 => CpuStorage::F32(d.iter().map(|&v| v as f32).collect()),
            _ => CpuStorage::F64(d),
        };
        Ok(vec![Some(Tensor::from_storage(d, Shape(vec![n, c])))])
    }))
}

/// Binary cross-entropy with logits on the CPU, in f64: `pos_weight` already expanded to the
/// input's shape.
pub(super) fn binary_cross_entropy_with_logits(
    input: &Tensor,
    target: &Tensor,
    pw: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    const OP: &str = "binary_cross_entropy_with_logits";
    let pw = pw.map(Tensor::to_vec_f64);
    let (x, y) = (input.to_vec_f64(), target.to_vec_f64());
    let numel = x.len();
    let softplus = |z: f64| z.max(0.0) + (-z.abs()).exp().ln_1p();
    let pwi = move |i: usize| pw.as_ref().map_or(1.0, |p| p[i]);
    let losses: Vec<f64> =
        (0..numel).map(|i| (1.0 - y[i]) * x[i] + (1.0 + (pwi(i) - 1.0) * y[i]) * softplus(-x[i])).collect();
    let (value, shape) = match reduction {
        Reduction::Mean => (vec![losses.iter().sum::<f64>() / numel as f64], Shape(vec![])),
        Reduction::Sum => (vec![losses.iter().sum::<f64>()], Shape(vec![])),
        Reduction::None => (losses, input.shape().clone()),
    };
    let dtype = input.dtype();
    let wrap = move |v: Vec<f64>| match dtype {
        DType::F32 => CpuStorage::F32(v.iter().map(|&v| v as f32).collect()),
        _ => CpuStorage::F64(v),
    };
    let in_shape = input.shape().clone();
    Ok(Tensor::from_op(wrap(value), shape, OP, &[input, target], move |g| {
        // d/dx = (1 − y) − (1 + (pw − 1)·y)·σ(−x);  d/dy = −x + (pw − 1)·sp(−x).
        let g = g.to_vec_f64();
        let s = |i: usize| match reduction {
            Reduction::Mean => g[0] / numel as f64,
            Reduction::Sum => g[0],
            Reduction::None => g[i],
        };
        // σ(−x) without overflow: e^(−x)/(1 + e^(−x)) for x ≥ 0, 1/(1 + eˣ) otherwise.
        let sig_neg = |x: f64| if x >= 0.0 { (-x).exp() / (1.0 + (-x).exp()) } else { 1.0 / (1.0 + x.exp()) };
        let dx = (0..numel).map(|i| s(i) * ((1.0 - y[i]) - (1.0 + (pwi(i) - 1.0) * y[i]) * sig_neg(x[i]))).collect();
        let dy = (0..numel).map(|i| s(i) * (-x[i] + (pwi(i) - 1.0) * softplus(-x[i]))).collect();
        Ok(vec![Some(Tensor::from_storage(wrap(dx), in_shape.clone())), Some(Tensor::from_storage(wrap(dy), in_shape))])
    }))
}
