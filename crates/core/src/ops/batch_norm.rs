//! Fused batch normalisation, as `torch.nn.functional.batch_norm`, for `[N, C]` and `[N, C, *]`
//! inputs (`BatchNorm1d` and `BatchNorm2d`): statistics, normalisation, affine transform and
//! the running-statistics update in one op, with a one-pass backward.
//!
//! Per channel c, over the `M = N·(spatial size)` values x of that channel:
//! - training: `μ = Σx/M`, `σ² = Σ(x − μ)²/M` (biased, used to normalise); the running stats
//!   become `(1 − momentum)·running + momentum·batch`, with the *unbiased* `σ²·M/(M − 1)` for
//!   the variance, as PyTorch;
//! - evaluation: μ and σ² are the running statistics;
//! - `y = (x − μ)/√(σ² + eps)·γ + β` (`x̂ = (x − μ)/√(σ² + eps)`).
//!
//! Backward (training), with g = dL/dy: `dβ = Σg`, `dγ = Σg·x̂`,
//! `dx = γ/√(σ² + eps) · (g − Σg/M − x̂·Σg·x̂/M)`; in evaluation μ and σ² are constants, so
//! `dx = γ/√(σ² + eps) · g`. Statistics are accumulated in f64 in a fixed order per channel
//! (one task per channel), so results do not depend on the thread count.

use super::conv::cpu::{LaneSum, for_each_chunk, map_tasks, parallel_for};
use super::{prefetch, wide_fn, with_float};
use crate::error::{Error, Result};
use crate::storage::{Element, Float};
use crate::tensor::Tensor;

/// `(N, C, S)` of a `[N, C, *]` input, `S` the product of the trailing dimensions.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    s: usize,
}

impl Dims {
    /// Values per channel.
    fn m(&self) -> usize {
        self.n * self.s
    }
    /// Channel `ci`'s values as one slice per sample, in a fixed order, for data in cache (a
    /// channel's second pass).
    fn cached<'a, T>(&self, v: &'a [T], ci: usize) -> impl Iterator<Item = &'a [T]> + 'a {
        let (c, s) = (self.c, self.s);
        (0..self.n).map(move |n| &v[(n * c + ci) * s..(n * c + ci + 1) * s])
    }

    /// [`Dims::cached`] for a channel's first pass, from memory: the next sample's slice is
    /// prefetched as each one is handed out (the slices are `C·S` apart, and the hardware
    /// prefetchers lose every new one).
    fn channel<'a, T>(&self, v: &'a [T], ci: usize) -> impl Iterator<Item = &'a [T]> + 'a {
        let (c, s, n) = (self.c, self.s, self.n);
        let slice = move |i: usize| &v[(i * c + ci) * s..(i * c + ci + 1) * s];
        (0..n).map(move |i| {
            if i + 1 < n {
                prefetch(slice(i + 1));
            }
            slice(i)
        })
    }
}

/// A per-channel tensor (`running_mean`, `weight`, …) checked against `C` and `x`'s type.
fn per_channel(x: &Tensor, t: Option<&Tensor>, what: &'static str, c: usize) -> Result<Option<Vec<f64>>> {
    let Some(t) = t else { return Ok(None) };
    x.check_same("batch_norm", t)?;
    if t.dims() != [c] {
        return Err(Error::ShapeMismatch {
            op: "batch_norm",
            what,
            got: t.shape().clone(),
            expected: format!("[{c}] (one value per channel; the input {} has {c} channels in dimension 1)", x.shape()),
        });
    }
    Ok(Some(t.to_vec_f64()))
}

