//! The reductions' CPU kernels: sums along a reduction plan (in f64, in a fixed order), maxima
//! with their indices (the first on ties, NaN winning), `max`'s backward scatter on the host,
//! and the finiteness scan of `all_finite`.

use crate::device::DType;
use crate::error::Result;
use crate::ops::with_float;
use crate::shape::{Layout, Shape};
use crate::storage::{Element, Float, Storage};
use crate::tensor::Tensor;

fn sum_kernel<T: Float>(v: &[T], plan: &Layout, reduced: usize, n_out: usize) -> Vec<T> {
    if reduced == 0 {
        // Summing over an empty dimension gives zeros, one per output element (the kept
        // dimensions' product, which the plan's shape cannot give: it holds the reduced zero).
        return vec![T::ZERO; n_out];
    }
    let mut out = Vec::with_capacity(n_out);
    let (mut acc, mut count) = (0.0f64, 0);
    plan.for_each_index(|i| {
        acc += v[i].to_f64();
        count += 1;
        if count == reduced {
            out.push(T::from_f64(acc));
            acc = 0.0;
            count = 0;
        }
    });
    out
}

/// The `n_out` sums of `t` along `plan` (see `super::reduction_plan`): one per run of `reduced`
/// visits.
pub(super) fn sum(t: &Tensor, plan: &Layout, reduced: usize, n_out: usize) -> Result<Storage> {
    let s = t.cpu_storage("sum")?;
    Ok(with_float!(s, "sum", |v: T| Ok(T::wrap(sum_kernel::<T>(v, plan, reduced, n_out))))?.into())
}

fn max_kernel<T: Float>(v: &[T], plan: &Layout, reduced: usize) -> (Vec<T>, Vec<i64>) {
    let n = plan.shape.numel() / reduced;
    let (mut vals, mut idx) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut best, mut best_i, mut k) = (T::NEG_INFINITY, 0i64, 0usize);
    let mut first = true;
    plan.for_each_index(|i| {
        let x = v[i];
        if first || (!best.is_nan() && (x > best || x.is_nan())) {
            best = x;
            best_i = k as i64;
            first = false;
        }
        k += 1;
        if k == reduced {
            vals.push(best);
            idx.push(best_i);
            k = 0;
            first = true;
        }
    });
    (vals, idx)
}

/// The maxima of `t` along `plan` (see `super::reduction_plan`) and their indices along the
/// reduced dimension.
pub(super) fn max(t: &Tensor, plan: &Layout, reduced: usize) -> Result<(Storage, Vec<i64>)> {
    let s = t.cpu_storage("max")?;
    with_float!(s, "max", |v: T| {
        let (vals, idx) = max_kernel::<T>(v, plan, reduced);
        Ok((T::wrap(vals).into(), idx))
    })
}

/// `max`'s backward on the host: each output gradient of `g` (of shape `keep`, the input's with
/// dimension `d` as 1) added at the position of its maximum (`index` along `d`) in zeros of
/// `in_shape`.
pub(super) fn max_backward(g: &Tensor, in_shape: &Shape, keep: &[usize], d: usize, index: &[i64]) -> Result<Tensor> {
    // Scatter each output gradient to the position of its maximum.
    let strides = in_shape.contiguous_strides();
    let out = Tensor::zeros(in_shape.dims(), g.dtype());
    let gk = g.reshape(keep)?;
    let klayout = Layout::contiguous(Shape(keep.to_vec()));
    let mut positions = Vec::with_capacity(index.len());
    let mut k = 0;
    klayout.for_each_index(|flat| {
        // `flat` is the row-major index in the kept shape; turn it into the input index.
        let mut rem = flat;
        let mut pos = 0;
        for (axis, (&ks, &st)) in klayout.strides.iter().zip(&strides).enumerate() {
            let c = rem / ks;
            rem %= ks;
            pos += if axis == d { index[k] as usize * st } else { c * st };
        }
        positions.push(pos);
        k += 1;
    });
    match g.dtype() {
        DType::F32 => {
            let gv = gk.to_vec::<f32>()?;
            out.update_::<f32, _>(|o| positions.iter().zip(gv).for_each(|(&p, v)| o[p] += v))?
        }
        _ => {
            let gv = gk.to_vec::<f64>()?;
            out.update_::<f64, _>(|o| positions.iter().zip(gv).for_each(|(&p, v)| o[p] += v))?
        }
    }
    Ok(out)
}

/// Whether every element of `t` is finite (integer tensors always are).
pub(super) fn all_finite(t: &Tensor) -> bool {
    fn finite<T: Float>(v: &[T]) -> bool {
        // x·0 is 0 for a finite x and NaN otherwise; sixteen lanes so the scan vectorises.
        let mut acc = [T::ZERO; 16];
        let chunks = v.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x * T::ZERO;
            }
        }
        acc.iter().chain(rest).all(|a| a.to_f64().is_finite())
    }
    match t.dtype() {
        DType::F32 => t.with_slice::<f32, _>(finite).unwrap_or(false),
        DType::F64 => t.with_slice::<f64, _>(finite).unwrap_or(false),
        DType::I64 => true,
    }
}
