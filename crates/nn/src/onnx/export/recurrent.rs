//! The recurrent layers' nodes: `RNN`, `LSTM` and `GRU` as ONNX's ops of the same names (one
//! node per stacked layer, both directions in one node), with PyTorch's gate order and biases
//! converted to ONNX's; `LastStep` as a `Gather` of the last time step.
//!
//! ONNX's recurrent ops read `X: [T, N, I]` and write `Y: [T, D, N, H]` (D directions), with
//! `W: [D, G·H, I]`, `R: [D, G·H, H]` and `B: [D, 2·G·H]` (the input biases, then the hidden
//! ones). PyTorch stacks the gates i f g o (LSTM) and r z n (GRU); ONNX wants i o f c and z r h,
//! and PyTorch's GRU applies the reset gate after the hidden projection (`linear_before_reset =
//! 1`). These tensors are initializers of their own, named `{path}/W_l{k}`, `{path}/R_l{k}` and
//! `{path}/B_l{k}` (layer k's `weight_ih`, `weight_hh` and biases, both directions, reordered).

use super::{Graph, Value, int, ints, unsupported};
use crate::Result;
use crate::check::shape::Dim;
use crate::onnx::proto::{AttributeProto, attribute_type};
use crate::spec::{LayerSpec, RecurrentKind, RecurrentSpec};

/// A string-valued attribute.
fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