/// Batch normalisation over dimension 1, as `torch.nn.functional.batch_norm`.
///
/// In training mode the batch's own statistics normalise `x`, and `running_mean` /
/// `running_var`, when given, are updated in place with `momentum` (PyTorch's default is 0.1;
/// the variance update uses the unbiased estimate). In evaluation mode the running statistics
/// normalise `x` and must be given. `weight` (γ) and `bias` (β) are optional (no affine
/// transform without them). Gradients flow to `x`, `weight` and `bias`, never to the running
/// statistics.
///
/// # Shapes
/// - `x`: `[N, C]` or `[N, C, *]` (e.g. `[N, C, L]`, `[N, C, H, W]`)
/// - `running_mean`, `running_var`, `weight`, `bias`: `[C]`
/// - output: the shape of `x`
#[allow(clippy::too_many_arguments)] // mirrors torch.nn.functional.batch_norm's signature
pub fn batch_norm(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    batch_norm_impl(x, [running_mean, running_var, weight, bias], training, momentum, eps, false)
}

/// `relu(batch_norm(…))` as one op: the same values and gradients as [`batch_norm`] followed
/// by [`Tensor::relu`], without the ReLU's two passes over the activations (forward and
/// backward) and without keeping the pre-activation alive. Backward recomputes the ReLU's
/// mask from the saved input.
///
/// # Shapes
/// - `x`: `[N, C]` or `[N, C, *]`
/// - `running_mean`, `running_var`, `weight`, `bias`: `[C]`
/// - output: the shape of `x`
#[allow(clippy::too_many_arguments)] // mirrors batch_norm
pub fn batch_norm_relu(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    batch_norm_impl(x, [running_mean, running_var, weight, bias], training, momentum, eps, true)
}

