//! Adagrad, as `torch.optim.Adagrad` (learning-rate decay, initial accumulator value, weight
//! decay), composed from tensor ops so that it runs on whatever device the parameters live on.

use super::{
    Optimizer, check_distinct, check_range, check_squares, parse_key, snapshot, state_from, state_step, unknown_entry,
};
use crate::{Result, StateDict};
use strata_core::{NoGradGuard, Tensor};

/// Adagrad's hyper-parameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate.
    pub lr: f64,
    /// Learning-rate decay: step t uses `lr / (1 + (t − 1)·lr_decay)`.
    pub lr_decay: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// The value the sum of squared gradients starts from.
    pub initial_accumulator_value: f64,
    /// Added to the denominator (after the square root) for numerical stability.
    pub eps: f64,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig { lr: 1e-2, lr_decay: 0.0, weight_decay: 0.0, initial_accumulator_value: 0.0, eps: 1e-10 }
    }
}

#[derive(Debug)]
struct AdagradState {
    step: u64,
    /// The sum of squared gradients.
    sum: Tensor,
}

/// `torch.optim.Adagrad`, in the order of its `_single_tensor_adagrad`. Per parameter at step t,
/// with g its gradient and s starting at `initial_accumulator_value`:
/// ```text
/// g ← g + weight_decay·p
/// clr = lr / (1 + (t − 1)·lr_decay)
/// s ← s + g·g
/// p ← p − clr·g / (√s + eps)
/// ```
/// PyTorch makes every parameter's state in the constructor; here it is made at the parameter's
/// first step (the same values), so `state_dict` holds the parameters that have taken a step.
#[derive(Debug)]
pub struct Adagrad {
    params: Vec<Tensor>,
    config: AdagradConfig,
    state: Vec<Option<AdagradState>>,
}

impl Adagrad {
    /// `optim.Adagrad(params, lr=lr)`.
    pub fn new(params: Vec<Tensor>, lr: f64) -> Result<Adagrad> {
        Adagrad::with_config(params, AdagradConfig { lr, ..Default::default() })
    }

    /// Adagrad with every option; the ranges are PyTorch's.
    pub fn with_config(params: Vec<Tensor>, config: AdagradConfig) -> Result<Adagrad> {
        let c = &config;
        check_range("Adagrad", "lr", c.lr, c.lr >= 0.0, "finite and ≥ 0")?;
        check_range("Adagrad", "lr_decay", c.lr_decay, c.lr_decay >= 0.0, "finite and ≥ 0")?;
        check_range("Adagrad", "weight_decay", c.weight_decay, c.weight_decay >= 0.0, "finite and ≥ 0")?;
        let init = c.initial_accumulator_value;
        check_range("Adagrad", "initial_accumulator_value", init, init >= 0.0, "finite and ≥ 0")?;
        check_range("Adagrad", "eps", c.eps, c.eps >= 0.0, "finite and ≥ 0")?;
        check_distinct("Adagrad", &params)?;
        let n = params.len();
        Ok(Adagrad { params, config, state: (0..n).map(|_| None).collect() })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdagradConfig {
        &self.config
    }

    /// Number of steps taken for parameter `i`.
    pub fn step_count(&self, i: usize) -> u64 {
        self.state.get(i).and_then(Option::as_ref).map_or(0, |s| s.step)
    }

    /// A fresh state for `p`: step 0, the sum filled with `initial_accumulator_value`.
    fn fresh(&self, p: &Tensor) -> Result<AdagradState> {
        let sum = Tensor::full_on(p.dims(), self.config.initial_accumulator_value, p.dtype(), p.device())?;
        Ok(AdagradState { step: 0, sum })
    }
}

impl Optimizer for Adagrad {
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        for (i, s) in self.state.iter().enumerate() {
            let Some(s) = s else { continue };
            sd.insert(format!("step.{i}"), Tensor::scalar(s.step as i64));
            sd.insert(format!("sum.{i}"), snapshot(&s.sum));
        }
        sd
    }

    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        let mut restored: Vec<Option<AdagradState>> = (0..self.params.len()).map(|_| None).collect();
        for (key, t) in state.iter() {
            let Some((kind, i)) = parse_key(key, self.params.len()) else {
                return Err(unknown_entry("Adagrad", key));
            };
            let p = &self.params[i];
            if restored[i].is_none() {
                restored[i] = Some(self.fresh(p)?);
            }
            let Some(s) = restored[i].as_mut() else { unreachable!("set just above") };
            match kind {
                "step" => s.step = state_step("Adagrad", key, t)?,
                "sum" => {
                    check_squares("Adagrad", key, t)?;
                    s.sum = state_from(t, p, key)?;
                }
                _ => return Err(unknown_entry("Adagrad", key)),
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
            // In f64, as PyTorch computes it from Python floats.
            let clr = c.lr / (1.0 + (s.step - 1) as f64 * c.lr_decay);
            // state_sum.addcmul_(grad, grad, value=1); std = state_sum.sqrt().add_(eps)
            s.sum = s.sum.add(&g.mul(&g)?)?;
            let std = s.sum.sqrt()?.add_scalar(c.eps)?;
            // param.addcdiv_(grad, std, value=-clr)
            p.copy_(&value.add(&g.mul_scalar(-clr)?.div(&std)?)?)?;
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
        check_range("Adagrad", "lr", lr, lr >= 0.0, "finite and ≥ 0")?;
        self.config.lr = lr;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_by_hand() {
        // g = 3 each step, lr 0.5, lr_decay 1, initial sum 7:
        // step 1: s = 16, p ← 1 − 0.5·3/4 = 0.625; step 2: clr = 0.25, s = 25, p ← 0.625 − 0.25·3/5 = 0.475.
        let p = Tensor::from_vec(vec![1.0f64], &[1]).unwrap().requires_grad_().unwrap();
        let config =
            AdagradConfig { lr: 0.5, lr_decay: 1.0, initial_accumulator_value: 7.0, eps: 0.0, ..Default::default() };
        let mut opt = Adagrad::with_config(vec![p.clone()], config).unwrap();
        for _ in 0..2 {
            opt.zero_grad().unwrap();
            p.mul_scalar(3.0).unwrap().sum_all().unwrap().backward().unwrap();
            opt.step().unwrap();
        }
        assert!((p.item().unwrap() - 0.475).abs() < 1e-15, "{}", p.item().unwrap());
        assert_eq!(opt.state_dict().get("sum.0").unwrap().item().unwrap(), 25.0);
        let e = Adagrad::with_config(vec![], AdagradConfig { lr_decay: f64::NAN, ..Default::default() }).unwrap_err();
        assert_eq!(e.to_string(), "Adagrad: lr_decay must be finite and ≥ 0, got NaN");
    }
}
