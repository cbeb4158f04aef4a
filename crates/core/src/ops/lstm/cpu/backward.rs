//! The fused LSTM's backward: backpropagation through time per row block, then one GEMM per
//! parameter gradient over all steps (see `lstm/mod.rs`).

use super::forward::*;
use crate::device::DType;
use crate::error::Result;
use crate::ops::matmul::cpu::{MatRef, gemm, gemm_prepared, prepare_rhs};
use crate::ops::tasks::map_tasks;
use crate::storage::{CpuStorage, Float};
use crate::tensor::Tensor;
use std::sync::Arc;

/// Which inputs want gradients.
#[derive(Clone, Copy)]
pub(super) struct Needs {
    pub(super) x: bool,
    pub(super) h0: bool,
    pub(super) c0: bool,
    pub(super) w_ih: bool,
    pub(super) w_hh: bool,
    pub(super) b_ih: bool,
    pub(super) b_hh: bool,
}

/// Parameters whose gradient buffers the backward writes into directly.
pub(super) struct Leaves {
    pub(super) w_ih: Option<Tensor>,
    pub(super) w_hh: Option<Tensor>,
    pub(super) b_ih: Option<Tensor>,
    pub(super) b_hh: Option<Tensor>,
}

/// What the forward keeps for backward (besides the gates and the output).
pub(super) struct Saved<T> {
    pub(super) xc: Tensor,
    pub(super) wih: Tensor,
    pub(super) whh: Tensor,
    pub(super) h0: Option<Tensor>,
    pub(super) c0: Option<Tensor>,
    /// The time-major hidden states when the output is batch-first (else the output is them).
    pub(super) hs: Option<Vec<T>>,
    pub(super) cs: Vec<T>,
    pub(super) tcs: Vec<T>,
}

/// The gradients backward returns (`None` where not needed or written into a leaf's buffer).
pub(super) struct Grads<T> {
    pub(super) x: Option<Vec<T>>,
    pub(super) h0: Option<Vec<T>>,
    pub(super) c0: Option<Vec<T>>,
    pub(super) w_ih: Option<Vec<T>>,
    pub(super) w_hh: Option<Vec<T>>,
    pub(super) b_ih: Option<Vec<T>>,
    pub(super) b_hh: Option<Vec<T>>,
}

/// One block's share of the backward pass.
pub(super) struct BwdBlock<'a, T> {
    pub(super) r0: usize,
    pub(super) r1: usize,
    pub(super) gates: Vec<&'a mut [T]>,
    pub(super) dh0: Option<&'a mut [T]>,
    pub(super) dc0: Option<&'a mut [T]>,
}

