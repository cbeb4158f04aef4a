//! The fused LSTM's forward: the gate nonlinearities, the batch's row blocks and the recurrence
//! (see `lstm/mod.rs` for the algorithm).

use super::*;
use crate::autograd::make_node;
use crate::device::DType;
use crate::error::{Error, Result};
use crate::ops::matmul::cpu::{MatRef, gemm, gemm_prepared, prepare_rhs};
use crate::ops::tasks::map_tasks;
use crate::ops::vmath;
use crate::shape::{Layout, Shape};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;
use std::sync::Arc;

/// The cell's nonlinearities: vectorisable approximations for f32 (within 2 ulp), the standard
/// library's for f64 (where the gradient checks run).
pub(super) trait Gate: Float {
    /// 1 / (1 + e^−x).
    fn sigmoid(self) -> Self;
    /// tanh x.
    fn tanh(self) -> Self;
}

impl Gate for f32 {
    #[inline(always)]
    fn sigmoid(self) -> f32 {
        vmath::sigmoid(self)
    }
    #[inline(always)]
    fn tanh(self) -> f32 {
        vmath::tanh(self)
    }
}

impl Gate for f64 {
    #[inline(always)]
    fn sigmoid(self) -> f64 {
        1.0 / (1.0 + (-self).exp())
    }
    #[inline(always)]
    fn tanh(self) -> f64 {
        f64::tanh(self)
    }
}

/// Rows per block of the batch when it is cut for threads: large enough that the per-step GEMM
/// stays efficient, small enough that a batch of 64 gives both cores of the CI machine kind work.
pub(super) const BLOCK_ROWS: usize = 32;

/// Sizes of one layer and direction.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dims {
    /// Time steps.
    pub(super) t: usize,
    /// Batch.
    pub(super) n: usize,
    /// Input features.
    pub(super) f: usize,
    /// Hidden size.
    pub(super) h: usize,
    /// Whether the sequence is read from its end (the backward direction of a bidirectional LSTM).
    pub(super) reverse: bool,
    /// Whether the output is `[N, T, H]` rather than `[T, N, H]`.
    pub(super) batch_first: bool,
}

impl Dims {
    /// Gate columns, 4H.
    pub(super) fn g(&self) -> usize {
        4 * self.h
    }
    /// The time index of the `s`-th step taken.
    pub(super) fn time(&self, s: usize) -> usize {
        if self.reverse { self.t - 1 - s } else { s }
    }
    /// Where row `r` of step `t` starts in the output (and its gradient).
    pub(super) fn out_row(&self, t: usize, r: usize) -> usize {
        if self.batch_first { (r * self.t + t) * self.h } else { (t * self.n + r) * self.h }
    }
    /// Distance between consecutive rows of one step in the output.
    pub(super) fn out_stride(&self) -> usize {
        if self.batch_first { self.t * self.h } else { self.h }
    }
    /// Boundaries of the row blocks: a function of the batch size only.
    pub(super) fn blocks(&self) -> Vec<usize> {
        let count = (self.n / BLOCK_ROWS).max(1);
        (0..=count).map(|b| self.n * b / count).collect()
    }
}

/// The elements of a contiguous tensor (kept alive by the returned `Arc`).
pub(super) fn buffer(t: &Tensor) -> Result<(Arc<CpuStorage>, usize, usize)> {
    Ok((t.cpu_storage("lstm_layer")?, t.layout().offset, t.numel()))
}

pub(super) fn slice<T: Element>((s, off, len): &(Arc<CpuStorage>, usize, usize)) -> &[T] {
    &T::slice(s).expect("checked to have the op's element type")[*off..*off + *len]
}

/// Cuts `buf` (`[steps, N, width]`) into per-block, per-step row ranges: `out[b][t]` holds rows
/// `bounds[b]..bounds[b + 1]` of step `t`.
pub(super) fn split_rows<'a, T>(
    buf: &'a mut [T],
    steps: usize,
    n: usize,
    width: usize,
    bounds: &[usize],
) -> Vec<Vec<&'a mut [T]>> {
    let blocks = bounds.len() - 1;
    let mut out: Vec<Vec<&mut [T]>> = (0..blocks).map(|_| Vec::with_capacity(steps)).collect();
    for mut slab in buf.chunks_exact_mut(n * width).take(steps) {
        for (b, o) in out.iter_mut().enumerate() {
            let (head, tail) = std::mem::take(&mut slab).split_at_mut((bounds[b + 1] - bounds[b]) * width);
            o.push(head);
            slab = tail;
        }
    }
    out
}

