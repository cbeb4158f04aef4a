//! Micro-batches and the gradient they combine to: what gradient accumulation
//! ([`crate::Trainer::accumulate`]) and data-parallel training ([`crate::Trainer::distributed`])
//! share, so that N processes and one process accumulating N micro-batches compute the same
//! numbers, bit for bit.
//!
//! **The split.** A global batch of `B` samples (in the loader's order) is cut into `N`
//! consecutive micro-batches; micro-batch `k` has `n_k = ⌊B/N⌋ + 1` samples for `k < B mod N`
//! and `⌊B/N⌋` after (NumPy's `array_split`). A last batch smaller than `N` leaves some
//! micro-batches empty.
//!
//! **The gradient.** `g_k` is the gradient of micro-batch `k`'s *mean* loss. With
//! `m = gcd(n_0, …, n_{N−1})` (over the non-empty ones), `c_k = n_k / m` and `D = B / m`, the
//! step's gradient is, element by element, in the parameter's element type,
//!
//! ```text
//! g = ((…((c_0·g_0 + c_1·g_1) + c_2·g_2) + …) + c_{N−1}·g_{N−1}) / D
//! ```
//!
//! summed left to right in micro-batch (= rank) order, empty micro-batches left out. It is
//! `Σ_k (n_k/B)·g_k`, the gradient of the global batch's mean loss; with equal micro-batches
//! every `c_k` is 1 and `D = N`: the plain mean `(g_0 + … + g_{N−1}) / N`.

use crate::error::Result;
use std::rc::Rc;
use strata_core::{Collective, DType, Element, Tensor};

mod buckets;
pub use buckets::{BucketPlan, BucketedReduction, DEFAULT_BUCKET_CAP_MB};

/// The sizes of the `parts` micro-batches a batch of `batch` samples is cut into, in order: the
/// first `batch % parts` get one sample more (see the module docs).
///
/// ```
/// assert_eq!(strata_train::parallel::micro_batch_sizes(10, 3), vec![4, 3, 3]);
/// assert_eq!(strata_train::parallel::micro_batch_sizes(2, 3), vec![1, 1, 0]);
/// ```
pub fn micro_batch_sizes(batch: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts).map(|k| batch / parts + usize::from(k < batch % parts)).collect()
}

/// The sample ranges `[start, end)` of the micro-batches within the batch, in order.
pub fn micro_batch_ranges(batch: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let mut start = 0;
    micro_batch_sizes(batch, parts)
        .into_iter()
        .map(|n| {
            let r = start..start + n;
            start += n;
            r
        })
        .collect()
}

/// The combination's coefficients for micro-batches of `sizes`: `c_k = n_k / m` per micro-batch
/// and the divisor `D = B / m`, with `m` the sizes' greatest common divisor (see the module
/// docs). An all-empty batch gives `D = 0` (callers never combine one).
pub fn coefficients(sizes: &[usize]) -> (Vec<f64>, f64) {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let m = sizes.iter().copied().fold(0, gcd).max(1);
    let total: usize = sizes.iter().sum();
    (sizes.iter().map(|&n| (n / m) as f64).collect(), (total / m) as f64)
}

/// All of a model's gradients as flat host vectors: the f32 parameters' one after another in
/// `f32`, the f64 parameters' in `f64` (the order of [`strata_nn::Module::parameters`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GradBuffer {
    /// The f32 parameters' gradients, concatenated.
    pub f32: Vec<f32>,
    /// The f64 parameters' gradients, concatenated.
    pub f64: Vec<f64>,
}

impl GradBuffer {
    /// Zeros shaped like `params`' gradients.
    pub fn zeros(params: &[Tensor]) -> GradBuffer {
        let mut b = GradBuffer::default();
        for p in params {
            match p.dtype() {
                DType::F64 => b.f64.resize(b.f64.len() + p.numel(), 0.0),
                _ => b.f32.resize(b.f32.len() + p.numel(), 0.0),
            }
        }
        b
    }

    /// The gradients of `params` (zeros for a parameter without one), copied to the host.
    pub fn read(params: &[Tensor]) -> Result<GradBuffer> {
        let mut b = GradBuffer::default();
        for p in params {
            let n = p.numel();
            match (p.dtype(), p.grad()) {
                (DType::F64, Some(g)) => b.f64.extend(g.to_device(strata_core::Device::Cpu)?.to_vec::<f64>()?),
                (DType::F64, None) => b.f64.resize(b.f64.len() + n, 0.0),
                (_, Some(g)) => b.f32.extend(g.to_device(strata_core::Device::Cpu)?.to_vec::<f32>()?),
                (_, None) => b.f32.resize(b.f32.len() + n, 0.0),
            }
        }
        Ok(b)
    }

