//! Tests of the recurrent engine: shapes, parameter names and layouts, and gradients.

use super::*;
use crate::Module;
use strata_core::cat;
use strata_core::testing::{gradcheck, randn64};

fn opts(layers: usize, batch_first: bool, bidirectional: bool) -> RecurrentOptions {
    RecurrentOptions::new().num_layers(layers).batch_first(batch_first).bidirectional(bidirectional).dtype(DType::F64)
}

/// Output, h_n and c_n flattened into one tensor, so one gradient check covers them all.
fn joined(out: RecurrentOutput) -> strata_core::Result<Tensor> {
    let (o, h, c) = out;
    let mut parts = vec![o.flatten(0, -1)?, h.flatten(0, -1)?];
    if let Some(c) = c {
        parts.push(c.flatten(0, -1)?);
    }
    cat(&parts.iter().collect::<Vec<_>>(), 0)
}

/// f64 finite differences through the whole unrolled graph: input, initial states and
/// every parameter.
fn check(cell: Cell, o: RecurrentOptions, input: &[usize], with_state: bool) {
    let mut rng = Generator::new(91);
    let (f, h) = (3, 4);
    let m = Recurrent::new(cell, f, h, o, &mut rng).unwrap();
    let ld = o.num_layers * o.num_directions();
    let n = if input.len() == 3 { if o.batch_first { input[0] } else { input[1] } } else { 0 };
    let state_shape: Vec<usize> = if input.len() == 3 { vec![ld, n, h] } else { vec![ld, h] };
    let mut inputs = vec![randn64(input, &mut rng)];
    if with_state {
        inputs.push(randn64(&state_shape, &mut rng).mul_scalar(0.5).unwrap());
        inputs.push(randn64(&state_shape, &mut rng).mul_scalar(0.5).unwrap());
    }
    let k = inputs.len();
    inputs.extend(m.own_parameters().into_iter().map(|(_, p)| p.detach()));
    gradcheck(&inputs, |t| {
        let mm = m.with_parameters(&t[k..]);
        let (h0, c0) = if with_state { (Some(&t[1]), Some(&t[2])) } else { (None, None) };
        let c0 = if cell == Cell::Lstm { c0 } else { None };
        joined(mm.run(&t[0], h0, c0, true).map_err(|e| match e {
            Error::Core(c) => c,
            other => panic!("{other}"),
        })?)
    });
}

#[test]
fn gradcheck_rnn_tanh_and_relu() {
    check(Cell::RnnTanh, opts(1, false, false), &[4, 2, 3], true);
    check(Cell::RnnRelu, opts(2, true, true), &[2, 3, 3], true);
}

#[test]
fn gradcheck_lstm() {
    check(Cell::Lstm, opts(1, false, false), &[4, 2, 3], true);
    check(Cell::Lstm, opts(2, true, true), &[2, 3, 3], true);
    check(Cell::Lstm, opts(1, false, true).bias(false), &[3, 3], false);
}

#[test]
fn gradcheck_gru() {
    check(Cell::Gru, opts(1, true, false), &[2, 4, 3], false);
    check(Cell::Gru, opts(2, false, true), &[3, 2, 3], true);
}

