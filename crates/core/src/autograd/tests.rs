//! Gradient accumulation through every view kind and every way a value is used more than once.
//!
//! The fault class these guard: a gradient that is a view of a larger buffer, or shares a buffer
//! with another gradient, being summed into in place. `cat`'s backward hands each input a
//! `narrow` of the output gradient; on a batch of one such a slice is contiguous but does not own
//! its buffer, and the second contribution to the same leaf once failed (`update_: in-place
//! update needs a contiguous tensor that owns its whole buffer`) — after the first had already
//! been stored. Each case runs the f64 finite-difference check, at batch 1 and batch 2, and
//! checks that a second backward without `zero_grad` doubles the gradient, that `zero_grad`
//! then backward gives it once, and that f32 gives the f64 values.

use crate::testing::{assert_close, gradcheck, randn64};
use crate::{DType, Generator, Tensor, cat, linear};

type Use = fn(&Tensor) -> crate::Result<Tensor>;
type UseTwice = fn(&Tensor, &Tensor, &Tensor) -> crate::Result<Tensor>;

/// Ways to take a view of `x: [b, 4]` (each keeps the elements, in some layout).
fn view_kinds() -> Vec<(&'static str, Use)> {
    vec![
        ("identity", |x| Ok(x.clone())),
        ("narrow", |x| x.narrow(1, 0, 4)),
        ("narrow-offset", |x| cat(&[x, x], 1)?.narrow(1, 4, 4)),
        ("reshape", |x| x.reshape(&[x.dims()[0], 2, 2])?.reshape(&[x.dims()[0], 4])),
        ("flatten", |x| x.unsqueeze(1)?.flatten(1, -1)),
        ("unsqueeze-squeeze", |x| x.unsqueeze(0)?.squeeze(0)),
        ("transpose-twice", |x| x.t()?.t()),
        ("transpose-contiguous", |x| x.t()?.contiguous()?.t()),
        ("expand", |x| x.unsqueeze(0)?.expand(&[2, x.dims()[0], 4])?.narrow(0, 1, 1)?.squeeze(0)),
    ]
}

/// Ways to use a value twice (the containers' patterns: Concat, Add and residual, reuse).
fn containers() -> Vec<(&'static str, UseTwice)> {
    vec![
        // Concat of two identity branches, then a Linear (the reported repro).
        ("cat-dim1-linear", |a, b, w| linear(&cat(&[a, b], 1)?, w, None)),
        ("cat-dim0", |a, b, w| linear(&cat(&[a, b], 0)?, &w.narrow(1, 0, 4)?, None)),
        ("cat-three", |a, b, w| linear(&cat(&[a, b, a], 1)?.narrow(1, 0, 8)?, w, None)),
        // Add merge / residual shortcut: y = f(x) + x.
        ("add", |a, b, w| linear(&a.add(b)?.exp()?, &w.narrow(1, 0, 4)?, None)),
        ("residual", |a, b, w| linear(&linear(a, &w.narrow(1, 0, 4)?, None)?.add(b)?, &w.narrow(1, 4, 4)?, None)),
        ("mul-self", |a, b, _| a.mul(b)),
        ("stack", |a, b, _| crate::stack(&[a, b], 0)?.exp()),
    ]
}

#[test]
fn repeated_use_through_every_view_kind_and_container_gives_the_finite_difference_gradient() {
    let mut rng = Generator::new(11);
    let w = randn64(&[4, 8], &mut rng);
    for batch in [1, 2] {
        let x = randn64(&[batch, 4], &mut rng);
        for (vname, view) in view_kinds() {
            for (cname, use_twice) in containers() {
                let label = format!("{cname} of {vname} at batch {batch}");
                let result = std::panic::catch_unwind(|| {
                    gradcheck(std::slice::from_ref(&x), |t| use_twice(&view(&t[0])?, &view(&t[0])?, &w))
                });
                assert!(result.is_ok(), "{label}: gradcheck failed");
            }
        }
    }
}

#[test]
fn the_concat_repro_accumulates_across_backwards_and_after_zero_grad() {
    // linear(cat([x, x], 1), w).sum().backward() with x: [1, 4]; dL/dx = Σ_o (w[o, :4] + w[o, 4:]).
    for dtype in [DType::F64, DType::F32] {
        let w = Tensor::from_vec((0..16).map(|v| v as f64 * 0.5 - 3.0).collect::<Vec<_>>(), &[2, 8])
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let x = Tensor::from_vec(vec![0.5, -1.0, 2.0, 0.25], &[1, 4]).unwrap().to_dtype(dtype).unwrap();
        let x = x.requires_grad_().unwrap();
        let expected: Vec<f64> =
            (0..4).map(|i| (0..2).map(|o| w.to_vec_f64()[o * 8 + i] + w.to_vec_f64()[o * 8 + 4 + i]).sum()).collect();
        let step = || linear(&cat(&[&x, &x], 1).unwrap(), &w, None).unwrap().sum_all().unwrap().backward().unwrap();
        step();
        assert_close(&x.grad().unwrap().to_vec_f64(), &expected, 1e-6, 0.0);
        step();
        let doubled: Vec<f64> = expected.iter().map(|v| 2.0 * v).collect();
        assert_close(&x.grad().unwrap().to_vec_f64(), &doubled, 1e-6, 0.0);
        x.zero_grad().unwrap();
        step();
        assert_close(&x.grad().unwrap().to_vec_f64(), &expected, 1e-6, 0.0);
        // The stored gradient owns a buffer of its own size (not the [1, 8] it was sliced from).
        assert_eq!(x.grad().unwrap().buffer().len(), 4);
    }
}

