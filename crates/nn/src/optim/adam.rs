//! Adam and AdamW, as `torch.optim.Adam` / `torch.optim.AdamW` (including `amsgrad`).

use super::{Optimizer, buffer_from, buffer_tensor, c, check_range, non_float, state_mut, zeros_like};
use crate::{Error, Result, StateDict};
use strata_core::{CpuStorage, DType, Float, Tensor};

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
    exp_avg: CpuStorage,
    exp_avg_sq: CpuStorage,
    max_exp_avg_sq: Option<CpuStorage>,
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
        check_range(what, "learning rate", config.lr, config.lr >= 0.0)?;
        check_range(what, "epsilon value", config.eps, config.eps >= 0.0)?;
        check_range(what, "beta parameter at index 0", config.betas.0, (0.0..1.0).contains(&config.betas.0))?;
        check_range(what, "beta parameter at index 1", config.betas.1, (0.0..1.0).contains(&config.betas.1))?;
        check_range(what, "weight_decay value", config.weight_decay, config.weight_decay >= 0.0)?;
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

fn update<T: Float>(p: &Tensor, g: &Tensor, s: &mut AdamState, cfg: &AdamConfig, decoupled: bool) -> Result<()> {
    let t = s.step as i32;
    let (b1, b2) = cfg.betas;
    // Scalars computed in f64 as Python floats, then used in the tensor's type, as PyTorch does.
    let step_size = c::<T>(cfg.lr / (1.0 - b1.powi(t)));
    let bc2_sqrt = c::<T>((1.0 - b2.powi(t)).sqrt());
    let (one_minus_b1, b2t, one_minus_b2, eps) = (c::<T>(1.0 - b1), c::<T>(b2), c::<T>(1.0 - b2), c::<T>(cfg.eps));
    let (wd, decay) = (c::<T>(cfg.weight_decay), c::<T>(1.0 - cfg.lr * cfg.weight_decay));
    let m = state_mut::<T>(&mut s.exp_avg);
    let v = state_mut::<T>(&mut s.exp_avg_sq);
    let vmax = s.max_exp_avg_sq.as_mut().map(state_mut::<T>);
    let k = AdamScalars { one_minus_b1, b2t, one_minus_b2, eps, bc2_sqrt, step_size, wd, decay };
    g.with_slice::<T, _>(|g| {
        p.update_::<T, _>(|pv| {
            let decay = match (cfg.weight_decay != 0.0, decoupled) {
                (false, _) => Decay::None,
                (true, false) => Decay::L2,
                (true, true) => Decay::Decoupled,
            };
            match vmax {
                // AMSGrad: the rare case, left to the plain loop.
                Some(vm) => {
                    for i in 0..pv.len() {
                        let gi = k.decayed(decay, &mut pv[i], g[i]);
                        m[i] = m[i] + k.one_minus_b1 * (gi - m[i]);
                        v[i] = v[i] * k.b2t + k.one_minus_b2 * gi * gi;
                        vm[i] = vm[i].max_nan(v[i]);
                        let denom = vm[i].sqrt() / k.bc2_sqrt + k.eps;
                        pv[i] -= k.step_size * (m[i] / denom);
                    }
                }
                None => adam_loop(pv, g, m, v, &k, decay),
            }
        })
    })??;
    Ok(())
}

/// The per-step constants of the update, in the parameter's type.
#[derive(Clone, Copy)]
struct AdamScalars<T> {
    one_minus_b1: T,
    b2t: T,
    one_minus_b2: T,
    eps: T,
    bc2_sqrt: T,
    step_size: T,
    wd: T,
    decay: T,
}

/// Which weight decay the update applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Decay {
    None,
    /// Adam: `wd·p` added to the gradient.
    L2,
    /// AdamW: `p` scaled by `1 − lr·wd` first.
    Decoupled,
}

impl<T: Float> AdamScalars<T> {
    /// The gradient after weight decay (and the decoupled decay applied to `p`).
    #[inline(always)]
    fn decayed(&self, decay: Decay, p: &mut T, g: T) -> T {
        match decay {
            Decay::None => g,
            Decay::L2 => g + self.wd * *p,
            Decay::Decoupled => {
                *p *= self.decay;
                g
            }
        }
    }
}

