//! `RNN`: PyTorch's `nn.RNN` (Elman network, tanh or ReLU), on the shared recurrent engine.

use super::{Cell, Recurrent, RecurrentOptions};
use crate::Result;
use strata_core::{Generator, Tensor, with_default_generator};

/// The nonlinearity of an [`RNN`] (PyTorch's `nonlinearity='tanh'` or `'relu'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nonlinearity {
    /// `tanh`, the default.
    #[default]
    Tanh,
    /// `relu`.
    Relu,
}

/// A multi-layer Elman recurrent network, PyTorch's `nn.RNN`:
/// `h' = act(W_ih x + b_ih + W_hh h + b_hh)` with act = tanh or ReLU.
///
/// Parameters `weight_ih_l{k}` `[H, in]`, `weight_hh_l{k}` `[H, H]`, `bias_ih_l{k}` and
/// `bias_hh_l{k}` `[H]`, with `_reverse` for the backward direction; all start
/// U(−1/√H, 1/√H). `in` is `input_size` for layer 0, `D·H` above.
///
/// # Shapes
/// With D = 2 if bidirectional else 1, L = num_layers, H = hidden_size:
/// - input: `[T, N, input_size]`, or `[N, T, input_size]` with `batch_first`, or unbatched
///   `[T, input_size]`
/// - output: `[T, N, D·H]` (`[N, T, D·H]` with batch_first; `[T, D·H]` unbatched)
/// - `h0`, `h_n`: `[L·D, N, H]` (`[L·D, H]` unbatched) in any layout, index `layer·D + direction`
#[derive(Debug, Clone)]
pub struct RNN {
    inner: Recurrent,
}

impl RNN {
    /// `nn.RNN(input_size, hidden_size)`: tanh, one layer, with biases, time-major, f32, drawing
    /// from the default generator.
    pub fn new(input_size: usize, hidden_size: usize) -> Result<RNN> {
        with_default_generator(|rng| {
            RNN::with_options(input_size, hidden_size, Nonlinearity::Tanh, RecurrentOptions::new(), rng)
        })
    }

    /// An RNN with the given nonlinearity and options, drawing its parameters from `rng`.
    pub fn with_options(
        input_size: usize,
        hidden_size: usize,
        nonlinearity: Nonlinearity,
        options: RecurrentOptions,
        rng: &mut Generator,
    ) -> Result<RNN> {
        let cell = match nonlinearity {
            Nonlinearity::Tanh => Cell::RnnTanh,
            Nonlinearity::Relu => Cell::RnnRelu,
        };
        Ok(RNN { inner: Recurrent::new(cell, input_size, hidden_size, options, rng)? })
    }

    /// The forward pass with an optional initial state `h0` (zeros when `None`), returning
    /// `(output, h_n)` as PyTorch does.
    pub fn forward_with_state(&self, x: &Tensor, h0: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (out, h_n, _) = self.inner.run(x, h0, None, true)?;
        Ok((out, h_n))
    }

    /// The nonlinearity.
    pub fn nonlinearity(&self) -> Nonlinearity {
        match self.inner.cell() {
            Cell::RnnRelu => Nonlinearity::Relu,
            _ => Nonlinearity::Tanh,
        }
    }
}

recurrent_layer!(RNN, "the final state", |rnn| match rnn.nonlinearity() {
    Nonlinearity::Tanh => crate::spec::RecurrentKind::RnnTanh,
    Nonlinearity::Relu => crate::spec::RecurrentKind::RnnRelu,
});
