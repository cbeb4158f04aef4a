//! Parameter initialisation: every scheme of `torch.nn.init` with PyTorch's names and maths
//! (`uniform_`, `normal_`, `trunc_normal_`, `constant_`, `zeros_`, `ones_`, `xavier_uniform_`,
//! `xavier_normal_`, `kaiming_uniform_`, `kaiming_normal_`, `orthogonal_`, `calculate_gain`,
//! `calculate_fan_in_and_fan_out`), as in-place functions on tensors, as data ([`Init`], which
//! model files and specs hold), and applied to a whole module ([`apply`]).
//!
//! Layers start from PyTorch's defaults (`nn.Linear`'s uniform ±1/√fan_in, …) unless a model
//! file or a spec says otherwise (`init = "kaiming_normal"`, `bias_init = "zeros"`); the same
//! distributions as PyTorch, not the same numbers (the generators differ).
//!
//! ```
//! use strata_nn::init::{self, FanMode, Init, Nonlinearity};
//! use strata_nn::{Linear, Module};
//! let fc = Linear::new(256, 128)?;
//! init::kaiming_normal_(&fc.weight, 0.0, FanMode::FanOut, Nonlinearity::Relu)?;
//! init::zeros_(fc.bias.as_ref().unwrap())?;
//! assert!(fc.bias.as_ref().unwrap().to_vec_f64().iter().all(|b| *b == 0.0));
//! // A whole model: every weight matrix and kernel, every bias.
//! let model = strata_nn::SimpleNN::new()?;
//! init::apply(&model, &init::LayerInit::weight(Init::XavierUniform { gain: 1.0 }).with_bias(Init::Zeros))?;
//! # Ok::<(), strata_nn::Error>(())
//! ```

pub mod maths;
pub mod scheme;

pub use scheme::{Draw, FanMode, Init, InitProblem, InitTargets, LayerInit, Nonlinearity};

use crate::module::Module;
use crate::{Error, Result};
use strata_core::{DType, Generator, Tensor, with_default_generator};

/// Uniform in `[-bound, bound)`: what `nn.Linear` uses for both weight and bias, with
/// `bound = 1/√fan_in` (kaiming_uniform with a = √5 reduces to exactly this for the weight).
pub fn uniform(shape: &[usize], bound: f64, dtype: DType, rng: &mut Generator) -> strata_core::Result<Tensor> {
    Tensor::rand_uniform(shape, -bound, bound, dtype, rng)
}

/// A new tensor N(0, 2/fan_in) (He initialisation for ReLU networks, the fan given); in place
/// and with PyTorch's arguments: [`kaiming_normal_`].
pub fn kaiming_normal(
    shape: &[usize],
    fan_in: usize,
    dtype: DType,
    rng: &mut Generator,
) -> strata_core::Result<Tensor> {
    Tensor::randn(shape, 0.0, (2.0 / fan_in.max(1) as f64).sqrt(), dtype, rng)
}

/// A new tensor U(±√(6 / (fan_in + fan_out))) (Glorot, the fans given); in place and with
/// PyTorch's arguments: [`xavier_uniform_`].
pub fn xavier_uniform(
    shape: &[usize],
    fan_in: usize,
    fan_out: usize,
    dtype: DType,
    rng: &mut Generator,
) -> strata_core::Result<Tensor> {
    let bound = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    uniform(shape, bound, dtype, rng)
}

/// `torch.nn.init.calculate_gain(nonlinearity, param)`: the gain that keeps activations' scale
/// through `nonlinearity`; `param` is leaky_relu's negative slope (0.01 when `None`).
pub fn calculate_gain(nonlinearity: Nonlinearity, param: Option<f64>) -> f64 {
    maths::gain(nonlinearity, param)
}

/// `torch.nn.init._calculate_fan_in_and_fan_out` of a weight of `shape` (`[out, in, *kernel]`):
/// `(in·∏kernel, out·∏kernel)`. An error below two dimensions.
pub fn calculate_fan_in_and_fan_out(shape: &[usize]) -> Result<(usize, usize)> {
    maths::fans(shape).ok_or_else(|| needs_matrix("calculate_fan_in_and_fan_out", shape))
}

/// What `init` draws from for a tensor of `shape`: the bounds and standard deviations PyTorch
/// computes from the fans and gain. An error when the scheme needs two or more dimensions.
pub fn draw(init: &Init, shape: &[usize]) -> Result<Draw> {
    maths::draw(init, shape).ok_or_else(|| needs_matrix(init.function_name(), shape))
}

fn needs_matrix(owner: &'static str, shape: &[usize]) -> Error {
    Error::InvalidOption {
        owner,
        key: "tensor",
        value: format!("{shape:?}"),
        expected: "a tensor of 2 or more dimensions (fan_in and fan_out are its dimensions 1 and 0)".into(),
    }
}