/// [`batch_norm`], followed by a ReLU when `relu`. `params`: running mean, running variance,
/// weight, bias.
fn batch_norm_impl(
    x: &Tensor,
    params: [Option<&Tensor>; 4],
    training: bool,
    momentum: f64,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let [running_mean, running_var, weight, bias] = params;
    const OP: &str = "batch_norm";
    if x.ndim() < 2 {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "input",
            got: x.shape().clone(),
            expected: "[N, C] or [N, C, *] (at least 2 dimensions; the channels are dimension 1)".into(),
        });
    }
    let d = x.dims();
    let dims = Dims { n: d[0], c: d[1], s: d[2..].iter().product() };
    let c = dims.c;
    let rm = per_channel(x, running_mean, "running_mean", c)?;
    let rv = per_channel(x, running_var, "running_var", c)?;
    let gamma = per_channel(x, weight, "weight", c)?;
    let beta = per_channel(x, bias, "bias", c)?;
    if eps.is_nan() || eps < 0.0 {
        crate::bail_arg!(OP, "eps must be a non-negative number, got {eps}");
    }
    if training && dims.m() <= 1 {
        crate::bail_arg!(
            OP,
            "expected more than 1 value per channel when training, got input of shape {} \
             (the statistics of one value are undefined; use a batch of at least 2, or eval mode)",
            x.shape()
        );
    }
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu_batch_norm(x, params, training, momentum, eps, relu, dims.m());
    }
    let xc = x.contiguous()?.detach();
    let storage = xc.cpu_storage("batch_norm")?;
    let xo = xc.layout().offset;
    let parallel = parallel_for(4 * x.numel());

    // y = x·α + β' with α = γ/√(σ² + eps), β' = β − μ·α: one multiply-add per element.
    let affine = |ci: usize, mean: f64, var: f64| {
        let a = 1.0 / (var + eps).sqrt() * gamma.as_ref().map_or(1.0, |g| g[ci]);
        (a, beta.as_ref().map_or(0.0, |b| b[ci]) - mean * a)
    };
    // Training: each channel's task computes its statistics and then normalises it while its
    // values (N·S, at most a few hundred KB in a ResNet) are still in L2, rather than a second
    // sweep over the whole batch from memory. Evaluation: the running statistics, and the
    // normalisation below, sample by sample.
    let mut normalised = None;
    let (mean, var) = if training {
        let (out, stats) = with_float!(storage, OP, |v: T| {
            let xv = &v[xo..xo + x.numel()];
            let mut out = T::take_buffer(x.numel());
            let channels = ChannelOut::new(&mut out, dims);
            let m = dims.m() as f64;
            let stats = map_tasks((0..c).collect(), parallel, |_, ci| {
                let (mean, var) = moments(xv, dims, ci, m);
                normalise_channel(&channels, xv, dims, ci, affine(ci, mean, var), relu);
                (mean, var)
            });
            Ok((T::wrap(out), stats))
        })?;
        normalised = Some(out);
        stats.into_iter().unzip()
    } else {
        match (rm, rv) {
            (Some(m), Some(v)) => (m, v),
            _ => crate::bail_arg!(
                OP,
                "evaluation mode (training = false) normalises with the running statistics, so running_mean \
                 and running_var must be given; pass training = true to use the batch's statistics"
            ),
        }
    };
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();

    if training {
        // running = (1 − momentum)·running + momentum·batch, the variance unbiased; computed in f64.
        let unbiased = dims.m() as f64 / (dims.m() - 1) as f64;
        let update = |t: &Tensor, batch: &dyn Fn(usize) -> f64| -> Result<()> {
            macro_rules! go {
                ($T:ty) => {
                    t.update_::<$T, _>(|r| {
                        for (i, r) in r.iter_mut().enumerate() {
                            *r = <$T>::from_f64(momentum * batch(i) + (1.0 - momentum) * r.to_f64());
                        }
                    })
                };
            }
            match t.dtype() {
                crate::DType::F32 => go!(f32),
                _ => go!(f64),
            }
        };
        if let Some(t) = running_mean {
            update(t, &|i| mean[i])?;
        }
        if let Some(t) = running_var {
            update(t, &|i| var[i] * unbiased)?;
        }
    }

    let (alpha, shift): (Vec<f64>, Vec<f64>) = (0..c).map(|i| affine(i, mean[i], var[i])).unzip();
    let out = match normalised {
        Some(out) => out,
        None => with_float!(storage, OP, |v: T| {
            let xv = &v[xo..xo + x.numel()];
            let mut out = T::take_buffer(x.numel());
            let per_sample = c * dims.s;
            for_each_chunk(&mut out, per_sample, parallel, |n, out_n| {
                let x_n = &xv[n * per_sample..(n + 1) * per_sample];
                normalise_sample(out_n, x_n, &alpha, &shift, dims.s, relu)
            });
            Ok(T::wrap(out))
        })?,
    };

    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let needs = (x.requires_grad(), weight.is_some_and(Tensor::requires_grad), bias.is_some_and(Tensor::requires_grad));
    let (has_weight, has_bias) = (weight.is_some(), bias.is_some());
    let shape = x.shape().clone();
    let name = if relu { "batch_norm_relu" } else { OP };
    Ok(Tensor::from_op(out, shape.clone(), name, &inputs, move |g| {
        let gc = g.contiguous()?;
        let (sg, sx) = (gc.cpu_storage("batch_norm")?, xc.cpu_storage("batch_norm")?);
        let (go, xo) = (gc.layout().offset, xc.layout().offset);
        let numel = shape.numel();
        let (dx, dgamma, dbeta) = with_float!(sg, "batch_norm backward", |gv: T| {
            let xv = &T::slice(&sx).expect("saved input has the gradient's dtype")[xo..xo + numel];
            let gv = &gv[go..go + numel];
            // Per channel: Σg and Σg·x̂, in a fixed order.
            // The ReLU's mask: where the forward pass's pre-activation, recomputed bit for bit, was > 0.
            // Each channel's task also writes that channel's dx right after its sums, while
            // its g and x are still in L2.
            let mut dx = needs.0.then(|| T::take_buffer(numel));
            let channels = dx.as_deref_mut().map(|d| ChannelOut::new(d, dims));
            let m = dims.m() as f64;
            let sums = map_tasks((0..c).collect(), parallel, |_, ci| {
                let mask = relu.then_some((alpha[ci], shift[ci]));
                let sums = grad_sums(gv, xv, dims, ci, mean[ci], invstd[ci], mask);
                if let Some(channels) = &channels {
                    let (mg, mgx) = if training { (sums.0 / m, sums.1 / m) } else { (0.0, 0.0) };
                    let k =
                        ChannelGrad { alpha: alpha[ci], mg, mgx, mean: mean[ci], invstd: invstd[ci], training, mask };
                    dx_channel(channels, gv, xv, dims, ci, &k);
                }
                sums
            });
            let dx = dx.map(T::wrap);
            let dgamma = needs.1.then(|| T::wrap(sums.iter().map(|s| T::from_f64(s.1)).collect()));
            let dbeta = needs.2.then(|| T::wrap(sums.iter().map(|s| T::from_f64(s.0)).collect()));
            Ok((dx, dgamma, dbeta))
        })?;
        let per_c = || crate::shape::Shape(vec![c]);
        let mut out = vec![dx.map(|s| Tensor::from_storage(s, shape.clone()))];
        if has_weight {
            out.push(dgamma.map(|s| Tensor::from_storage(s, per_c())));
        }
        if has_bias {
            out.push(dbeta.map(|s| Tensor::from_storage(s, per_c())));
        }
        Ok(out)
    }))
}

