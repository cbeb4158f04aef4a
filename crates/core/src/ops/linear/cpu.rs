//! The fused `linear` op's CPU kernels: the forward through `matmul`'s GEMM (bias written first,
//! ReLU applied in one pass over the output), and the one-pass backward whose weight and bias
//! gradients go straight into the parameters' gradient buffers.

use crate::error::{Error, Result};
use crate::ops::matmul::cpu::{MatRef, gemm};
use crate::ops::matmul::linear_forward;
use crate::ops::{wide, with_float2};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;

/// `x2·wᵀ + b` (then the ReLU when `relu`): `x2` `[m, k]` with strides `(xrs, xcs)`, `w`
/// `[n, k]` and `b` `[n]` contiguous. The output is `[m, n]`, row-major.
pub(super) fn forward(
    x2: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    (m, k, n): (usize, usize, usize),
    (xrs, xcs): (usize, usize),
    relu: bool,
) -> Result<CpuStorage> {
    let (sx, sw) = (x2.cpu_storage("linear")?, w.cpu_storage("linear")?);
    let sb = b.map(|b| b.cpu_storage("linear")).transpose()?;
    let (xo, wo) = (x2.layout().offset, w.layout().offset);
    let bo = b.map_or(0, |b| b.layout().offset);
    with_float2!(sx, sw, "linear", |vx, vw: T| {
        let bias_slice = match sb.as_deref() {
            Some(s) => Some(
                &T::slice(s).ok_or(Error::DTypeMismatch { op: "linear", lhs: T::DTYPE, rhs: s.dtype() })?[bo..bo + n],
            ),
            None => None,
        };
        let xr = MatRef { data: vx, offset: xo, rs: xrs, cs: xcs };
        let mut y = linear_forward::<T>(xr, &vw[wo..wo + n * k], bias_slice, m, k, n);
        if relu {
            // NaN stays NaN, as in torch.relu. A select, not a branch, so it vectorises.
            wide(|| y.iter_mut().for_each(|v| *v = if *v > T::ZERO || v.is_nan() { *v } else { T::ZERO }));
        }
        Ok(T::wrap(y))
    })
}

/// Linear's backward from the output gradient `g2` (`[m, n]`, contiguous) and the saved `x2`
/// (strides `(xrs, xcs)`) and `w`; see [`linear_backward`].
pub(super) fn backward(
    g2: &Tensor,
    saved_x: &Tensor,
    saved_w: &Tensor,
    (m, k, n): (usize, usize, usize),
    (xrs, xcs): (usize, usize),
    needs: (bool, bool, bool),
    leaves: LeafGrads,
) -> Result<LinearGrads> {
    let (sg, sx, sw) = (g2.cpu_storage("linear")?, saved_x.cpu_storage("linear")?, saved_w.cpu_storage("linear")?);
    let go = g2.layout().offset;
    let (xo, wo) = (saved_x.layout().offset, saved_w.layout().offset);
    with_float2!(sg, sx, "linear backward", |vg, vx: T| {
        let vw = T::slice(&sw).expect("weight has the input's dtype");
        linear_backward::<T>(
            &vg[go..go + m * n],
            MatRef { data: vx, offset: xo, rs: xrs, cs: xcs },
            &vw[wo..wo + n * k],
            (m, k, n),
            needs,
            leaves,
        )
    })
}

/// `(dx, dw, db)`: `None` where not needed, or where written into a parameter's gradient buffer.
pub(super) type LinearGrads = (Option<CpuStorage>, Option<CpuStorage>, Option<CpuStorage>);

/// The parameters whose gradient buffers the backward writes into directly.
pub(super) struct LeafGrads<'a> {
    pub(super) weight: Option<&'a Tensor>,
    pub(super) bias: Option<&'a Tensor>,
}

/// Multiply-adds per GEMM above which the input gradient and the weight gradient run on two
/// threads at once (`rayon::join`): they are independent, so each core takes one. Below it (all
/// of SimpleNN's at batch 64: ~0.5 M, ~6 µs each) waking the second thread costs about what it
/// saves, and on a busy machine much more (see `SPLIT_MIN_MACS` in `matmul/cpu.rs`).
const JOIN_MIN_MACS: usize = 1 << 22;

/// Linear's backward: g `[m, n]`, x `[m, k]`, w `[n, k]` →
/// dx = g·w `[m, k]`, dw = gᵀ·x `[n, k]`, db = Σ_rows g `[n]`, each only when needed.
/// dw and db go straight into the parameters' gradient buffers when `leaves` names them (the
/// GEMM accumulates into the buffer: no temporary, no second pass), and are returned otherwise.
/// dx and dw run on two threads when both are needed and large enough; each is one fixed
/// computation either way, so the result does not depend on the thread count.
fn linear_backward<T: Float>(
    g: &[T],
    x: MatRef<T>,
    w: &[T],
    (m, k, n): (usize, usize, usize),
    needs: (bool, bool, bool),
    leaves: LeafGrads,
) -> Result<LinearGrads> {
    let gm = MatRef { data: g, offset: 0, rs: n, cs: 1 };
    // gᵀ is g read with swapped strides.
    let gt = MatRef { data: g, offset: 0, rs: 1, cs: n };
    let run_dx = || {
        needs.0.then(|| {
            let mut dx = T::take_buffer(m * k);
            gemm(m, k, n, &mut dx, gm, MatRef { data: w, offset: 0, rs: k, cs: 1 }, false);
            T::wrap(dx)
        })
    };
    let run_dw_db = || -> Result<(Option<CpuStorage>, Option<CpuStorage>)> {
        let dw = match (needs.1, leaves.weight) {
            (false, _) => None,
            (true, Some(leaf)) => {
                leaf.accumulate_grad_with::<T>(|d, overwrite| gemm(n, k, m, d, gt, x, !overwrite))?;
                None
            }
            (true, None) => {
                let mut dw = T::take_buffer(n * k);
                gemm(n, k, m, &mut dw, gt, x, false);
                Some(T::wrap(dw))
            }
        };
        // Column sums in row order: a fixed order, so results do not depend on threads.
        let bias_grad = |d: &mut [T], overwrite: bool| {
            if overwrite {
                d.fill(T::ZERO);
            }
            for row in g.chunks_exact(n.max(1)).take(m) {
                d.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
            }
        };
        let db = match (needs.2, leaves.bias) {
            (false, _) => None,
            (true, Some(leaf)) => {
                leaf.accumulate_grad_with::<T>(bias_grad)?;
                None
            }
            (true, None) => {
                let mut db = T::take_buffer(n);
                bias_grad(&mut db, true);
                Some(T::wrap(db))
            }
        };
        Ok((dw, db))
    };
    let parallel = needs.0 && needs.1 && m * n * k >= JOIN_MIN_MACS && rayon::current_num_threads() > 1;
    let (dx, dw_db) = if parallel {
        // Both halves may run on rayon's workers (a join from outside the pool runs in it):
        // each carries this thread's product precision.
        let p = crate::autocast::precision();
        use crate::autocast::with_precision;
        rayon::join(|| with_precision(p, run_dx), || with_precision(p, run_dw_db))
    } else {
        (run_dx(), run_dw_db())
    };
    let (dw, db) = dw_db?;
    Ok((dx, dw, db))
}
