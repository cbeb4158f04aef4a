//! Tests of the fused LSTM layer: against the step-by-step reference from elementary ops, f64
//! finite differences, options, and bit-identical results for any thread count.

use super::{LstmOptions, lstm_layer};
use crate::testing::{assert_close, gradcheck, randn64};
use crate::{DType, Generator, Tensor, cat, linear, stack};

/// The step-by-step reference from elementary ops: what the layer computed before the fusion.
fn reference(
    x: &Tensor,
    h0: &Tensor,
    c0: &Tensor,
    w: (&Tensor, &Tensor, Option<(&Tensor, &Tensor)>),
    reverse: bool,
) -> crate::Result<Tensor> {
    let (w_ih, w_hh, b) = w;
    let t_len = x.dims()[0];
    let xs = linear(x, w_ih, b.map(|b| b.0))?.unbind(0)?;
    let (mut h, mut c) = (h0.clone(), c0.clone());
    let mut outs = vec![None; t_len];
    let order: Vec<usize> = if reverse { (0..t_len).rev().collect() } else { (0..t_len).collect() };
    for t in order {
        let gates = xs[t].add(&linear(&h, w_hh, b.map(|b| b.1))?)?.chunk(4, 1)?;
        let (i, f) = (gates[0].sigmoid()?, gates[1].sigmoid()?);
        let (g, o) = (gates[2].tanh()?, gates[3].sigmoid()?);
        c = f.mul(&c)?.add(&i.mul(&g)?)?;
        h = o.mul(&c.tanh()?)?;
        outs[t] = Some(h.clone());
    }
    let outs: Vec<Tensor> = outs.into_iter().map(Option::unwrap).collect();
    let out = stack(&outs.iter().collect::<Vec<_>>(), 0)?;
    cat(&[&out.flatten(0, -1)?, &h.flatten(0, -1)?, &c.flatten(0, -1)?], 0)
}

fn fused(
    x: &Tensor,
    h0: Option<&Tensor>,
    c0: Option<&Tensor>,
    w: (&Tensor, &Tensor, Option<(&Tensor, &Tensor)>),
    reverse: bool,
) -> crate::Result<Tensor> {
    let opts = LstmOptions { reverse, cell_state: true, ..Default::default() };
    let (out, h, c) = lstm_layer(x, h0, c0, w.0, w.1, w.2, opts)?;
    cat(&[&out.flatten(0, -1)?, &h.flatten(0, -1)?, &c.expect("asked for").flatten(0, -1)?], 0)
}

#[test]
fn matches_the_unfused_steps() {
    let mut rng = Generator::new(71);
    // A batch of 70 cuts into two row blocks; 3 takes one.
    for (t, n, f, h) in [(5, 3, 4, 6), (4, 70, 3, 5)] {
        let x = randn64(&[t, n, f], &mut rng);
        let (h0, c0) = (randn64(&[n, h], &mut rng), randn64(&[n, h], &mut rng));
        let (wi, wh) = (randn64(&[4 * h, f], &mut rng), randn64(&[4 * h, h], &mut rng));
        let (bi, bh) = (randn64(&[4 * h], &mut rng), randn64(&[4 * h], &mut rng));
        for reverse in [false, true] {
            let w = (&wi, &wh, Some((&bi, &bh)));
            let want = reference(&x, &h0, &c0, w, reverse).unwrap().to_vec_f64();
            let got = fused(&x, Some(&h0), Some(&c0), w, reverse).unwrap().to_vec_f64();
            assert_close(&got, &want, 1e-12, 1e-13);
            // f32, through the vectorised σ and tanh.
            let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let (x32, h32, c32, wi32, wh32) = (f32s(&x), f32s(&h0), f32s(&c0), f32s(&wi), f32s(&wh));
            let w32 = (&wi32, &wh32, None);
            let got = fused(&x32, Some(&h32), Some(&c32), w32, reverse).unwrap().to_vec_f64();
            let want = reference(&x, &h0, &c0, (&wi, &wh, None), reverse).unwrap().to_vec_f64();
            assert_close(&got, &want, 1e-4, 1e-5);
        }
    }
}

/// The other layouts: batch-first output, and no `c_n` (the output and h_n alone).
fn fused_layouts(
    x: &Tensor,
    w: (&Tensor, &Tensor, Option<(&Tensor, &Tensor)>),
    reverse: bool,
    batch_first: bool,
) -> crate::Result<Tensor> {
    let opts = LstmOptions { reverse, batch_first, cell_state: false };
    let (out, h, c) = lstm_layer(x, None, None, w.0, w.1, w.2, opts)?;
    assert!(c.is_none());
    let out = if batch_first { out.transpose(0, 1)? } else { out };
    cat(&[&out.flatten(0, -1)?, &h.flatten(0, -1)?], 0)
}

#[test]
fn layouts_agree_and_have_gradients() {
    let mut rng = Generator::new(75);
    for n in [3, 70] {
        let (t, f, h) = (4, 3, 5);
        let x = randn64(&[t, n, f], &mut rng);
        let (wi, wh) = (randn64(&[4 * h, f], &mut rng), randn64(&[4 * h, h], &mut rng));
        let (bi, bh) = (randn64(&[4 * h], &mut rng), randn64(&[4 * h], &mut rng));
        let w = (&wi, &wh, Some((&bi, &bh)));
        for reverse in [false, true] {
            let all = fused(&x, None, None, w, reverse).unwrap().to_vec_f64();
            for bf in [false, true] {
                let got = fused_layouts(&x, w, reverse, bf).unwrap().to_vec_f64();
                assert_eq!(got[..], all[..(t + 1) * n * h], "batch_first {bf}");
            }
        }
    }
    let x = randn64(&[3, 2, 3], &mut rng);
    let (wi, wh) = (randn64(&[8, 3], &mut rng), randn64(&[8, 2], &mut rng));
    let (bi, bh) = (randn64(&[8], &mut rng), randn64(&[8], &mut rng));
    for (reverse, bf) in [(false, true), (true, true), (false, false)] {
        gradcheck(&[x.clone(), wi.clone(), wh.clone(), bi.clone(), bh.clone()], |v| {
            fused_layouts(&v[0], (&v[1], &v[2], Some((&v[3], &v[4]))), reverse, bf)
        });
    }
}

