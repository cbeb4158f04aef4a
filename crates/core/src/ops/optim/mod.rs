//! The optimizer update rules as in-place ops: `torch.optim.SGD` (momentum, dampening, Nesterov,
//! weight decay) and `torch.optim.Adam`/`AdamW` (AMSGrad included), one parameter at a time.
//!
//! They live in the engine, not in `strata-nn`, because an update reads and writes buffers on the
//! parameter's device: every backend implements them (`cpu.rs` here, `gpu.rs` beside it), and the
//! optimizers in `strata-nn` only keep the state tensors and the step counts. None is recorded by
//! autograd.
//!
//! # Shapes
//! The parameter, its gradient and every state tensor have the same shape, element type and
//! device; the parameter and the state tensors own their whole buffers (as parameters made by
//! `requires_grad_` and states made by `zeros_like` do).

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One SGD update's hyper-parameters (`torch.optim.SGD`'s, all off by default).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: no momentum buffer is read or written).
    pub momentum: f64,
    /// Dampening for momentum.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

/// One Adam update's hyper-parameters and the step number `t` (1 on the first step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: L2 on the gradient (Adam) or a decoupled shrink of the parameter (AdamW).
    pub weight_decay: f64,
    /// AdamW's decoupled weight decay instead of Adam's L2 term.
    pub decoupled: bool,
    /// The step number, from 1 (bias corrections use it).
    pub step: u64,
}

/// Which weight decay an Adam update applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decay {
    None,
    /// Adam: `wd·p` added to the gradient.
    L2,
    /// AdamW: `p` scaled by `1 − lr·wd` first.
    Decoupled,
}

impl AdamStep {
    /// The update's constants, computed in f64 as Python floats (as PyTorch does) for every
    /// backend to use in its own type: `[lr/(1 − β1ᵗ), √(1 − β2ᵗ), 1 − β1, β2, 1 − β2, eps, wd,
    /// 1 − lr·wd]`.
    pub(crate) fn constants(&self) -> [f64; 8] {
        let t = self.step as i32;
        let (b1, b2) = self.betas;
        [
            self.lr / (1.0 - b1.powi(t)),
            (1.0 - b2.powi(t)).sqrt(),
            1.0 - b1,
            b2,
            1.0 - b2,
            self.eps,
            self.weight_decay,
            1.0 - self.lr * self.weight_decay,
        ]
    }

    /// The weight decay this step applies.
    pub(crate) fn decay(&self) -> Decay {
        match (self.weight_decay != 0.0, self.decoupled) {
            (false, _) => Decay::None,
            (true, false) => Decay::L2,
            (true, true) => Decay::Decoupled,
        }
    }
}

impl Tensor {
    /// One `torch.optim.SGD` update of this parameter with gradient `grad`, in place:
    /// ```text
    /// g ← g + weight_decay·p
    /// b ← g on the first step, else momentum·b + (1 − dampening)·g
    /// g ← g + momentum·b (Nesterov) or b
    /// p ← p − lr·g
    /// ```
    /// `momentum_buffer` is `b` (needed when `momentum != 0`), `first_step` whether it is fresh.
    pub fn sgd_step_(
        &self,
        grad: &Tensor,
        momentum_buffer: Option<&Tensor>,
        first_step: bool,
        cfg: &SgdStep,
    ) -> Result<()> {
        let op = "sgd_step_";
        check_state(op, self, grad, &[momentum_buffer])?;
        let buffer = if cfg.momentum != 0.0 {
            Some(momentum_buffer.ok_or(Error::InvalidArgument {
                op,
                message: "momentum needs a momentum buffer (make one with `zeros_like`)".into(),
            })?)
        } else {
            None
        };
        match self.device() {
            Device::Cpu => cpu::sgd(self, grad, buffer, first_step, cfg),
            #[cfg(feature = "gpu")]
            Device::Gpu(_) => gpu::sgd(self, grad, buffer, first_step, cfg),
            #[cfg(not(feature = "gpu"))]
            Device::Gpu(_) => Err(crate::gpu_unavailable(self.device())),
        }
    }

    /// One `torch.optim.Adam` (or, with `cfg.decoupled`, `AdamW`) update of this parameter, in
    /// place, at step `t = cfg.step`:
    /// ```text
    /// g ← g + weight_decay·p                       (Adam)   |  p ← p·(1 − lr·weight_decay)  (AdamW)
    /// m ← m + (1 − β1)(g − m)
    /// v ← β2·v + (1 − β2)·g²                        (AMSGrad: v̂ ← max(v̂, v), used below)
    /// p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
    /// ```
    /// `exp_avg` is `m`, `exp_avg_sq` is `v`, `max_exp_avg_sq` is `v̂` (AMSGrad only).
    pub fn adam_step_(
        &self,
        grad: &Tensor,
        exp_avg: &Tensor,
        exp_avg_sq: &Tensor,
        max_exp_avg_sq: Option<&Tensor>,
        cfg: &AdamStep,
    ) -> Result<()> {
        check_state("adam_step_", self, grad, &[Some(exp_avg), Some(exp_avg_sq), max_exp_avg_sq])?;
        match self.device() {
            Device::Cpu => cpu::adam(self, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg),
            #[cfg(feature = "gpu")]
            Device::Gpu(_) => gpu::adam(self, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg),
            #[cfg(not(feature = "gpu"))]
            Device::Gpu(_) => Err(crate::gpu_unavailable(self.device())),
        }
    }
}

/// Checks that the gradient and the states match the parameter (shape, type, device) and are
/// distinct tensors (an update holds each one's buffer at once).
fn check_state(op: &'static str, p: &Tensor, g: &Tensor, states: &[Option<&Tensor>]) -> Result<()> {
    if !p.dtype().is_float() {
        return Err(Error::UnsupportedDType { op, dtype: p.dtype(), hint: " (parameters must be float)" });
    }
    for t in std::iter::once(g).chain(states.iter().flatten().copied()) {
        p.check_same(op, t)?;
        if t.shape() != p.shape() {
            return Err(Error::ShapeMismatch {
                op,
                what: "gradient or optimizer state",
                got: t.shape().clone(),
                expected: p.shape().to_string(),
            });
        }
    }
    let states: Vec<&Tensor> = states.iter().flatten().copied().collect();
    for (i, a) in states.iter().enumerate() {
        if a.same(p) || a.same(g) || states[i + 1..].iter().any(|b| b.same(a)) {
            return Err(Error::InvalidArgument { op, message: "each optimizer state must be its own tensor".into() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
