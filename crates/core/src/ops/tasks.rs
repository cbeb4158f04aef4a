//! The task helpers the CPU kernels share (convolution, Winograd, pooling, batch norm, pad, the
//! LSTM): when work is worth spreading over rayon's threads, and how it is split so that results
//! never depend on the thread count; and [`LaneSum`], the deterministic f64 sum.

use crate::autocast::with_precision;
use crate::storage::Float;
use rayon::prelude::*;

/// Multiply-adds above which a conv, pooling or batch-norm kernel spreads its samples, planes or
/// channels over rayon threads. Measured on a 2-core machine (Conv2d 1→32 3×3 forward + weight
/// gradient): 1.6M MACs (batch 8) run as fast on one thread as on two, 3.1M (batch 16) gain
/// 7%, 12.5M (batch 64) gain 35%.
pub(crate) const PAR_WORK: usize = 1 << 21;

/// Whether work of `work` multiply-adds should run on several threads.
pub(crate) fn parallel_for(work: usize) -> bool {
    work >= PAR_WORK && rayon::current_num_threads() > 1
}

/// Runs `f(i, item)` for every item, on rayon threads when `parallel`, and returns the results in
/// item order. Each item is handled by exactly one call, so results do not depend on threads.
pub(crate) fn map_tasks<I: Send, R: Send>(items: Vec<I>, parallel: bool, f: impl Fn(usize, I) -> R + Sync) -> Vec<R> {
    if parallel {
        // The tasks run under the caller's product precision (see `autocast`).
        let p = crate::autocast::precision();
        items.into_par_iter().enumerate().map(|(i, x)| with_precision(p, || f(i, x))).collect()
    } else {
        items.into_iter().enumerate().map(|(i, x)| f(i, x)).collect()
    }
}

/// Runs `f(i, chunk)` on consecutive `len`-element chunks of `data`, on rayon threads when
/// `parallel`.
pub(crate) fn for_each_chunk<T: Send>(data: &mut [T], len: usize, parallel: bool, f: impl Fn(usize, &mut [T]) + Sync) {
    let len = len.max(1);
    if parallel {
        let p = crate::autocast::precision();
        data.par_chunks_mut(len).enumerate().for_each(|(i, c)| with_precision(p, || f(i, c)));
    } else {
        data.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Lanes of a [`LaneSum`]: four AVX-512 registers of f64, so that four additions are in flight
/// at once instead of waiting on one register's latency.
const LANES: usize = 32;

/// An f64 sum over 32 interleaved lanes, so the additions can run in parallel in the CPU's
/// vector units; the lanes are combined in a fixed order, so the result depends only on the
/// sequence of values added (and of slice boundaries), never on threads.
#[derive(Clone, Copy)]
pub(crate) struct LaneSum([f64; LANES]);

impl Default for LaneSum {
    fn default() -> Self {
        LaneSum([0.0; LANES])
    }
}

impl LaneSum {
    /// Adds every value of `v`.
    #[inline(always)]
    pub fn add_slice<T: Float>(&mut self, v: &[T]) {
        self.add_map(v, |x| x);
    }
    /// Adds `f(v_i)` for every value of `v`.
    #[inline(always)]
    pub fn add_map<T: Float>(&mut self, v: &[T], f: impl Fn(f64) -> f64) {
        // The lanes are copied into a local for the loop and back after it: added to in place
        // through `&mut self`, they went through memory on every chunk (a store-to-load
        // chain per addition) instead of staying in registers.
        let mut acc = self.0;
        let mut chunks = v.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += f(x.to_f64());
            }
        }
        for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
            *a += f(x.to_f64());
        }
        self.0 = acc;
    }
    /// Two sums over one pass of `a` and `b`: adds `f(a_i, b_i).0` to `self` and `.1` to
    /// `other`, each lane by lane as [`LaneSum::add_map`] adds (the same bits as two passes).
    #[inline(always)]
    pub fn add_zip2<T: Float>(&mut self, other: &mut LaneSum, a: &[T], b: &[T], f: impl Fn(f64, f64) -> (f64, f64)) {
        let (mut p, mut q) = (self.0, other.0);
        let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for (((s, t), &x), &y) in p.iter_mut().zip(q.iter_mut()).zip(x).zip(y) {
                let (u, v) = f(x.to_f64(), y.to_f64());
                *s += u;
                *t += v;
            }
        }
        for (((s, t), &x), &y) in p.iter_mut().zip(q.iter_mut()).zip(ca.remainder()).zip(cb.remainder()) {
            let (u, v) = f(x.to_f64(), y.to_f64());
            *s += u;
            *t += v;
        }
        (self.0, other.0) = (p, q);
    }
    /// The sum: lanes combined pairwise in a fixed tree.
    pub fn total(&self) -> f64 {
        let mut l = self.0;
        let mut n = LANES;
        while n > 1 {
            n /= 2;
            for i in 0..n {
                l[i] = l[2 * i] + l[2 * i + 1];
            }
        }
        l[0]
    }
}