#[test]
fn a_gradient_set_to_a_view_can_be_accumulated_into() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0], &[1, 2]).unwrap().requires_grad_().unwrap();
    let big = Tensor::from_vec(vec![10.0f64, 20.0, 30.0, 40.0], &[1, 4]).unwrap();
    x.set_grad(Some(big.narrow(1, 2, 2).unwrap())).unwrap();
    x.mul_scalar(3.0).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), [33.0, 43.0]);
    // The tensor the view came from is not touched.
    assert_eq!(big.to_vec::<f64>().unwrap(), [10.0, 20.0, 30.0, 40.0]);
}

#[test]
fn two_leaves_given_one_gradient_tensor_do_not_share_updates() {
    // add's backward returns the same tensor for both inputs; later sums into one leaf's
    // gradient must not show up in the other's.
    let a = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap().requires_grad_().unwrap();
    let b = Tensor::from_vec(vec![3.0f64, 4.0], &[2]).unwrap().requires_grad_().unwrap();
    a.add(&b).unwrap().sum_all().unwrap().backward().unwrap();
    a.mul_scalar(5.0).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap(), [6.0, 6.0]);
    assert_eq!(b.grad().unwrap().to_vec::<f64>().unwrap(), [1.0, 1.0]);
}

#[test]
fn a_leaf_made_from_a_view_takes_in_place_updates() {
    // A parameter made from a slice of a larger tensor: the optimizer's in-place step works.
    let big = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 4]).unwrap();
    let p = big.narrow(1, 2, 2).unwrap().requires_grad_().unwrap();
    p.update_::<f32, _>(|d| d.iter_mut().for_each(|v| *v += 1.0)).unwrap();
    assert_eq!(p.to_vec::<f32>().unwrap(), [4.0, 5.0]);
    assert_eq!(big.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
}

/// The gradients of `leaves` as f64 vectors.
fn grads(leaves: &[&Tensor]) -> Vec<Vec<f64>> {
    leaves.iter().map(|t| t.grad().unwrap().to_vec::<f64>().unwrap()).collect()
}

#[test]
fn the_hook_reports_each_leaf_once_with_its_final_gradient_output_side_first() {
    // x: [3, 4] → Linear(w1, b1) → ReLU → Linear(w2, b2) → Linear(w1ᵀ-shaped w3 = w2 reused)…:
    // w2 is used by two layers, so it is final only after the earlier one; x is a leaf too.
    let mut rng = Generator::new(7);
    let x = randn64(&[3, 4], &mut rng).requires_grad_().unwrap();
    let w1 = randn64(&[5, 4], &mut rng).requires_grad_().unwrap();
    let b1 = randn64(&[5], &mut rng).requires_grad_().unwrap();
    let w2 = randn64(&[5, 5], &mut rng).requires_grad_().unwrap();
    let b2 = randn64(&[5], &mut rng).requires_grad_().unwrap();
    let unused = randn64(&[2], &mut rng).requires_grad_().unwrap();
    let h = linear(&x, &w1, Some(&b1)).unwrap().relu().unwrap();
    let h = linear(&h, &w2, None).unwrap();
    let out = linear(&h, &w2, Some(&b2)).unwrap().mul(&h).unwrap().sum_all().unwrap();
    let mut seen: Vec<(u64, Vec<f64>)> = vec![];
    out.backward_with_hook(|leaf| seen.push((leaf.id(), leaf.grad().unwrap().to_vec::<f64>().unwrap()))).unwrap();
    let leaves = [&b2, &w2, &b1, &w1, &x];
    // Every leaf the graph reaches, once; the unused one never.
    let mut ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    ids.sort();
    let mut want: Vec<u64> = leaves.iter().map(|t| t.id()).collect();
    want.sort();
    assert_eq!(ids, want);
    assert!(!ids.contains(&unused.id()));
    // At report time the gradient is already the final one.
    let finals = grads(&leaves);
    for (leaf, g) in leaves.iter().zip(&finals) {
        let at_report = &seen.iter().find(|(id, _)| *id == leaf.id()).unwrap().1;
        assert_eq!(at_report, g);
    }
    // The output side first: b2 before w1, b1 and x; w2 (also used by the middle layer) after b2.
    let pos = |t: &Tensor| seen.iter().position(|(id, _)| *id == t.id()).unwrap();
    assert!(pos(&b2) < pos(&w2) && pos(&b2) < pos(&w1) && pos(&w2) < pos(&w1), "{:?}", ids);
    // The same gradients as a plain backward.
    for t in leaves {
        t.zero_grad().unwrap();
    }
    let h = linear(&x, &w1, Some(&b1)).unwrap().relu().unwrap();
    let h = linear(&h, &w2, None).unwrap();
    linear(&h, &w2, Some(&b2)).unwrap().mul(&h).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads(&leaves), finals);
}

