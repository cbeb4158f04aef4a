//! The optimizer updates on a GPU (`optim.wgsl`, `adam.wgsl`): in place on the parameter and
//! state buffers, one dispatch per parameter, nothing read back.

use super::{AdamStep, Decay, SgdStep};
use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, output};
use crate::tensor::Tensor;

const SGD: Kernel = Kernel { name: "sgd", wgsl: include_str!("optim.wgsl"), entry: "sgd_main" };
const ADAM: Kernel = Kernel { name: "adam", wgsl: include_str!("adam.wgsl"), entry: "adam_main" };

fn bits(v: f64) -> u32 {
    (v as f32).to_bits()
}

/// The SGD update on a GPU (see [`Tensor::sgd_step_`]).
pub(super) fn sgd(p: &Tensor, g: &Tensor, buf: Option<&Tensor>, first: bool, cfg: &SgdStep) -> Result<()> {
    let op = "sgd_step_";
    let pb = p.gpu_buffer_unique(op)?;
    let gb = g.owned_detached()?.gpu_buffer(op)?;
    let sb = match buf {
        Some(b) => b.gpu_buffer_unique(op)?,
        None => output(&pb.ctx, op, 1, DType::F32)?,
    };
    let flags = u32::from(buf.is_some())
        | (u32::from(first) << 1)
        | (u32::from(cfg.nesterov) << 2)
        | (u32::from(cfg.weight_decay != 0.0) << 3);
    let n = p.numel();
    let words = [n as u32, flags, bits(cfg.lr), bits(cfg.weight_decay), bits(cfg.momentum), bits(1.0 - cfg.dampening)];
    pb.ctx.dispatch(&SGD, &words, &[pb.raw(), gb.raw(), sb.raw()], groups_1d(n))
}

/// The Adam update on a GPU (see [`Tensor::adam_step_`]).
pub(super) fn adam(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    vmax: Option<&Tensor>,
    cfg: &AdamStep,
) -> Result<()> {
    let op = "adam_step_";
    let pb = p.gpu_buffer_unique(op)?;
    let gb = g.owned_detached()?.gpu_buffer(op)?;
    let (mb, vb) = (m.gpu_buffer_unique(op)?, v.gpu_buffer_unique(op)?);
    let xb = match vmax {
        Some(t) => t.gpu_buffer_unique(op)?,
        None => output(&pb.ctx, op, 1, DType::F32)?,
    };
    let decay = match cfg.decay() {
        Decay::None => 0,
        Decay::L2 => 1,
        Decay::Decoupled => 2,
    };
    let n = p.numel();
    let mut words = vec![n as u32, decay, u32::from(vmax.is_some())];
    words.extend(cfg.constants().map(bits));
    pb.ctx.dispatch(&ADAM, &words, &[pb.raw(), gb.raw(), mb.raw(), vb.raw(), xb.raw()], groups_1d(n))
}