/// The update without AMSGrad, with the widest vectors the CPU offers (detected at run time).
/// Operation for operation the same arithmetic as `torch.optim.Adam` (and as the AMSGrad loop),
/// never fused into FMAs, so every CPU computes the same bits.
fn adam_loop<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], k: &AdamScalars<T>, decay: Decay) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { adam_loop_avx512(p, g, m, v, k, decay) };
    }
    adam_loop_inner(p, g, m, v, k, decay)
}

/// [`adam_loop_inner`] compiled for AVX-512 (sqrt and division included: 16 f32 per instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn adam_loop_avx512<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], k: &AdamScalars<T>, decay: Decay) {
    adam_loop_inner(p, g, m, v, k, decay)
}

#[inline(always)]
fn adam_loop_inner<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], k: &AdamScalars<T>, decay: Decay) {
    // One loop per decay kind, so the branch is outside the loop the vectoriser sees.
    macro_rules! run {
        ($decay:expr) => {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let gi = k.decayed($decay, p, g);
                *m = *m + k.one_minus_b1 * (gi - *m);
                *v = *v * k.b2t + k.one_minus_b2 * gi * gi;
                let denom = v.sqrt() / k.bc2_sqrt + k.eps;
                *p -= k.step_size * (*m / denom);
            }
        };
    }
    match decay {
        Decay::None => run!(Decay::None),
        Decay::L2 => run!(Decay::L2),
        Decay::Decoupled => run!(Decay::Decoupled),
    }
}

impl Optimizer for Adam {
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        for (i, (p, s)) in self.params.iter().zip(&self.state).enumerate() {
            let Some(s) = s else { continue };
            sd.insert(format!("step.{i}"), Tensor::scalar(s.step as i64));
            sd.insert(format!("exp_avg.{i}"), buffer_tensor(&s.exp_avg, p));
            sd.insert(format!("exp_avg_sq.{i}"), buffer_tensor(&s.exp_avg_sq, p));
            if let Some(m) = &s.max_exp_avg_sq {
                sd.insert(format!("max_exp_avg_sq.{i}"), buffer_tensor(m, p));
            }
        }
        sd
    }
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        let mut restored: Vec<Option<AdamState>> = (0..self.params.len()).map(|_| None).collect();
        for (key, t) in state.iter() {
            let parsed = key.rsplit_once('.').and_then(|(k, i)| Some((k, i.parse::<usize>().ok()?)));
            let Some((kind, i)) = parsed.filter(|&(_, i)| i < self.params.len()) else {
                return Err(Error::InvalidConfig { what: "Adam state", message: format!("unexpected entry `{key}`") });
            };
            let p = &self.params[i];
            let s = restored[i].get_or_insert_with(|| AdamState {
                step: 0,
                exp_avg: zeros_like(p),
                exp_avg_sq: zeros_like(p),
                max_exp_avg_sq: None,
            });
            match kind {
                "step" => s.step = t.item()? as u64,
                "exp_avg" => s.exp_avg = buffer_from(t, p, key)?,
                "exp_avg_sq" => s.exp_avg_sq = buffer_from(t, p, key)?,
                "max_exp_avg_sq" => s.max_exp_avg_sq = Some(buffer_from(t, p, key)?),
                _ => {
                    return Err(Error::InvalidConfig {
                        what: "Adam state",
                        message: format!("unexpected entry `{key}`"),
                    });
                }
            }
        }
        if self.config.amsgrad {
            for (s, p) in restored.iter_mut().zip(&self.params) {
                if let Some(s) = s {
                    s.max_exp_avg_sq.get_or_insert_with(|| zeros_like(p));
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
            let s = slot.get_or_insert_with(|| AdamState {
                step: 0,
                exp_avg: zeros_like(p),
                exp_avg_sq: zeros_like(p),
                max_exp_avg_sq: cfg.amsgrad.then(|| zeros_like(p)),
            });
            s.step += 1;
            match p.dtype() {
                DType::F32 => update::<f32>(p, &g, s, &cfg, decoupled)?,
                DType::F64 => update::<f64>(p, &g, s, &cfg, decoupled)?,
                DType::I64 => return Err(non_float(p)),
            }
        }
        Ok(())
    }
    fn params(&self) -> &[Tensor] {
        &self.params
    }
    fn lr(&self) -> f64 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
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
    fn set_lr(&mut self, lr: f64) {
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
