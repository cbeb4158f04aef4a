//! Recurrent layers — [`RNN`], [`LSTM`], [`GRU`] — and [`LastStep`], which picks a sequence's
//! last output for classification.
//!
//! All three share one engine here: parameters with PyTorch's names and layouts, shape checks,
//! and the loop over layers and directions. An LSTM layer-direction is one fused op,
//! [`strata_core::lstm_layer`] (one autograd node for the whole sequence, vectorised gates).
//! RNN and GRU run the time steps here: each layer's input projection `x·W_ihᵀ + b_ih` is one
//! GEMM over the whole sequence, only `h·W_hhᵀ + b_hh` runs per step, and backpropagation
//! through time is the autograd graph of these ops (`linear`, `unbind`, `chunk`, elementwise,
//! `stack`/`cat`).
//!
//! `dropout` (PyTorch's argument) zeroes each layer's output but the last in training mode,
//! with strata's seeded dropout: the layer keeps a seed and counts its training-mode calls, as
//! [`crate::Dropout`] does, and saves both as extra state so a resumed run draws the same masks.

/// What RNN, LSTM and GRU share beyond the engine: the accessors and the `Module` impl, which
/// all delegate to the `inner: Recurrent` field; only the spec's kind differs (`$kind`, computed
/// from `$me`, the layer).
macro_rules! recurrent_layer {
    ($layer:ident, $states:literal, |$me:ident| $kind:expr) => {
        impl $layer {
            /// Input feature size.
            pub fn input_size(&self) -> usize {
                self.inner.input_size()
            }
            /// Hidden state size H.
            pub fn hidden_size(&self) -> usize {
                self.inner.hidden_size()
            }
            /// Layers, directions, batch_first, bias, dropout and dtype.
            pub fn options(&self) -> $crate::recurrent::RecurrentOptions {
                self.inner.options()
            }
            /// The parameters of `layer` in the forward (`reverse = false`) or backward direction.
            pub fn weights(&self, layer: usize, reverse: bool) -> Option<&$crate::recurrent::CellWeights> {
                self.inner.weights(layer, reverse)
            }
            /// Whether the layer is in training mode (where `dropout` applies).
            pub fn is_training(&self) -> bool {
                self.inner.is_training()
            }
            /// Where the dropout mask stream stands: `(seed, training-mode calls so far)`; the
            /// next call's masks come from `Generator::new(seed).fork(step)`.
            pub fn dropout_stream(&self) -> (u64, u64) {
                self.inner.dropout_stream()
            }
        }

        impl $crate::module::Module for $layer {
            #[doc = concat!("The output sequence; see [`", stringify!($layer), "::forward_with_state`] for ", $states, ".")]
            fn forward(&self, x: &strata_core::Tensor) -> $crate::Result<strata_core::Tensor> {
                Ok(self.inner.run(x, None, None, false)?.0)
            }
            fn own_parameters(&self) -> Vec<(String, strata_core::Tensor)> {
                self.inner.own_parameters()
            }
            fn set_own_training(&self, training: bool) {
                self.inner.set_training(training)
            }
            fn own_extra_state(&self) -> Option<String> {
                self.inner.extra_state()
            }
            fn set_own_extra_state(&self, state: &str) -> $crate::Result<()> {
                self.inner.set_extra_state(state)
            }
            fn describe(&self) -> String {
                self.inner.describe()
            }
            fn spec(&self) -> Option<$crate::spec::LayerSpec> {
                let $me = self;
                Some($me.inner.spec($kind))
            }
        }
    };
}

mod gru;
pub mod last_step;
pub mod layer;
mod lstm;
mod rnn;
mod run;

pub use gru::GRU;
pub use last_step::LastStep;
pub use lstm::LSTM;
pub use rnn::{Nonlinearity, RNN};

use crate::{Error, Result, init};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use strata_core::{DType, Generator, Tensor};

