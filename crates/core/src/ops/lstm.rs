//! The fused LSTM layer: a whole sequence through one layer in one direction as one op and one
//! autograd node, instead of ~15 small ops and nodes per time step.
//!
//! Forward, with G = 4H gate columns in PyTorch's order i, f, g, o:
//! 1. `gates[t] = x[t]·W_ihᵀ` for every step at once: one GEMM `[T·N, F]·[F, G]`;
//! 2. per step, `gates[t] += h[t−1]·W_hhᵀ` (one GEMM `[N, H]·[H, G]`), then one pass over the
//!    gates: `+ b_ih + b_hh`, `i, f, o = σ(·)`, `g = tanh(·)`, `c[t] = f⊙c[t−1] + i⊙g`, `h[t] = o⊙tanh(c[t])`,
//!    with vectorised σ and tanh for f32 (`vmath`). The activated gates, `c[t]` and
//!    `tanh(c[t])` are kept for backward.
//!
//! Backward (backpropagation through time), with `dh = dL/dh[t]` + the recurrent part, per step
//! in reverse: `dc += dh⊙o⊙(1 − tanh²c)`, then the pre-activation gradients
//! `dG = [dc⊙g⊙i(1−i), dc⊙c[t−1]⊙f(1−f), dc⊙i⊙(1−g²), dh⊙tanh(c)⊙o(1−o)]` overwrite the saved
//! gates, `dc ← dc⊙f`, and `dh_rec = dG·W_hh` (one GEMM) feeds the step before. The parameter
//! gradients are then one GEMM each over all steps: `dW_ih = dGᵀ·X`, `dW_hh = dGᵀ·H_prev`,
//! `db_ih = db_hh = Σ_rows dG`, and `dX = dG·W_ih`.
//!
//! The samples of a batch never interact in the recurrence, so the batch is cut into row blocks
//! fixed by its size alone (never by the thread count), each running the whole sequence on its
//! own — on its own thread when there are several. Every value is computed by the same kernel
//! calls in the same order whatever the thread count: 1 and N threads give bit-identical results.
//!
//! The op's one output is `[T + 1, N, H]`: the hidden states of every step, then the last cell
//! state; [`lstm_layer`] hands out views of it (output sequence, `h_n`, `c_n`), so gradients
//! reaching any of them flow into this one node.

use super::conv::cpu::map_tasks;
use super::matmul::cpu::{MatRef, gemm};
use super::vmath;
use crate::autograd::make_node;
use crate::device::DType;
use crate::error::{Error, Result};
use crate::shape::{Layout, Shape};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;
use std::sync::Arc;

/// The cell's nonlinearities: vectorisable approximations for f32 (within 2 ulp), the standard
/// library's for f64 (where the gradient checks run).
pub(crate) trait Gate: Float {
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
const BLOCK_ROWS: usize = 32;

/// Sizes of one layer and direction.
#[derive(Clone, Copy, Debug)]
struct Dims {
    /// Time steps.
    t: usize,
    /// Batch.
    n: usize,
    /// Input features.
    f: usize,
    /// Hidden size.
    h: usize,
    /// Whether the sequence is read from its end (the backward direction of a bidirectional LSTM).
    reverse: bool,
    /// Whether the output is `[N, T, H]` rather than `[T, N, H]`.
    batch_first: bool,
}

impl Dims {
    /// Gate columns, 4H.
    fn g(&self) -> usize {
        4 * self.h
    }
    /// The time index of the `s`-th step taken.
    fn time(&self, s: usize) -> usize {
        if self.reverse { self.t - 1 - s } else { s }
    }
    /// Where row `r` of step `t` starts in the output (and its gradient).
    fn out_row(&self, t: usize, r: usize) -> usize {
        if self.batch_first { (r * self.t + t) * self.h } else { (t * self.n + r) * self.h }
    }
    /// Distance between consecutive rows of one step in the output.
    fn out_stride(&self) -> usize {
        if self.batch_first { self.t * self.h } else { self.h }
    }
    /// Boundaries of the row blocks: a function of the batch size only.
    fn blocks(&self) -> Vec<usize> {
        let count = (self.n / BLOCK_ROWS).max(1);
        (0..=count).map(|b| self.n * b / count).collect()
    }
}

/// How [`lstm_layer`] runs and lays out its results; the default is PyTorch's forward direction,
/// time-major output, no `c_n`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LstmOptions {
    /// Read the sequence from its last step to its first (the outputs stay at their time
    /// positions): the second direction of a bidirectional LSTM.
    pub reverse: bool,
    /// Lay the output out `[N, T, H]` (batch first) instead of `[T, N, H]`, written so directly
    /// (no transposed view for the next layer to copy).
    pub batch_first: bool,
    /// Also return the last cell state `c_n`. Without it the op's output is the sequence alone,
    /// which saves a copy of the output gradient in backward.
    pub cell_state: bool,
}

