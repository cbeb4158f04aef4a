//! Shapes at the edges of what the ops accept: empty dimensions and sizes whose arithmetic
//! overflows. Each either gives PyTorch's result or a clear error, never a panic or a tensor
//! whose buffer does not match its shape (each result here is read back in full).

use strata_core::{DType, Tensor, avg_pool2d, conv2d, linear, max_pool2d, pool_output_size};

fn ones(dims: &[usize]) -> Tensor {
    Tensor::ones(dims, DType::F32)
}

/// The error's text, for tests that the message names what is wrong.
fn err_text(r: strata_core::Result<Tensor>) -> String {
    r.expect_err("an error").to_string()
}

#[test]
fn empty_planes_are_rejected_by_convolution_and_pooling() {
    // As PyTorch: only the batch may be empty; padding does not make an empty plane valid.
    for dims in [[1, 1, 0, 5], [1, 1, 5, 0]] {
        let e = err_text(conv2d(&ones(&dims), &ones(&[1, 1, 1, 1]), None, (1, 1), (1, 1), (1, 1), 1));
        assert!(e.contains("of at least 1") && e.contains("only the batch"), "{e}");
        let e = err_text(max_pool2d(&ones(&dims), (2, 2), (1, 1), (1, 1), (1, 1)));
        assert!(e.contains("of at least 1"), "{e}");
        let e = err_text(avg_pool2d(&ones(&dims), (2, 2), (1, 1), (1, 1), true));
        assert!(e.contains("of at least 1"), "{e}");
    }
    // No input channels.
    let x = ones(&[1, 0, 5, 4]).requires_grad_().unwrap();
    let w = ones(&[2, 0, 1, 3]).requires_grad_().unwrap();
    let e = err_text(conv2d(&x, &w, None, (1, 1), (0, 0), (1, 1), 1));
    assert!(e.contains("at least 1 channel"), "{e}");
}

#[test]
fn an_empty_batch_convolves_and_pools_to_an_empty_batch() {
    let x = ones(&[0, 2, 5, 4]).requires_grad_().unwrap();
    let w = ones(&[3, 2, 3, 3]).requires_grad_().unwrap();
    let y = conv2d(&x, &w, None, (1, 1), (1, 1), (1, 1), 1).unwrap();
    assert_eq!((y.dims(), y.to_vec::<f32>().unwrap().len()), (&[0, 3, 5, 4][..], 0));
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec::<f32>().unwrap(), vec![0.0; 54]);
    let p = max_pool2d(&ones(&[0, 2, 4, 4]), (2, 2), (2, 2), (0, 0), (1, 1)).unwrap();
    assert_eq!((p.dims(), p.to_vec::<f32>().unwrap().len()), (&[0, 2, 2, 2][..], 0));
}

#[test]
fn linear_without_input_features_gives_the_bias() {
    // PyTorch: F.linear(zeros(2, 0), zeros(4, 0), bias) is the bias on every row.
    let x = Tensor::zeros(&[2, 0], DType::F64).requires_grad_().unwrap();
    let w = Tensor::zeros(&[4, 0], DType::F64).requires_grad_().unwrap();
    let b = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[4]).unwrap().requires_grad_().unwrap();
    let y = linear(&x, &w, Some(&b)).unwrap();
    assert_eq!(y.dims(), &[2, 4]);
    assert_eq!(y.to_vec::<f64>().unwrap(), [1., 2., 3., 4., 1., 2., 3., 4.]);
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(b.grad().unwrap().to_vec::<f64>().unwrap(), [2.0; 4]);
    assert_eq!(x.grad().unwrap().dims(), &[2, 0]);
    assert_eq!(w.grad().unwrap().dims(), &[4, 0]);
    let y = strata_core::linear_relu(&x, &w, Some(&b.neg().unwrap())).unwrap();
    assert_eq!(y.to_vec::<f64>().unwrap(), [0.0; 8]);
}

#[test]
fn shapes_whose_element_count_overflows_are_errors() {
    let e = err_text(Tensor::from_vec(Vec::<f32>::new(), &[1 << 63, 2]));
    assert!(e.contains("overflows"), "{e}");
    assert!(Tensor::from_vec(Vec::<f32>::new(), &[1 << 63, 0]).is_ok());
    assert!(Tensor::zeros(&[0], DType::F32).reshape(&[1 << 63, 2]).is_err());
    assert!(ones(&[4]).reshape(&[usize::MAX, 1 << 62, 8]).is_err());
}

