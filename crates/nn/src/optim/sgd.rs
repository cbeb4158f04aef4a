//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay,
//! as `torch.optim.SGD`.

use super::{Optimizer, check_distinct, check_range, snapshot, state_from, zeros_like};
use crate::{Error, Result, StateDict};
use strata_core::Tensor;
use strata_core::ops::optim::SgdStep;

/// SGD's hyper-parameters, with PyTorch's defaults (all zero / off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 = plain SGD).
    pub momentum: f64,
    /// Dampening for momentum.
    pub dampening: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 1e-3, momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
    }
}

/// `torch.optim.SGD`. Per parameter, with g its gradient:
/// ```text
/// g ← g + weight_decay·p
/// b ← g on the first step, else momentum·b + (1 − dampening)·g
/// g ← g + momentum·b (Nesterov) or b
/// p ← p − lr·g
/// ```
#[derive(Debug)]
pub struct SGD {
    params: Vec<Tensor>,
    config: SgdConfig,
    momentum_buffers: Vec<Option<Tensor>>,
}

impl SGD {
    /// `optim.SGD(params, lr=lr)`.
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<SGD> {
        SGD::with_config(params, SgdConfig { lr, ..Default::default() })
    }

    /// SGD with every option.
    pub fn with_config(params: Vec<Tensor>, config: SgdConfig) -> Result<SGD> {
        check_range("SGD", "lr", config.lr, config.lr >= 0.0, "finite and ≥ 0")?;
        check_range("SGD", "momentum", config.momentum, config.momentum >= 0.0, "finite and ≥ 0")?;
        check_range("SGD", "dampening", config.dampening, true, "finite")?;
        check_range("SGD", "weight_decay", config.weight_decay, config.weight_decay >= 0.0, "finite and ≥ 0")?;
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(Error::InvalidOption {
                owner: "SGD",
                key: "nesterov",
                value: format!("true with momentum {} and dampening {}", config.momentum, config.dampening),
                expected: "false unless momentum > 0 and dampening = 0 (Nesterov momentum needs both)".into(),
            });
        }
        check_distinct("SGD", &params)?;
        let n = params.len();
        Ok(SGD { params, config, momentum_buffers: vec![None; n] })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// The momentum buffer of parameter `i` (none before its first step or without momentum).
    pub fn momentum_buffer(&self, i: usize) -> Option<&Tensor> {
        self.momentum_buffers.get(i).and_then(Option::as_ref)
    }
}

impl Optimizer for SGD {
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        for (i, (p, b)) in self.params.iter().zip(&self.momentum_buffers).enumerate() {
            if let Some(b) = b {
                debug_assert_eq!(b.dims(), p.dims());
                sd.insert(format!("momentum_buffer.{i}"), snapshot(b));
            }
        }
        sd
    }
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        let mut buffers = vec![None; self.params.len()];
        for (key, t) in state.iter() {
            let i = key
                .strip_prefix("momentum_buffer.")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|&i| i < self.params.len());
            let Some(i) = i else {
                return Err(Error::InvalidState {
                    owner: "SGD",
                    key: key.to_string(),
                    reason: "not an SGD state entry".into(),
                });
            };
            buffers[i] = Some(state_from(t, &self.params[i], key)?);
        }
        self.momentum_buffers = buffers;
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        let cfg = self.config;
        let step = SgdStep {
            lr: cfg.lr,
            momentum: cfg.momentum,
            dampening: cfg.dampening,
            nesterov: cfg.nesterov,
            weight_decay: cfg.weight_decay,
        };
        for (p, buf) in self.params.iter().zip(self.momentum_buffers.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            let first = buf.is_none();
            if cfg.momentum != 0.0 && first {
                *buf = Some(zeros_like(p)?);
            }
            let b = if cfg.momentum != 0.0 { buf.as_ref() } else { None };
            p.sgd_step_(&g, b, first, &step)?;
        }
        Ok(())
    }
    fn params(&self) -> &[Tensor] {
        &self.params
    }
    fn lr(&self) -> f64 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_range("SGD", "lr", lr, lr >= 0.0, "finite and ≥ 0")?;
        self.config.lr = lr;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_momentum_steps() {
        // p = 1, loss = p²/2 → g = p. lr 0.1, momentum 0.9:
        // step 1: b = 1, p = 0.9; step 2: g = 0.9, b = 0.9 + 0.9 = 1.8, p = 0.9 − 0.18 = 0.72.
        let p = Tensor::from_vec(vec![1.0f64], &[1]).unwrap().requires_grad_().unwrap();
        let mut opt =
            SGD::with_config(vec![p.clone()], SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() }).unwrap();
        for _ in 0..2 {
            opt.zero_grad().unwrap();
            p.mul(&p).unwrap().mul_scalar(0.5).unwrap().sum_all().unwrap().backward().unwrap();
            opt.step().unwrap();
        }
        assert!((p.item().unwrap() - 0.72).abs() < 1e-12);
        assert!(SGD::with_config(vec![], SgdConfig { nesterov: true, ..Default::default() }).is_err());
        assert!(SGD::new(vec![], -1.0).unwrap_err().to_string().contains("SGD: lr must be finite and ≥ 0, got -1"));
    }
}