impl Init {
    /// Fills `tensor` in place (not recorded by autograd) as this scheme says, drawing from
    /// `rng`. The tensor must be a float tensor that owns its buffer (a parameter does); an
    /// empty one is left as it is (as PyTorch does).
    pub fn init_(&self, tensor: &Tensor, rng: &mut Generator) -> Result<()> {
        if let Err(p) = self.check() {
            let (owner, key, value) = (self.function_name(), p.param, p.value.to_string());
            return Err(Error::InvalidOption { owner, key, value, expected: p.expected.replace('`', "") });
        }
        if !tensor.dtype().is_float() {
            let value = format!("{:?}", tensor.dtype());
            return Err(Error::InvalidOption {
                owner: self.function_name(),
                key: "tensor",
                value,
                expected: "a float tensor".into(),
            });
        }
        let draw = draw(self, tensor.dims())?;
        if tensor.numel() == 0 {
            return Ok(());
        }
        let values = maths::values(draw, tensor.dims(), rng);
        match tensor.dtype() {
            DType::F32 => tensor.update_::<f32, _>(|d| d.iter_mut().zip(&values).for_each(|(o, v)| *o = *v as f32))?,
            _ => tensor.update_::<f64, _>(|d| d.copy_from_slice(&values))?,
        }
        Ok(())
    }

    /// A new tensor of `shape` and `dtype` drawn as this scheme says.
    pub fn tensor(&self, shape: &[usize], dtype: DType, rng: &mut Generator) -> Result<Tensor> {
        let t = Tensor::zeros(shape, dtype);
        self.init_(&t, rng)?;
        Ok(t)
    }
}

/// `init` applied to `tensor` with the default generator (seed it with
/// [`strata_core::manual_seed`]).
fn with_default(init: Init, tensor: &Tensor) -> Result<()> {
    with_default_generator(|g| init.init_(tensor, g))
}

/// `torch.nn.init.uniform_(tensor, a, b)`: U(a, b).
pub fn uniform_(tensor: &Tensor, a: f64, b: f64) -> Result<()> {
    with_default(Init::Uniform { a, b }, tensor)
}

/// `torch.nn.init.normal_(tensor, mean, std)`: N(mean, std²).
pub fn normal_(tensor: &Tensor, mean: f64, std: f64) -> Result<()> {
    with_default(Init::Normal { mean, std }, tensor)
}

/// `torch.nn.init.trunc_normal_(tensor, mean, std, a, b)`: N(mean, std²) restricted to
/// `[a, b]`.
pub fn trunc_normal_(tensor: &Tensor, mean: f64, std: f64, a: f64, b: f64) -> Result<()> {
    with_default(Init::TruncNormal { mean, std, a, b }, tensor)
}

/// `torch.nn.init.constant_(tensor, val)`.
pub fn constant_(tensor: &Tensor, val: f64) -> Result<()> {
    with_default(Init::Constant { val }, tensor)
}

/// `torch.nn.init.zeros_(tensor)`.
pub fn zeros_(tensor: &Tensor) -> Result<()> {
    with_default(Init::Zeros, tensor)
}

/// `torch.nn.init.ones_(tensor)`.
pub fn ones_(tensor: &Tensor) -> Result<()> {
    with_default(Init::Ones, tensor)
}

/// `torch.nn.init.xavier_uniform_(tensor, gain)`: U(±gain·√(6 / (fan_in + fan_out))).
pub fn xavier_uniform_(tensor: &Tensor, gain: f64) -> Result<()> {
    with_default(Init::XavierUniform { gain }, tensor)
}

/// `torch.nn.init.xavier_normal_(tensor, gain)`: N(0, gain²·2 / (fan_in + fan_out)).
pub fn xavier_normal_(tensor: &Tensor, gain: f64) -> Result<()> {
    with_default(Init::XavierNormal { gain }, tensor)
}

/// `torch.nn.init.kaiming_uniform_(tensor, a, mode, nonlinearity)`: U(±gain·√(3 / fan)),
/// `gain = calculate_gain(nonlinearity, a)`.
pub fn kaiming_uniform_(tensor: &Tensor, a: f64, mode: FanMode, nonlinearity: Nonlinearity) -> Result<()> {
    with_default(Init::KaimingUniform { a, mode, nonlinearity }, tensor)
}

/// `torch.nn.init.kaiming_normal_(tensor, a, mode, nonlinearity)`: N(0, gain² / fan),
/// `gain = calculate_gain(nonlinearity, a)`.
pub fn kaiming_normal_(tensor: &Tensor, a: f64, mode: FanMode, nonlinearity: Nonlinearity) -> Result<()> {
    with_default(Init::KaimingNormal { a, mode, nonlinearity }, tensor)
}

/// `torch.nn.init.orthogonal_(tensor, gain)`: a (semi-)orthogonal matrix (dimensions after the
/// first flattened) times `gain`.
pub fn orthogonal_(tensor: &Tensor, gain: f64) -> Result<()> {
    with_default(Init::Orthogonal { gain }, tensor)
}

