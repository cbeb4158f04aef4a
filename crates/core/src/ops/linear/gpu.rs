//! `linear` on a GPU: one GEMM with the bias and ReLU in its epilogue (`matmul`'s kernel); the
//! backward is composed from ops that run on the device.

use crate::error::Result;
use crate::ops::elementwise::relu_backward;
use crate::ops::matmul::gpu::{Operand, gemm};
use crate::shape::{Layout, Shape};
use crate::tensor::Tensor;

/// `linear` on a GPU: one GEMM with the bias and ReLU in its epilogue; the backward is three
/// GEMMs and a column sum, composed from ops that run on the device.
pub(super) fn linear(
    x: &Tensor,
    x2: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    (m, k, n): (usize, usize, usize),
    (xrs, xcs): (usize, usize),
) -> Result<Tensor> {
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