/// A `[N, C, S]` buffer written channel by channel from parallel tasks: the task of channel `ci`
/// writes only the `N` slices of that channel, so no two tasks touch the same element.
struct ChannelOut<'a, T> {
    ptr: *mut T,
    dims: Dims,
    _buf: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the buffer is only reached through `slice`, whose contract keeps the tasks' writes
// disjoint; T itself is sent between threads.
unsafe impl<T: Send> Sync for ChannelOut<'_, T> {}

impl<'a, T> ChannelOut<'a, T> {
    fn new(buf: &'a mut [T], dims: Dims) -> Self {
        assert_eq!(buf.len(), dims.n * dims.c * dims.s, "a [N, C, S] buffer");
        ChannelOut { ptr: buf.as_mut_ptr(), dims, _buf: std::marker::PhantomData }
    }

    /// Sample `n`'s values of channel `ci`.
    ///
    /// # Safety
    /// No other reference to the same slice may exist while this one lives: one task per
    /// channel, taking its slices one at a time.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, n: usize, ci: usize) -> &mut [T] {
        let Dims { n: nn, c, s } = self.dims;
        assert!(n < nn && ci < c);
        // SAFETY: in bounds (asserted, and the length checked in `new`); exclusive by the
        // caller's contract; the buffer outlives 'a.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add((n * c + ci) * s), s) }
    }
}

wide_fn!(
    /// `y = x·α + β'` (then `max(y, 0)` when `relu`) for channel `ci` of every sample, into
    /// that channel's slices of `out`.
    fn normalise_channel<T: Float>(out: &ChannelOut<T>, x: &[T], dims: Dims, ci: usize, ab: (f64, f64), relu: bool) => normalise_channel_loops
);

#[inline(always)]
fn normalise_channel_loops<T: Float>(out: &ChannelOut<T>, x: &[T], dims: Dims, ci: usize, ab: (f64, f64), relu: bool) {
    for (n, xs) in dims.cached(x, ci).enumerate() {
        // SAFETY: this task is channel ci's only one, and the slice is dropped before the next.
        normalise_slice(unsafe { out.slice(n, ci) }, xs, ab, relu);
    }
}

wide_fn!(
    /// Channel `ci`'s `(μ, σ²)` over its `m` values: two passes in f64.
    fn moments<T: Float>(x: &[T], dims: Dims, ci: usize, m: f64) -> (f64, f64) => moments_loops
);

#[inline(always)]
fn moments_loops<T: Float>(x: &[T], dims: Dims, ci: usize, m: f64) -> (f64, f64) {
    let mut sum = LaneSum::default();
    for xs in dims.channel(x, ci) {
        sum.add_slice(xs);
    }
    let mean = sum.total() / m;
    let mut sq = LaneSum::default();
    for xs in dims.cached(x, ci) {
        sq.add_map(xs, |v| (v - mean) * (v - mean));
    }
    (mean, sq.total() / m)
}

wide_fn!(
    /// `y = x·α + β'` for the `s` values of each channel of one sample, then `max(y, 0)` when
    /// `relu` (NaN stays NaN, as in `torch.relu`).
    fn normalise_sample<T: Float>(out: &mut [T], x: &[T], alpha: &[f64], shift: &[f64], s: usize, relu: bool) => normalise_loops
);

