//! The LSTM layer on a GPU as one autograd node, like the CPU's: the GEMMs through the matmul
//! kernels, and each step's gate pass (activations, cell and hidden state; backward, the gate
//! gradients and the carried cell gradient) as one dispatch of `cell.wgsl` /
//! `cell_backward.wgsl`.
//!
//! Why not composed from ops: a step composed from `linear`, `chunk`, the activations, `mul`
//! and `add` was ~12 dispatches forward and ~40 backward (each activation's backward alone is
//! several ops, and every `narrow` of the input projection scattered a whole-sequence gradient);
//! a GPU dispatch costs the host ~7 µs on an H200 machine, so W6 (28 steps) was bound by them.
//! Here a step is two dispatches forward (the recurrent GEMM, the gate pass) and two backward
//! (the gate pass, the recurrent GEMM), and the parameter gradients are one GEMM each over all
//! steps, as on the CPU.

use super::LstmOptions;
use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, output};
use crate::storage::Storage;
use crate::tensor::Tensor;

const OP: &str = "lstm";
const CELL: Kernel = Kernel { name: "lstm_cell", wgsl: include_str!("cell.wgsl"), entry: "cell_forward" };
const CELL_BACKWARD: Kernel =
    Kernel { name: "lstm_cell_backward", wgsl: include_str!("cell_backward.wgsl"), entry: "cell_backward" };

/// The op on a GPU: the node's one output, laid out as the CPU op's (`[T, N, H]` or
/// `[N, T, H]`; flat with `c_n` appended when `cell_state`).
pub(super) fn lstm(
    x: &Tensor,
    h0: Option<&Tensor>,
    c0: Option<&Tensor>,
    (w_ih, w_hh): (&Tensor, &Tensor),
    bias: Option<(&Tensor, &Tensor)>,
    opts: LstmOptions,
    (t, n, f, h): (usize, usize, usize, usize),
) -> Result<Tensor> {
    let g4 = 4 * h;
    let dev = x.device();
    // Detached operands: the node below is the only one recorded.
    let xd = x.detach().reshape(&[t * n, f])?.contiguous()?;
    let (wih, whh) = (w_ih.detach(), w_hh.detach());
    let (bih, bhh) = (bias.map(|b| b.0.detach()), bias.map(|b| b.1.detach()));
    let zeros = || Tensor::full_on(&[n, h], 0.0, DType::F32, dev);
    let h_init = match h0 {
        Some(s) => s.owned_detached()?,
        None => zeros()?,
    };
    let c_init = match c0 {
        Some(s) => s.owned_detached()?,
        None => zeros()?,
    };
    let order: Vec<usize> = if opts.reverse { (0..t).rev().collect() } else { (0..t).collect() };

    let (gates, hs, cs) = crate::no_grad(|| -> Result<_> {
        // Every step's input projection at once: [T·N, F] · W_ihᵀ + b_ih → [T·N, G].
        let xw = crate::linear(&xd, &wih, bih.as_ref())?.owned_detached()?;
        let bxw = xw.gpu_buffer(OP)?;
        let ctx = bxw.ctx.clone();
        let gates = output(&ctx, OP, t * n * g4, DType::F32)?;
        let hs = Tensor::from_storage(Storage::Gpu(output(&ctx, OP, t * n * h, DType::F32)?), [t, n, h].into());
        let cs = Tensor::from_storage(Storage::Gpu(output(&ctx, OP, t * n * h, DType::F32)?), [t, n, h].into());
        let (bhs, bcs, bci) = (hs.gpu_buffer(OP)?, cs.gpu_buffer(OP)?, c_init.gpu_buffer(OP)?);
        let mut h_prev = h_init.clone();
        for (k, &step) in order.iter().enumerate() {
            // The recurrent part, with b_hh: [N, H] · W_hhᵀ → [N, G], a fresh buffer.
            let hw = crate::linear(&h_prev, &whh, bhh.as_ref())?;
            let bhw = hw.gpu_buffer(OP)?;
            let p = step_words(&order, k, n, h);
            let buffers = [bxw.raw(), bhw.raw(), bci.raw(), gates.raw(), bhs.raw(), bcs.raw()];
            ctx.dispatch(&CELL, &p, &buffers, groups_1d(n * h))?;
            h_prev = hs.narrow(0, step, 1)?.reshape(&[n, h])?;
        }
        Ok((Tensor::from_storage(Storage::Gpu(gates), [t * n, g4].into()), hs, cs))
    })?;

    // The node's output: the hidden states in the asked layout, then c_n when asked for.
    let last = *order.last().expect("T ≥ 1");
    let out = crate::no_grad(|| -> Result<Tensor> {
        let seq = if opts.batch_first { hs.transpose(0, 1)?.contiguous()? } else { hs.clone() };
        if opts.cell_state {
            let c_n = cs.narrow(0, last, 1)?.reshape(&[n * h])?;
            crate::cat(&[&seq.reshape(&[t * n * h])?, &c_n], 0)?.owned_detached()
        } else {
            seq.owned_detached()
        }
    })?;

    let mut inputs: Vec<&Tensor> = vec![x, w_ih, w_hh];
    if let Some((bi, bh)) = bias {
        inputs.extend([bi, bh]);
    }
    inputs.extend(h0);
    inputs.extend(c0);
    let (has_bias, has_h0, has_c0) = (bias.is_some(), h0.is_some(), c0.is_some());
    let x_dims = x.dims().to_vec();
    let saved = Saved { xd, wih, whh, h_init, c_init, gates, hs, cs, order };
    let shape = out.shape().clone();
    let storage = out.buffer();
    Ok(Tensor::from_op_shared(storage, shape, OP, &inputs, move |grad| {
        crate::no_grad(|| {
            let d = saved.backward(grad, opts, (t, n, f, h))?;
            let mut grads = vec![Some(d.x.reshape(&x_dims)?), Some(d.w_ih), Some(d.w_hh)];
            if has_bias {
                grads.extend([Some(d.bias.clone()), Some(d.bias)]);
            }
            if has_h0 {
                grads.push(Some(d.h0));
            }
            if has_c0 {
                grads.push(Some(d.c0));
            }
            Ok(grads)
        })
    }))
}

