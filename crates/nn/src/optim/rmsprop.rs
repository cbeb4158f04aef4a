//! RMSprop, as `torch.optim.RMSprop` (centered, momentum, weight decay), composed from tensor
//! ops so that it runs on whatever device the parameters live on.

use super::{
    Optimizer, check_distinct, check_range, check_squares, in_dtype, parse_key, snapshot, state_from, state_step,
    unknown_entry, zeros_like,
};
use crate::{Result, StateDict};
use strata_core::{NoGradGuard, Tensor};

/// RMSprop's hyper-parameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RMSpropConfig {
    /// Learning rate.
    pub lr: f64,
    /// Smoothing constant: the decay rate of the running average of squared gradients.
    pub alpha: f64,
    /// Added to the denominator (after the square root) for numerical stability.
    pub eps: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Momentum factor (0: no momentum buffer).
    pub momentum: f64,
    /// Normalise by an estimate of the gradient's variance instead of its second moment.
    pub centered: bool,
}

impl Default for RMSpropConfig {
    fn default() -> Self {
        RMSpropConfig { lr: 1e-2, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

#[derive(Debug)]
struct RMSpropState {
    step: u64,
    square_avg: Tensor,
    /// With `momentum > 0`.
    momentum_buffer: Option<Tensor>,
    /// With `centered`.
    grad_avg: Option<Tensor>,
}

/// `torch.optim.RMSprop`, in the order of its `_single_tensor_rmsprop`. Per parameter, with g
/// its gradient and w = 1 − α:
/// ```text
/// g ← g + weight_decay·p
/// v ← α·v + w·g·g
/// centered:  ḡ ← lerp(ḡ, g, w);  a ← √(v − ḡ·ḡ) + eps     otherwise: a ← √v + eps
/// momentum:  b ← momentum·b + g/a;  p ← p − lr·b          otherwise: p ← p − lr·g/a
/// ```
#[derive(Debug)]
pub struct RMSprop {
    params: Vec<Tensor>,
    config: RMSpropConfig,
    state: Vec<Option<RMSpropState>>,
}

impl RMSprop {
    /// `optim.RMSprop(params, lr=lr)`.
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<RMSprop> {
        RMSprop::with_config(params, RMSpropConfig { lr, ..Default::default() })
    }

    /// RMSprop with every option; the ranges are PyTorch's.
    pub fn with_config(params: Vec<Tensor>, config: RMSpropConfig) -> Result<RMSprop> {
        let c = &config;
        check_range("RMSprop", "lr", c.lr, c.lr >= 0.0, "finite and ≥ 0")?;
        check_range("RMSprop", "eps", c.eps, c.eps >= 0.0, "finite and ≥ 0")?;
        check_range("RMSprop", "momentum", c.momentum, c.momentum >= 0.0, "finite and ≥ 0")?;
        check_range("RMSprop", "weight_decay", c.weight_decay, c.weight_decay >= 0.0, "finite and ≥ 0")?;
        check_range("RMSprop", "alpha", c.alpha, c.alpha >= 0.0, "finite and ≥ 0")?;
        check_distinct("RMSprop", &params)?;
        let n = params.len();
        Ok(RMSprop { params, config, state: (0..n).map(|_| None).collect() })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &RMSpropConfig {
        &self.config
    }

    /// Number of steps taken for parameter `i`.
    pub fn step_count(&self, i: usize) -> u64 {
        self.state.get(i).and_then(Option::as_ref).map_or(0, |s| s.step)
    }

    /// A fresh state for `p`: zeros, with the buffers this configuration uses.
    fn fresh(&self, p: &Tensor) -> Result<RMSpropState> {
        let c = &self.config;
        Ok(RMSpropState {
            step: 0,
            square_avg: zeros_like(p)?,
            momentum_buffer: if c.momentum > 0.0 { Some(zeros_like(p)?) } else { None },
            grad_avg: if c.centered { Some(zeros_like(p)?) } else { None },
        })
    }
}

/// `start.lerp(end, weight)` as PyTorch computes it: `start + weight·(end − start)` for
/// |weight| < 0.5, else `end − (end − start)·(1 − weight)` (exact at both ends).
fn lerp(start: &Tensor, end: &Tensor, weight: f64) -> Result<Tensor> {
    // The weight in the tensor's type, as PyTorch casts the Python float; so is `1 − weight`.
    let weight = in_dtype(weight, start.dtype());
    let d = end.sub(start)?;
    Ok(if weight.abs() < 0.5 { start.add(&d.mul_scalar(weight)?)? } else { end.sub(&d.mul_scalar(1.0 - weight)?)? })
}

impl Optimizer for RMSprop {
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        for (i, s) in self.state.iter().enumerate() {
            let Some(s) = s else { continue };
            sd.insert(format!("step.{i}"), Tensor::scalar(s.step as i64));
            sd.insert(format!("square_avg.{i}"), snapshot(&s.square_avg));
            if let Some(b) = &s.momentum_buffer {
                sd.insert(format!("momentum_buffer.{i}"), snapshot(b));
            }
            if let Some(g) = &s.grad_avg {
                sd.insert(format!("grad_avg.{i}"), snapshot(g));
            }
        }
        sd
    }

    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        let mut restored: Vec<Option<RMSpropState>> = (0..self.params.len()).map(|_| None).collect();
        for (key, t) in state.iter() {
            let Some((kind, i)) = parse_key(key, self.params.len()) else {
                return Err(unknown_entry("RMSprop", key));
            };
            let p = &self.params[i];
            if restored[i].is_none() {
                restored[i] = Some(self.fresh(p)?);
            }
            let Some(s) = restored[i].as_mut() else { unreachable!("set just above") };
            match kind {
                "step" => s.step = state_step("RMSprop", key, t)?,
                "square_avg" => {
                    check_squares("RMSprop", key, t)?;
                    s.square_avg = state_from(t, p, key)?;
                }
                "momentum_buffer" => s.momentum_buffer = Some(state_from(t, p, key)?),
                "grad_avg" => s.grad_avg = Some(state_from(t, p, key)?),
                _ => return Err(unknown_entry("RMSprop", key)),
            }
        }
        self.state = restored;
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        // The update is not part of any graph.
        let _no_grad = NoGradGuard::new();
        let c = self.config;
        for i in 0..self.params.len() {
            let p = &self.params[i];
            let Some(grad) = p.grad() else { continue };
            if self.state[i].is_none() {
                self.state[i] = Some(self.fresh(p)?);
            }
            let Some(s) = self.state[i].as_mut() else { unreachable!("set just above") };
            s.step += 1;
            let value = p.detach();
            // g: [*] the parameter's shape throughout.
            let g = if c.weight_decay != 0.0 { grad.add(&value.mul_scalar(c.weight_decay)?)? } else { grad };
            // square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            let w = 1.0 - c.alpha;
            s.square_avg = s.square_avg.mul_scalar(c.alpha)?.add(&g.mul_scalar(w)?.mul(&g)?)?;
            let avg = match &mut s.grad_avg {
                Some(grad_avg) => {
                    *grad_avg = lerp(grad_avg, &g, w)?;
                    s.square_avg.sub(&grad_avg.mul(grad_avg)?)?.sqrt()?
                }
                None => s.square_avg.sqrt()?,
            }
            .add_scalar(c.eps)?;
            let updated = match &mut s.momentum_buffer {
                Some(buf) if c.momentum > 0.0 => {
                    // buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
                    *buf = buf.mul_scalar(c.momentum)?.add(&g.div(&avg)?)?;
                    value.add(&buf.mul_scalar(-c.lr)?)?
                }
                // param.addcdiv_(grad, avg, value=-lr)
                _ => value.add(&g.mul_scalar(-c.lr)?.div(&avg)?)?,
            };
            p.copy_(&updated)?;
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
        check_range("RMSprop", "lr", lr, lr >= 0.0, "finite and ≥ 0")?;
        self.config.lr = lr;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_by_hand() {
        // g = 2, α = 0.75: v = 0.25·4 = 1, p ← 1 − 0.1·2/(1 + eps) ≈ 0.8.
        let p = Tensor::from_vec(vec![1.0f64], &[1]).unwrap().requires_grad_().unwrap();
        let mut opt =
            RMSprop::with_config(vec![p.clone()], RMSpropConfig { lr: 0.1, alpha: 0.75, ..Default::default() })
                .unwrap();
        p.mul_scalar(2.0).unwrap().sum_all().unwrap().backward().unwrap();
        opt.step().unwrap();
        assert!((p.item().unwrap() - 0.8).abs() < 1e-7, "{}", p.item().unwrap());
        assert_eq!(opt.step_count(0), 1);
        let e = RMSprop::with_config(vec![], RMSpropConfig { alpha: -0.5, ..Default::default() }).unwrap_err();
        assert_eq!(e.to_string(), "RMSprop: alpha must be finite and ≥ 0, got -0.5");
    }

    #[test]
    fn lerp_is_torchs_on_both_sides_of_one_half() {
        let a = Tensor::from_vec(vec![1.0f64, -3.0], &[2]).unwrap();
        let b = Tensor::from_vec(vec![5.0f64, 1.0], &[2]).unwrap();
        assert_eq!(lerp(&a, &b, 0.25).unwrap().to_vec::<f64>().unwrap(), [2.0, -2.0]);
        assert_eq!(lerp(&a, &b, 0.75).unwrap().to_vec::<f64>().unwrap(), [4.0, 0.0]);
        assert_eq!(lerp(&a, &b, 1.0).unwrap().to_vec::<f64>().unwrap(), [5.0, 1.0]);
    }
}