    /// Sets each parameter's gradient to its slice of this buffer, on the parameter's device.
    pub fn write(&self, params: &[Tensor]) -> Result<()> {
        let (mut at32, mut at64) = (0, 0);
        for p in params {
            let n = p.numel();
            let shape = p.dims().to_vec();
            let g = match p.dtype() {
                DType::F64 => {
                    at64 += n;
                    Tensor::from_vec(self.f64[at64 - n..at64].to_vec(), &shape)?
                }
                _ => {
                    at32 += n;
                    Tensor::from_vec(self.f32[at32 - n..at32].to_vec(), &shape)?
                }
            };
            p.set_grad(Some(g.to_device(p.device())?))?;
        }
        Ok(())
    }

    /// The buffer's size in bytes.
    pub fn bytes(&self) -> usize {
        self.f32.len() * 4 + self.f64.len() * 8
    }
}

/// An element type gradients are combined in.
pub trait Float:
    Copy + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + std::ops::Div<Output = Self>
{
    /// `v` in this type (the coefficients are small integers: exact).
    fn of(v: f64) -> Self;
}

impl Float for f32 {
    fn of(v: f64) -> f32 {
        v as f32
    }
}

impl Float for f64 {
    fn of(v: f64) -> f64 {
        v
    }
}

/// The combination of the module docs over one stretch of elements: `parts[k]` is micro-batch
/// `k`'s gradient (or the same stretch of it), `None` for an empty micro-batch; `out` gets
/// `(Σ_k c_k·parts[k]) / D`, summed in order. Every path to the step's gradient (accumulation,
/// any number of processes, any chunking) goes through this function, so they agree bit for bit.
pub fn combine_in_order<T: Float>(parts: &[Option<&[T]>], coeffs: &[f64], divisor: f64, out: &mut [T]) {
    let mut first = true;
    for (part, &c) in parts.iter().zip(coeffs) {
        let Some(part) = part else { continue };
        let c = T::of(c);
        if first {
            for (o, &g) in out.iter_mut().zip(part.iter()) {
                *o = c * g;
            }
            first = false;
        } else {
            for (o, &g) in out.iter_mut().zip(part.iter()) {
                *o = *o + c * g;
            }
        }
    }
    let d = T::of(divisor);
    for o in out.iter_mut() {
        *o = *o / d;
    }
}

/// A running [`combine_in_order`] over whole buffers, one micro-batch at a time: what gradient
/// accumulation keeps between micro-batches (one buffer, not N).
#[derive(Debug, Default)]
pub struct Accumulator {
    sum: Option<GradBuffer>,
}

impl Accumulator {
    /// Adds micro-batch gradient `g` with coefficient `c` (the next in order).
    pub fn add(&mut self, g: &GradBuffer, c: f64) {
        fn step<T: Float>(sum: &mut [T], g: &[T], c: f64) {
            let c = T::of(c);
            for (o, &v) in sum.iter_mut().zip(g) {
                *o = *o + c * v;
            }
        }
        fn first<T: Float>(g: &[T], c: f64) -> Vec<T> {
            let c = T::of(c);
            g.iter().map(|&v| c * v).collect()
        }
        match &mut self.sum {
            Some(s) => {
                step(&mut s.f32, &g.f32, c);
                step(&mut s.f64, &g.f64, c);
            }
            None => self.sum = Some(GradBuffer { f32: first(&g.f32, c), f64: first(&g.f64, c) }),
        }
    }

    /// Adds the gradients `params` hold now (zeros for one without) with coefficient `c`, the
    /// next in order: the numbers of `add(&GradBuffer::read(params)?, c)`, read in place from
    /// each gradient's buffer instead of copied out first (what accumulation and pipelining do
    /// after every micro-batch).
    pub fn add_grads(&mut self, params: &[Tensor], c: f64) -> Result<()> {
        /// `out = c·g` (the first micro-batch) or `out = out + c·g`, in `T`.
        fn fold<T: Float + Element>(out: &mut [T], p: &Tensor, c: f64, first: bool) -> Result<()> {
            let (c, n) = (T::of(c), out.len());
            let mut apply = |g: &[T]| {
                if first {
                    out.iter_mut().zip(g).for_each(|(o, &v)| *o = c * v);
                } else {
                    out.iter_mut().zip(g).for_each(|(o, &v)| *o = *o + c * v);
                }
            };
            match p.grad() {
                Some(g) => g.with_slice::<T, _>(apply)?,
                None => apply(&vec![T::of(0.0); n]),
            }
            Ok(())
        }
        let first = self.sum.is_none();
        let sum = self.sum.get_or_insert_with(|| GradBuffer::zeros(params));
        let (mut at32, mut at64) = (0, 0);
        for p in params {
            let n = p.numel();
            if p.dtype() == DType::F64 {
                fold(&mut sum.f64[at64..at64 + n], p, c, first)?;
                at64 += n;
            } else {
                fold(&mut sum.f32[at32..at32 + n], p, c, first)?;
                at32 += n;
            }
        }
        Ok(())
    }