/// One LSTM layer in one direction over a whole sequence, as PyTorch's `nn.LSTM` computes it
/// (gates i, f, g, o; `c' = f⊙c + i⊙g`, `h' = o⊙tanh(c')`), as a single differentiable op.
///
/// `h0` and `c0` default to zeros; `bias` is `(b_ih, b_hh)`; see [`LstmOptions`] for the
/// direction and the layout. Returns `(output, h_n, c_n)`, `c_n` only when asked for.
///
/// # Shapes
/// - `x`: `[T, N, F]` (time-major; any strides: a batch-first `[N, T, F]` is passed as its
///   transposed view)
/// - `h0`, `c0`: `[N, H]`
/// - `w_ih`: `[4H, F]`, `w_hh`: `[4H, H]`, `b_ih`, `b_hh`: `[4H]` (PyTorch's layouts)
/// - output: `[T, N, H]`, or `[N, T, H]` with `batch_first` (the hidden state of every step);
///   `h_n`, `c_n`: `[N, H]`
///
/// ```
/// # use strata_core::{Tensor, DType, LstmOptions, lstm_layer};
/// let x = Tensor::ones(&[5, 2, 3], DType::F32);
/// let (w_ih, w_hh) = (Tensor::full(&[16, 3], 0.1, DType::F32), Tensor::full(&[16, 4], 0.1, DType::F32));
/// let opts = LstmOptions { cell_state: true, ..Default::default() };
/// let (out, h_n, c_n) = lstm_layer(&x, None, None, &w_ih, &w_hh, None, opts)?;
/// assert_eq!((out.dims(), h_n.dims(), c_n.unwrap().dims()), (&[5, 2, 4][..], &[2, 4][..], &[2, 4][..]));
/// # Ok::<(), strata_core::Error>(())
/// ```
pub fn lstm_layer(
    x: &Tensor,
    h0: Option<&Tensor>,
    c0: Option<&Tensor>,
    w_ih: &Tensor,
    w_hh: &Tensor,
    bias: Option<(&Tensor, &Tensor)>,
    opts: LstmOptions,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    const OP: &str = "lstm";
    let shape_err = |what: &'static str, t: &Tensor, expected: String| Error::ShapeMismatch {
        op: OP,
        what,
        got: t.shape().clone(),
        expected,
    };
    if x.ndim() != 3 || x.dims()[0] == 0 {
        return Err(shape_err("input", x, "[T, N, F] with T ≥ 1 (time-major)".into()));
    }
    let (t, n, f) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    if w_ih.ndim() != 2 || w_ih.dims()[1] != f || !w_ih.dims()[0].is_multiple_of(4) || w_ih.dims()[0] == 0 {
        return Err(shape_err("weight_ih", w_ih, format!("[4·H, {f}] (the input has {f} features)")));
    }
    let h = w_ih.dims()[0] / 4;
    x.check_same(OP, w_ih)?;
    x.check_same(OP, w_hh)?;
    if w_hh.dims() != [4 * h, h] {
        return Err(shape_err("weight_hh", w_hh, format!("[{}, {h}] (hidden size {h})", 4 * h)));
    }
    if let Some((bi, bh)) = bias {
        for (what, b) in [("bias_ih", bi), ("bias_hh", bh)] {
            x.check_same(OP, b)?;
            if b.dims() != [4 * h] {
                return Err(shape_err(what, b, format!("[{}]", 4 * h)));
            }
        }
    }
    for (what, s) in [("h0", h0), ("c0", c0)] {
        if let Some(s) = s {
            x.check_same(OP, s)?;
            if s.dims() != [n, h] {
                return Err(shape_err(what, s, format!("[{n}, {h}] (batch, hidden size)")));
            }
        }
    }
    let d = Dims { t, n, f, h, reverse: opts.reverse, batch_first: opts.batch_first };
    let node_out = match x.dtype() {
        DType::F32 => lstm_typed::<f32>(x, h0, c0, w_ih, w_hh, bias, d, opts.cell_state)?,
        DType::F64 => lstm_typed::<f64>(x, h0, c0, w_ih, w_hh, bias, d, opts.cell_state)?,
        DType::I64 => {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: DType::I64,
                hint: " (convert with `.to_dtype(DType::F32)`)",
            });
        }
    };
    let (out_dims, time_dim) = if opts.batch_first { ([n, t, h], 1) } else { ([t, n, h], 0) };
    let (out, c_n) = if opts.cell_state {
        // One flat output: the sequence, then c_n.
        let out = node_out.narrow(0, 0, t * n * h)?.reshape(&out_dims)?;
        (out, Some(node_out.narrow(0, t * n * h, n * h)?.reshape(&[n, h])?))
    } else {
        (node_out, None)
    };
    let last = if opts.reverse { 0 } else { t - 1 };
    let h_n = out.narrow(time_dim, last, 1)?.reshape(&[n, h])?;
    Ok((out, h_n, c_n))
}

