//! Cross-entropy on a GPU (`cross_entropy.wgsl`, `backward.wgsl`): per-row losses with their
//! own backward; the mean or sum over rows is composed from the reduction ops.

use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, output};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const FORWARD: Kernel = Kernel { name: "ce_forward", wgsl: include_str!("cross_entropy.wgsl"), entry: "forward_main" };
const BACKWARD: Kernel = Kernel { name: "ce_backward", wgsl: include_str!("backward.wgsl"), entry: "backward_main" };

/// The loss of each row of `logits` `[n, c]` against `target` `[n]`, shape `[n]`.
pub(super) fn rows(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    let (n, c) = (logits.dims()[0], logits.dims()[1]);
    let x = logits.owned_detached()?;
    let t = target.owned_detached()?;
    let (bx, bt) = (x.gpu_buffer(OP)?, t.gpu_buffer(OP)?);
    let ctx = bx.ctx.clone();
    let probs = output(&ctx, OP, n * c, DType::F32)?;
    let loss = output(&ctx, OP, n, DType::F32)?;
    ctx.dispatch(&FORWARD, &[n as u32, c as u32], &[bx.raw(), bt.raw(), probs.raw(), loss.raw()], groups_1d(n))?;
    Ok(Tensor::from_op(Storage::Gpu(loss), Shape(vec![n]), OP, &[logits], move |g| {
        let g = g.owned_detached()?;
        let bg = g.gpu_buffer(OP)?;
        let d = output(&ctx, OP, n * c, DType::F32)?;
        ctx.dispatch(&BACKWARD, &[n as u32, c as u32], &[probs.raw(), bt.raw(), bg.raw(), d.raw()], groups_1d(n * c))?;
        Ok(vec![Some(Tensor::from_storage(Storage::Gpu(d), Shape(vec![n, c])))])
    }))
}
