//! The fused `linear` op: `y = x·Wᵀ + b` in one GEMM (the bias is written into the output first
//! and the GEMM accumulates onto it), and its backward in one pass: dX = dY·W, dW = dYᵀ·X and
//! db = Σ_rows dY, computing only the gradients that are needed.

use super::matmul::cpu::{MatRef, gemm};
use super::matmul::linear_forward;
use super::with_float2;
use crate::error::{Error, Result};
use crate::shape::Shape;
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
    let (w, b) = (weight.contiguous()?, bias.map(Tensor::contiguous).transpose()?);
    let (sx, sw) = (x2.storage(), w.storage());
    let sb = b.as_ref().map(Tensor::storage);
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
        Ok(T::wrap(linear_forward::<T>(xr, &vw[wo..wo + n * k], bias_slice, m, k, n)))
    })?;
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("x has at least one dimension") = n;
    let inputs: Vec<&Tensor> = match bias {
        Some(b) => vec![x, weight, b],
        None => vec![x, weight],
    };
    let needs = (x.requires_grad(), weight.requires_grad(), bias.is_some_and(Tensor::requires_grad));
    let has_bias = bias.is_some();
    let (x_shape, saved_x, saved_w) = (x.shape().clone(), x2, w);
    Ok(Tensor::from_op(storage, Shape(out_dims), "linear", &inputs, move |g| {
        let g2 = g.contiguous()?;
        let (sg, sx, sw) = (g2.storage(), saved_x.storage(), saved_w.storage());
        let go = g2.layout().offset;
        let (xo, wo) = (saved_x.layout().offset, saved_w.layout().offset);
        let grads = with_float2!(sg, sx, "linear backward", |vg, vx: T| {
            let vw = T::slice(&sw).expect("weight has the input's dtype");
            Ok(linear_backward::<T>(
                &vg[go..go + m * n],
                MatRef { data: vx, offset: xo, rs: xrs, cs: xcs },
                &vw[wo..wo + n * k],
                m,
                k,
                n,
                needs,
            ))
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

/// g: [m, n], x: [m, k], w: [n, k] → (dx [m, k], dw [n, k], db [n]), each only when needed.
fn linear_backward<T: Float>(
    g: &[T],
    x: MatRef<T>,
    w: &[T],
    m: usize,
    k: usize,
    n: usize,
    needs: (bool, bool, bool),
) -> LinearGrads {
    let gm = MatRef { data: g, offset: 0, rs: n, cs: 1 };
    let dx = needs.0.then(|| {
        let mut dx = vec![T::ZERO; m * k];
        gemm(m, k, n, &mut dx, gm, MatRef { data: w, offset: 0, rs: k, cs: 1 }, false);
        T::wrap(dx)
    });
    let dw = needs.1.then(|| {
        // dW = gᵀ·x: gᵀ is g read with swapped strides.
        let mut dw = vec![T::ZERO; n * k];
        gemm(n, k, m, &mut dw, MatRef { data: g, offset: 0, rs: 1, cs: n }, x, false);
        T::wrap(dw)
    });
    let db = needs.2.then(|| {
        // Column sums in row order: a fixed order, so results do not depend on threads.
        let mut db = vec![T::ZERO; n];
        for row in g.chunks_exact(n.max(1)).take(m) {
            db.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
        }
        T::wrap(db)
    });
    (dx, dw, db)
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
