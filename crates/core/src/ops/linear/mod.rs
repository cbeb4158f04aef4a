//! The fused `linear` op: `y = x·Wᵀ + b` in one GEMM (the bias is written into the output first
//! and the GEMM accumulates onto it), and its backward in one pass: dX = dY·W, dW = dYᵀ·X and
//! db = Σ_rows dY, computing only the gradients that are needed. `linear_relu` adds the ReLU in
//! the same pass over the output, and masks the incoming gradient before the same backward.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernels, `gpu.rs` the GPU
//! path (the `gpu` feature).

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;

use super::elementwise::relu_backward;
use crate::error::{Error, Result};
use crate::shape::{Layout, Shape};
use crate::tensor::Tensor;
use cpu::LeafGrads;

/// `x·Wᵀ + b`, as `torch.nn.functional.linear`.
///
/// # Shapes
/// - `x`: `[*, in_features]` (any number of leading dimensions)
/// - `weight`: `[out_features, in_features]` (PyTorch's layout)
/// - `bias`: `[out_features]`
/// - output: `[*, out_features]`
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_act(x, weight, bias, false)
}

/// `relu(x·Wᵀ + b)` as one op: the same result and gradients as `linear(x, w, b)?.relu()?`
/// (the gradient at exactly 0 is 0, as in PyTorch; NaN propagates), with one autograd node, one
/// output buffer and no separate pass over the activations. What a `Linear` followed by `ReLU`
/// runs (`Linear::forward_relu`); at batch 1 the op count is what a forward costs beyond the
/// weights' streaming.
///
/// # Shapes
/// - `x`: `[*, in_features]`
/// - `weight`: `[out_features, in_features]`
/// - `bias`: `[out_features]`
/// - output: `[*, out_features]`
pub fn linear_relu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_act(x, weight, bias, true)
}

/// `linear`, followed by a ReLU when `relu`.
fn linear_act(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    x.check_same("linear", weight)?;
    if weight.ndim() != 2 {
        return Err(Error::ShapeMismatch {
            op: "linear",
            what: "weight",
            got: weight.shape().clone(),
            expected: "[out_features, in_features]".into(),
        });
    }
    let (n, k) = (weight.dims()[0], weight.dims()[1]);
    if x.ndim() == 0 || x.dims()[x.ndim() - 1] != k {
        return Err(Error::ShapeMismatch {
            op: "linear",
            what: "input",
            got: x.shape().clone(),
            expected: format!("[*, {k}] (the weight is [{n}, {k}], so the last dimension must be {k})"),
        });
    }
    if let Some(b) = bias {
        x.check_same("linear", b)?;
        if b.dims() != [n] {
            return Err(Error::ShapeMismatch {
                op: "linear",
                what: "bias",
                got: b.shape().clone(),
                expected: format!("[{n}]"),
            });
        }
    }
    if k == 0 {
        // No input features: x·Wᵀ is all zeros (the bias, broadcast), as in PyTorch. The
        // composed ops handle the empty product, its gradients and every device.
        let y = x.matmul(&weight.t()?)?;
        let y = match bias {
            Some(b) => y.add(b)?,
            None => y,
        };
        return if relu { y.relu() } else { Ok(y) };
    }
    // Rows of x: all leading dimensions together. A 2-D x of any strides goes to the GEMM as is.
    let x2 = if x.ndim() == 2 { x.clone() } else { x.contiguous()? };
    let m = x.numel() / k;
    let (xrs, xcs) = if x.ndim() == 2 { (x2.strides()[0], x2.strides()[1]) } else { (k, 1) };
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu::linear(x, &x2, weight, bias, relu, (m, k, n), (xrs, xcs));
    }
    let (w, b) = (weight.contiguous()?, bias.map(Tensor::contiguous).transpose()?);
    let storage = cpu::forward(&x2, &w, b.as_ref(), (m, k, n), (xrs, xcs), relu)?;
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("x has at least one dimension") = n;
    let needs = (x.requires_grad(), weight.requires_grad(), bias.is_some_and(Tensor::requires_grad));
    if !crate::autograd::is_grad_enabled() || !(needs.0 || needs.1 || needs.2) {
        // Inference (`no_grad`, or nothing to differentiate): no node, so nothing to save. At
        // batch 1 the bookkeeping below costs a tenth of the op.
        return Ok(Tensor::from_storage(storage, Shape(out_dims)));
    }
    let inputs: Vec<&Tensor> = match bias {
        Some(b) => vec![x, weight, b],
        None => vec![x, weight],
    };
    // Parameters (leaves, used as they are) get their gradients written straight into their
    // gradient buffers by the backward kernels; anything else gets a returned gradient.
    let w_leaf = needs.1 && weight.is_leaf_requiring_grad() && w.same(weight);
    let b_leaf = match (&b, bias) {
        (Some(b), Some(orig)) if needs.2 && orig.is_leaf_requiring_grad() && b.same(orig) => Some(b.clone()),
        _ => None,
    };
    let has_bias = bias.is_some();
    let (x_shape, saved_x, saved_w) = (x.shape().clone(), x2, w);
    // The ReLU's output decides its gradient mask (y > 0 exactly where the input was > 0).
    let storage = std::sync::Arc::new(storage);
    let shape = Shape(out_dims);
    let saved_y = relu.then(|| Tensor::from_parts(storage.clone(), Layout::contiguous(shape.clone()), None));
    let name = if relu { "linear_relu" } else { "linear" };
    Ok(Tensor::from_op_shared(storage, shape, name, &inputs, move |g| {
        let g2 = match &saved_y {
            Some(y) => relu_backward(g, y)?,
            None => g.contiguous()?,
        };
        let leaves = LeafGrads { weight: w_leaf.then_some(&saved_w), bias: b_leaf.as_ref() };
        let grads = cpu::backward(&g2, &saved_x, &saved_w, (m, k, n), (xrs, xcs), needs, leaves)?;
        let (dx, dw, db) = grads;
        let mut out = vec![
            dx.map(|s| Tensor::from_storage(s, x_shape.clone())),
            dw.map(|s| Tensor::from_storage(s, Shape(vec![n, k]))),
        ];
        if has_bias {
            out.push(db.map(|s| Tensor::from_storage(s, Shape(vec![n]))));
        }
        Ok(out)
    }))
}

