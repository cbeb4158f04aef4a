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
//!
//! The parts: this file (the API and shapes), `cpu/` (the fused CPU op: `cpu/forward.rs` the
//! gate nonlinearities, row blocks, the forward recurrence and the autograd node,
//! `cpu/backward.rs` backpropagation through time and the parameter GEMMs), `gpu.rs` (the same
//! node on a GPU: the GEMMs by the matmul kernels, each step's gate pass one dispatch of
//! `cell.wgsl` / `cell_backward.wgsl`; the `gpu` feature), `tests.rs`.

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

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
    #[cfg(feature = "gpu")]
    let node_out = if x.device().is_gpu() {
        gpu::lstm(x, h0, c0, (w_ih, w_hh), bias, opts, (t, n, f, h))?
    } else {
        cpu::lstm(x, h0, c0, (w_ih, w_hh), bias, opts, (t, n, f, h))?
    };
    #[cfg(not(feature = "gpu"))]
    let node_out = cpu::lstm(x, h0, c0, (w_ih, w_hh), bias, opts, (t, n, f, h))?;
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