#[test]
fn the_hook_sees_a_leaf_root_and_f32_linear_weights_written_in_place() {
    let a = Tensor::from_vec(vec![2.0f64], &[1]).unwrap().requires_grad_().unwrap();
    let mut n = 0;
    a.backward_with_hook(|leaf| {
        assert!(leaf.same(&a));
        n += 1;
    })
    .unwrap();
    assert_eq!(n, 1);
    // f32 Linear's backward writes the weight gradient into its buffer inside the closure.
    let mut rng = Generator::new(3);
    let x = Tensor::randn(&[8, 16], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let w = Tensor::randn(&[4, 16], 0.0, 1.0, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
    let b = Tensor::randn(&[4], 0.0, 1.0, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
    let mut at_report = vec![];
    linear(&x, &w, Some(&b))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward_with_hook(|leaf| at_report.push(leaf.grad().unwrap().to_vec::<f32>().unwrap()))
        .unwrap();
    assert_eq!(at_report.len(), 2);
    assert!(at_report.contains(&w.grad().unwrap().to_vec::<f32>().unwrap()));
    assert!(at_report.contains(&b.grad().unwrap().to_vec::<f32>().unwrap()));
}

/// A graph cut in two at a detached activation, each half run backward on its own (the second
/// seeding the first with its input's gradient, as pipeline stages do), gives the whole graph's
/// gradients bit for bit; a seed of another shape, type or device is refused.
#[test]
fn backward_with_grad_continues_a_cut_graph() {
    let mut rng = Generator::new(7);
    let x = Tensor::randn(&[3, 4], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let w1 = Tensor::randn(&[5, 4], 0.0, 1.0, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
    let w2 = Tensor::randn(&[2, 5], 0.0, 1.0, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
    // Whole: loss = sum(tanh(relu(x·w1ᵀ)·w2ᵀ)).
    let h = linear(&x, &w1, None).unwrap().relu().unwrap();
    linear(&h, &w2, None).unwrap().tanh().unwrap().sum_all().unwrap().backward().unwrap();
    let whole = [w1.grad().unwrap().to_vec::<f32>().unwrap(), w2.grad().unwrap().to_vec::<f32>().unwrap()];
    w1.set_grad(None).unwrap();
    w2.set_grad(None).unwrap();
    // Cut at h: the second half from a leaf copy of h, then the first half seeded with its grad.
    let h = linear(&x, &w1, None).unwrap().relu().unwrap();
    let h_in = h.detach().requires_grad_().unwrap();
    linear(&h_in, &w2, None).unwrap().tanh().unwrap().sum_all().unwrap().backward().unwrap();
    h.backward_with_grad(&h_in.grad().unwrap()).unwrap();
    let cut = [w1.grad().unwrap().to_vec::<f32>().unwrap(), w2.grad().unwrap().to_vec::<f32>().unwrap()];
    assert_eq!(whole, cut);
    // A gradient that does not fit is an error naming the shapes, and changes nothing.
    let h = linear(&x, &w1, None).unwrap();
    let err = h.backward_with_grad(&Tensor::ones(&[5, 3], DType::F32)).unwrap_err().to_string();
    assert!(err.contains("backward_with_grad") && err.contains("[5, 3]"), "{err}");
    let err = h.backward_with_grad(&Tensor::ones(&[3, 5], DType::F64)).unwrap_err().to_string();
    assert!(err.contains("backward_with_grad"), "{err}");
    assert_eq!(w1.grad().unwrap().to_vec::<f32>().unwrap(), cut[0]);
    // A leaf takes the seed as its gradient.
    let leaf = Tensor::zeros(&[2], DType::F32).requires_grad_().unwrap();
    leaf.backward_with_grad(&Tensor::from_vec(vec![1.5f32, -2.0], &[2]).unwrap()).unwrap();
    assert_eq!(leaf.grad().unwrap().to_vec::<f32>().unwrap(), [1.5, -2.0]);
}
