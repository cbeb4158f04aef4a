//! The fused LSTM op on the CPU: `forward.rs` (the gate nonlinearities, the batch's row blocks,
//! the forward recurrence and the op's autograd node) and `backward.rs` (backpropagation through
//! time per row block, then the parameter GEMMs); see `lstm/mod.rs` for the algorithm.

mod backward;
mod forward;

use super::LstmOptions;
use crate::device::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use backward::*;
use forward::*;

/// The fused op on the CPU, dispatched on the element type: its one output tensor (flat, with
/// `c_n` after the sequence, when `opts.cell_state`; else `[T, N, H]` or `[N, T, H]`) with its
/// autograd node.
pub(super) fn lstm(
    x: &Tensor,
    h0: Option<&Tensor>,
    c0: Option<&Tensor>,
    (w_ih, w_hh): (&Tensor, &Tensor),
    bias: Option<(&Tensor, &Tensor)>,
    opts: LstmOptions,
    (t, n, f, h): (usize, usize, usize, usize),
) -> Result<Tensor> {
    const OP: &str = "lstm";
    let d = Dims { t, n, f, h, reverse: opts.reverse, batch_first: opts.batch_first };
    match x.dtype() {
        DType::F32 => lstm_typed::<f32>(x, h0, c0, w_ih, w_hh, bias, d, opts.cell_state),
        DType::F64 => lstm_typed::<f64>(x, h0, c0, w_ih, w_hh, bias, d, opts.cell_state),
        DType::I64 => Err(Error::UnsupportedDType { op: OP, dtype: DType::I64, hint: crate::ops::FLOAT_ONLY_HINT }),
    }
}