/// The gate pass's words for the `k`-th step run (`order[k]`), forward and backward alike:
/// `[N·H, H, its gates' offset, its states' offset, the step before's states' offset, whether it
/// is the first (c[t−1] is then `c_init`)]`.
fn step_words(order: &[usize], k: usize, n: usize, h: usize) -> [u32; 6] {
    let step = order[k];
    let prev = if k == 0 { 0 } else { order[k - 1] };
    [
        (n * h) as u32,
        h as u32,
        (step * n * 4 * h) as u32,
        (step * n * h) as u32,
        (prev * n * h) as u32,
        u32::from(k == 0),
    ]
}

/// What the backward reads: the detached operands, the pre-activation gates `[T·N, G]`, the
/// hidden and cell states `[T, N, H]` (time-major) and the order the steps ran in.
struct Saved {
    xd: Tensor,
    wih: Tensor,
    whh: Tensor,
    h_init: Tensor,
    c_init: Tensor,
    gates: Tensor,
    hs: Tensor,
    cs: Tensor,
    order: Vec<usize>,
}

/// The gradients of the op's operands (the two biases share one).
struct Grads {
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Tensor,
    h0: Tensor,
    c0: Tensor,
}

impl Saved {
    /// Backpropagation through time from the output's gradient (laid out as the output).
    fn backward(&self, grad: &Tensor, opts: LstmOptions, (t, n, f, h): (usize, usize, usize, usize)) -> Result<Grads> {
        let g4 = 4 * h;
        let dev = grad.device();
        let dout = grad.owned_detached()?;
        let bd = dout.gpu_buffer(OP)?;
        let ctx = bd.ctx.clone();
        // The cell gradient carried from step to step starts as c_n's gradient (a fresh buffer:
        // the kernel updates it in place).
        let zeros = Tensor::full_on(&[n, h], 0.0, DType::F32, dev)?;
        // (Not `zeros` itself: that one is bound, read, as the first step's recurrent part.)
        let dc = if opts.cell_state {
            dout.narrow(0, t * n * h, n * h)?.reshape(&[n, h])?.add(&zeros)?
        } else {
            Tensor::full_on(&[n, h], 0.0, DType::F32, dev)?
        };
        let dgates = Tensor::from_storage(Storage::Gpu(output(&ctx, OP, t * n * g4, DType::F32)?), [t * n, g4].into());
        let (bg, bcs, bci, bdc, bdg) = (
            self.gates.gpu_buffer(OP)?,
            self.cs.gpu_buffer(OP)?,
            self.c_init.gpu_buffer(OP)?,
            dc.gpu_buffer(OP)?,
            dgates.gpu_buffer(OP)?,
        );
        // Where dout holds step s, row r: time-major s·N·H + r·H, batch-first r·T·H + s·H.
        let (d_step, d_row) = if opts.batch_first { (h, t * h) } else { (n * h, h) };
        let mut dh_rec: Option<Tensor> = None;
        for k in (0..t).rev() {
            let step = self.order[k];
            let rec = dh_rec.as_ref().unwrap_or(&zeros).gpu_buffer(OP)?;
            let mut p = step_words(&self.order, k, n, h).to_vec();
            p.extend([(step * d_step) as u32, d_row as u32, u32::from(dh_rec.is_some())]);
            let buffers = [bg.raw(), bcs.raw(), bci.raw(), bd.raw(), rec.raw(), bdc.raw(), bdg.raw()];
            ctx.dispatch(&CELL_BACKWARD, &p, &buffers, groups_1d(n * h))?;
            // The recurrent part of the step before: dG[step] · W_hh → [N, H].
            dh_rec = Some(dgates.narrow(0, step * n, n)?.matmul(&self.whh)?);
        }
        // h[t−1] for every step, in time order: h0 (or zeros) first going forward, last reversed.
        let hs = self.hs.reshape(&[t * n, h])?;
        let h_prev = if t == 1 {
            self.h_init.clone()
        } else if opts.reverse {
            crate::cat(&[&hs.narrow(0, n, (t - 1) * n)?, &self.h_init], 0)?
        } else {
            crate::cat(&[&self.h_init, &hs.narrow(0, 0, (t - 1) * n)?], 0)?
        };
        let dgt = dgates.t()?;
        Ok(Grads {
            x: dgates.matmul(&self.wih)?.reshape(&[t, n, f])?,
            w_ih: dgt.matmul(&self.xd)?,
            w_hh: dgt.matmul(&h_prev)?,
            bias: dgates.sum(&[0], false)?,
            h0: dh_rec.expect("T ≥ 1"),
            c0: dc,
        })
    }
}