    /// The sum divided by `divisor`; `None` when nothing was added.
    pub fn finish(self, divisor: f64) -> Option<GradBuffer> {
        let mut s = self.sum?;
        let (d32, d64) = (divisor as f32, divisor);
        s.f32.iter_mut().for_each(|v| *v /= d32);
        s.f64.iter_mut().for_each(|v| *v /= d64);
        Some(s)
    }
}

/// A reduction under way, from [`GradientReducer::start_bucket`]: a transport that exchanges in
/// the background returns one still in flight; a blocking one returns [`Reduced`].
pub trait PendingReduction {
    /// Lets the exchange advance without waiting for it (a non-blocking transport moves its
    /// messages only inside its own calls); `true` once it is complete. The trainer tests and
    /// waits for buckets in the order it started them, never a bucket before an earlier one that
    /// is still incomplete, so a transport may start a bucket's later phases from here and rely on
    /// every rank starting them in the same order.
    fn test(&mut self) -> Result<bool>;

    /// Waits for the exchange: the combined gradient and the bytes this rank sent and received.
    fn wait(self: Box<Self>) -> Result<(GradBuffer, usize)>;
}

/// A [`PendingReduction`] that is already complete: the combined gradient and the bytes moved.
#[derive(Debug)]
pub struct Reduced(pub GradBuffer, pub usize);

impl PendingReduction for Reduced {
    fn test(&mut self) -> Result<bool> {
        Ok(true)
    }

    fn wait(self: Box<Self>) -> Result<(GradBuffer, usize)> {
        Ok((self.0, self.1))
    }
}

/// How the gradients of a data-parallel run's processes are combined: the trainer's only view of
/// the transport (MPI in `strata_train::distributed`, behind the `mpi` feature; anything else
/// that can move bytes between processes).
///
/// Every process calls each method the same number of times in the same order (they are
/// collective; the trainer starts buckets in the same order on every rank). Implementations must
/// give every process the result of [`combine_in_order`] over the processes' buffers in rank
/// order; the order of additions is part of the contract. Since that combination is element by
/// element, reducing a gradient in buckets gives the same bits as reducing it whole.
pub trait GradientReducer {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of processes.
    fn world_size(&self) -> usize;

    /// Starts combining one bucket of the gradient: `local` is this rank's part (zeros when its
    /// micro-batch is empty), the same parameters on every rank; the result, once waited for, is
    /// the combination of every rank's in rank order, with the micro-batch `sizes` (one per
    /// rank) weighting them as [`coefficients`] says. Several buckets may be in flight at once;
    /// the trainer starts them while backward still runs ([`BucketedReduction`]).
    fn start_bucket(&self, local: GradBuffer, sizes: &[usize]) -> Result<Box<dyn PendingReduction + '_>>;

    /// [`GradientReducer::start_bucket`] for a whole gradient, waited for: on return `local`
    /// holds the combined gradient. Returns the bytes this rank sent and received.
    fn reduce(&mut self, local: &mut GradBuffer, sizes: &[usize]) -> Result<usize> {
        let (combined, bytes) = self.start_bucket(std::mem::take(local), sizes)?.wait()?;
        *local = combined;
        Ok(bytes)
    }

    /// Every rank's `values` (the same length on every rank), concatenated in rank order, on
    /// every rank: the step's losses and counts, stop decisions.
    fn all_gather(&mut self, values: &[f64]) -> Result<Vec<f64>>;

    /// A collective over the same processes for sync_bn ([`crate::Trainer::sync_bn`]): the
    /// BatchNorms sum their statistics with it inside forward and backward. `None` (the
    /// default): this reducer cannot, and sync_bn is refused.
    fn collective(&self) -> Option<Rc<dyn Collective>> {
        None
    }
}

