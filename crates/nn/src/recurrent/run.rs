//! The forward pass of the recurrent engine: the initial states checked and split per layer
//! and direction, the loop over layers and directions (an LSTM layer-direction as the fused
//! `lstm_layer` op, RNN and GRU step by step), inter-layer dropout, and one time step's cell.

use super::{Cell, CellWeights, Recurrent, RecurrentOutput};
use crate::{Error, Result};
use std::sync::atomic::Ordering;
use strata_core::{DType, Device, Generator, LstmOptions, Shape, Tensor, cat, dropout, linear, lstm_layer, stack};

impl Recurrent {
    /// The checked `[L·D, N, H]` initial state `name` (or `[L·D, H]` unbatched), split into one
    /// `[N, H]` tensor per layer and direction; zeros when absent.
    fn initial_states(
        &self,
        name: &'static str,
        state: Option<&Tensor>,
        n: usize,
        batched: bool,
        (dtype, device): (DType, Device),
    ) -> Result<Vec<Tensor>> {
        let (op, h) = (self.cell.op(), self.hidden_size);
        let ld = self.options.num_layers * self.options.num_directions();
        let Some(s) = state else {
            // On the input's device, as the states it meets.
            return Ok(vec![Tensor::full_on(&[n, h], 0.0, dtype, device)?; ld]);
        };
        let expected_dims: Vec<usize> = if batched { vec![ld, n, h] } else { vec![ld, h] };
        if s.dims() != expected_dims.as_slice() {
            let batch = if batched { format!(", batch N = {n}") } else { " (unbatched input)".into() };
            return Err(strata_core::Error::ShapeMismatch {
                op,
                what: name,
                got: s.shape().clone(),
                expected: format!(
                    "{} (num_layers · num_directions = {ld}{batch}, hidden_size = {h})",
                    Shape(expected_dims)
                ),
            }
            .into());
        }
        if s.dtype() != dtype {
            return Err(strata_core::Error::DTypeMismatch { op, lhs: dtype, rhs: s.dtype() }.into());
        }
        let s = if batched { s.clone() } else { s.unsqueeze(1)? };
        Ok(s.unbind(0)?)
    }