#[inline(always)]
fn normalise_loops<T: Float>(out: &mut [T], x: &[T], alpha: &[f64], shift: &[f64], s: usize, relu: bool) {
    for (ci, (o, xs)) in out.chunks_mut(s.max(1)).zip(x.chunks(s.max(1))).enumerate() {
        normalise_slice(o, xs, (alpha[ci], shift[ci]), relu);
    }
}

/// `o = x·a + b` (then `max(o, 0)` when `relu`, NaN staying NaN) for one channel's values.
#[inline(always)]
fn normalise_slice<T: Float>(o: &mut [T], xs: &[T], (a, b): (f64, f64), relu: bool) {
    if relu {
        for (o, &xv) in o.iter_mut().zip(xs) {
            let y = T::from_f64(xv.to_f64() * a + b);
            *o = if y > T::ZERO || y.is_nan() { y } else { T::ZERO };
        }
    } else {
        o.iter_mut().zip(xs).for_each(|(o, &xv)| *o = T::from_f64(xv.to_f64() * a + b));
    }
}

/// Whether the fused ReLU passed the gradient at input `x`: its output `x·α + β'`, rounded as
/// the forward pass rounded it, was > 0.
#[inline(always)]
fn relu_passes<T: Float>(x: f64, (a, b): (f64, f64)) -> bool {
    T::from_f64(x * a + b) > T::ZERO
}

wide_fn!(
    /// Channel `ci`'s `(Σg, Σg·x̂)`, in a fixed order; with `relu = Some((α, β'))` the
    /// gradient is first masked by the fused ReLU.
    fn grad_sums<T: Float>(g: &[T], x: &[T], dims: Dims, ci: usize, mu: f64, is: f64, relu: Option<(f64, f64)>) -> (f64, f64) => grad_sums_loops
);

#[inline(always)]
fn grad_sums_loops<T: Float>(
    g: &[T],
    x: &[T],
    dims: Dims,
    ci: usize,
    mu: f64,
    is: f64,
    relu: Option<(f64, f64)>,
) -> (f64, f64) {
    let (mut sg, mut sgx) = (LaneSum::default(), LaneSum::default());
    for (gs, xs) in dims.channel(g, ci).zip(dims.channel(x, ci)) {
        match relu {
            None => {
                sg.add_slice(gs);
                sgx.add_zip(gs, xs, |g, x| g * (x - mu) * is);
            }
            Some(ab) => {
                sg.add_zip(gs, xs, |g, x| if relu_passes::<T>(x, ab) { g } else { 0.0 });
                sgx.add_zip(gs, xs, |g, x| if relu_passes::<T>(x, ab) { g * (x - mu) * is } else { 0.0 });
            }
        }
    }
    (sg.total(), sgx.total())
}

/// What channel `ci`'s input gradient needs: `α = γ/√(σ² + eps)`, `Σg/M` and `Σg·x̂/M`
/// (training), μ, 1/σ, the mode, and the fused ReLU's `(α, β')` when there is one.
struct ChannelGrad {
    alpha: f64,
    mg: f64,
    mgx: f64,
    mean: f64,
    invstd: f64,
    training: bool,
    mask: Option<(f64, f64)>,
}

wide_fn!(
    /// Channel `ci`'s input gradient in every sample: training `α·(g − Σg/M − x̂·Σg·x̂/M)`,
    /// evaluation `α·g` (g masked by the fused ReLU first, when there is one).
    fn dx_channel<T: Float>(dx: &ChannelOut<T>, g: &[T], x: &[T], dims: Dims, ci: usize, k: &ChannelGrad) => dx_loops
);

