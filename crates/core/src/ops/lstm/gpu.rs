//! The LSTM layer on a GPU, composed step by step from ops (`linear`, `chunk`, the activations,
//! `stack`), with autograd through them.

use super::LstmOptions;
use crate::error::Result;
use crate::tensor::Tensor;

/// The LSTM layer on a GPU, composed step by step from ops (the input projection of every step
/// as one GEMM first), with autograd through them: the same arithmetic as the fused CPU op, in
/// the gate order i, f, g, o.
pub(super) fn lstm(
    x: &Tensor,
    h0: Option<&Tensor>,
    c0: Option<&Tensor>,
    (w_ih, w_hh): (&Tensor, &Tensor),
    bias: Option<(&Tensor, &Tensor)>,
    opts: LstmOptions,
    (t, n, f, h): (usize, usize, usize, usize),
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let zeros = || Tensor::full_on(&[n, h], 0.0, x.dtype(), x.device());
    // Every step's input projection at once: [T·N, F] · W_ihᵀ + b_ih → [T, N, 4H].
    let xw = crate::linear(&x.reshape(&[t * n, f])?, w_ih, bias.map(|b| b.0))?.reshape(&[t, n, 4 * h])?;
    let (mut hs, mut cs) = (h0.cloned().map_or_else(zeros, Ok)?, c0.cloned().map_or_else(zeros, Ok)?);
    let mut outputs: Vec<Option<Tensor>> = vec![None; t];
    let order: Vec<usize> = if opts.reverse { (0..t).rev().collect() } else { (0..t).collect() };
    for &step in &order {
        let gates = xw.narrow(0, step, 1)?.reshape(&[n, 4 * h])?.add(&crate::linear(&hs, w_hh, bias.map(|b| b.1))?)?;
        let g = gates.chunk(4, 1)?;
        let (i, fg, cell, o) = (g[0].sigmoid()?, g[1].sigmoid()?, g[2].tanh()?, g[3].sigmoid()?);
        cs = fg.mul(&cs)?.add(&i.mul(&cell)?)?;
        hs = o.mul(&cs.tanh()?)?;
        outputs[step] = Some(hs.clone());
    }
    let outputs: Vec<Tensor> = outputs.into_iter().map(|o| o.expect("every step ran")).collect();
    let refs: Vec<&Tensor> = outputs.iter().collect();
    let out = crate::stack(&refs, if opts.batch_first { 1 } else { 0 })?;
    Ok((out, hs, opts.cell_state.then_some(cs)))
}
