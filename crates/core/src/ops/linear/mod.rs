//! The fused `linear` op: `y = x·Wᵀ + b` in one GEMM (the bias is written into the output first
//! and the GEMM accumulates onto it), and its backward in one pass: dX = dY·W, dW = dYᵀ·X and
//! db = Σ_rows dY, computing only the gradients that are needed. `linear_relu` adds the ReLU in
//! the same pass over the output, and masks the incoming gradient before the same backward.

use super::elementwise::relu_backward;
use super::matmul::cpu::{MatRef, gemm};
use super::matmul::linear_forward;
use super::with_float2;
use crate::error::{Error, Result};
use crate::shape::{Layout, Shape};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;

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
    // Rows of x: all leading dimensions together. A 2-D x of any strides goes to the GEMM as is.
    let x2 = if x.ndim() == 2 { x.clone() } else { x.contiguous()? };
    let m = x.numel() / k.max(1);
    let (xrs, xcs) = if x.ndim() == 2 { (x2.strides()[0], x2.strides()[1]) } else { (k, 1) };
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu_linear(x, &x2, weight, bias, relu, (m, k, n), (xrs, xcs));
    }
    let (w, b) = (weight.contiguous()?, bias.map(Tensor::contiguous).transpose()?);
    let (sx, sw) = (x2.cpu_storage("linear")?, w.cpu_storage("linear")?);
    let sb = b.as_ref().map(|b| b.cpu_storage("linear")).transpose()?;
    let (xo, wo) = (x2.layout().offset, w.layout().offset);
    let bo = b.as_ref().map_or(0, |b| b.layout().offset);
    let storage = with_float2!(sx, sw, "linear", |vx, vw: T| {
        let bias_slice = match sb.as_deref() {
            Some(s) => Some(
                &T::slice(s).ok_or(Error::DTypeMismatch { op: "linear", lhs: T::DTYPE, rhs: s.dtype() })?[bo..bo + n],
            ),
            None => None,
        };
        let xr = MatRef { data: vx, offset: xo, rs: xrs, cs: xcs };
        let mut y = linear_forward::<T>(xr, &vw[wo..wo + n * k], bias_slice, m, k, n);
        if relu {
            // NaN stays NaN, as in torch.relu. A select, not a branch, so it vectorises.
            super::wide(|| y.iter_mut().for_each(|v| *v = if *v > T::ZERO || v.is_nan() { *v } else { T::ZERO }));
        }
        Ok(T::wrap(y))
    })?;
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
        let (sg, sx, sw) = (g2.cpu_storage("linear")?, saved_x.cpu_storage("linear")?, saved_w.cpu_storage("linear")?);
        let go = g2.layout().offset;
        let (xo, wo) = (saved_x.layout().offset, saved_w.layout().offset);
        let grads = with_float2!(sg, sx, "linear backward", |vg, vx: T| {
            let vw = T::slice(&sw).expect("weight has the input's dtype");
            let leaves = LeafGrads { weight: w_leaf.then_some(&saved_w), bias: b_leaf.as_ref() };
            linear_backward::<T>(
                &vg[go..go + m * n],
                MatRef { data: vx, offset: xo, rs: xrs, cs: xcs },
                &vw[wo..wo + n * k],
                (m, k, n),
                needs,
                leaves,
            )
        })?;
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

type LinearGrads = (Option<CpuStorage>, Option<CpuStorage>, Option<CpuStorage>);

/// The parameters whose gradient buffers the backward writes into directly.
struct LeafGrads<'a> {
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
}

/// Multiply-adds per GEMM above which the input gradient and the weight gradient run on two
/// threads at once (`rayon::join`): they are independent, so each core takes one. Below it (all
/// of SimpleNN's at batch 64: ~0.5 M, ~6 µs each) waking the second thread costs about what it
/// saves, and on a busy machine much more (see `SPLIT_MIN_MACS` in `matmul/cpu.rs`).
const JOIN_MIN_MACS: usize = 1 << 22;