/// Options shared by [`RNN`], [`LSTM`] and [`GRU`], with PyTorch's defaults: one layer, with
/// biases, time-major input (`batch_first = false`), no dropout, one direction, f32.
///
/// ```
/// use strata_nn::RecurrentOptions;
/// let opts = RecurrentOptions::new().num_layers(2).batch_first(true).dropout(0.3).bidirectional(true);
/// assert_eq!(opts.num_layers, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecurrentOptions {
    /// Stacked layers; layer k > 0 reads layer k − 1's output sequence.
    pub num_layers: usize,
    /// Whether the layers have `bias_ih` and `bias_hh`.
    pub bias: bool,
    /// Input and output as `[N, T, F]` instead of `[T, N, F]` (states stay `[L·D, N, H]`).
    pub batch_first: bool,
    /// The probability, in `[0, 1)`, of zeroing each value of every layer's output but the last,
    /// in training mode only (PyTorch's `dropout`); no effect with one layer.
    pub dropout: f64,
    /// A second direction per layer reading the sequence backwards; outputs are concatenated.
    pub bidirectional: bool,
    /// Parameter element type.
    pub dtype: DType,
}

impl Default for RecurrentOptions {
    fn default() -> Self {
        RecurrentOptions {
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            dtype: DType::F32,
        }
    }
}

impl RecurrentOptions {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `num_layers`.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }
    /// Sets `bias`.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// Sets `batch_first`.
    pub fn batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }
    /// Sets `dropout`: the probability of zeroing each value between stacked layers.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }
    /// Sets `bidirectional`.
    pub fn bidirectional(mut self, bidirectional: bool) -> Self {
        self.bidirectional = bidirectional;
        self
    }
    /// Sets the parameter type.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// 2 when bidirectional, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }
}

/// The parameters of one layer in one direction, in PyTorch's layout: `G·H` rows with the gates
/// stacked (G = 1 for RNN; 4 for LSTM, i f g o; 3 for GRU, r z n).
#[derive(Debug, Clone)]
pub struct CellWeights {
    /// `weight_ih_l{k}`: `[G·H, in]`, where `in` is `input_size` for layer 0 and `D·H` above.
    pub weight_ih: Tensor,
    /// `weight_hh_l{k}`: `[G·H, H]`.
    pub weight_hh: Tensor,
    /// `bias_ih_l{k}`: `[G·H]`.
    pub bias_ih: Option<Tensor>,
    /// `bias_hh_l{k}`: `[G·H]`.
    pub bias_hh: Option<Tensor>,
}

/// The recurrence a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell {
    RnnTanh,
    RnnRelu,
    Lstm,
    Gru,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::RnnTanh | Cell::RnnRelu => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
    fn op(self) -> &'static str {
        match self {
            Cell::RnnTanh | Cell::RnnRelu => "RNN",
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }
}

/// The engine behind the three layers.
#[derive(Debug, Clone)]
pub(crate) struct Recurrent {
    cell: Cell,
    input_size: usize,
    hidden_size: usize,
    options: RecurrentOptions,
    /// Index `layer · D + direction`, as PyTorch orders `h_n`.
    weights: Vec<CellWeights>,
    /// The dropout masks' stream and the training flag.
    stream: MaskStream,
}

/// Where the dropout masks between layers come from, as in [`crate::Dropout`]: training-mode call
/// k draws its masks, layer after layer, from `Generator::new(seed).fork(k)` (a counter-based
/// stream, so they are the same whatever the number of threads).
#[derive(Debug)]
struct MaskStream {
    seed: AtomicU64,
    step: AtomicU64,
    training: AtomicBool,
}

impl Clone for MaskStream {
    fn clone(&self) -> Self {
        MaskStream {
            seed: AtomicU64::new(self.seed.load(Ordering::Relaxed)),
            step: AtomicU64::new(self.step.load(Ordering::Relaxed)),
            training: AtomicBool::new(self.training.load(Ordering::Relaxed)),
        }
    }
}

/// What a forward pass returns: the output sequence, `h_n`, and `c_n` for an LSTM.
pub(crate) type RecurrentOutput = (Tensor, Tensor, Option<Tensor>);