/// A parameter gradient: computed by `write(buffer, accumulate)` straight into the leaf's
/// gradient buffer, or into a fresh one that is returned.
pub(super) fn param_grad<T: Float>(
    need: bool,
    leaf: Option<&Tensor>,
    len: usize,
    write: impl FnOnce(&mut [T], bool),
) -> Result<Option<Vec<T>>> {
    if !need {
        return Ok(None);
    }
    match leaf {
        Some(l) => {
            l.accumulate_grad_with::<T>(|buf, overwrite| write(buf, !overwrite))?;
            Ok(None)
        }
        None => {
            let mut buf = T::take_buffer(len);
            write(&mut buf, false);
            Ok(Some(buf))
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward<T: Gate>(
    d: &Dims,
    g: &(Arc<CpuStorage>, usize, usize),
    out: &Arc<CpuStorage>,
    mut gates: Vec<T>,
    saved: &Saved<T>,
    needs: Needs,
    leaves: &Leaves,
) -> Result<Grads<T>> {
    let (tl, n, f, h, g4) = (d.t, d.n, d.f, d.h, d.g());
    let gv = slice::<T>(g);
    // The output's gradient, then c_n's when the op returned it.
    let (g_out, g_cn) = gv.split_at(tl * n * h);
    let g_cn = (!g_cn.is_empty()).then_some(g_cn);
    let hs = match &saved.hs {
        Some(hs) => &hs[..],
        None => &T::slice(out).expect("output has the op's type")[..tl * n * h],
    };
    let (bx, bwih, bwhh) = (buffer(&saved.xc)?, buffer(&saved.wih)?, buffer(&saved.whh)?);
    let bh0 = saved.h0.as_ref().map(buffer).transpose()?;
    let bc0 = saved.c0.as_ref().map(buffer).transpose()?;
    let (xv, wihv, whhv) = (slice::<T>(&bx), slice::<T>(&bwih), slice::<T>(&bwhh));
    let h0v = bh0.as_ref().map(slice::<T>);
    let c0v = bc0.as_ref().map(slice::<T>);

    // Backpropagation through time, block by block: the gates become dL/d(pre-activation).
    let mut dh0 = needs.h0.then(|| T::take_buffer(n * h));
    let mut dc0 = needs.c0.then(|| T::take_buffer(n * h));
    let bounds = d.blocks();
    // Per block, Σ_rows dG when the biases need it.
    let block_sums = {
        let mut gb = split_rows(&mut gates, tl, n, g4, &bounds).into_iter();
        let mut dh0b = split_state(dh0.as_mut(), n, h, &bounds).into_iter();
        let mut dc0b = split_state(dc0.as_mut(), n, h, &bounds).into_iter();
        let blocks: Vec<BwdBlock<T>> = bounds
            .windows(2)
            .map(|w| BwdBlock {
                r0: w[0],
                r1: w[1],
                gates: gb.next().expect("one per block"),
                dh0: dh0b.next().expect("one per block"),
                dc0: dc0b.next().expect("one per block"),
            })
            .collect();
        let (cs, tcs) = (&saved.cs[..], &saved.tcs[..]);
        let need_b = needs.b_ih || needs.b_hh;
        let states = (c0v, cs, tcs);
        map_tasks(blocks, parallel(d, bounds.len() - 1), |_, b| backward_block(b, d, whhv, states, g_out, g_cn, need_b))
    };

    // Parameter and input gradients: one GEMM each over all steps. dGᵀ is dG read with swapped strides.
    let dg = &gates[..];
    let dgt = |row: usize| MatRef { data: dg, offset: row * g4, rs: 1, cs: g4 };
    let x_grad = needs.x.then(|| {
        let mut dx = T::take_buffer(tl * n * f);
        let lhs = MatRef { data: dg, offset: 0, rs: g4, cs: 1 };
        gemm(tl * n, f, g4, &mut dx, lhs, MatRef { data: wihv, offset: 0, rs: f, cs: 1 }, false);
        dx
    });
    let w_ih = param_grad::<T>(needs.w_ih, leaves.w_ih.as_ref(), g4 * f, |buf, acc| {
        gemm(g4, f, tl * n, buf, dgt(0), MatRef { data: xv, offset: 0, rs: f, cs: 1 }, acc)
    })?;
    let w_hh = param_grad::<T>(needs.w_hh, leaves.w_hh.as_ref(), g4 * h, |buf, acc| {
        // Step t's previous hidden state is output t − 1 (t + 1 in reverse), or h0 for the first.
        let (dg_row, h_row) = if d.reverse { (0, n) } else { (n, 0) };
        let hm = MatRef { data: hs, offset: h_row * h, rs: h, cs: 1 };
        gemm(g4, h, (tl - 1) * n, buf, dgt(dg_row), hm, acc);
        if let Some(h0) = h0v {
            let first = d.time(0);
            gemm(g4, h, n, buf, dgt(first * n), MatRef { data: h0, offset: 0, rs: h, cs: 1 }, true);
        }
    })?;
    let (b_ih, b_hh) = if needs.b_ih || needs.b_hh {
        // The blocks' column sums combined in block order: a fixed order, whatever the threads.
        let mut parts = block_sums.into_iter().flatten();
        let mut sum = parts.next().expect("at least one block");
        for p in parts {
            sum.iter_mut().zip(&p).for_each(|(s, &v)| *s += v);
        }
        let add = |buf: &mut [T], acc: bool| {
            if acc {
                buf.iter_mut().zip(&sum).for_each(|(b, &s)| *b += s);
            } else {
                buf.copy_from_slice(&sum);
            }
        };
        let bi = param_grad::<T>(needs.b_ih, leaves.b_ih.as_ref(), g4, add)?;
        let bh = param_grad::<T>(needs.b_hh, leaves.b_hh.as_ref(), g4, add)?;
        (bi, bh)
    } else {
        (None, None)
    };
    T::give_buffer(gates);
    Ok(Grads { x: x_grad, h0: dh0, c0: dc0, w_ih, w_hh, b_ih, b_hh })
}

/// A `[N, H]` state gradient cut into the row blocks (`None`s when it is not needed).
pub(super) fn split_state<'a, T>(
    buf: Option<&'a mut Vec<T>>,
    n: usize,
    h: usize,
    bounds: &[usize],
) -> Vec<Option<&'a mut [T]>> {
    match buf {
        Some(v) => split_rows(v, 1, n, h, bounds).into_iter().map(|mut s| s.pop()).collect(),
        None => (1..bounds.len()).map(|_| None).collect(),
    }
}

/// One block's backpropagation through time; returns the block's `Σ_rows dG` when `need_b`.
/// `states` is `(c0, c, tanh c)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_block<T: Gate>(
    mut b: BwdBlock<T>,
    d: &Dims,
    whh: &[T],
    (c0, cs, tcs): (Option<&[T]>, &[T], &[T]),
    g_out: &[T],
    g_cn: Option<&[T]>,
    need_b: bool,
) -> Option<Vec<T>> {
    let (n, h, g4, r0, r1) = (d.n, d.h, d.g(), b.r0, b.r1);
    let rows = r1 - r0;
    // Rows r0..r1 of step t in a [T, N, H] buffer.
    let at = |t: usize| (t * n + r0) * h..(t * n + r1) * h;
    let zeros = vec![T::ZERO; if c0.is_some() { 0 } else { rows * h }];
    let c0 = c0.map_or(&zeros[..], |v| &v[r0 * h..r1 * h]);
    let mut dc = g_cn.map_or_else(|| vec![T::ZERO; rows * h], |g| g[r0 * h..r1 * h].to_vec());
    let mut dh_rec = vec![T::ZERO; rows * h];
    let mut bias_sum = need_b.then(|| vec![T::ZERO; g4]);
    // W_hh is the right operand of every step's product: packed once for all of them.
    let whm = prepare_rhs(rows, h, g4, MatRef { data: whh, offset: 0, rs: h, cs: 1 });
    for s in (0..d.t).rev() {
        let t = d.time(s);
        let c_prev = if s > 0 { &cs[at(d.time(s - 1))] } else { c0 };
        let gt = &mut *b.gates[t];
        let dout = &g_out[d.out_row(t, r0)..];
        cell_backward(h, gt, c_prev, &tcs[at(t)], (dout, d.out_stride()), &dh_rec, &mut dc);
        if let Some(sum) = bias_sum.as_mut() {
            for row in gt.chunks_exact(g4) {
                sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            }
        }
        if s > 0 || b.dh0.is_some() {
            gemm_prepared(rows, &mut dh_rec, MatRef { data: gt, offset: 0, rs: g4, cs: 1 }, &whm, false);
        }
    }
    if let Some(dh0) = b.dh0 {
        dh0.copy_from_slice(&dh_rec);
    }
    if let Some(dc0) = b.dc0 {
        dc0.copy_from_slice(&dc);
    }
    bias_sum
}