#[test]
fn gradients_match_the_unfused_steps_with_several_row_blocks() {
    // The gradient check below uses a batch of 2 (one block); here 70 rows make two blocks.
    let mut rng = Generator::new(74);
    let (t, n, f, h) = (3, 70, 3, 4);
    let leaf = |s: &[usize], rng: &mut Generator| randn64(s, rng).requires_grad_().unwrap();
    let x = leaf(&[t, n, f], &mut rng);
    let (h0, c0) = (leaf(&[n, h], &mut rng), leaf(&[n, h], &mut rng));
    let (wi, wh) = (leaf(&[4 * h, f], &mut rng), leaf(&[4 * h, h], &mut rng));
    let (bi, bh) = (leaf(&[4 * h], &mut rng), leaf(&[4 * h], &mut rng));
    let all = [&x, &h0, &c0, &wi, &wh, &bi, &bh];
    let w = randn64(&[(t + 2) * n * h], &mut rng);
    let grads = |out: Tensor| {
        all.iter().for_each(|p| p.set_grad(None).unwrap());
        out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        all.iter().map(|p| p.grad().unwrap().to_vec_f64()).collect::<Vec<_>>()
    };
    for reverse in [false, true] {
        let want = grads(reference(&x, &h0, &c0, (&wi, &wh, Some((&bi, &bh))), reverse).unwrap());
        let got = grads(fused(&x, Some(&h0), Some(&c0), (&wi, &wh, Some((&bi, &bh))), reverse).unwrap());
        for (g, w) in got.iter().zip(&want) {
            assert_close(g, w, 1e-11, 1e-12);
        }
    }
}

#[test]
fn gradcheck_lstm_layer() {
    let mut rng = Generator::new(72);
    let (t, n, f, h) = (3, 2, 3, 2);
    let x = randn64(&[t, n, f], &mut rng);
    let (h0, c0) = (randn64(&[n, h], &mut rng), randn64(&[n, h], &mut rng));
    let (wi, wh) = (randn64(&[4 * h, f], &mut rng), randn64(&[4 * h, h], &mut rng));
    let (bi, bh) = (randn64(&[4 * h], &mut rng), randn64(&[4 * h], &mut rng));
    for reverse in [false, true] {
        let inputs = [x.clone(), h0.clone(), c0.clone(), wi.clone(), wh.clone(), bi.clone(), bh.clone()];
        gradcheck(&inputs, |v| fused(&v[0], Some(&v[1]), Some(&v[2]), (&v[3], &v[4], Some((&v[5], &v[6]))), reverse));
        // Zero initial states, no biases, a strided (transposed) input, one step.
        let xt = randn64(&[n, t, f], &mut rng);
        gradcheck(&[xt, wi.clone(), wh.clone()], |v| {
            fused(&v[0].transpose(0, 1)?, None, None, (&v[1], &v[2], None), reverse)
        });
        gradcheck(&[randn64(&[1, n, f], &mut rng), wi.clone(), wh.clone()], |v| {
            fused(&v[0], None, None, (&v[1], &v[2], None), reverse)
        });
    }
}

#[test]
fn parameters_get_gradients_in_place_and_errors_name_shapes() {
    let mut rng = Generator::new(73);
    let x = randn64(&[4, 3, 2], &mut rng);
    let wi = randn64(&[8, 2], &mut rng).requires_grad_().unwrap();
    let wh = randn64(&[8, 2], &mut rng).requires_grad_().unwrap();
    let (bi, bh) =
        (randn64(&[8], &mut rng).requires_grad_().unwrap(), randn64(&[8], &mut rng).requires_grad_().unwrap());
    let run = || {
        let opts = LstmOptions { cell_state: true, ..Default::default() };
        let (out, _, c) = lstm_layer(&x, None, None, &wi, &wh, Some((&bi, &bh)), opts).unwrap();
        out.sum_all().unwrap().add(&c.unwrap().sum_all().unwrap()).unwrap().backward().unwrap();
    };
    run();
    let first: Vec<Vec<f64>> = [&wi, &wh, &bi, &bh].iter().map(|p| p.grad().unwrap().to_vec_f64()).collect();
    assert_eq!(first[2], first[3], "both biases get Σ dG");
    run();
    for (p, g) in [&wi, &wh, &bi, &bh].iter().zip(&first) {
        let twice: Vec<f64> = g.iter().map(|v| 2.0 * v).collect();
        assert_close(&p.grad().unwrap().to_vec_f64(), &twice, 1e-12, 1e-12);
    }
    let e = lstm_layer(&x, None, None, &randn64(&[8, 3], &mut rng), &wh, None, LstmOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "lstm: weight_ih has shape [8, 3], expected [4·H, 2] (the input has 2 features)");
    let e =
        lstm_layer(&x, Some(&randn64(&[2, 2], &mut rng)), None, &wi, &wh, None, LstmOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "lstm: h0 has shape [2, 2], expected [3, 2] (batch, hidden size)");
}