/// The layers' extra state with every random stream's position (Dropout's `seed=S,step=T`: the
/// next mask is call `T` of the stream) moved on by `by` calls; `None` when the model has no
/// such stream. Micro-batch `k` of a step then draws the same mask on one process accumulating
/// as on rank `k` of a data-parallel run, and every rank's stream stands at the same place after
/// the step, so checkpoints do not depend on the number of processes.
pub(crate) fn streams_at(
    state: &std::collections::BTreeMap<String, String>,
    by: u64,
) -> Option<std::collections::BTreeMap<String, String>> {
    let mut found = false;
    let moved = state
        .iter()
        .map(|(path, v)| {
            let parsed = v.split_once(',').and_then(|(a, b)| {
                Some((a.strip_prefix("seed=")?.parse::<u64>().ok()?, b.strip_prefix("step=")?.parse::<u64>().ok()?))
            });
            let v = match parsed {
                Some((seed, step)) => {
                    found = true;
                    format!("seed={seed},step={}", step + by)
                }
                None => v.clone(),
            };
            (path.clone(), v)
        })
        .collect();
    found.then_some(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folding the gradients in place gives the copied-out path's bits: f32 and f64 parameters,
    /// one without a gradient (zeros), negative zeros and unequal coefficients.
    #[test]
    fn add_grads_is_add_of_the_read_buffer() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap().requires_grad_().unwrap();
        let b = Tensor::from_vec(vec![0.5f64, -1.0], &[2]).unwrap().requires_grad_().unwrap();
        let none = Tensor::zeros(&[2], DType::F32).requires_grad_().unwrap();
        let params = [a.clone(), b.clone(), none];
        let (mut copied, mut folded) = (Accumulator::default(), Accumulator::default());
        for (k, (ga, gb)) in
            [([-0.0f32, 0.1, 7.0], [-0.0f64, 0.3]), ([0.0, 0.2, -7.0], [1e-17, -0.3])].iter().enumerate()
        {
            a.set_grad(Some(Tensor::from_vec(ga.to_vec(), &[3]).unwrap())).unwrap();
            b.set_grad(Some(Tensor::from_vec(gb.to_vec(), &[2]).unwrap())).unwrap();
            let c = [3.0, 2.0][k];
            copied.add(&GradBuffer::read(&params).unwrap(), c);
            folded.add_grads(&params, c).unwrap();
        }
        let bits = |b: GradBuffer| {
            (
                b.f32.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.f64.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(bits(folded.finish(5.0).unwrap()), bits(copied.finish(5.0).unwrap()));
    }

    #[test]
    fn sizes_cover_the_batch_in_order() {
        assert_eq!(micro_batch_sizes(64, 2), vec![32, 32]);
        assert_eq!(micro_batch_sizes(64, 3), vec![22, 21, 21]);
        assert_eq!(micro_batch_sizes(5, 1), vec![5]);
        assert_eq!(micro_batch_ranges(7, 3), vec![0..3, 3..5, 5..7]);
        for (b, n) in [(1, 4), (17, 5), (100, 7)] {
            let s = micro_batch_sizes(b, n);
            assert_eq!(s.iter().sum::<usize>(), b);
            assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn equal_micro_batches_give_the_plain_mean() {
        let (c, d) = coefficients(&[21, 21, 21]);
        assert_eq!((c, d), (vec![1.0, 1.0, 1.0], 3.0));
        let (c, d) = coefficients(&[22, 21, 21]);
        assert_eq!((c, d), (vec![22.0, 21.0, 21.0], 64.0));
        let (c, d) = coefficients(&[4, 2, 0]);
        assert_eq!((c, d), (vec![2.0, 1.0, 0.0], 3.0));
        let (a, b, e) = ([0.1f32, 3.0], [0.7f32, -1.0], [0.3f32, 2.5]);
        let mut out = [0.0f32; 2];
        combine_in_order(&[Some(&a), Some(&b), Some(&e)], &[1.0, 1.0, 1.0], 3.0, &mut out);
        assert_eq!(out, [(0.1f32 + 0.7 + 0.3) / 3.0, (3.0f32 - 1.0 + 2.5) / 3.0]);
    }

    #[test]
    fn the_accumulator_and_any_chunking_agree() {
        // Awkward values and unequal sizes: the running sum and a chunked combination (what a
        // reducer does per bucket) must be the same bits.
        let g: Vec<Vec<f32>> =
            (0..3).map(|k| (0..10).map(|i| ((i * 7 + k * 13) as f32).sin() * 1e-3 + 0.1).collect()).collect();
        let (c, d) = coefficients(&[5, 4, 4]);
        let mut acc = Accumulator::default();
        for (k, gk) in g.iter().enumerate() {
            acc.add(&GradBuffer { f32: gk.clone(), f64: vec![] }, c[k]);
        }
        let whole = acc.finish(d).unwrap().f32;
        let mut chunked = vec![0.0f32; 10];
        for (lo, hi) in [(0, 3), (3, 4), (4, 10)] {
            let parts: Vec<Option<&[f32]>> = g.iter().map(|v| Some(&v[lo..hi])).collect();
            combine_in_order(&parts, &c, d, &mut chunked[lo..hi]);
        }
        assert_eq!(whole, chunked);
    }
}
