//! Batch normalisation's CPU kernels: per-channel statistics (two passes in f64, in a fixed
//! order) with the normalisation fused into the same channel task in training, the
//! sample-by-sample normalisation in evaluation, the running-statistics update, and the
//! one-pass backward (each channel's gradient sums, then its input gradient, while its values
//! are still in cache). SIMD through `wide_fn!` (AVX-512 where the CPU has it).

use crate::error::Result;
use crate::ops::tasks::{LaneSum, for_each_chunk, map_tasks, parallel_for};
use crate::ops::{prefetch, wide_fn, with_float};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;

/// `(N, C, S)` of a `[N, C, *]` input, `S` the product of the trailing dimensions.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) s: usize,
}

impl Dims {
    /// Values per channel.
    pub(super) fn m(&self) -> usize {
        self.n * self.s
    }
    /// Whether a pass over the input (about four operations per element) should spread its
    /// channels or samples over rayon threads.
    fn parallel(&self) -> bool {
        parallel_for(4 * self.n * self.c * self.s)
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

/// The per-channel constants of one call that the backward reuses: μ, 1/√(σ² + eps), and the
/// affine map `y = x·α + β'` (α = γ/√(σ² + eps), β' = β − μ·α).
pub(super) struct Stats {
    pub(super) mean: Vec<f64>,
    pub(super) invstd: Vec<f64>,
    pub(super) alpha: Vec<f64>,
    pub(super) shift: Vec<f64>,
}

/// The gradients `(dx, dγ, dβ)`, each only where asked for.
pub(super) type Grads = (Option<CpuStorage>, Option<CpuStorage>, Option<CpuStorage>);

/// Training forward of contiguous `xc`: each channel's task computes its `(μ, σ²)` and then
/// normalises the channel with `affine(ci, μ, σ²)` = `(α, β')` (then the ReLU when `relu`),
/// while its values are still in cache. Returns the output and every channel's `(μ, σ²)`.
pub(super) fn train_forward(
    xc: &Tensor,
    dims: Dims,
    relu: bool,
    affine: impl Fn(usize, f64, f64) -> (f64, f64) + Sync,
) -> Result<(CpuStorage, Vec<(f64, f64)>)> {
    const OP: &str = "batch_norm";
    let storage = xc.cpu_storage("batch_norm")?;
    let xo = xc.layout().offset;
    let (c, parallel) = (dims.c, dims.parallel());
    with_float!(storage, OP, |v: T| {
        let xv = &v[xo..xo + xc.numel()];
        let mut out = T::take_buffer(xc.numel());
        let channels = ChannelOut::new(&mut out, dims);
        let m = dims.m() as f64;
        let stats = map_tasks((0..c).collect(), parallel, |_, ci| {
            let (mean, var) = moments(xv, dims, ci, m);
            normalise_channel(&channels, xv, dims, ci, affine(ci, mean, var), relu);
            (mean, var)
        });
        Ok((T::wrap(out), stats))
    })
}

/// Evaluation forward of contiguous `xc`: `y = x·α + β'` per channel (then the ReLU when `relu`),
/// sample by sample.
pub(super) fn eval_forward(xc: &Tensor, dims: Dims, relu: bool, alpha: &[f64], shift: &[f64]) -> Result<CpuStorage> {
    const OP: &str = "batch_norm";
    let storage = xc.cpu_storage("batch_norm")?;
    let xo = xc.layout().offset;
    let (c, parallel) = (dims.c, dims.parallel());
    with_float!(storage, OP, |v: T| {
        let xv = &v[xo..xo + xc.numel()];
        let mut out = T::take_buffer(xc.numel());
        let per_sample = c * dims.s;
        for_each_chunk(&mut out, per_sample, parallel, |n, out_n| {
            let x_n = &xv[n * per_sample..(n + 1) * per_sample];
            normalise_sample(out_n, x_n, alpha, shift, dims.s, relu)
        });
        Ok(T::wrap(out))
    })
}

/// `running = (1 − momentum)·running + momentum·batch(i)` for each element `i` of `t`, in f64.
pub(super) fn update_running(t: &Tensor, momentum: f64, batch: &dyn Fn(usize) -> f64) -> Result<()> {
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
}

/// The backward from the output gradient `g` and the saved contiguous input `xc`: per channel
/// Σg and Σg·x̂, then `dx` (training: `α·(g − Σg/M − x̂·Σg·x̂/M)`, evaluation: `α·g`), with the
/// fused ReLU's mask recomputed from `xc` when `relu`.
pub(super) fn backward(
    g: &Tensor,
    xc: &Tensor,
    dims: Dims,
    stats: &Stats,
    needs: (bool, bool, bool),
    training: bool,
    relu: bool,
) -> Result<Grads> {
    let Stats { mean, invstd, alpha, shift } = stats;
    let (c, parallel) = (dims.c, dims.parallel());
    let gc = g.contiguous()?;
    let (sg, sx) = (gc.cpu_storage("batch_norm")?, xc.cpu_storage("batch_norm")?);
    let (go, xo) = (gc.layout().offset, xc.layout().offset);
    let numel = xc.numel();
    with_float!(sg, "batch_norm backward", |gv: T| {
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
                let k = ChannelGrad { alpha: alpha[ci], mg, mgx, mean: mean[ci], invstd: invstd[ci], training, mask };
                dx_channel(channels, gv, xv, dims, ci, &k);
            }
            sums
        });
        let dx = dx.map(T::wrap);
        let dgamma = needs.1.then(|| T::wrap(sums.iter().map(|s| T::from_f64(s.1)).collect()));
        let dbeta = needs.2.then(|| T::wrap(sums.iter().map(|s| T::from_f64(s.0)).collect()));
        Ok((dx, dgamma, dbeta))
    })
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
        // Both sums over one pass, the mask tested once per element.
        let sums = |g: f64, x: f64| match relu {
            Some(ab) if !relu_passes::<T>(x, ab) => (0.0, 0.0),
            _ => (g, g * (x - mu) * is),
        };
        sg.add_zip2(&mut sgx, gs, xs, sums);
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
