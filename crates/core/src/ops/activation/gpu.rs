//! The activations on a GPU: forward and gradient factor by unary.wgsl's kernel (op codes),
//! the backward's products composed from ops. Softmax is composed from ops.

use super::Act;
use crate::error::Result;
use crate::ops::elementwise::gpu::unary_code;
use crate::tensor::Tensor;

/// An activation on a GPU: the forward and the gradient factor by unary.wgsl's kernel (op
/// codes), the backward's products composed from ops.
pub(super) fn pointwise(x: &Tensor, act: Act) -> Result<Tensor> {
    let name = act.name();
    let (code, s): (u32, f64) = match act {
        Act::Sigmoid => (6, 0.0),
        Act::Tanh => (7, 0.0),
        Act::LeakyRelu(s) => (9, s),
        Act::Elu(a) => (11, a),
        Act::Gelu => (13, 0.0),
        Act::GeluTanh => (15, 0.0),
        Act::Silu => (17, 0.0),
        Act::Mish => (19, 0.0),
        Act::Hardswish => (21, 0.0),
        Act::Hardsigmoid => (23, 0.0),
        Act::Relu6 => (25, 0.0),
    };
    let out = unary_code(name, x, code, s as f32)?;
    let y = Tensor::from_storage(out.clone(), x.shape().clone());
    let x_saved = x.clone();
    Ok(Tensor::from_op(out, x.shape().clone(), name, &[x], move |g| {
        let dx = match act {
            // σ' = σ(1 − σ); tanh' = 1 − tanh²
            Act::Sigmoid => g.mul(&y)?.mul(&y.neg()?.add_scalar(1.0)?)?,
            Act::Tanh => g.mul(&y.mul(&y)?.neg()?.add_scalar(1.0)?)?,
            // The factor f′(x) from the kernel (code + 1), times g.
            _ => {
                g.mul(&Tensor::from_storage(unary_code(name, &x_saved, code + 1, s as f32)?, x_saved.shape().clone()))?
            }
        };
        Ok(vec![Some(dx)])
    }))
}

/// (Log-)softmax along dimension `d` on a GPU, composed from ops: the maximum is a constant
/// shift (softmax does not change with it), so it is detached and its backward never runs.
pub(super) fn softmax(x: &Tensor, d: usize, log: bool) -> Result<Tensor> {
    let dim = d as isize;
    let shifted = x.sub(&x.gpu_max_keepdim(d)?)?;
    let e = shifted.exp()?;
    let total = e.sum(&[dim], true)?;
    if log { shifted.sub(&total.log()?) } else { e.div(&total) }
}