/// Linear's backward: g `[m, n]`, x `[m, k]`, w `[n, k]` →
/// dx = g·w `[m, k]`, dw = gᵀ·x `[n, k]`, db = Σ_rows g `[n]`, each only when needed.
/// dw and db go straight into the parameters' gradient buffers when `leaves` names them (the
/// GEMM accumulates into the buffer: no temporary, no second pass), and are returned otherwise.
/// dx and dw run on two threads when both are needed and large enough; each is one fixed
/// computation either way, so the result does not depend on the thread count.
fn linear_backward<T: Float>(
    g: &[T],
    x: MatRef<T>,
    w: &[T],
    (m, k, n): (usize, usize, usize),
    needs: (bool, bool, bool),
    leaves: LeafGrads,
) -> Result<LinearGrads> {
    let gm = MatRef { data: g, offset: 0, rs: n, cs: 1 };
    // gᵀ is g read with swapped strides.
    let gt = MatRef { data: g, offset: 0, rs: 1, cs: n };
    let run_dx = || {
        needs.0.then(|| {
            let mut dx = T::take_buffer(m * k);
            gemm(m, k, n, &mut dx, gm, MatRef { data: w, offset: 0, rs: k, cs: 1 }, false);
            T::wrap(dx)
        })
    };
    let run_dw_db = || -> Result<(Option<CpuStorage>, Option<CpuStorage>)> {
        let dw = match (needs.1, leaves.weight) {
            (false, _) => None,
            (true, Some(leaf)) => {
                leaf.accumulate_grad_with::<T>(|d, overwrite| gemm(n, k, m, d, gt, x, !overwrite))?;
                None
            }
            (true, None) => {
                let mut dw = T::take_buffer(n * k);
                gemm(n, k, m, &mut dw, gt, x, false);
                Some(T::wrap(dw))
            }
        };
        // Column sums in row order: a fixed order, so results do not depend on threads.
        let bias_grad = |d: &mut [T], overwrite: bool| {
            if overwrite {
                d.fill(T::ZERO);
            }
            for row in g.chunks_exact(n.max(1)).take(m) {
                d.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
            }
        };
        let db = match (needs.2, leaves.bias) {
            (false, _) => None,
            (true, Some(leaf)) => {
                leaf.accumulate_grad_with::<T>(bias_grad)?;
                None
            }
            (true, None) => {
                let mut db = T::take_buffer(n);
                bias_grad(&mut db, true);
                Some(T::wrap(db))
            }
        };
        Ok((dw, db))
    };
    let parallel = needs.0 && needs.1 && m * n * k >= JOIN_MIN_MACS && rayon::current_num_threads() > 1;
    let (dx, dw_db) = if parallel { rayon::join(run_dx, run_dw_db) } else { (run_dx(), run_dw_db()) };
    let (dw, db) = dw_db?;
    Ok((dx, dw, db))
}

/// `linear` on a GPU: one GEMM with the bias and ReLU in its epilogue; the backward is three
/// GEMMs and a column sum, composed from ops that run on the device.
#[cfg(feature = "gpu")]
fn gpu_linear(
    x: &Tensor,
    x2: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    (m, k, n): (usize, usize, usize),
    (xrs, xcs): (usize, usize),
) -> Result<Tensor> {
    use crate::ops::matmul::gpu::{Operand, gemm};
    let name = if relu { "linear_relu" } else { "linear" };
    let one = |t: &Tensor| Layout { shape: Shape(vec![]), strides: vec![], offset: t.layout().offset };
    // x: [m, k] · wᵀ: element (kk, c) of wᵀ is w[c, kk].
    let (ws0, ws1) = (weight.strides()[0], weight.strides()[1]);
    let storage = gemm(
        name,
        Operand { t: x2, batch: one(x2), rs: xrs, cs: xcs },
        Operand { t: weight, batch: one(weight), rs: ws1, cs: ws0 },
        (1, m, k, n),
        bias,
        relu,
    )?;
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("x has at least one dimension") = n;
    let shape = Shape(out_dims);
    let inputs: Vec<&Tensor> = match bias {
        Some(b) => vec![x, weight, b],
        None => vec![x, weight],
    };
    let needs = (x.requires_grad(), weight.requires_grad(), bias.is_some_and(Tensor::requires_grad));
    let saved_y = relu.then(|| Tensor::from_parts(storage.clone(), Layout::contiguous(shape.clone()), None));
    let (x_shape, saved_x, saved_w, has_bias) =
        (x.shape().clone(), x2.reshape(&[m, k])?.detach(), weight.detach(), bias.is_some());
    Ok(Tensor::from_op(storage, shape, name, &inputs, move |g| {
        // g: [*, n] → [m, n], masked by the ReLU's output.
        let g2 = g.reshape(&[m, n])?;
        let g2 = match &saved_y {
            Some(y) => relu_backward(&g2, &y.reshape(&[m, n])?)?,
            None => g2,
        };
        let dx = if needs.0 { Some(g2.matmul(&saved_w)?.reshape(x_shape.dims())?) } else { None };
        let dw = if needs.1 { Some(g2.t()?.matmul(&saved_x)?) } else { None };
        let mut out = vec![dx, dw];
        if has_bias {
            out.push(if needs.2 { Some(g2.sum(&[0], false)?) } else { None });
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
