//! The GPU kernels of the elementwise ops (`elementwise.wgsl`, `unary.wgsl`): one thread per
//! output element, operands read through their strides (broadcast dimensions have stride 0).

use super::{Binary, Unary};
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, layout_words, output};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const BINARY: Kernel = Kernel { name: "binary", wgsl: include_str!("elementwise.wgsl"), entry: "binary_main" };
const UNARY: Kernel = Kernel { name: "unary", wgsl: include_str!("unary.wgsl"), entry: "unary_main" };

/// Op codes of `binary_op` in elementwise.wgsl.
pub(super) const RELU_BACKWARD: u32 = 4;

impl Binary {
    pub(super) fn gpu_code(self) -> u32 {
        match self {
            Binary::Add => 0,
            Binary::Sub => 1,
            Binary::Mul => 2,
            Binary::Div => 3,
        }
    }
}

impl Unary {
    /// The op code of `unary_op` in unary.wgsl and its scalar.
    fn gpu_code(self) -> (u32, f32) {
        match self {
            Unary::Neg => (0, 0.0),
            Unary::Exp => (1, 0.0),
            Unary::Log => (2, 0.0),
            Unary::Relu => (3, 0.0),
            Unary::Sqrt => (8, 0.0),
            Unary::AddScalar(s) => (4, s as f32),
            Unary::MulScalar(s) => (5, s as f32),
        }
    }
}

/// `code(a, b)` over the broadcast `shape`, into a fresh buffer.
pub(crate) fn binary(op: &'static str, code: u32, a: &Tensor, b: &Tensor, shape: &Shape) -> Result<Storage> {
    let (ba, bb) = (a.gpu_f32_buffer(op)?, b.gpu_f32_buffer(op)?);
    let ctx = &ba.ctx;
    let n = shape.numel();
    let out = output(ctx, op, n, a.dtype())?;
    let mut p = vec![n as u32, code, 0];
    p.extend(layout_words(a.layout(), &shape.0));
    p.extend(layout_words(b.layout(), &shape.0));
    ctx.dispatch(&BINARY, &p, &[ba.raw(), bb.raw(), out.raw()], groups_1d(n))?;
    Ok(Storage::Gpu(out))
}

/// A unary map of `x`, into a fresh contiguous buffer.
pub(super) fn unary(op: &'static str, x: &Tensor, u: Unary) -> Result<Storage> {
    let (code, s) = u.gpu_code();
    unary_code(op, x, code, s)
}

/// The unary map with op code `code` (and scalar `s`) of unary.wgsl; code 99 copies.
pub(crate) fn unary_code(op: &'static str, x: &Tensor, code: u32, s: f32) -> Result<Storage> {
    let bx = x.gpu_f32_buffer(op)?;
    let n = x.numel();
    let out = output(&bx.ctx, op, n, x.dtype())?;
    let mut p = vec![n as u32, code, s.to_bits()];
    p.extend(layout_words(x.layout(), x.dims()));
    bx.ctx.dispatch(&UNARY, &p, &[bx.raw(), out.raw()], groups_1d(n))?;
    Ok(Storage::Gpu(out))
}