/// The elements of a contiguous tensor (kept alive by the returned `Arc`).
fn buffer(t: &Tensor) -> (Arc<CpuStorage>, usize, usize) {
    (t.storage(), t.layout().offset, t.numel())
}

fn slice<T: Element>((s, off, len): &(Arc<CpuStorage>, usize, usize)) -> &[T] {
    &T::slice(s).expect("checked to have the op's element type")[*off..*off + *len]
}

/// Cuts `buf` (`[steps, N, width]`) into per-block, per-step row ranges: `out[b][t]` holds rows
/// `bounds[b]..bounds[b + 1]` of step `t`.
fn split_rows<'a, T>(
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
fn read_write<'a, T>(v: &'a mut [&mut [T]], read: usize, write: usize) -> (&'a [T], &'a mut [T]) {
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
fn parallel(d: &Dims, blocks: usize) -> bool {
    blocks > 1 && rayon::current_num_threads() > 1 && d.t * d.n * d.g() * d.h >= super::conv::cpu::PAR_WORK
}

/// One block's share of the forward pass: its rows of every step's buffers.
struct FwdBlock<'a, T> {
    r0: usize,
    r1: usize,
    gates: Vec<&'a mut [T]>,
    hs: Vec<&'a mut [T]>,
    cs: Vec<&'a mut [T]>,
    tcs: Vec<&'a mut [T]>,
    /// The block's rows of a batch-first output (contiguous there), when asked for.
    batch_first: Option<&'a mut [T]>,
    c_n: Option<&'a mut [T]>,
}