#[test]
fn errors_name_op_shapes_and_dimension() {
    let mut rng = Generator::new(2);
    let bf = RecurrentOptions::new().batch_first(true).num_layers(2);
    let lstm = LSTM::with_options(28, 16, bf, &mut rng).unwrap();
    let x = Tensor::zeros(&[4, 28, 27], DType::F32);
    assert_eq!(
        lstm.forward(&x).unwrap_err().to_string(),
        "LSTM: input has shape [4, 28, 27], expected [N, T, 28] (batch_first: batch, time steps, features) \
         or unbatched [T, 28]: dimension 2 holds the features, 27 of them, but the layer's input_size is 28"
    );
    let x = Tensor::zeros(&[4, 5, 28], DType::F32);
    let (h0, c0) = (Tensor::zeros(&[2, 3, 16], DType::F32), Tensor::zeros(&[2, 4, 16], DType::F32));
    assert_eq!(
        lstm.forward_with_state(&x, Some((&h0, &c0))).unwrap_err().to_string(),
        "LSTM: h0 has shape [2, 3, 16], expected [2, 4, 16] (num_layers · num_directions = 2, batch N = 4, \
         hidden_size = 16)"
    );
    let c0 = Tensor::zeros(&[1, 4, 16], DType::F32);
    assert!(lstm.forward_with_state(&x, Some((&c0, &c0))).unwrap_err().to_string().contains("h0 has shape [1, 4, 16]"));
    let h0 = Tensor::zeros(&[2, 4, 16], DType::F32);
    assert!(lstm.forward_with_state(&x, Some((&h0, &c0))).unwrap_err().to_string().contains("c0 has shape"));
    let gru = GRU::with_options(3, 2, RecurrentOptions::new(), &mut rng).unwrap();
    let e = gru.forward(&Tensor::zeros(&[5], DType::F32)).unwrap_err().to_string();
    assert!(e.starts_with("GRU: input has shape [5], expected [T, N, 3] (time steps, batch, features)"), "{e}");
    assert!(e.ends_with("it has 1 dimensions"), "{e}");
    let e = gru.forward(&Tensor::zeros(&[0, 2, 3], DType::F32)).unwrap_err().to_string();
    assert!(e.ends_with("the sequence is empty (0 time steps)"), "{e}");
    let e = gru.forward(&Tensor::zeros(&[4, 2, 3], DType::F64)).unwrap_err().to_string();
    assert!(e.starts_with("GRU: element types differ (F64 and F32)"), "{e}");
    let h0 = Tensor::zeros(&[1, 2], DType::F32);
    // Unbatched input takes unbatched states.
    let (out, h_n) = gru.forward_with_state(&Tensor::zeros(&[4, 3], DType::F32), Some(&h0)).unwrap();
    assert_eq!((out.dims(), h_n.dims()), (&[4, 2][..], &[1, 2][..]));
    let e = RNN::with_options(3, 0, Nonlinearity::Tanh, RecurrentOptions::new(), &mut rng).unwrap_err();
    assert!(e.to_string().starts_with("RNN: hidden_size must be at least 1, got 0"));
}

#[test]
fn names_shapes_and_repr() {
    let mut rng = Generator::new(1);
    let o = RecurrentOptions::new().num_layers(2).bidirectional(true).batch_first(true);
    let m = Recurrent::new(Cell::Gru, 5, 7, o, &mut rng).unwrap();
    let p: Vec<(String, Vec<usize>)> = m.own_parameters().into_iter().map(|(n, t)| (n, t.dims().to_vec())).collect();
    let want = [
        ("weight_ih_l0", vec![21, 5]),
        ("weight_hh_l0", vec![21, 7]),
        ("bias_ih_l0", vec![21]),
        ("bias_hh_l0", vec![21]),
        ("weight_ih_l0_reverse", vec![21, 5]),
        ("weight_hh_l0_reverse", vec![21, 7]),
        ("bias_ih_l0_reverse", vec![21]),
        ("bias_hh_l0_reverse", vec![21]),
        ("weight_ih_l1", vec![21, 14]),
        ("weight_hh_l1", vec![21, 7]),
        ("bias_ih_l1", vec![21]),
        ("bias_hh_l1", vec![21]),
        ("weight_ih_l1_reverse", vec![21, 14]),
        ("weight_hh_l1_reverse", vec![21, 7]),
        ("bias_ih_l1_reverse", vec![21]),
        ("bias_hh_l1_reverse", vec![21]),
    ];
    assert_eq!(p, want.map(|(n, s)| (n.to_string(), s)));
    assert_eq!(m.describe(), "GRU(5, 7, num_layers=2, batch_first=True, bidirectional=True)");
    let bound = 1.0 / 7f64.sqrt();
    assert!(m.own_parameters().iter().all(|(_, t)| t.to_vec_f64().iter().all(|v| v.abs() <= bound)));
    let (out, h_n, c_n) = m.run(&Tensor::zeros(&[3, 6, 5], DType::F32), None, None, true).unwrap();
    assert_eq!((out.dims(), h_n.dims(), c_n.is_none()), (&[3, 6, 14][..], &[4, 3, 7][..], true));
    let lstm = LSTM::with_options(5, 7, RecurrentOptions::new(), &mut rng).unwrap();
    assert_eq!(lstm.num_parameters(), 4 * 7 * (5 + 7 + 2));
}
