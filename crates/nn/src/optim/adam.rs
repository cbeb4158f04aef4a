//! Adam and AdamW, as `torch.optim.Adam` / `torch.optim.AdamW` (including `amsgrad`).

use super::{Optimizer, check_distinct, check_range, check_squares, snapshot, state_from, state_step, zeros_like};
use crate::{Error, Result, StateDict};
use strata_core::Tensor;
use strata_core::ops::optim::AdamStep;

/// Adam's hyper-parameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Weight decay: an L2 term added to the gradient (Adam) or a decoupled shrink of the
    /// parameters (AdamW).
    pub weight_decay: f64,
    /// Use the maximum of past second moments (AMSGrad).
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false }
    }
}

#[derive(Debug)]
struct AdamState {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
}

/// `torch.optim.Adam`. Per parameter at step t, with g its gradient:
/// ```text
/// g ← g + weight_decay·p                       (Adam)   |  p ← p·(1 − lr·weight_decay)  (AdamW)
/// m ← m + (1 − β1)(g − m)
/// v ← β2·v + (1 − β2)·g²                        (AMSGrad: v̂ ← max(v̂, v), used below)
/// p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
/// ```
#[derive(Debug)]
pub struct Adam {
    params: Vec<Tensor>,
    config: AdamConfig,
    decoupled_weight_decay: bool,
    state: Vec<Option<AdamState>>,
}

impl Adam {
    /// `optim.Adam(params, lr=lr)`.
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<Adam> {
        Adam::with_config(params, AdamConfig { lr, ..Default::default() })
    }

    /// Adam with every option.
    pub fn with_config(params: Vec<Tensor>, config: AdamConfig) -> Result<Adam> {
        Adam::build(params, config, false)
    }

    fn build(params: Vec<Tensor>, config: AdamConfig, decoupled_weight_decay: bool) -> Result<Adam> {
        let what = if decoupled_weight_decay { "AdamW" } else { "Adam" };
        check_range(what, "lr", config.lr, config.lr >= 0.0, "finite and ≥ 0")?;
        check_range(what, "eps", config.eps, config.eps >= 0.0, "finite and ≥ 0")?;
        check_range(what, "betas[0]", config.betas.0, (0.0..1.0).contains(&config.betas.0), "in [0, 1)")?;
        check_range(what, "betas[1]", config.betas.1, (0.0..1.0).contains(&config.betas.1), "in [0, 1)")?;
        check_range(what, "weight_decay", config.weight_decay, config.weight_decay >= 0.0, "finite and ≥ 0")?;
        check_distinct(what, &params)?;
        let n = params.len();
        Ok(Adam { params, config, decoupled_weight_decay, state: (0..n).map(|_| None).collect() })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Number of steps taken for parameter `i`.
    pub fn step_count(&self, i: usize) -> u64 {
        self.state.get(i).and_then(Option::as_ref).map_or(0, |s| s.step)
    }
}

impl Optimizer for Adam {
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        for (i, s) in self.state.iter().enumerate() {
            let Some(s) = s else { continue };
            sd.insert(format!("step.{i}"), Tensor::scalar(s.step as i64));
            sd.insert(format!("exp_avg.{i}"), snapshot(&s.exp_avg));
            sd.insert(format!("exp_avg_sq.{i}"), snapshot(&s.exp_avg_sq));
            if let Some(m) = &s.max_exp_avg_sq {
                sd.insert(format!("max_exp_avg_sq.{i}"), snapshot(m));
            }
        }
        sd
    }
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        let mut restored: Vec<Option<AdamState>> = (0..self.params.len()).map(|_| None).collect();
        for (key, t) in state.iter() {
            let parsed = key.rsplit_once('.').and_then(|(k, i)| Some((k, i.parse::<usize>().ok()?)));
            let Some((kind, i)) = parsed.filter(|&(_, i)| i < self.params.len()) else {
                return Err(Error::InvalidState {
                    owner: "Adam",
                    key: key.to_string(),
                    reason: "not an Adam state entry".into(),
                });
            };
            let p = &self.params[i];
            if restored[i].is_none() {
                restored[i] = Some(AdamState {
                    step: 0,
                    exp_avg: zeros_like(p)?,
                    exp_avg_sq: zeros_like(p)?,
                    max_exp_avg_sq: None,
                });
            }
            let Some(s) = restored[i].as_mut() else { unreachable!("set just above") };
            match kind {
                "step" => s.step = state_step("Adam", key, t)?,
                "exp_avg" => s.exp_avg = state_from(t, p, key)?,
                "exp_avg_sq" => {
                    check_squares("Adam", key, t)?;
                    s.exp_avg_sq = state_from(t, p, key)?;
                }
                "max_exp_avg_sq" => {
                    check_squares("Adam", key, t)?;
                    s.max_exp_avg_sq = Some(state_from(t, p, key)?);
                }
                _ => {
                    return Err(Error::InvalidState {
                        owner: "Adam",
                        key: key.to_string(),
                        reason: "not an Adam state entry".into(),
                    });
                }
            }
        }
        if self.config.amsgrad {
            for (s, p) in restored.iter_mut().zip(&self.params) {
                if let Some(s) = s
                    && s.max_exp_avg_sq.is_none()
                {
                    s.max_exp_avg_sq = Some(zeros_like(p)?);
                }
            }
        }
        self.state = restored;
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        let (cfg, decoupled) = (self.config, self.decoupled_weight_decay);
        for (p, slot) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            if slot.is_none() {
                *slot = Some(AdamState {
                    step: 0,
                    exp_avg: zeros_like(p)?,
                    exp_avg_sq: zeros_like(p)?,
                    max_exp_avg_sq: if cfg.amsgrad { Some(zeros_like(p)?) } else { None },
                });
            }
            let Some(s) = slot.as_mut() else { unreachable!("set just above") };
            s.step += 1;
            let step = AdamStep {
                lr: cfg.lr,
                betas: cfg.betas,
                eps: cfg.eps,
                weight_decay: cfg.weight_decay,
                decoupled,
                step: s.step,
            };
            p.adam_step_(&g, &s.exp_avg, &s.exp_avg_sq, s.max_exp_avg_sq.as_ref(), &step)?;
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
        let what = if self.decoupled_weight_decay { "AdamW" } else { "Adam" };
        check_range(what, "lr", lr, lr >= 0.0, "finite and ≥ 0")?;
        self.config.lr = lr;
        Ok(())
    }
}