impl Recurrent {
    /// The spec of this stack as a layer of the given kind (shared by RNN, LSTM and GRU).
    pub(crate) fn spec(&self, kind: crate::spec::RecurrentKind) -> crate::spec::LayerSpec {
        let o = self.options();
        crate::spec::LayerSpec::Recurrent(crate::spec::RecurrentSpec {
            kind,
            input_size: Some(self.input_size()),
            hidden_size: self.hidden_size(),
            num_layers: o.num_layers,
            bias: o.bias,
            batch_first: o.batch_first,
            dropout: o.dropout,
            bidirectional: o.bidirectional,
        })
    }

    pub(crate) fn new(
        cell: Cell,
        input_size: usize,
        hidden_size: usize,
        options: RecurrentOptions,
        rng: &mut Generator,
    ) -> Result<Recurrent> {
        let what = cell.op();
        for (key, v) in [("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", options.num_layers)] {
            if v == 0 {
                return Err(Error::option(what, key, 0, "at least 1"));
            }
        }
        if !options.dtype.is_float() {
            return Err(Error::option(what, "dtype", format!("{:?}", options.dtype), "f32 or f64"));
        }
        if !(0.0..1.0).contains(&options.dropout) {
            let expected = "in [0, 1) (the probability of zeroing a value between stacked layers)";
            return Err(Error::option(what, "dropout", options.dropout, expected));
        }
        // PyTorch: every parameter U(−1/√H, 1/√H), drawn in `parameters()` order.
        let bound = 1.0 / (hidden_size as f64).sqrt();
        let gh = cell.gates() * hidden_size;
        let d = options.num_directions();
        let mut weights = Vec::with_capacity(options.num_layers * d);
        let mut param = |shape: &[usize]| -> Result<Tensor> {
            Ok(init::uniform(shape, bound, options.dtype, rng)?.requires_grad_()?)
        };
        for layer in 0..options.num_layers {
            let in_size = if layer == 0 { input_size } else { d * hidden_size };
            for _ in 0..d {
                let weight_ih = param(&[gh, in_size])?;
                let weight_hh = param(&[gh, hidden_size])?;
                let (bias_ih, bias_hh) =
                    if options.bias { (Some(param(&[gh])?), Some(param(&[gh])?)) } else { (None, None) };
                weights.push(CellWeights { weight_ih, weight_hh, bias_ih, bias_hh });
            }
        }
        // The mask seed is drawn after the parameters, and only when there are masks to draw, so
        // the parameters are PyTorch's for the same seed and models without dropout draw as before.
        let seed = if Self::has_dropout(&options) { rng.next_u64() } else { 0 };
        let stream =
            MaskStream { seed: AtomicU64::new(seed), step: AtomicU64::new(0), training: AtomicBool::new(true) };
        Ok(Recurrent { cell, input_size, hidden_size, options, weights, stream })
    }

    /// Whether `options` put dropout between layers (p > 0 and more than one layer).
    fn has_dropout(options: &RecurrentOptions) -> bool {
        options.dropout > 0.0 && options.num_layers > 1
    }

    pub(crate) fn set_training(&self, training: bool) {
        self.stream.training.store(training, Ordering::Relaxed);
    }
    pub(crate) fn is_training(&self) -> bool {
        self.stream.training.load(Ordering::Relaxed)
    }
    pub(crate) fn dropout_stream(&self) -> (u64, u64) {
        (self.stream.seed.load(Ordering::Relaxed), self.stream.step.load(Ordering::Relaxed))
    }

    /// `seed=<u64>,step=<u64>` (as `Dropout`'s), for layers with dropout between layers only:
    /// the others draw nothing, and their checkpoints stay as they were.
    pub(crate) fn extra_state(&self) -> Option<String> {
        Self::has_dropout(&self.options).then(|| {
            let (seed, step) = self.dropout_stream();
            format!("seed={seed},step={step}")
        })
    }