/// Whether a parameter called `name` (`weight`, `weight_ih_l0`, `fc1.bias`) is a weight (`Some(true)`),
/// a bias (`Some(false)`) or neither.
fn role(name: &str) -> Option<bool> {
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.starts_with("weight") {
        Some(true)
    } else if last.starts_with("bias") {
        Some(false)
    } else {
        None
    }
}

/// Re-initialises `module`'s parameters in place, as `model.apply(init_fn)` does in PyTorch:
/// every weight of two or more dimensions (Linear, Conv2d, Embedding, recurrent weights) from
/// `init.weight`, every bias from `init.bias`; normalisation layers' scales and what `init`
/// leaves `None` keep their values. Draws from the default generator.
pub fn apply(module: &dyn Module, init: &LayerInit) -> Result<()> {
    with_default_generator(|g| apply_with(module, init, g))
}

/// [`apply`] drawing from `rng`.
pub fn apply_with(module: &dyn Module, init: &LayerInit, rng: &mut Generator) -> Result<()> {
    for (name, p) in module.named_parameters() {
        let scheme = match role(&name) {
            Some(true) if p.ndim() >= 2 => init.weight,
            Some(false) => init.bias,
            _ => None,
        };
        if let Some(s) = scheme {
            s.init_(&p, rng).map_err(|e| in_parameter(&name, e))?;
        }
    }
    Ok(())
}

/// Re-initialises a layer's own parameters: its weights (of any rank: the scheme was checked
/// against the layer kind) from `init.weight`, its biases from `init.bias`. What a built layer
/// of a spec goes through ([`crate::layer::Layer::reinit`]).
pub fn apply_own(module: &dyn Module, init: &LayerInit, rng: &mut Generator) -> Result<()> {
    for (name, p) in module.own_parameters() {
        let scheme = match role(&name) {
            Some(true) => init.weight,
            Some(false) => init.bias,
            None => None,
        };
        if let Some(s) = scheme {
            s.init_(&p, rng).map_err(|e| in_parameter(&name, e))?;
        }
    }
    Ok(())
}

fn in_parameter(name: &str, e: Error) -> Error {
    Error::InLayer { path: name.to_string(), desc: "parameter".into(), error: Box::new(e) }
}

/// Why a [`LayerInit`] does not fit a layer: the key (`init` or `bias_init`), what is wrong
/// and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misfit {
    /// `init` or `bias_init`.
    pub key: &'static str,
    /// What is wrong, e.g. `the layer has no bias`.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

/// Whether `init` fits a layer with `targets` (`None`: no parameters). `own` is false for a
/// block's or the model's choice, which only the layers it fits inherit (a bias scheme must
/// still fit a bias).
pub fn fit(init: &LayerInit, targets: Option<InitTargets>, own: bool) -> std::result::Result<(), Misfit> {
    let misfit = |key, message: String, help: String| Err(Misfit { key, message, help });
    if init.is_empty() {
        return Ok(());
    }
    let schemes_1d = || "use uniform, normal, trunc_normal, constant, zeros or ones".to_string();
    if let Some(b) = init.bias
        && b.needs_matrix()
    {
        let message =
            format!("{} needs a tensor of 2 or more dimensions (it computes fans), and a bias has one", b.name());
        return misfit("bias_init", message, schemes_1d());
    }
    if !own {
        return Ok(());
    }
    let Some(t) = targets else {
        let key = if init.weight.is_some() { "init" } else { "bias_init" };
        return misfit(key, "the layer has no parameters to initialise".into(), format!("remove `{key}`"));
    };
    if let Some(w) = init.weight
        && w.needs_matrix()
        && t.weight_dims < 2
    {
        let message = format!(
            "{} needs a weight of 2 or more dimensions (it computes fans), and this layer's has {}",
            w.name(),
            t.weight_dims
        );
        return misfit("init", message, schemes_1d());
    }
    if init.bias.is_some() && !t.bias {
        let help = "remove `bias_init`, or give the layer a bias".to_string();
        return misfit("bias_init", "the layer has no bias".into(), help);
    }
    Ok(())
}

/// The error for `init` that does not [`fit`] the layer at `path` (`desc`: its description):
/// ``in layer `bn` (BatchNorm2d 16): init: init must be a scheme that fits the layer (…), got …``.
pub fn misfit(path: &str, desc: &str, init: &LayerInit, m: Misfit) -> Error {
    let scheme = if m.key == "init" { init.weight } else { init.bias };
    let error = Error::InvalidOption {
        owner: "init",
        key: m.key,
        value: scheme.map_or_else(String::new, |s| s.to_toml()),
        expected: format!("a scheme that fits the layer ({}; {})", m.message, m.help),
    };
    Error::InLayer { path: path.to_string(), desc: desc.to_string(), error: Box::new(error) }
}

#[cfg(test)]
mod tests;