/// The cell backward for rows of one step: the saved activated gates become the gradients of
/// the pre-activations, and `dc` (`dL/dc[t]` from later steps) becomes `dL/dc[t − 1]`. `dout` is
/// the output's gradient, its rows `stride` apart.
pub(super) fn cell_backward<T: Gate>(
    h: usize,
    gates: &mut [T],
    c_prev: &[T],
    tc: &[T],
    (dout, stride): (&[T], usize),
    dh_rec: &[T],
    dc: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    let wide = T::DTYPE == DType::F32 && std::arch::is_x86_feature_detected!("avx512f");
    let per_row = gates.chunks_exact_mut(4 * h).zip(c_prev.chunks_exact(h)).zip(tc.chunks_exact(h));
    let per_row = per_row.zip(dh_rec.chunks_exact(h)).zip(dc.chunks_exact_mut(h));
    for (r, ((((g, cp), tc), dhr), dc)) in per_row.enumerate() {
        let (gi, rest) = g.split_at_mut(h);
        let (gf, rest) = rest.split_at_mut(h);
        let (gg, go) = rest.split_at_mut(h);
        let dout = &dout[r * stride..r * stride + h];
        let row = RowGrads { gi, gf, gg, go, cp, tc, dout, dhr, dc };
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the CPU supports AVX-512F, checked above.
            unsafe { row_backward_avx512(row) };
            continue;
        }
        row_backward(row);
    }
}

