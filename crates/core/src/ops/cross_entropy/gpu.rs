//! Cross-entropy on a GPU (`cross_entropy.wgsl`, `backward.wgsl`; with class weights,
//! `ignore_index` or label smoothing `weighted*.wgsl`) and binary cross-entropy with logits
//! (`bce*.wgsl`): per-row (or per-element) losses with their own backward; the mean or sum is
//! composed from the reduction ops.

use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, output};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const FORWARD: Kernel = Kernel { name: "ce_forward", wgsl: include_str!("cross_entropy.wgsl"), entry: "forward_main" };
const BACKWARD: Kernel = Kernel { name: "ce_backward", wgsl: include_str!("backward.wgsl"), entry: "backward_main" };
const WEIGHTED: Kernel = Kernel { name: "nll_weighted", wgsl: include_str!("weighted.wgsl"), entry: "forward_main" };
const WEIGHTED_BACKWARD: Kernel =
    Kernel { name: "nll_weighted_back", wgsl: include_str!("weighted_backward.wgsl"), entry: "backward_main" };
const BCE: Kernel = Kernel { name: "bce_logits", wgsl: include_str!("bce.wgsl"), entry: "forward_main" };
const BCE_BACKWARD: Kernel =
    Kernel { name: "bce_logits_back", wgsl: include_str!("bce_backward.wgsl"), entry: "backward_main" };

/// The loss of each row of `logits` `[n, c]` against `target` `[n]`, shape `[n]`.
pub(super) fn rows(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    let (n, c) = (logits.dims()[0], logits.dims()[1]);
    let x = logits.owned_detached()?;
    let t = target.owned_detached()?;
    let (bx, bt) = (x.gpu_f32_buffer(OP)?, t.gpu_buffer(OP)?);
    let ctx = bx.ctx.clone();
    let probs = output(&ctx, OP, n * c, DType::F32)?;
    let loss = output(&ctx, OP, n, DType::F32)?;
    ctx.dispatch(&FORWARD, &[n as u32, c as u32], &[bx.raw(), bt.raw(), probs.raw(), loss.raw()], groups_1d(n))?;
    Ok(Tensor::from_op(Storage::Gpu(loss), Shape(vec![n]), OP, &[logits], move |g| {
        let g = g.owned_detached()?;
        let bg = g.gpu_f32_buffer(OP)?;
        let d = output(&ctx, OP, n * c, DType::F32)?;
        ctx.dispatch(&BACKWARD, &[n as u32, c as u32], &[probs.raw(), bt.raw(), bg.raw(), d.raw()], groups_1d(n * c))?;
        Ok(vec![Some(Tensor::from_storage(Storage::Gpu(d), Shape(vec![n, c])))])
    }))
}

/// The weighted, smoothed negative log-likelihood of each row of `x` `[n, c]` (logits when
/// `softmax`, else log-probabilities) against `target` `[n]`, shape `[n]`, and each row's
/// weight `w[t_i]` (0 for an ignored row), shape `[n]`, not differentiable: the mean's
/// denominator.
pub(super) fn weighted_rows(
    op: &'static str,
    x: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: Option<i64>,
    label_smoothing: f64,
    softmax: bool,
) -> Result<(Tensor, Tensor)> {
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let xo = x.owned_detached()?;
    let t = target.owned_detached()?;
    let w = weight.map(Tensor::owned_detached).transpose()?;
    let (bx, bt) = (xo.gpu_f32_buffer(op)?, t.gpu_buffer(op)?);
    let ctx = bx.ctx.clone();
    // Targets live as i32 on a GPU: an ignore_index outside i32 can match no target.
    let ignore = ignore_index.and_then(|i| i32::try_from(i).ok());
    let flags = u32::from(softmax) | (u32::from(w.is_some()) << 1) | (u32::from(ignore.is_some()) << 2);
    let p = [n as u32, c as u32, flags, ignore.unwrap_or(0) as u32, (label_smoothing as f32).to_bits()];
    // Without class weights the binding still needs a buffer; the kernel does not read it.
    let bw = match &w {
        Some(w) => w.gpu_f32_buffer(op)?,
        None => bx.clone(),
    };
    let lp = output(&ctx, op, n * c, DType::F32)?;
    let loss = output(&ctx, op, n, DType::F32)?;
    let wt = output(&ctx, op, 2 * n, DType::F32)?;
    let buffers = [bx.raw(), bt.raw(), bw.raw(), lp.raw(), loss.raw(), wt.raw()];
    ctx.dispatch(&WEIGHTED, &p, &buffers, groups_1d(n))?;
    let wt = Tensor::from_storage(Storage::Gpu(wt), Shape(vec![2 * n]));
    let row_weights = wt.narrow(0, 0, n)?;
    let rows = Tensor::from_op(Storage::Gpu(loss), Shape(vec![n]), op, &[x], move |g| {
        let g = g.owned_detached()?;
        let bg = g.gpu_f32_buffer(op)?;
        let bwt = wt.gpu_buffer(op)?;
        let d = output(&ctx, op, n * c, DType::F32)?;
        let buffers = [bt.raw(), bw.raw(), lp.raw(), bwt.raw(), bg.raw(), d.raw()];
        ctx.dispatch(&WEIGHTED_BACKWARD, &p, &buffers, groups_1d(n * c))?;
        Ok(vec![Some(Tensor::from_storage(Storage::Gpu(d), Shape(vec![n, c])))])
    });
    Ok((rows, row_weights))
}

/// The binary cross-entropy with logits of each element of `input` against `target` (same
/// shape), with `pos_weight` already expanded to that shape; gradients to both.
pub(super) fn bce_elements(input: &Tensor, target: &Tensor, pos_weight: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "binary_cross_entropy_with_logits";
    let numel = input.numel();
    let x = input.owned_detached()?;
    let y = target.owned_detached()?;
    let pw = pos_weight.map(Tensor::owned_detached).transpose()?;
    let (bx, by) = (x.gpu_f32_buffer(OP)?, y.gpu_f32_buffer(OP)?);
    let bpw = match &pw {
        Some(pw) => pw.gpu_f32_buffer(OP)?,
        None => bx.clone(),
    };
    let ctx = bx.ctx.clone();
    let p = [numel as u32, u32::from(pw.is_some())];
    let loss = output(&ctx, OP, numel, DType::F32)?;
    ctx.dispatch(&BCE, &p, &[bx.raw(), by.raw(), bpw.raw(), loss.raw()], groups_1d(numel))?;
    let shape = input.shape().clone();
    Ok(Tensor::from_op(Storage::Gpu(loss), shape.clone(), OP, &[input, target], move |g| {
        let g = g.owned_detached()?;
        let bg = g.gpu_f32_buffer(OP)?;
        let dx = output(&ctx, OP, numel, DType::F32)?;
        let dy = output(&ctx, OP, numel, DType::F32)?;
        let buffers = [bx.raw(), by.raw(), bpw.raw(), bg.raw(), dx.raw(), dy.raw()];
        ctx.dispatch(&BCE_BACKWARD, &p, &buffers, groups_1d(numel))?;
        Ok(vec![
            Some(Tensor::from_storage(Storage::Gpu(dx), shape.clone())),
            Some(Tensor::from_storage(Storage::Gpu(dy), shape)),
        ])
    }))
}