/// The op on one element type: the output tensor (flat with `c_n` appended when `cell_state`,
/// else shaped `[T, N, H]` or `[N, T, H]`) with its autograd node.
#[allow(clippy::too_many_arguments)]
fn lstm_typed<T: Gate>(
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

    let (bx, bwih, bwhh) = (buffer(&xc), buffer(&wih), buffer(&whh));
    let bh0 = h0c.as_ref().map(buffer);
    let bc0 = c0c.as_ref().map(buffer);
    let (xv, wihv, whhv) = (slice::<T>(&bx), slice::<T>(&bwih), slice::<T>(&bwhh));
    let h0v = bh0.as_ref().map(slice::<T>);
    let c0v = bc0.as_ref().map(slice::<T>);

    // 1. Every step's input projection in one GEMM; both biases are added by the cell.
    let mut gates = T::take_buffer(tl * n * g4);
    let bias_sum: Vec<T> = match &bc {
        Some((bi, bh)) => {
            let (bi, bh) = (buffer(bi), buffer(bh));
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
            let grads = backward::<T>(&d, &buffer(&gc), &saved_out, gates, &saved, needs, &leaves)?;
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
fn forward_block<T: Gate>(
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
    let rhs = MatRef { data: whh_t, offset: 0, rs: g4, cs: 1 };
    for s in 0..d.t {
        let t = d.time(s);
        let prev = (s > 0).then(|| d.time(s - 1));
        let h_prev = match prev {
            Some(p) => Some(&*b.hs[p]),
            None => h0,
        };
        if let Some(hp) = h_prev {
            gemm(rows, g4, h, &mut *b.gates[t], MatRef { data: hp, offset: 0, rs: h, cs: 1 }, rhs, true);
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
fn cell_forward<T: Gate>(gates: &mut [T], bias: &[T], c_prev: &[T], c: &mut [T], tc: &mut [T], hout: &mut [T]) {
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
fn cell_forward_avx512<T: Gate>(gates: &mut [T], bias: &[T], c_prev: &[T], c: &mut [T], tc: &mut [T], hout: &mut [T]) {
    cell_forward_loop(gates, bias, c_prev, c, tc, hout)
}

#[inline(always)]
fn cell_forward_loop<T: Gate>(gates: &mut [T], bias: &[T], c_prev: &[T], c: &mut [T], tc: &mut [T], hout: &mut [T]) {
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

/// Which inputs want gradients.
#[derive(Clone, Copy)]
struct Needs {
    x: bool,
    h0: bool,
    c0: bool,
    w_ih: bool,
    w_hh: bool,
    b_ih: bool,
    b_hh: bool,
}

/// Parameters whose gradient buffers the backward writes into directly.
struct Leaves {
    w_ih: Option<Tensor>,
    w_hh: Option<Tensor>,
    b_ih: Option<Tensor>,
    b_hh: Option<Tensor>,
}

/// What the forward keeps for backward (besides the gates and the output).
struct Saved<T> {
    xc: Tensor,
    wih: Tensor,
    whh: Tensor,
    h0: Option<Tensor>,
    c0: Option<Tensor>,
    /// The time-major hidden states when the output is batch-first (else the output is them).
    hs: Option<Vec<T>>,
    cs: Vec<T>,
    tcs: Vec<T>,
}

/// The gradients backward returns (`None` where not needed or written into a leaf's buffer).
struct Grads<T> {
    x: Option<Vec<T>>,
    h0: Option<Vec<T>>,
    c0: Option<Vec<T>>,
    w_ih: Option<Vec<T>>,
    w_hh: Option<Vec<T>>,
    b_ih: Option<Vec<T>>,
    b_hh: Option<Vec<T>>,
}

/// One block's share of the backward pass.
struct BwdBlock<'a, T> {
    r0: usize,
    r1: usize,
    gates: Vec<&'a mut [T]>,
    dh0: Option<&'a mut [T]>,
    dc0: Option<&'a mut [T]>,
}

/// A parameter gradient: computed by `write(buffer, accumulate)` straight into the leaf's
/// gradient buffer, or into a fresh one that is returned.
fn param_grad<T: Float>(
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
fn backward<T: Gate>(
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
    let (bx, bwih, bwhh) = (buffer(&saved.xc), buffer(&saved.wih), buffer(&saved.whh));
    let bh0 = saved.h0.as_ref().map(buffer);
    let bc0 = saved.c0.as_ref().map(buffer);
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
fn split_state<'a, T>(buf: Option<&'a mut Vec<T>>, n: usize, h: usize, bounds: &[usize]) -> Vec<Option<&'a mut [T]>> {
    match buf {
        Some(v) => split_rows(v, 1, n, h, bounds).into_iter().map(|mut s| s.pop()).collect(),
        None => (1..bounds.len()).map(|_| None).collect(),
    }
}

/// One block's backpropagation through time; returns the block's `Σ_rows dG` when `need_b`.
/// `states` is `(c0, c, tanh c)`.
#[allow(clippy::too_many_arguments)]
fn backward_block<T: Gate>(
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
    let whm = MatRef { data: whh, offset: 0, rs: h, cs: 1 };
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
            gemm(rows, h, g4, &mut dh_rec, MatRef { data: gt, offset: 0, rs: g4, cs: 1 }, whm, false);
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
/// the pre-activations, and `dc` (dL/dc[t] from later steps) becomes dL/dc[t − 1]. `dout` is
/// the output's gradient, its rows `stride` apart.
fn cell_backward<T: Gate>(
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
/// the pre-activations out), c[t − 1], tanh(c[t]), the output's and the recurrent dL/dh, and dc.
struct RowGrads<'a, T> {
    gi: &'a mut [T],
    gf: &'a mut [T],
    gg: &'a mut [T],
    go: &'a mut [T],
    cp: &'a [T],
    tc: &'a [T],
    dout: &'a [T],
    dhr: &'a [T],
    dc: &'a mut [T],
}

/// [`row_backward`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn row_backward_avx512<T: Gate>(row: RowGrads<T>) {
    row_backward(row)
}

#[inline(always)]
fn row_backward<T: Gate>(row: RowGrads<T>) {
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

#[cfg(test)]
mod tests {
    use super::{LstmOptions, lstm_layer};
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{DType, Generator, Tensor, cat, linear, stack};

    /// The step-by-step reference from elementary ops: what the layer computed before the fusion.
    fn reference(
        x: &Tensor,
        h0: &Tensor,
        c0: &Tensor,
        w: (&Tensor, &Tensor, Option<(&Tensor, &Tensor)>),
        reverse: bool,
    ) -> crate::Result<Tensor> {
        let (w_ih, w_hh, b) = w;
        let t_len = x.dims()[0];
        let xs = linear(x, w_ih, b.map(|b| b.0))?.unbind(0)?;
        let (mut h, mut c) = (h0.clone(), c0.clone());
        let mut outs = vec![None; t_len];
        let order: Vec<usize> = if reverse { (0..t_len).rev().collect() } else { (0..t_len).collect() };
        for t in order {
            let gates = xs[t].add(&linear(&h, w_hh, b.map(|b| b.1))?)?.chunk(4, 1)?;
            let (i, f) = (gates[0].sigmoid()?, gates[1].sigmoid()?);
            let (g, o) = (gates[2].tanh()?, gates[3].sigmoid()?);
            c = f.mul(&c)?.add(&i.mul(&g)?)?;
            h = o.mul(&c.tanh()?)?;
            outs[t] = Some(h.clone());
        }
        let outs: Vec<Tensor> = outs.into_iter().map(Option::unwrap).collect();
        let out = stack(&outs.iter().collect::<Vec<_>>(), 0)?;
        cat(&[&out.flatten(0, -1)?, &h.flatten(0, -1)?, &c.flatten(0, -1)?], 0)
    }

    fn fused(
        x: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        w: (&Tensor, &Tensor, Option<(&Tensor, &Tensor)>),
        reverse: bool,
    ) -> crate::Result<Tensor> {
        let opts = LstmOptions { reverse, cell_state: true, ..Default::default() };
        let (out, h, c) = lstm_layer(x, h0, c0, w.0, w.1, w.2, opts)?;
        cat(&[&out.flatten(0, -1)?, &h.flatten(0, -1)?, &c.expect("asked for").flatten(0, -1)?], 0)
    }

    #[test]
    fn matches_the_unfused_steps() {
        let mut rng = Generator::new(71);
        // A batch of 70 cuts into two row blocks; 3 takes one.
        for (t, n, f, h) in [(5, 3, 4, 6), (4, 70, 3, 5)] {
            let x = randn64(&[t, n, f], &mut rng);
            let (h0, c0) = (randn64(&[n, h], &mut rng), randn64(&[n, h], &mut rng));
            let (wi, wh) = (randn64(&[4 * h, f], &mut rng), randn64(&[4 * h, h], &mut rng));
            let (bi, bh) = (randn64(&[4 * h], &mut rng), randn64(&[4 * h], &mut rng));
            for reverse in [false, true] {
                let w = (&wi, &wh, Some((&bi, &bh)));
                let want = reference(&x, &h0, &c0, w, reverse).unwrap().to_vec_f64();
                let got = fused(&x, Some(&h0), Some(&c0), w, reverse).unwrap().to_vec_f64();
                assert_close(&got, &want, 1e-12, 1e-13);
                // f32, through the vectorised σ and tanh.
                let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
                let (x32, h32, c32, wi32, wh32) = (f32s(&x), f32s(&h0), f32s(&c0), f32s(&wi), f32s(&wh));
                let w32 = (&wi32, &wh32, None);
                let got = fused(&x32, Some(&h32), Some(&c32), w32, reverse).unwrap().to_vec_f64();
                let want = reference(&x, &h0, &c0, (&wi, &wh, None), reverse).unwrap().to_vec_f64();
                assert_close(&got, &want, 1e-4, 1e-5);
            }
        }
    }

    /// The other layouts: batch-first output, and no `c_n` (the output and h_n alone).
    fn fused_layouts(
        x: &Tensor,
        w: (&Tensor, &Tensor, Option<(&Tensor, &Tensor)>),
        reverse: bool,
        batch_first: bool,
    ) -> crate::Result<Tensor> {
        let opts = LstmOptions { reverse, batch_first, cell_state: false };
        let (out, h, c) = lstm_layer(x, None, None, w.0, w.1, w.2, opts)?;
        assert!(c.is_none());
        let out = if batch_first { out.transpose(0, 1)? } else { out };
        cat(&[&out.flatten(0, -1)?, &h.flatten(0, -1)?], 0)
    }

    #[test]
    fn layouts_agree_and_have_gradients() {
        let mut rng = Generator::new(75);
        for n in [3, 70] {
            let (t, f, h) = (4, 3, 5);
            let x = randn64(&[t, n, f], &mut rng);
            let (wi, wh) = (randn64(&[4 * h, f], &mut rng), randn64(&[4 * h, h], &mut rng));
            let (bi, bh) = (randn64(&[4 * h], &mut rng), randn64(&[4 * h], &mut rng));
            let w = (&wi, &wh, Some((&bi, &bh)));
            for reverse in [false, true] {
                let all = fused(&x, None, None, w, reverse).unwrap().to_vec_f64();
                for bf in [false, true] {
                    let got = fused_layouts(&x, w, reverse, bf).unwrap().to_vec_f64();
                    assert_eq!(got[..], all[..(t + 1) * n * h], "batch_first {bf}");
                }
            }
        }
        let x = randn64(&[3, 2, 3], &mut rng);
        let (wi, wh) = (randn64(&[8, 3], &mut rng), randn64(&[8, 2], &mut rng));
        let (bi, bh) = (randn64(&[8], &mut rng), randn64(&[8], &mut rng));
        for (reverse, bf) in [(false, true), (true, true), (false, false)] {
            gradcheck(&[x.clone(), wi.clone(), wh.clone(), bi.clone(), bh.clone()], |v| {
                fused_layouts(&v[0], (&v[1], &v[2], Some((&v[3], &v[4]))), reverse, bf)
            });
        }
    }

    #[test]
    fn gradients_match_the_unfused_steps_with_several_row_blocks() {
        // The gradient check below uses a batch of 2 (one block); here 70 rows make two blocks.
        let mut rng = Generator::new(74);
        let (t, n, f, h) = (3, 70, 3, 4);
        let leaf = |s: &[usize], rng: &mut Generator| randn64(s, rng).requires_grad_().unwrap();
        let x = leaf(&[t, n, f], &mut rng);
        let (h0, c0) = (leaf(&[n, h], &mut rng), leaf(&[n, h], &mut rng));
        let (wi, wh) = (leaf(&[4 * h, f], &mut rng), leaf(&[4 * h, h], &mut rng));
        let (bi, bh) = (leaf(&[4 * h], &mut rng), leaf(&[4 * h], &mut rng));
        let all = [&x, &h0, &c0, &wi, &wh, &bi, &bh];
        let w = randn64(&[(t + 2) * n * h], &mut rng);
        let grads = |out: Tensor| {
            all.iter().for_each(|p| p.set_grad(None).unwrap());
            out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            all.iter().map(|p| p.grad().unwrap().to_vec_f64()).collect::<Vec<_>>()
        };
        for reverse in [false, true] {
            let want = grads(reference(&x, &h0, &c0, (&wi, &wh, Some((&bi, &bh))), reverse).unwrap());
            let got = grads(fused(&x, Some(&h0), Some(&c0), (&wi, &wh, Some((&bi, &bh))), reverse).unwrap());
            for (g, w) in got.iter().zip(&want) {
                assert_close(g, w, 1e-11, 1e-12);
            }
        }
    }

    #[test]
    fn gradcheck_lstm_layer() {
        let mut rng = Generator::new(72);
        let (t, n, f, h) = (3, 2, 3, 2);
        let x = randn64(&[t, n, f], &mut rng);
        let (h0, c0) = (randn64(&[n, h], &mut rng), randn64(&[n, h], &mut rng));
        let (wi, wh) = (randn64(&[4 * h, f], &mut rng), randn64(&[4 * h, h], &mut rng));
        let (bi, bh) = (randn64(&[4 * h], &mut rng), randn64(&[4 * h], &mut rng));
        for reverse in [false, true] {
            let inputs = [x.clone(), h0.clone(), c0.clone(), wi.clone(), wh.clone(), bi.clone(), bh.clone()];
            gradcheck(&inputs, |v| {
                fused(&v[0], Some(&v[1]), Some(&v[2]), (&v[3], &v[4], Some((&v[5], &v[6]))), reverse)
            });
            // Zero initial states, no biases, a strided (transposed) input, one step.
            let xt = randn64(&[n, t, f], &mut rng);
            gradcheck(&[xt, wi.clone(), wh.clone()], |v| {
                fused(&v[0].transpose(0, 1)?, None, None, (&v[1], &v[2], None), reverse)
            });
            gradcheck(&[randn64(&[1, n, f], &mut rng), wi.clone(), wh.clone()], |v| {
                fused(&v[0], None, None, (&v[1], &v[2], None), reverse)
            });
        }
    }

    #[test]
    fn parameters_get_gradients_in_place_and_errors_name_shapes() {
        let mut rng = Generator::new(73);
        let x = randn64(&[4, 3, 2], &mut rng);
        let wi = randn64(&[8, 2], &mut rng).requires_grad_().unwrap();
        let wh = randn64(&[8, 2], &mut rng).requires_grad_().unwrap();
        let (bi, bh) =
            (randn64(&[8], &mut rng).requires_grad_().unwrap(), randn64(&[8], &mut rng).requires_grad_().unwrap());
        let run = || {
            let opts = LstmOptions { cell_state: true, ..Default::default() };
            let (out, _, c) = lstm_layer(&x, None, None, &wi, &wh, Some((&bi, &bh)), opts).unwrap();
            out.sum_all().unwrap().add(&c.unwrap().sum_all().unwrap()).unwrap().backward().unwrap();
        };
        run();
        let first: Vec<Vec<f64>> = [&wi, &wh, &bi, &bh].iter().map(|p| p.grad().unwrap().to_vec_f64()).collect();
        assert_eq!(first[2], first[3], "both biases get Σ dG");
        run();
        for (p, g) in [&wi, &wh, &bi, &bh].iter().zip(&first) {
            let twice: Vec<f64> = g.iter().map(|v| 2.0 * v).collect();
            assert_close(&p.grad().unwrap().to_vec_f64(), &twice, 1e-12, 1e-12);
        }
        let e = lstm_layer(&x, None, None, &randn64(&[8, 3], &mut rng), &wh, None, LstmOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "lstm: weight_ih has shape [8, 3], expected [4·H, 2] (the input has 2 features)");
        let e = lstm_layer(&x, Some(&randn64(&[2, 2], &mut rng)), None, &wi, &wh, None, LstmOptions::default())
            .unwrap_err();
        assert_eq!(e.to_string(), "lstm: h0 has shape [2, 2], expected [3, 2] (batch, hidden size)");
    }
}