#[test]
fn window_sizes_too_large_to_represent_are_errors() {
    let x = ones(&[1, 1, 3, 3]);
    let e = err_text(conv2d(&x, &ones(&[1, 1, 1, 1]), None, (1, 1), (usize::MAX / 2, 0), (1, 1), 1));
    assert!(e.contains("too large"), "{e}");
    let e = err_text(conv2d(&x, &ones(&[1, 1, 2, 2]), None, (1, 1), (0, 0), (usize::MAX, 1), 1));
    assert!(e.contains("too large"), "{e}");
    let e = err_text(max_pool2d(&x, (2, 2), (1, 1), (0, 0), (usize::MAX, 1)));
    assert!(e.contains("kernel"), "{e}");
    assert_eq!(pool_output_size(4, 3, 1, usize::MAX / 2, 1, false), None);
    assert_eq!(pool_output_size(4, usize::MAX, 1, 0, usize::MAX, true), None);
    assert_eq!(pool_output_size(1, 3, usize::MAX, 1, 1, true), Some(1));
}

#[test]
fn inconsistent_gradients_and_statistics_are_errors() {
    let p = ones(&[3]).requires_grad_().unwrap();
    // A gradient of another element type would fail the next backward's accumulation.
    let e = p.set_grad(Some(Tensor::zeros(&[3], DType::I64))).expect_err("an I64 gradient").to_string();
    assert!(e.contains("element types differ"), "{e}");
    let e =
        p.mul_scalar(2.0).unwrap().backward_with_grad(&Tensor::ones(&[3], DType::F64)).expect_err("F64").to_string();
    assert!(e.contains("element types differ") && e.contains("F64"), "{e}");
    // batch_norm: a NaN momentum would make the running statistics NaN; one buffer for both
    // running statistics would mix them.
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let (rm, rv) = (Tensor::zeros(&[2], DType::F32), Tensor::ones(&[2], DType::F32));
    let bn = |m: &Tensor, v: &Tensor, momentum: f64| {
        strata_core::batch_norm(&x, Some(m), Some(v), None, None, true, momentum, 1e-5)
    };
    assert!(err_text(bn(&rm, &rv, f64::NAN)).contains("momentum"));
    assert!(err_text(bn(&rm, &rm, 0.1)).contains("same tensor"));
    assert!(bn(&rm, &rv, 0.1).is_ok());
    // fill_ on an I64 tensor: NaN or a value past i64's range is an error, not 0 or saturation.
    let t = Tensor::zeros(&[2], DType::I64);
    assert!(t.fill_(f64::NAN).is_err() && t.fill_(1e19).is_err());
    t.fill_(-7.9).unwrap();
    assert_eq!(t.to_vec::<i64>().unwrap(), [-7, -7]);
    // Random tensors: a negative std or reversed bounds, as torch.normal / uniform_.
    let mut g = strata_core::Generator::new(0);
    assert!(Tensor::randn(&[2], 0.0, -1.0, DType::F32, &mut g).is_err());
    assert!(Tensor::rand_uniform(&[2], 1.0, 0.0, DType::F32, &mut g).is_err());
    assert!(Tensor::randn(&[1 << 62, 8], 0.0, 1.0, DType::F32, &mut g).is_err());
}

#[test]
fn paddings_splits_and_pool_sizes_past_a_usize_are_errors() {
    use strata_core::{PaddingMode, adaptive_avg_pool2d, pad2d};
    let x = ones(&[1, 1, 3, 3]);
    // Wrapped around, [usize::MAX, 1] padding gave a [1, 1, 3, 3] "result".
    assert!(err_text(pad2d(&x, [usize::MAX, 1, 0, 0], PaddingMode::Zeros)).contains("too large"));
    assert!(err_text(pad2d(&x, [0, 0, 1 << 62, 1 << 62], PaddingMode::Zeros)).contains("too large"));
    assert_eq!(pad2d(&x, [1, 2, 0, 1], PaddingMode::Zeros).unwrap().dims(), &[1, 1, 4, 6]);
    assert!(err_text(adaptive_avg_pool2d(&x, (usize::MAX, 2))).contains("too large"));
    let parts = x.split_with_sizes(&[usize::MAX, 4], 2).expect_err("sizes overflow").to_string();
    assert!(parts.contains("more than a usize holds"), "{parts}");
}