    pub(crate) fn set_extra_state(&self, state: &str) -> Result<()> {
        let parsed = state
            .split_once(',')
            .and_then(|(a, b)| Some((a.strip_prefix("seed=")?.parse().ok()?, b.strip_prefix("step=")?.parse().ok()?)));
        let Some((seed, step)) = parsed else {
            return Err(Error::InvalidState {
                owner: self.cell.op(),
                key: state.to_string(),
                reason: "not a dropout generator position: expected `seed=<integer>,step=<integer>`".into(),
            });
        };
        self.stream.seed.store(seed, Ordering::Relaxed);
        self.stream.step.store(step, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn cell(&self) -> Cell {
        self.cell
    }
    pub(crate) fn input_size(&self) -> usize {
        self.input_size
    }
    pub(crate) fn hidden_size(&self) -> usize {
        self.hidden_size
    }
    pub(crate) fn options(&self) -> RecurrentOptions {
        self.options
    }

    /// The weights of `layer`, forward (`reverse = false`) or backward direction.
    pub(crate) fn weights(&self, layer: usize, reverse: bool) -> Option<&CellWeights> {
        if reverse && !self.options.bidirectional {
            return None;
        }
        self.weights.get(layer * self.options.num_directions() + reverse as usize)
    }

    /// `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, then `…_l0_reverse`, then
    /// layer 1: PyTorch's `_flat_weights_names` order.
    pub(crate) fn own_parameters(&self) -> Vec<(String, Tensor)> {
        let d = self.options.num_directions();
        let mut out = Vec::with_capacity(self.weights.len() * 4);
        for (i, w) in self.weights.iter().enumerate() {
            let sfx = format!("l{}{}", i / d, if i % d == 1 { "_reverse" } else { "" });
            out.push((format!("weight_ih_{sfx}"), w.weight_ih.clone()));
            out.push((format!("weight_hh_{sfx}"), w.weight_hh.clone()));
            if let (Some(bi), Some(bh)) = (&w.bias_ih, &w.bias_hh) {
                out.push((format!("bias_ih_{sfx}"), bi.clone()));
                out.push((format!("bias_hh_{sfx}"), bh.clone()));
            }
        }
        out
    }

    /// PyTorch's repr: `LSTM(28, 128, num_layers=2, batch_first=True, bidirectional=True)`.
    pub(crate) fn describe(&self) -> String {
        let o = &self.options;
        let mut s = format!("{}({}, {}", self.cell.op(), self.input_size, self.hidden_size);
        if o.num_layers != 1 {
            s += &format!(", num_layers={}", o.num_layers);
        }
        if self.cell == Cell::RnnRelu {
            s += ", nonlinearity='relu'";
        }
        if !o.bias {
            s += ", bias=False";
        }
        if o.batch_first {
            s += ", batch_first=True";
        }
        s += &dropout_repr(o.dropout, o.num_layers);
        if o.bidirectional {
            s += ", bidirectional=True";
        }
        s + ")"
    }

    /// The same layer computing with `params` (in `own_parameters` order) instead of its own:
    /// lets a gradient check treat the parameters as inputs.
    #[cfg(test)]
    pub(crate) fn with_parameters(&self, params: &[Tensor]) -> Recurrent {
        let mut it = params.iter().cloned();
        let weights = self
            .weights
            .iter()
            .map(|_| {
                let (weight_ih, weight_hh) = (it.next().unwrap(), it.next().unwrap());
                let (bias_ih, bias_hh) = if self.options.bias { (it.next(), it.next()) } else { (None, None) };
                CellWeights { weight_ih, weight_hh, bias_ih, bias_hh }
            })
            .collect();
        Recurrent { weights, ..self.clone() }
    }
}

/// `, dropout=0.3` as PyTorch's repr writes it (nothing for 0), with a note where it has no
/// effect: PyTorch warns that dropout needs `num_layers` greater than 1.
pub(crate) fn dropout_repr(p: f64, num_layers: usize) -> String {
    if p == 0.0 {
        String::new()
    } else if num_layers == 1 {
        format!(", dropout={p} (no effect: one layer)")
    } else {
        format!(", dropout={p}")
    }
}

#[cfg(test)]
mod tests;
