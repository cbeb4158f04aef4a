//! `LSTM`: PyTorch's `nn.LSTM` (gates i, f, g, o), on the shared recurrent engine.

use super::{Cell, Recurrent, RecurrentOptions};
use crate::Result;
use strata_core::{Generator, Tensor, with_default_generator};

/// A multi-layer long short-term memory network, PyTorch's `nn.LSTM`. For each step t:
///
/// ```text
/// i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(W_if x + b_if + W_hf h + b_hf)
/// g = tanh(W_ig x + b_ig + W_hg h + b_hg)  o = σ(W_io x + b_io + W_ho h + b_ho)
/// c' = f ⊙ c + i ⊙ g                      h' = o ⊙ tanh(c')
/// ```
///
/// Parameters `weight_ih_l{k}` `[4H, in]`, `weight_hh_l{k}` `[4H, H]`, `bias_ih_l{k}` and
/// `bias_hh_l{k}` `[4H]` (rows in gate order i, f, g, o), with `_reverse` for the backward
/// direction; all start U(−1/√H, 1/√H). `in` is `input_size` for layer 0, `D·H` above.
///
/// # Shapes
/// With D = 2 if bidirectional else 1, L = num_layers, H = hidden_size:
/// - input: `[T, N, input_size]`, or `[N, T, input_size]` with `batch_first`, or unbatched
///   `[T, input_size]`
/// - output: `[T, N, D·H]` (`[N, T, D·H]` with batch_first; `[T, D·H]` unbatched): the last
///   layer's h at every step, forward and backward directions concatenated
/// - `h0`, `c0`, `h_n`, `c_n`: `[L·D, N, H]` (`[L·D, H]` unbatched) in any layout, index
///   `layer·D + direction`
///
/// ```
/// use strata_nn::{LSTM, Module, RecurrentOptions};
/// use strata_core::{DType, Generator, Tensor};
/// let lstm = LSTM::with_options(28, 16, RecurrentOptions::new().batch_first(true), &mut Generator::new(0))?;
/// let x = Tensor::zeros(&[4, 28, 28], DType::F32); // [N, T, F]: MNIST rows as time steps
/// let (out, (h_n, c_n)) = lstm.forward_with_state(&x, None)?;
/// assert_eq!((out.dims(), h_n.dims(), c_n.dims()), (&[4, 28, 16][..], &[1, 4, 16][..], &[1, 4, 16][..]));
/// # Ok::<(), strata_nn::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LSTM {
    inner: Recurrent,
}

impl LSTM {
    /// `nn.LSTM(input_size, hidden_size)`: one layer, with biases, time-major, f32, drawing from
    /// the default generator.
    pub fn new(input_size: usize, hidden_size: usize) -> Result<LSTM> {
        with_default_generator(|rng| LSTM::with_options(input_size, hidden_size, RecurrentOptions::new(), rng))
    }

    /// An LSTM with the given options, drawing its parameters from `rng`.
    pub fn with_options(
        input_size: usize,
        hidden_size: usize,
        options: RecurrentOptions,
        rng: &mut Generator,
    ) -> Result<LSTM> {
        Ok(LSTM { inner: Recurrent::new(Cell::Lstm, input_size, hidden_size, options, rng)? })
    }

    /// The forward pass with optional initial states `(h0, c0)` (zeros when `None`), returning
    /// `(output, (h_n, c_n))` as PyTorch does.
    pub fn forward_with_state(
        &self,
        x: &Tensor,
        state: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (h0, c0) = state.unzip();
        let (out, h_n, c_n) = self.inner.run(x, h0, c0, true)?;
        Ok((out, (h_n, c_n.expect("an LSTM returns a cell state"))))
    }
}

recurrent_layer!(LSTM, "the final states", |_lstm| crate::spec::RecurrentKind::Lstm);
