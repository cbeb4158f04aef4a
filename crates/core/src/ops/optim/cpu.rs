//! The CPU kernels of the optimizer updates: one fused pass per parameter, the options hoisted out
//! of the loops so that they vectorise (AVX-512 where the CPU has it), and the same arithmetic,
//! in the same order, as torch.optim's single-tensor loops. Rust never fuses `a·b + c` into an
//! FMA on its own, so every CPU computes the same bits.

use super::{AdamStep, Decay, SgdStep};
use crate::device::DType;
use crate::error::Result;
use crate::storage::Float;
use crate::tensor::Tensor;

/// `T::from_f64` shorthand for hyper-parameters.
#[inline]
fn c<T: Float>(v: f64) -> T {
    T::from_f64(v)
}

/// Runs `f` with the parameter's elements (mutable), the gradient's, and the state buffer's
/// (mutable) when there is one.
fn with_buffers<T: Float>(
    p: &Tensor,
    g: &Tensor,
    state: Option<&Tensor>,
    f: impl FnOnce(&mut [T], &[T], Option<&mut [T]>),
) -> Result<()> {
    g.with_slice::<T, _>(|g| match state {
        None => p.update_::<T, _>(|pv| f(pv, g, None)),
        Some(s) => p.update_::<T, _>(|pv| s.update_::<T, _>(|sv| f(pv, g, Some(sv))))?,
    })??;
    Ok(())
}

/// The SGD update on the CPU (see [`Tensor::sgd_step_`]).
pub(super) fn sgd(p: &Tensor, g: &Tensor, buf: Option<&Tensor>, first: bool, cfg: &SgdStep) -> Result<()> {
    match p.dtype() {
        DType::F32 => sgd_typed::<f32>(p, g, buf, first, cfg),
        _ => sgd_typed::<f64>(p, g, buf, first, cfg),
    }
}

fn sgd_typed<T: Float>(p: &Tensor, g: &Tensor, buf: Option<&Tensor>, first: bool, cfg: &SgdStep) -> Result<()> {
    let (lr, wd, mom, damp) =
        (c::<T>(cfg.lr), c::<T>(cfg.weight_decay), c::<T>(cfg.momentum), c::<T>(1.0 - cfg.dampening));
    let (decay, nesterov) = (cfg.weight_decay != 0.0, cfg.nesterov);
    with_buffers::<T>(p, g, buf, |x, g, b| match b {
        None => {
            for (x, &gi) in x.iter_mut().zip(g) {
                let gi = if decay { gi + wd * *x } else { gi };
                *x -= lr * gi;
            }
        }
        Some(b) if first => {
            for ((x, &gi), bi) in x.iter_mut().zip(g).zip(b) {
                let gi = if decay { gi + wd * *x } else { gi };
                *bi = gi;
                *x -= lr * if nesterov { gi + mom * *bi } else { *bi };
            }
        }
        // The common case on its own: a branch-free loop, in AVX-512 where the CPU has it.
        Some(b) if !decay && !nesterov => momentum_step(x, g, b, mom, damp, lr),
        Some(b) => {
            for ((x, &gi), bi) in x.iter_mut().zip(g).zip(b) {
                let gi = if decay { gi + wd * *x } else { gi };
                *bi = *bi * mom + damp * gi;
                *x -= lr * if nesterov { gi + mom * *bi } else { *bi };
            }
        }
    })
}

/// `b ← momentum·b + (1 − dampening)·g; x ← x − lr·b`, elementwise.
#[inline(always)]
fn momentum_loop<T: Float>(x: &mut [T], g: &[T], b: &mut [T], mom: T, damp: T, lr: T) {
    for ((x, &gi), bi) in x.iter_mut().zip(g).zip(b) {
        *bi = *bi * mom + damp * gi;
        *x -= lr * *bi;
    }
}

crate::ops::wide_fn!(
    /// [`momentum_loop`] with 16 f32 per instruction where the CPU has AVX-512. Measured:
    /// SimpleNN's update goes from ~14% of a batch-64 step to ~5%.
    fn momentum_wide<T: Float>(x: &mut [T], g: &[T], b: &mut [T], mom: T, damp: T, lr: T) => momentum_loop
);

/// Elements from which the momentum update is split across threads. The update streams three
/// arrays in and two out, so it is bound by memory bandwidth, which a second core adds to; below
/// this a parameter fits in cache and the hand-off costs more than it saves. Measured on W4
/// (5.8 M parameters, 2 threads): the step took 4.5 ms on one thread. Every element's arithmetic
/// is the same whichever thread runs it, so the result does not depend on the thread count.
const PAR_MIN_ELEMENTS: usize = 1 << 20;

/// Elements from which the update is cut in two halves run on two cores through
/// [`crate::threads::join_spin`] (below [`PAR_MIN_ELEMENTS`]): SimpleNN's 784×128 weight takes
/// ~60–100 µs to update at the end of a batch-512 step, and a rayon split of it cost more than
/// it saved (the worker is asleep by then).
const HALVES_MIN_ELEMENTS: usize = 1 << 16;