#[inline(always)]
fn dx_loops<T: Float>(dx: &ChannelOut<T>, g: &[T], x: &[T], dims: Dims, ci: usize, k: &ChannelGrad) {
    let masked = |g: T, x: f64| match k.mask {
        Some(ab) if !relu_passes::<T>(x, ab) => 0.0,
        _ => g.to_f64(),
    };
    for (n, (g, xs)) in dims.cached(g, ci).zip(dims.cached(x, ci)).enumerate() {
        // SAFETY: this task is channel ci's only one, and the slice is dropped before the next.
        let d = unsafe { dx.slice(n, ci) };
        if k.training {
            for ((d, &g), &xv) in d.iter_mut().zip(g).zip(xs) {
                let xv = xv.to_f64();
                let xhat = (xv - k.mean) * k.invstd;
                *d = T::from_f64(k.alpha * (masked(g, xv) - k.mg - xhat * k.mgx));
            }
        } else {
            for ((d, &g), &xv) in d.iter_mut().zip(g).zip(xs) {
                *d = T::from_f64(k.alpha * masked(g, xv.to_f64()));
            }
        }
    }
}

/// Batch norm on a GPU, composed from ops: the statistics by reductions over every dimension but
/// the channels, the running statistics updated in place (`copy_`) with the unbiased variance,
/// and the normalisation with its backward from autograd. f32 throughout (the CPU kernel keeps
/// its statistics in f64), so the two agree to f32 rounding.
#[cfg(feature = "gpu")]
fn gpu_batch_norm(
    x: &Tensor,
    [running_mean, running_var, weight, bias]: [Option<&Tensor>; 4],
    training: bool,
    momentum: f64,
    eps: f64,
    relu: bool,
    m: usize,
) -> Result<Tensor> {
    let c = x.dims()[1];
    let axes: Vec<isize> = (0..x.ndim() as isize).filter(|&d| d != 1).collect();
    let mut bshape = vec![1; x.ndim()];
    bshape[1] = c;
    let (mean, var) = match (training, running_mean, running_var) {
        (false, Some(rm), Some(rv)) => (rm.detach().reshape(&bshape)?, rv.detach().reshape(&bshape)?),
        _ => {
            let mean = x.mean(&axes, true)?;
            let centred = x.sub(&mean)?;
            let var = centred.mul(&centred)?.mean(&axes, true)?;
            if training {
                let _guard = crate::autograd::NoGradGuard::new();
                if let Some(rm) = running_mean {
                    rm.copy_(
                        &rm.mul_scalar(1.0 - momentum)?.add(&mean.detach().reshape(&[c])?.mul_scalar(momentum)?)?,
                    )?;
                }
                if let Some(rv) = running_var {
                    let unbiased = var.detach().reshape(&[c])?.mul_scalar(m as f64 / (m as f64 - 1.0))?;
                    rv.copy_(&rv.mul_scalar(1.0 - momentum)?.add(&unbiased.mul_scalar(momentum)?)?)?;
                }
            }
            (mean, var)
        }
    };
    let mut y = x.sub(&mean)?.div(&var.add_scalar(eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.mul(&w.reshape(&bshape)?)?;
    }
    if let Some(b) = bias {
        y = y.add(&b.reshape(&bshape)?)?;
    }
    if relu { y.relu() } else { Ok(y) }
}

#[cfg(test)]
mod tests {
    use super::{batch_norm, batch_norm_relu};
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    #[test]
    fn normalises_by_hand() {
        // One channel holding 1, 2, 3, 4: μ = 2.5, σ² = 1.25 (biased), unbiased 5/3.
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[4, 1]).unwrap();
        let rm = Tensor::zeros(&[1], DType::F64);
        let rv = Tensor::ones(&[1], DType::F64);
        let y = batch_norm(&x, Some(&rm), Some(&rv), None, None, true, 0.1, 0.0).unwrap().to_vec::<f64>().unwrap();
        let s = 1.25f64.sqrt();
        assert_close(&y, &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s], 1e-15, 1e-15);
        assert_close(&rm.to_vec_f64(), &[0.25], 1e-15, 0.0);
        assert_close(&rv.to_vec_f64(), &[0.9 + 0.1 * 5.0 / 3.0], 1e-15, 0.0);
        // Evaluation uses the running statistics: (x − 0.25)/√(rv + eps)·γ + β.
        let (w, b) = (Tensor::scalar(2.0f64).reshape(&[1]).unwrap(), Tensor::scalar(-1.0f64).reshape(&[1]).unwrap());
        let y = batch_norm(&x, Some(&rm), Some(&rv), Some(&w), Some(&b), false, 0.1, 1e-5).unwrap();
        let rvv = rv.to_vec_f64()[0];
        let expected: Vec<f64> =
            [1.0, 2.0, 3.0, 4.0].iter().map(|v| (v - 0.25) / (rvv + 1e-5).sqrt() * 2.0 - 1.0).collect();
        assert_close(&y.to_vec_f64(), &expected, 1e-15, 1e-15);
        // Evaluation leaves the running statistics alone.
        assert_close(&rm.to_vec_f64(), &[0.25], 1e-15, 0.0);
    }

    #[test]
    fn gradcheck_batch_norm() {
        let mut rng = Generator::new(81);
        let c = 3;
        let (w, b) = (randn64(&[c], &mut rng), randn64(&[c], &mut rng));
        for shape in [&[5, 3][..], &[4, 3, 5], &[2, 3, 3, 4]] {
            let x = randn64(shape, &mut rng);
            // Training, affine; and without weight and bias.
            gradcheck(&[x.clone(), w.clone(), b.clone()], |t| {
                batch_norm(&t[0], None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5)
            });
            gradcheck(std::slice::from_ref(&x), |t| batch_norm(&t[0], None, None, None, None, true, 0.1, 1e-5));
            // Evaluation with running statistics.
            let rm = randn64(&[c], &mut rng);
            let rv = randn64(&[c], &mut rng).to_vec_f64().iter().map(|v| v.abs() + 0.1).collect();
            let rv = Tensor::from_vec::<f64>(rv, &[c]).unwrap();
            gradcheck(&[x.clone(), w.clone(), b.clone()], |t| {
                batch_norm(&t[0], Some(&rm), Some(&rv), Some(&t[1]), Some(&t[2]), false, 0.1, 1e-5)
            });
        }
        // Weight only, on a non-contiguous input.
        let x = randn64(&[4, 2, 3], &mut rng);
        gradcheck(&[x, w], |t| batch_norm(&t[0].transpose(1, 2)?, None, None, Some(&t[1]), None, true, 0.1, 1e-5));
        let xt = randn64(&[3, 4], &mut rng);
        gradcheck(&[xt, b], |t| batch_norm(&t[0].t()?, None, None, None, Some(&t[1]), true, 0.1, 1e-5));
    }

    #[test]
    fn batch_norm_relu_is_batch_norm_then_relu() {
        let mut rng = Generator::new(82);
        let c = 3;
        let (w, b) = (randn64(&[c], &mut rng), randn64(&[c], &mut rng));
        let rm = randn64(&[c], &mut rng);
        let rv: Vec<f64> = randn64(&[c], &mut rng).to_vec_f64().iter().map(|v| v.abs() + 0.1).collect();
        let rv = Tensor::from_vec::<f64>(rv, &[c]).unwrap();
        for training in [true, false] {
            for dtype in [DType::F64, DType::F32] {
                let x = randn64(&[4, c, 5], &mut rng).to_dtype(dtype).unwrap().requires_grad_().unwrap();
                let x2 = x.detach().requires_grad_().unwrap();
                let (wt, bt) = (w.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
                let (rmt, rvt) = (rm.to_dtype(dtype).unwrap(), rv.to_dtype(dtype).unwrap());
                let args = |x: &Tensor| (x.clone(), Some(rmt.clone()), Some(rvt.clone()));
                let (xa, rma, rva) = args(&x);
                let fused = batch_norm_relu(&xa, rma.as_ref(), rva.as_ref(), Some(&wt), Some(&bt), training, 0.1, 1e-5)
                    .unwrap();
                let (xb, rmb, rvb) = args(&x2);
                let plain = batch_norm(&xb, rmb.as_ref(), rvb.as_ref(), Some(&wt), Some(&bt), training, 0.1, 1e-5)
                    .unwrap()
                    .relu()
                    .unwrap();
                // Bit-identical values and gradients.
                assert_eq!(fused.to_vec_f64(), plain.to_vec_f64());
                assert!(fused.to_vec_f64().contains(&0.0), "some values are clipped");
                let gy = randn64(fused.dims(), &mut rng).to_dtype(dtype).unwrap();
                fused.mul(&gy).unwrap().sum_all().unwrap().backward().unwrap();
                plain.mul(&gy).unwrap().sum_all().unwrap().backward().unwrap();
                assert_eq!(x.grad().unwrap().to_vec_f64(), x2.grad().unwrap().to_vec_f64());
            }
        }
        let x = randn64(&[5, c, 2], &mut rng);
        gradcheck(&[x, w, b], |t| batch_norm_relu(&t[0], None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5));
    }

    #[test]
    fn f32_running_stats_and_errors() {
        let x = Tensor::from_vec(vec![1.0f32, 10.0, 3.0, 20.0], &[2, 2]).unwrap();
        let (rm, rv) = (Tensor::zeros(&[2], DType::F32), Tensor::ones(&[2], DType::F32));
        batch_norm(&x, Some(&rm), Some(&rv), None, None, true, 0.5, 1e-5).unwrap();
        // Channel 0: μ = 2, unbiased σ² = 2; channel 1: μ = 15, unbiased σ² = 50.
        assert_eq!(rm.to_vec::<f32>().unwrap(), [1.0, 7.5]);
        assert_eq!(rv.to_vec::<f32>().unwrap(), [1.5, 25.5]);
        let msg = |r: crate::Result<Tensor>| r.unwrap_err().to_string();
        assert_eq!(
            msg(batch_norm(&Tensor::zeros(&[4], DType::F32), None, None, None, None, true, 0.1, 1e-5)),
            "batch_norm: input has shape [4], expected [N, C] or [N, C, *] (at least 2 dimensions; the channels are dimension 1)"
        );
        assert_eq!(
            msg(batch_norm(&x, Some(&Tensor::zeros(&[3], DType::F32)), Some(&rv), None, None, true, 0.1, 1e-5)),
            "batch_norm: running_mean has shape [3], expected [2] (one value per channel; the input [2, 2] has 2 channels in dimension 1)"
        );
        assert_eq!(
            msg(batch_norm(&Tensor::zeros(&[1, 2], DType::F32), None, None, None, None, true, 0.1, 1e-5)),
            "batch_norm: expected more than 1 value per channel when training, got input of shape [1, 2] \
             (the statistics of one value are undefined; use a batch of at least 2, or eval mode)"
        );
        assert!(
            msg(batch_norm(&x, None, None, None, None, false, 0.1, 1e-5))
                .contains("running_mean and running_var must be given")
        );
        assert!(
            msg(batch_norm(&x, Some(&rm.to_dtype(DType::F64).unwrap()), None, None, None, true, 0.1, 1e-5))
                .contains("differ")
        );
    }

    #[test]
    fn one_and_four_threads_give_identical_bits() {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut rng = Generator::new(82);
                // 4·37·16·32·32 = 2.4M: above the threading threshold.
                const { assert!(4 * 37 * 16 * 32 * 32 >= crate::ops::conv::cpu::PAR_WORK) };
                let x =
                    Tensor::randn(&[37, 16, 32, 32], 1.0, 2.0, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
                let w = Tensor::randn(&[16], 1.0, 0.5, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
                let b = Tensor::randn(&[16], 0.0, 0.5, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
                let (rm, rv) = (Tensor::zeros(&[16], DType::F32), Tensor::ones(&[16], DType::F32));
                let y = batch_norm(&x, Some(&rm), Some(&rv), Some(&w), Some(&b), true, 0.1, 1e-5).unwrap();
                y.mul(&y).unwrap().sum_all().unwrap().backward().unwrap();
                let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                [
                    bits(&y),
                    bits(&x.grad().unwrap()),
                    bits(&w.grad().unwrap()),
                    bits(&b.grad().unwrap()),
                    bits(&rm),
                    bits(&rv),
                ]
            })
        };
        assert_eq!(run(1), run(4));
    }
}