/// `(v[read], v[write])` for two different indices.
pub(super) fn read_write<'a, T>(v: &'a mut [&mut [T]], read: usize, write: usize) -> (&'a [T], &'a mut [T]) {
    assert_ne!(read, write);
    if read < write {
        let (lo, hi) = v.split_at_mut(write);
        (&*lo[read], &mut *hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(read);
        (&*hi[0], &mut *lo[write])
    }
}

/// Whether the blocks should run on several threads: more than one block, more than one
/// thread, and enough work (the per-step GEMMs' multiply-adds) to pay for it.
pub(super) fn parallel(d: &Dims, blocks: usize) -> bool {
    blocks > 1 && rayon::current_num_threads() > 1 && d.t * d.n * d.g() * d.h >= crate::ops::tasks::PAR_WORK
}

/// One block's share of the forward pass: its rows of every step's buffers.
pub(super) struct FwdBlock<'a, T> {
    pub(super) r0: usize,
    pub(super) r1: usize,
    pub(super) gates: Vec<&'a mut [T]>,
    pub(super) hs: Vec<&'a mut [T]>,
    pub(super) cs: Vec<&'a mut [T]>,
    pub(super) tcs: Vec<&'a mut [T]>,
    /// The block's rows of a batch-first output (contiguous there), when asked for.
    pub(super) batch_first: Option<&'a mut [T]>,
    pub(super) c_n: Option<&'a mut [T]>,
}