#[cfg(test)]
mod tests {
    use super::linear;
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{Generator, Tensor};

    #[test]
    fn matches_matmul_plus_bias() {
        let mut rng = Generator::new(51);
        let x = randn64(&[5, 4], &mut rng);
        let w = randn64(&[3, 4], &mut rng);
        let b = randn64(&[3], &mut rng);
        let fused = linear(&x, &w, Some(&b)).unwrap().to_vec_f64();
        let reference = x.matmul(&w.t().unwrap()).unwrap().add(&b).unwrap().to_vec_f64();
        assert_close(&fused, &reference, 1e-14, 1e-14);
        let e = linear(&randn64(&[5, 3], &mut rng), &w, Some(&b)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linear: input has shape [5, 3], expected [*, 4] (the weight is [3, 4], so the last dimension must be 4)"
        );
    }

    #[test]
    fn linear_relu_is_linear_then_relu() {
        use super::linear_relu;
        let mut rng = Generator::new(53);
        let (x, w, b) = (randn64(&[6, 4], &mut rng), randn64(&[5, 4], &mut rng), randn64(&[5], &mut rng));
        let fused = linear_relu(&x, &w, Some(&b)).unwrap().to_vec_f64();
        let reference = linear(&x, &w, Some(&b)).unwrap().relu().unwrap().to_vec_f64();
        assert_eq!(fused, reference);
        assert!(fused.contains(&0.0) && fused.iter().any(|&v| v > 0.0), "both sides of the kink are covered");
        gradcheck(&[x.clone(), w.clone(), b.clone()], |t| linear_relu(&t[0], &t[1], Some(&t[2])));
        gradcheck(&[randn64(&[2, 3, 4], &mut rng), w.clone()], |t| linear_relu(&t[0], &t[1], None));
        // The gradient at exactly 0 is 0 (x = 0, b = 0 gives a pre-activation of exactly 0), and
        // NaN propagates forward as in torch.relu.
        let zero = Tensor::zeros(&[1, 4], crate::DType::F64);
        let wz = w.detach().requires_grad_().unwrap();
        let bz = Tensor::zeros(&[5], crate::DType::F64).requires_grad_().unwrap();
        linear_relu(&zero, &wz, Some(&bz)).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(bz.grad().unwrap().to_vec_f64(), [0.0; 5]);
        let nan = Tensor::from_vec(vec![f64::NAN, 1.0, 1.0, 1.0], &[1, 4]).unwrap();
        assert!(linear_relu(&nan, &w, Some(&b)).unwrap().to_vec_f64().iter().all(|v| v.is_nan()));
    }

