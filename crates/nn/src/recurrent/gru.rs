//! `GRU`: PyTorch's `nn.GRU` (gates r, z, n), on the shared recurrent engine.

use super::{Cell, Recurrent, RecurrentOptions};
use crate::Result;
use strata_core::{Generator, Tensor, with_default_generator};

/// A multi-layer gated recurrent unit network, PyTorch's `nn.GRU`. For each step t:
///
/// ```text
/// r = σ(W_ir x + b_ir + W_hr h + b_hr)     z = σ(W_iz x + b_iz + W_hz h + b_hz)
/// n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
/// h' = (1 − z) ⊙ n + z ⊙ h
/// ```
///
/// Parameters `weight_ih_l{k}` `[3H, in]`, `weight_hh_l{k}` `[3H, H]`, `bias_ih_l{k}` and
/// `bias_hh_l{k}` `[3H]` (rows in gate order r, z, n), with `_reverse` for the backward
/// direction; all start U(−1/√H, 1/√H). `in` is `input_size` for layer 0, `D·H` above.
///
/// # Shapes
/// With D = 2 if bidirectional else 1, L = num_layers, H = hidden_size:
/// - input: `[T, N, input_size]`, or `[N, T, input_size]` with `batch_first`, or unbatched
///   `[T, input_size]`
/// - output: `[T, N, D·H]` (`[N, T, D·H]` with batch_first; `[T, D·H]` unbatched)
/// - `h0`, `h_n`: `[L·D, N, H]` (`[L·D, H]` unbatched) in any layout, index `layer·D + direction`
#[derive(Debug, Clone)]
pub struct GRU {
    inner: Recurrent,
}

impl GRU {
    /// `nn.GRU(input_size, hidden_size)`: one layer, with biases, time-major, f32, drawing from
    /// the default generator.
    pub fn new(input_size: usize, hidden_size: usize) -> Result<GRU> {
        with_default_generator(|rng| GRU::with_options(input_size, hidden_size, RecurrentOptions::new(), rng))
    }

    /// A GRU with the given options, drawing its parameters from `rng`.
    pub fn with_options(
        input_size: usize,
        hidden_size: usize,
        options: RecurrentOptions,
        rng: &mut Generator,
    ) -> Result<GRU> {
        Ok(GRU { inner: Recurrent::new(Cell::Gru, input_size, hidden_size, options, rng)? })
    }

    /// The forward pass with an optional initial state `h0` (zeros when `None`), returning
    /// `(output, h_n)` as PyTorch does.
    pub fn forward_with_state(&self, x: &Tensor, h0: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (out, h_n, _) = self.inner.run(x, h0, None, true)?;
        Ok((out, h_n))
    }
}

recurrent_layer!(GRU, "the final state", |_gru| crate::spec::RecurrentKind::Gru);