/// The op on one element type: the output tensor (flat with `c_n` appended when `cell_state`,
/// else shaped `[T, N, H]` or `[N, T, H]`) with its autograd node.
#[allow(clippy::too_many_arguments)]
pub(super) fn lstm_typed<T: Gate>(
    x: &Tensor,
    h0: Option<&Tensor>,
    c0: Option<&Tensor>,
    w_ih: &Tensor,
    w_hh: &Tensor,
    bias: Option<(&Tensor, &Tensor)>,
    d: Dims,
    cell_state: bool,
) -> Result<Tensor> {
    let (tl, n, f, h, g4) = (d.t, d.n, d.f, d.h, d.g());
    let xc = x.contiguous()?.detach();
    let (wih, whh) = (w_ih.contiguous()?, w_hh.contiguous()?);
    let h0c = h0.map(|s| s.contiguous().map(|s| s.detach())).transpose()?;
    let c0c = c0.map(|s| s.contiguous().map(|s| s.detach())).transpose()?;
    let bc = bias.map(|(bi, bh)| Ok::<_, Error>((bi.contiguous()?, bh.contiguous()?))).transpose()?;

    let (bx, bwih, bwhh) = (buffer(&xc)?, buffer(&wih)?, buffer(&whh)?);
    let bh0 = h0c.as_ref().map(buffer).transpose()?;
    let bc0 = c0c.as_ref().map(buffer).transpose()?;
    let (xv, wihv, whhv) = (slice::<T>(&bx), slice::<T>(&bwih), slice::<T>(&bwhh));
    let h0v = bh0.as_ref().map(slice::<T>);
    let c0v = bc0.as_ref().map(slice::<T>);

    // 1. Every step's input projection in one GEMM; both biases are added by the cell.
    let mut gates = T::take_buffer(tl * n * g4);
    let bias_sum: Vec<T> = match &bc {
        Some((bi, bh)) => {
            let (bi, bh) = (buffer(bi)?, buffer(bh)?);
            slice::<T>(&bi).iter().zip(slice::<T>(&bh)).map(|(&a, &b)| a + b).collect()
        }
        None => vec![T::ZERO; g4],
    };
    let xm = MatRef { data: xv, offset: 0, rs: f, cs: 1 };
    gemm(tl * n, g4, f, &mut gates, xm, MatRef { data: wihv, offset: 0, rs: 1, cs: f }, false);

    // 2. The recurrence, block by block. The hidden states are kept time-major (the per-step
    // GEMMs read them as matrices, and dW_hh as one); a time-major output is that buffer itself.
    let tnh = tl * n * h;
    let out_len = tnh + if cell_state { n * h } else { 0 };
    let mut out = T::take_buffer(out_len);
    let mut hs_own = if d.batch_first { T::take_buffer(tnh) } else { Vec::new() };
    let mut cs = T::take_buffer(tnh);
    let mut tcs = T::take_buffer(tnh);
    let bounds = d.blocks();
    {
        let (seq, cnpart) = out.split_at_mut(tnh);
        let (hs_buf, bf_buf) = if d.batch_first { (&mut hs_own[..], Some(seq)) } else { (seq, None) };
        let mut g = split_rows(&mut gates, tl, n, g4, &bounds).into_iter();
        let mut hs = split_rows(hs_buf, tl, n, h, &bounds).into_iter();
        let mut c = split_rows(&mut cs, tl, n, h, &bounds).into_iter();
        let mut tc = split_rows(&mut tcs, tl, n, h, &bounds).into_iter();
        // Batch-first, a block's rows of every step are one contiguous range.
        let mut bf = bf_buf.map(|b| split_rows(b, 1, n, tl * h, &bounds).into_iter());
        let mut cn = cell_state.then(|| split_rows(cnpart, 1, n, h, &bounds).into_iter());
        let blocks: Vec<FwdBlock<T>> = bounds
            .windows(2)
            .map(|w| FwdBlock {
                r0: w[0],
                r1: w[1],
                gates: g.next().expect("one per block"),
                hs: hs.next().expect("one per block"),
                cs: c.next().expect("one per block"),
                tcs: tc.next().expect("one per block"),
                batch_first: bf.as_mut().map(|it| it.next().expect("one per block").pop().expect("one range")),
                c_n: cn.as_mut().map(|it| it.next().expect("one per block").pop().expect("one step")),
            })
            .collect();
        // W_hhᵀ ([H, G]) laid out row-major once: the per-step GEMMs then read (and pack) it
        // contiguously instead of through a transposing stride.
        let mut whh_t = T::take_buffer(h * g4);
        for (k, dst) in whh_t.chunks_exact_mut(g4).enumerate() {
            dst.iter_mut().zip(whhv[k..].iter().step_by(h)).for_each(|(d, &v)| *d = v);
        }
        let w = (&whh_t[..], &bias_sum[..]);
        map_tasks(blocks, parallel(&d, bounds.len() - 1), |_, b| forward_block(b, &d, w, h0v, c0v));
        T::give_buffer(whh_t);
    }

    let needs = Needs {
        x: x.requires_grad(),
        h0: h0.is_some_and(Tensor::requires_grad),
        c0: c0.is_some_and(Tensor::requires_grad),
        w_ih: w_ih.requires_grad(),
        w_hh: w_hh.requires_grad(),
        b_ih: bias.is_some_and(|b| b.0.requires_grad()),
        b_hh: bias.is_some_and(|b| b.1.requires_grad()),
    };
    let mut inputs = vec![x];
    inputs.extend(h0);
    inputs.extend(c0);
    inputs.extend([w_ih, w_hh]);
    if let Some((bi, bh)) = bias {
        inputs.extend([bi, bh]);
    }
    // Parameters used as they are get their gradients written straight into their buffers.
    let leaf = |used: &Tensor, orig: &Tensor| (orig.is_leaf_requiring_grad() && used.same(orig)).then(|| used.clone());
    let leaves = Leaves {
        w_ih: leaf(&wih, w_ih),
        w_hh: leaf(&whh, w_hh),
        b_ih: bc.as_ref().zip(bias).and_then(|(b, o)| leaf(&b.0, o.0)),
        b_hh: bc.as_ref().zip(bias).and_then(|(b, o)| leaf(&b.1, o.1)),
    };
    let out = Arc::new(T::wrap(out));
    let saved_out = out.clone();
    let (has_h0, has_c0, has_bias) = (h0.is_some(), c0.is_some(), bias.is_some());
    let hs = d.batch_first.then_some(hs_own);
    let saved = Saved { xc, wih, whh, h0: h0c, c0: c0c, hs, cs, tcs };
    let node = make_node(
        "lstm",
        &inputs,
        Box::new(move |g: &Tensor| {
            let gc = g.contiguous()?;
            let grads = backward::<T>(&d, &buffer(&gc)?, &saved_out, gates, &saved, needs, &leaves)?;
            let Grads { x, h0, c0, w_ih, w_hh, b_ih, b_hh } = grads;
            let t =
                |v: Option<Vec<T>>, dims: &[usize]| v.map(|v| Tensor::from_storage(T::wrap(v), Shape(dims.to_vec())));
            let mut out = vec![t(x, &[tl, n, f])];
            if has_h0 {
                out.push(t(h0, &[n, h]));
            }
            if has_c0 {
                out.push(t(c0, &[n, h]));
            }
            out.push(t(w_ih, &[g4, f]));
            out.push(t(w_hh, &[g4, h]));
            if has_bias {
                out.push(t(b_ih, &[g4]));
                out.push(t(b_hh, &[g4]));
            }
            Ok(out)
        }),
    );
    let shape = match (cell_state, d.batch_first) {
        (true, _) => vec![out_len],
        (false, true) => vec![n, tl, h],
        (false, false) => vec![tl, n, h],
    };
    Ok(Tensor::from_parts(out, Layout::contiguous(Shape(shape)), node))
}