    #[test]
    fn gradcheck_linear() {
        let mut rng = Generator::new(52);
        let x = randn64(&[5, 4], &mut rng);
        let w = randn64(&[3, 4], &mut rng);
        let b = randn64(&[3], &mut rng);
        gradcheck(&[x.clone(), w.clone(), b.clone()], |t| linear(&t[0], &t[1], Some(&t[2])));
        gradcheck(&[x.clone(), w.clone()], |t| linear(&t[0], &t[1], None));
        // Leading batch dimensions, and a transposed (strided) input.
        gradcheck(&[randn64(&[2, 3, 4], &mut rng), w.clone(), b.clone()], |t| linear(&t[0], &t[1], Some(&t[2])));
        gradcheck(&[randn64(&[4, 5], &mut rng), w, b], |t| linear(&t[0].t()?, &t[1], Some(&t[2])));
    }

    #[test]
    fn parameter_gradients_accumulate_in_place_and_zero_lazily() {
        // Weight and bias gradients are written straight into the leaves' buffers: a second
        // backward adds to them, zero_grad makes the next backward overwrite them, and a read
        // after zero_grad sees zeros.
        let mut rng = Generator::new(54);
        let x = randn64(&[3, 4], &mut rng);
        let w = randn64(&[2, 4], &mut rng).requires_grad_().unwrap();
        let b = randn64(&[2], &mut rng).requires_grad_().unwrap();
        let run = || linear(&x, &w, Some(&b)).unwrap().sum_all().unwrap().backward().unwrap();
        run();
        let (gw, gb) = (w.grad().unwrap().to_vec_f64(), b.grad().unwrap().to_vec_f64());
        // d(Σ x·Wᵀ + b)/dW[j, p] = Σ_i x[i, p]; d/db[j] = rows = 3.
        let xv = x.to_vec_f64();
        let col: Vec<f64> = (0..4).map(|p| (0..3).map(|i| xv[i * 4 + p]).sum()).collect();
        assert_close(&gw, &[col.clone(), col].concat(), 1e-12, 1e-12);
        assert_eq!(gb, [3.0, 3.0]);
        let buffer = w.grad().unwrap();
        run();
        assert!(w.grad().unwrap().same(&buffer), "the gradient buffer is kept");
        let twice: Vec<f64> = gw.iter().map(|v| 2.0 * v).collect();
        assert_close(&w.grad().unwrap().to_vec_f64(), &twice, 1e-12, 1e-12);
        assert_eq!(b.grad().unwrap().to_vec_f64(), [6.0, 6.0]);
        w.zero_grad().unwrap();
        b.zero_grad().unwrap();
        assert_eq!(b.grad().unwrap().to_vec_f64(), [0.0, 0.0]);
        run();
        assert_close(&w.grad().unwrap().to_vec_f64(), &gw, 1e-12, 1e-12);
        assert_eq!(b.grad().unwrap().to_vec_f64(), [3.0, 3.0]);
    }

    #[test]
    fn only_needed_gradients_flow() {
        let mut rng = Generator::new(53);
        let x = randn64(&[2, 4], &mut rng);
        let w = randn64(&[3, 4], &mut rng).requires_grad_().unwrap();
        linear(&x, &w, None).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(w.grad().unwrap().dims(), &[3, 4]);
        assert!(x.grad().is_none());
        let _ = Tensor::scalar(0.0f32);
    }
}