    /// The forward pass: `x` is `[T, N, F]` (`[N, T, F]` with batch_first) or unbatched
    /// `[T, F]`; `h0` (and `c0` for an LSTM) `[L·D, N, H]` or unbatched `[L·D, H]`. An LSTM
    /// returns `c_n` only when `states` asks for the final states (`Module::forward` does not).
    pub(crate) fn run(
        &self,
        x: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        states: bool,
    ) -> Result<RecurrentOutput> {
        let (op, opts) = (self.cell.op(), self.options);
        let f = self.input_size;
        let layout = if opts.batch_first { format!("[N, T, {f}]") } else { format!("[T, N, {f}]") };
        let bad_input = |why: String| -> Error {
            strata_core::Error::ShapeMismatch {
                op,
                what: "input",
                got: x.shape().clone(),
                expected: format!(
                    "{layout} ({}) or unbatched [T, {f}]: {why}",
                    if opts.batch_first {
                        "batch_first: batch, time steps, features"
                    } else {
                        "time steps, batch, features"
                    }
                ),
            }
            .into()
        };
        if x.ndim() != 2 && x.ndim() != 3 {
            return Err(bad_input(format!(
                "it has {} dimensions{}",
                x.ndim(),
                if x.ndim() == 4 { " (for images read row by row, drop the channel dimension first)" } else { "" }
            )));
        }
        let last = x.dims()[x.ndim() - 1];
        if last != f {
            return Err(bad_input(format!(
                "dimension {} holds the features, {last} of them, but the layer's input_size is {f}",
                x.ndim() - 1
            )));
        }
        let dtype = self.weights[0].weight_ih.dtype();
        if x.dtype() != dtype {
            return Err(strata_core::Error::DTypeMismatch { op, lhs: x.dtype(), rhs: dtype }.into());
        }
        let batched = x.ndim() == 3;
        // Time-major [T, N, F] from here on (a view for batch_first).
        let xt = match (batched, opts.batch_first) {
            (false, _) => x.unsqueeze(1)?,
            (true, true) => x.transpose(0, 1)?,
            (true, false) => x.clone(),
        };
        let (t_len, n) = (xt.dims()[0], xt.dims()[1]);
        if t_len == 0 {
            return Err(bad_input("the sequence is empty (0 time steps)".into()));
        }
        let hs0 = self.initial_states("h0", h0, n, batched, (dtype, x.device()))?;
        let cs0 = match self.cell {
            Cell::Lstm => Some(self.initial_states("c0", c0, n, batched, (dtype, x.device()))?),
            _ => None,
        };
        let d = opts.num_directions();
        let (mut h_n, mut c_n) = (Vec::with_capacity(hs0.len()), Vec::with_capacity(hs0.len()));
        // One generator per training-mode call; its masks are drawn layer after layer.
        let mut masks = (Self::has_dropout(&opts) && self.is_training()).then(|| {
            let step = self.stream.step.fetch_add(1, Ordering::Relaxed);
            Generator::new(self.stream.seed.load(Ordering::Relaxed)).fork(step)
        });
        let mut layer_in = xt;
        for layer in 0..opts.num_layers {
            if layer > 0
                && let Some(g) = masks.as_mut()
            {
                // PyTorch: dropout on each layer's output but the last, before the next layer
                // reads it (h_n keeps the values before dropout).
                layer_in = dropout(&layer_in, opts.dropout, g)?;
            }
            let top = layer + 1 == opts.num_layers;
            // The output's time dimension: 1 for the last layer of a batch_first module.
            let time_dim = if top && batched && opts.batch_first { 1 } else { 0 };
            let mut per_direction = Vec::with_capacity(d);
            for dir in 0..d {
                let i = layer * d + dir;
                let w = &self.weights[i];
                if self.cell == Cell::Lstm {
                    // The fused layer: one op for the whole sequence (see strata_core::lstm_layer),
                    // writing a batch-first output directly.
                    let bias = w.bias_ih.as_ref().zip(w.bias_hh.as_ref());
                    let (h0, c0) = (h0.map(|_| &hs0[i]), c0.map(|_| &cs0.as_ref().expect("an LSTM has c0")[i]));
                    let opts = LstmOptions { reverse: dir == 1, batch_first: time_dim == 1, cell_state: states };
                    let (out, h, c) = lstm_layer(&layer_in, h0, c0, &w.weight_ih, &w.weight_hh, bias, opts)?;
                    per_direction.push(out);
                    h_n.push(h);
                    c_n.extend(c);
                    continue;
                }
                // One GEMM for every time step's input projection: [T, N, G·H].
                let xs = linear(&layer_in, &w.weight_ih, w.bias_ih.as_ref())?.unbind(0)?;
                let (mut hh, mut cc) = (hs0[i].clone(), cs0.as_ref().map(|c| c[i].clone()));
                let mut outs: Vec<Option<Tensor>> = vec![None; t_len];
                let steps: Box<dyn Iterator<Item = usize>> =
                    if dir == 0 { Box::new(0..t_len) } else { Box::new((0..t_len).rev()) };
                for t in steps {
                    (hh, cc) = self.step(&xs[t], &hh, cc.as_ref(), w)?;
                    outs[t] = Some(hh.clone());
                }
                let outs: Vec<Tensor> = outs.into_iter().map(|o| o.expect("every step ran")).collect();
                per_direction.push(stack(&outs.iter().collect::<Vec<_>>(), time_dim)?);
                h_n.push(hh);
                if let Some(c) = cc {
                    c_n.push(c);
                }
            }
            layer_in = if d == 1 {
                per_direction.pop().expect("one direction")
            } else {
                cat(&[&per_direction[0], &per_direction[1]], 2)?
            };
        }
        let mut output = layer_in;
        let mut h_n = stack(&h_n.iter().collect::<Vec<_>>(), 0)?;
        let mut c_n = if c_n.is_empty() { None } else { Some(stack(&c_n.iter().collect::<Vec<_>>(), 0)?) };
        if !batched {
            output = output.squeeze(1)?;
            h_n = h_n.squeeze(1)?;
            c_n = c_n.map(|c| c.squeeze(1)).transpose()?;
        }
        Ok((output, h_n, c_n))
    }

    /// One time step from the precomputed input projection `xp` (`[N, G·H]`, with `b_ih`):
    /// the new hidden state, and the new cell state for an LSTM.
    fn step(&self, xp: &Tensor, h: &Tensor, c: Option<&Tensor>, w: &CellWeights) -> Result<(Tensor, Option<Tensor>)> {
        // W_hh·h + b_hh for all gates at once: [N, G·H].
        let rh = linear(h, &w.weight_hh, w.bias_hh.as_ref())?;
        Ok(match self.cell {
            // h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
            Cell::RnnTanh => (xp.add(&rh)?.tanh()?, None),
            Cell::RnnRelu => (xp.add(&rh)?.relu()?, None),
            Cell::Lstm => {
                // i, f, o = σ(·); g = tanh(·); c' = f ⊙ c + i ⊙ g; h' = o ⊙ tanh(c')
                let gates = xp.add(&rh)?.chunk(4, 1)?;
                let (i, f) = (gates[0].sigmoid()?, gates[1].sigmoid()?);
                let (g, o) = (gates[2].tanh()?, gates[3].sigmoid()?);
                let c = c.expect("an LSTM step has a cell state");
                let c_next = f.mul(c)?.add(&i.mul(&g)?)?;
                (o.mul(&c_next.tanh()?)?, Some(c_next))
            }
            Cell::Gru => {
                // r = σ(x_r + h_r); z = σ(x_z + h_z); n = tanh(x_n + r ⊙ (W_hn h + b_hn));
                // h' = (1 − z) ⊙ n + z ⊙ h = n + z ⊙ (h − n)
                let (xg, hg) = (xp.chunk(3, 1)?, rh.chunk(3, 1)?);
                let r = xg[0].add(&hg[0])?.sigmoid()?;
                let z = xg[1].add(&hg[1])?.sigmoid()?;
                let n = xg[2].add(&r.mul(&hg[2])?)?.tanh()?;
                (n.add(&z.mul(&h.sub(&n)?)?)?, None)
            }
        })
    }
}