/// Elements per parallel task (fixed: independent of the thread count).
const PAR_CHUNK: usize = 1 << 16;

/// Runs the momentum update with the widest vectors the CPU offers, split across threads for
/// large parameters.
fn momentum_step<T: Float>(x: &mut [T], g: &[T], b: &mut [T], mom: T, damp: T, lr: T) {
    let run = |x: &mut [T], g: &[T], b: &mut [T]| momentum_wide(x, g, b, mom, damp, lr);
    if x.len() >= PAR_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        x.par_chunks_mut(PAR_CHUNK)
            .zip(g.par_chunks(PAR_CHUNK))
            .zip(b.par_chunks_mut(PAR_CHUNK))
            .for_each(|((x, g), b)| run(x, g, b));
    } else if x.len() >= HALVES_MIN_ELEMENTS && rayon::current_num_threads() > 1 {
        // Two halves, the second on the spin helper (which the step's last GEMM has just woken).
        let mid = (x.len() / 2).next_multiple_of(16);
        let (x0, x1) = x.split_at_mut(mid);
        let (g0, g1) = g.split_at(mid);
        let (b0, b1) = b.split_at_mut(mid);
        crate::threads::join_spin(|| run(x1, g1, b1), || run(x0, g0, b0));
    } else {
        run(x, g, b)
    }
}

/// The per-step constants of the Adam update, in the parameter's type.
#[derive(Clone, Copy)]
struct AdamScalars<T> {
    one_minus_b1: T,
    b2t: T,
    one_minus_b2: T,
    eps: T,
    bc2_sqrt: T,
    step_size: T,
    wd: T,
    decay: T,
}

impl<T: Float> AdamScalars<T> {
    /// The gradient after weight decay (and the decoupled decay applied to `p`).
    #[inline(always)]
    fn decayed(&self, decay: Decay, p: &mut T, g: T) -> T {
        match decay {
            Decay::None => g,
            Decay::L2 => g + self.wd * *p,
            Decay::Decoupled => {
                *p *= self.decay;
                g
            }
        }
    }
}

/// The Adam update on the CPU (see [`Tensor::adam_step_`]).
pub(super) fn adam(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    vmax: Option<&Tensor>,
    cfg: &AdamStep,
) -> Result<()> {
    match p.dtype() {
        DType::F32 => adam_typed::<f32>(p, g, m, v, vmax, cfg),
        _ => adam_typed::<f64>(p, g, m, v, vmax, cfg),
    }
}

fn adam_typed<T: Float>(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    vmax: Option<&Tensor>,
    cfg: &AdamStep,
) -> Result<()> {
    let [step_size, bc2_sqrt, one_minus_b1, b2t, one_minus_b2, eps, wd, decay] = cfg.constants().map(c::<T>);
    let k = AdamScalars { one_minus_b1, b2t, one_minus_b2, eps, bc2_sqrt, step_size, wd, decay };
    let decay = cfg.decay();
    with_buffers::<T>(p, g, Some(m), |pv, g, m| {
        let m = m.expect("the first moment is passed");
        let r = v.update_::<T, _>(|v| match vmax {
            None => adam_wide(pv, g, m, v, &k, decay),
            // AMSGrad: the rare case, left to the plain loop.
            Some(vmax) => vmax.update_::<T, _>(|vm| {
                for i in 0..pv.len() {
                    let gi = k.decayed(decay, &mut pv[i], g[i]);
                    m[i] = m[i] + k.one_minus_b1 * (gi - m[i]);
                    v[i] = v[i] * k.b2t + k.one_minus_b2 * gi * gi;
                    vm[i] = vm[i].max_nan(v[i]);
                    let denom = vm[i].sqrt() / k.bc2_sqrt + k.eps;
                    pv[i] -= k.step_size * (m[i] / denom);
                }
            }),
        });
        // `check_state` made every state a whole float buffer of the parameter's type and shape.
        debug_assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    })
}

#[inline(always)]
fn adam_loop<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], k: &AdamScalars<T>, decay: Decay) -> Result<()> {
    // One loop per decay kind, so the branch is outside the loop the vectoriser sees.
    macro_rules! run {
        ($decay:expr) => {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let gi = k.decayed($decay, p, g);
                *m = *m + k.one_minus_b1 * (gi - *m);
                *v = *v * k.b2t + k.one_minus_b2 * gi * gi;
                let denom = v.sqrt() / k.bc2_sqrt + k.eps;
                *p -= k.step_size * (*m / denom);
            }
        };
    }
    match decay {
        Decay::None => run!(Decay::None),
        Decay::L2 => run!(Decay::L2),
        Decay::Decoupled => run!(Decay::Decoupled),
    }
    Ok(())
}

crate::ops::wide_fn!(
    /// [`adam_loop`] with AVX-512 where the CPU has it (sqrt and division included).
    fn adam_wide<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], k: &AdamScalars<T>, decay: Decay) -> Result<()> => adam_loop
);