impl Graph<'_> {
    /// `RNN`/`LSTM`/`GRU` on `x: [N, T, I]` (batch_first) or `[T, N, I]`: the output sequence
    /// `[N, T, D·H]` (or `[T, N, D·H]`), as strata's layer returns it; zero initial states.
    pub(super) fn recurrent(&mut self, path: &str, spec: &LayerSpec, r: &RecurrentSpec, x: Value) -> Result<Value> {
        let (h, d, g) = (r.hidden_size, r.directions(), r.kind.gates());
        let (op, order): (&str, &[usize]) = match r.kind {
            RecurrentKind::RnnTanh | RecurrentKind::RnnRelu => ("RNN", &[0]),
            // PyTorch's i f g o → ONNX's i o f c.
            RecurrentKind::Lstm => ("LSTM", &[0, 3, 1, 2]),
            // PyTorch's r z n → ONNX's z r h.
            RecurrentKind::Gru => ("GRU", &[1, 0, 2]),
        };
        let mut attrs =
            vec![int("hidden_size", h as i64), string("direction", if d == 2 { "bidirectional" } else { "forward" })];
        match r.kind {
            RecurrentKind::Gru => attrs.push(int("linear_before_reset", 1)),
            RecurrentKind::RnnRelu => attrs.push(AttributeProto {
                name: "activations".into(),
                r#type: attribute_type::STRINGS,
                strings: vec![b"Relu".to_vec(); d],
                ..Default::default()
            }),
            _ => {}
        }
        // The ops are time-major: [N, T, I] → [T, N, I].
        let mut seq = if r.batch_first {
            self.node("Transpose", &format!("{path}/Transpose"), vec![x.name], vec![ints("perm", &[1, 0, 2])])
        } else {
            x.name
        };
        for k in 0..r.num_layers {
            let Some(input) = r.layer_input(k) else {
                return Err(unsupported(path, spec, "input_size is unknown (the shape check did not infer it)"));
            };
            let dirs: Vec<String> =
                (0..d).map(|dir| format!("l{k}{}", if dir == 1 { "_reverse" } else { "" })).collect();
            let w = self.gates(path, spec, &dirs, "weight_ih", (g * h, input), order, h)?;
            let w = self.constant(&format!("{path}/W_l{k}"), &[d, g * h, input], &w);
            let rw = self.gates(path, spec, &dirs, "weight_hh", (g * h, h), order, h)?;
            let rw = self.constant(&format!("{path}/R_l{k}"), &[d, g * h, h], &rw);
            // The zero initial states, [D, N, H], given explicitly: tract needs them to run a
            // symbolic batch (ONNX Runtime does not); LSTM's cell state is zero too.
            let h0 = self.zero_state(path, &seq, d, h);
            let mut inputs = vec![seq, w, rw];
            if r.bias {
                // Per direction: the input biases, then the hidden ones.
                let mut b = Vec::with_capacity(d * 2 * g * h);
                for dir in &dirs {
                    let one = std::slice::from_ref(dir);
                    b.extend(self.gates(path, spec, one, "bias_ih", (g * h, 1), order, h)?);
                    b.extend(self.gates(path, spec, one, "bias_hh", (g * h, 1), order, h)?);
                }
                inputs.push(self.constant(&format!("{path}/B_l{k}"), &[d, 2 * g * h], &b));
            } else {
                inputs.push(String::new());
            }
            // No sequence_lens (every sequence has all T steps), then initial_h (and initial_c).
            inputs.push(String::new());
            inputs.push(h0.clone());
            if r.kind == RecurrentKind::Lstm {
                inputs.push(h0);
            }
            let name = if k == 0 { path.to_string() } else { format!("{path}/l{k}") };
            let y = self.node(op, &name, inputs, attrs.clone());
            // Y: [T, D, N, H] → [T, N, D·H].
            seq = if d == 1 {
                let axes = self.int64_constant(&format!("{path}/axes"), &[1]);
                self.node("Squeeze", &format!("{path}/Squeeze"), vec![y, axes], vec![])
            } else {
                let t =
                    self.node("Transpose", &format!("{path}/Transpose"), vec![y], vec![ints("perm", &[0, 2, 1, 3])]);
                let shape = self.int64_constant(&format!("{path}/shape"), &[0, 0, -1]);
                self.node("Reshape", &format!("{path}/Reshape"), vec![t, shape], vec![])
            };
        }
        if r.batch_first {
            seq = self.node("Transpose", &format!("{path}/Transpose"), vec![seq], vec![ints("perm", &[1, 0, 2])]);
        }
        Ok(Value { name: seq, rank: 3, elem: x.elem })
    }

    /// Zeros `[D, N, H]` for a time-major sequence `seq: [T, N, I]` (N, the batch, read at run
    /// time): a scalar zero expanded to `Concat([D], Shape(seq)[1:2], [H])`.
    fn zero_state(&mut self, path: &str, seq: &str, d: usize, h: usize) -> String {
        let shape = self.node("Shape", &format!("{path}/Shape"), vec![seq.to_string()], vec![]);
        let n = self.slice(&format!("{path}/Slice"), shape, 0, 1, 2);
        let dirs = self.int64_constant(&format!("{path}/directions"), &[d as i64]);
        let hidden = self.int64_constant(&format!("{path}/hidden_size"), &[h as i64]);
        let dims = self.node("Concat", &format!("{path}/Concat"), vec![dirs, n, hidden], vec![int("axis", 0)]);
        let zero = self.constant(&format!("{path}/zero"), &[], &[0.0]);
        self.node("Expand", &format!("{path}/Expand"), vec![zero, dims], vec![])
    }

    /// The state_dict tensors `{path}.{name}_{dir}` for each of `dirs`, each `[rows, cols]`
    /// (`cols` 1 for a bias `[rows]`) with `rows = G·H`, their gate blocks of `h` rows put in
    /// `order`, one direction after the other.
    #[allow(clippy::too_many_arguments)]
    fn gates(
        &self,
        path: &str,
        spec: &LayerSpec,
        dirs: &[String],
        name: &str,
        (rows, cols): (usize, usize),
        order: &[usize],
        h: usize,
    ) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(dirs.len() * rows * cols);
        for dir in dirs {
            let key = format!("{path}.{name}_{dir}");
            let Some(t) = self.weights.get(&key) else {
                return Err(unsupported(path, spec, format!("the weights have no tensor `{key}`")));
            };
            if t.numel() != rows * cols {
                let want = if cols == 1 { format!("[{rows}]") } else { format!("[{rows}, {cols}]") };
                return Err(unsupported(path, spec, format!("`{key}` is {}, not {want}", t.shape())));
            }
            let v = t.to_vec_f64();
            for &block in order {
                out.extend_from_slice(&v[block * h * cols..(block + 1) * h * cols]);
            }
        }
        Ok(out)
    }

    /// `LastStep` on `[N, T, F]` (batch_first) or `[T, N, F]`: step `T − 1` (`x[:, -1]`, a
    /// Gather with a scalar index, which drops the time dimension) → `[N, F]`.
    pub(super) fn last_step(&mut self, path: &str, spec: &LayerSpec, batch_first: bool, x: Value) -> Result<Value> {
        let (input, _) = self.shapes_of(path, spec)?;
        let axis = if batch_first { 1 } else { 0 };
        let Some(&Dim::Fixed(t)) = input.0.get(axis) else {
            return Err(unsupported(
                path,
                spec,
                format!("input {input} has no fixed length in dimension {axis} (time)"),
            ));
        };
        let last = self.int64_tensor(&format!("{path}/index"), &[], &[t as i64 - 1]);
        let y = self.node("Gather", path, vec![x.name, last], vec![int("axis", axis as i64)]);
        Ok(Value { name: y, rank: x.rank - 1, elem: x.elem })
    }
}