/// One block's recurrence: per step the recurrent GEMM onto the precomputed gates, then the
/// fused cell.
/// `bias` is b_ih + b_hh (`[4H]`, zeros without biases).
pub(super) fn forward_block<T: Gate>(
    mut b: FwdBlock<T>,
    d: &Dims,
    (whh_t, bias): (&[T], &[T]),
    h0: Option<&[T]>,
    c0: Option<&[T]>,
) {
    let (h, g4, rows) = (d.h, d.g(), b.r1 - b.r0);
    let zeros = vec![T::ZERO; if c0.is_some() { 0 } else { rows * h }];
    let h0 = h0.map(|v| &v[b.r0 * h..b.r1 * h]);
    let c0 = c0.map_or(&zeros[..], |v| &v[b.r0 * h..b.r1 * h]);
    // W_hhᵀ is the right operand of every step's product: packed once for all of them.
    let rhs = prepare_rhs(rows, g4, h, MatRef { data: whh_t, offset: 0, rs: g4, cs: 1 });
    for s in 0..d.t {
        let t = d.time(s);
        let prev = (s > 0).then(|| d.time(s - 1));
        let h_prev = match prev {
            Some(p) => Some(&*b.hs[p]),
            None => h0,
        };
        if let Some(hp) = h_prev {
            gemm_prepared(rows, &mut *b.gates[t], MatRef { data: hp, offset: 0, rs: h, cs: 1 }, &rhs, true);
        }
        let (c_prev, c) = match prev {
            Some(p) => read_write(&mut b.cs, p, t),
            None => (c0, &mut *b.cs[t]),
        };
        cell_forward(&mut *b.gates[t], bias, c_prev, c, &mut *b.tcs[t], &mut *b.hs[t]);
        if let Some(bf) = b.batch_first.as_deref_mut() {
            let stride = d.out_stride();
            for (i, row) in b.hs[t].chunks_exact(h).enumerate() {
                bf[i * stride + t * h..i * stride + (t + 1) * h].copy_from_slice(row);
            }
        }
    }
    if let Some(c_n) = b.c_n {
        c_n.copy_from_slice(&*b.cs[d.time(d.t - 1)]);
    }
}

/// The cell forward for rows of one step: activates `gates` in place and writes c, tanh(c), h.
/// `bias` (b_ih + b_hh, `[4H]`) is added to the gates first.
pub(super) fn cell_forward<T: Gate>(
    gates: &mut [T],
    bias: &[T],
    c_prev: &[T],
    c: &mut [T],
    tc: &mut [T],
    hout: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if T::DTYPE == DType::F32 && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { cell_forward_avx512(gates, bias, c_prev, c, tc, hout) };
    }
    cell_forward_loop(gates, bias, c_prev, c, tc, hout)
}

/// [`cell_forward_loop`] compiled for AVX-512: 16 f32 lanes through σ and tanh at once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn cell_forward_avx512<T: Gate>(
    gates: &mut [T],
    bias: &[T],
    c_prev: &[T],
    c: &mut [T],
    tc: &mut [T],
    hout: &mut [T],
) {
    cell_forward_loop(gates, bias, c_prev, c, tc, hout)
}

#[inline(always)]
pub(super) fn cell_forward_loop<T: Gate>(
    gates: &mut [T],
    bias: &[T],
    c_prev: &[T],
    c: &mut [T],
    tc: &mut [T],
    hout: &mut [T],
) {
    let h = bias.len() / 4;
    let (b_if, rest) = bias.split_at(2 * h);
    let (b_g, b_o) = rest.split_at(h);
    // Simple loops, one map each: what the loop vectoriser handles best.
    let rows = gates.chunks_exact_mut(4 * h).zip(c_prev.chunks_exact(h));
    for (((g, cp), c), (tc, ho)) in
        rows.zip(c.chunks_exact_mut(h)).zip(tc.chunks_exact_mut(h).zip(hout.chunks_exact_mut(h)))
    {
        let (ifg, rest) = g.split_at_mut(2 * h);
        let (gg, go) = rest.split_at_mut(h);
        ifg.iter_mut().zip(b_if).for_each(|(v, &b)| *v = (*v + b).sigmoid());
        gg.iter_mut().zip(b_g).for_each(|(v, &b)| *v = (*v + b).tanh());
        go.iter_mut().zip(b_o).for_each(|(v, &b)| *v = (*v + b).sigmoid());
        let (gi, gf) = ifg.split_at(h);
        for ((c, &cp), ((&i, &f), &g)) in c.iter_mut().zip(cp).zip(gi.iter().zip(gf).zip(gg.iter())) {
            *c = f * cp + i * g;
        }
        tc.iter_mut().zip(c.iter()).for_each(|(t, &c)| *t = c.tanh());
        ho.iter_mut().zip(go.iter().zip(tc.iter())).for_each(|(ho, (&o, &t))| *ho = o * t);
    }
}