/// One row of the cell backward, every slice `H` long: the gates (activated in, gradients of
/// the pre-activations out), `c[t − 1]`, `tanh(c[t])`, the output's and the recurrent dL/dh, and dc.
pub(super) struct RowGrads<'a, T> {
    pub(super) gi: &'a mut [T],
    pub(super) gf: &'a mut [T],
    pub(super) gg: &'a mut [T],
    pub(super) go: &'a mut [T],
    pub(super) cp: &'a [T],
    pub(super) tc: &'a [T],
    pub(super) dout: &'a [T],
    pub(super) dhr: &'a [T],
    pub(super) dc: &'a mut [T],
}

/// [`row_backward`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn row_backward_avx512<T: Gate>(row: RowGrads<T>) {
    row_backward(row)
}

#[inline(always)]
pub(super) fn row_backward<T: Gate>(row: RowGrads<T>) {
    let RowGrads { gi, gf, gg, go, cp, tc, dout, dhr, dc } = row;
    // Nine slices in one loop are more than the vectoriser's run-time overlap checks allow, so
    // the work is split into loops of a few slices each, through a small scratch row for dh.
    let mut dh = [T::ZERO; 64];
    for start in (0..gi.len()).step_by(64) {
        let len = (gi.len() - start).min(64);
        let r = start..start + len;
        let dh = &mut dh[..len];
        dh.iter_mut().zip(&dout[r.clone()]).zip(&dhr[r.clone()]).for_each(|((d, &a), &b)| *d = a + b);
        // dc += dh⊙o⊙(1 − tanh²c); do = dh⊙tanh(c) → dG_o = do⊙o(1 − o).
        for (((dc, &dh), &t), go) in dc[r.clone()].iter_mut().zip(&*dh).zip(&tc[r.clone()]).zip(&mut go[r.clone()]) {
            let o = *go;
            *dc += dh * o * (T::ONE - t * t);
            *go = dh * t * (o * (T::ONE - o));
        }
        // dG_i = dc⊙g⊙i(1 − i) and dG_g = dc⊙i⊙(1 − g²), each from the other's saved value.
        for ((gi, gg), &dc) in gi[r.clone()].iter_mut().zip(&mut gg[r.clone()]).zip(&dc[r.clone()]) {
            let (i, g) = (*gi, *gg);
            *gi = dc * g * (i * (T::ONE - i));
            *gg = dc * i * (T::ONE - g * g);
        }
        // dG_f = dc⊙c[t − 1]⊙f(1 − f); dc ← dc⊙f.
        for ((gf, dc), &cp) in gf[r.clone()].iter_mut().zip(&mut dc[r.clone()]).zip(&cp[r]) {
            let f = *gf;
            *gf = *dc * cp * (f * (T::ONE - f));
            *dc *= f;
        }
    }
}