/// `torch.optim.AdamW`: Adam with decoupled weight decay (default 0.01).
#[derive(Debug)]
pub struct AdamW(Adam);

impl AdamW {
    /// `optim.AdamW(params, lr=lr)` (weight_decay 0.01, PyTorch's default).
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<AdamW> {
        AdamW::with_config(params, AdamConfig { lr, weight_decay: 1e-2, ..Default::default() })
    }

    /// AdamW with every option.
    pub fn with_config(params: Vec<Tensor>, config: AdamConfig) -> Result<AdamW> {
        Ok(AdamW(Adam::build(params, config, true)?))
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        self.0.config()
    }
}

impl Optimizer for AdamW {
    fn state_dict(&self) -> StateDict {
        self.0.state_dict()
    }
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        self.0.load_state_dict(state)
    }
    fn step(&mut self) -> Result<()> {
        self.0.step()
    }
    fn params(&self) -> &[Tensor] {
        self.0.params()
    }
    fn lr(&self) -> f64 {
        self.0.lr()
    }
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        self.0.set_lr(lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_adam_step_moves_by_lr() {
        // On step 1, m̂ = g and v̂ = g², so the step is lr·g/(|g| + eps) ≈ lr·sign(g).
        let p = Tensor::from_vec(vec![1.0f64, -2.0], &[2]).unwrap().requires_grad_().unwrap();
        let mut opt = Adam::new(vec![p.clone()], 0.1).unwrap();
        p.mul(&p).unwrap().sum_all().unwrap().backward().unwrap();
        opt.step().unwrap();
        let v = p.to_vec::<f64>().unwrap();
        assert!((v[0] - 0.9).abs() < 1e-7 && (v[1] + 1.9).abs() < 1e-7, "{v:?}");
        assert!(Adam::with_config(vec![], AdamConfig { betas: (1.0, 0.9), ..Default::default() }).is_err());
    }
}
