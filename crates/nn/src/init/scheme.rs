//! The schemes of `torch.nn.init` as data: [`Init`] (a scheme with its parameters, PyTorch's
//! names and defaults), [`LayerInit`] (what a layer's weights and biases start from) and
//! [`InitTargets`] (what a layer kind has to initialise). Plain data, serde-friendly, importing
//! nothing from the crate, so specs can hold it; the maths is in `maths.rs`, the in-place
//! functions in `mod.rs`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which fan `kaiming_*` scales by: PyTorch's `mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FanMode {
    /// `'fan_in'` (the default): preserves the variance of the activations in the forward pass.
    #[default]
    FanIn,
    /// `'fan_out'`: preserves the variance of the gradients in the backward pass.
    FanOut,
}

impl FanMode {
    /// PyTorch's spelling: `"fan_in"` or `"fan_out"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FanMode::FanIn => "fan_in",
            FanMode::FanOut => "fan_out",
        }
    }

    /// The mode PyTorch spells `name`.
    pub fn from_name(name: &str) -> Option<FanMode> {
        [FanMode::FanIn, FanMode::FanOut].into_iter().find(|m| m.as_str() == name)
    }
}

/// The non-linear function a gain is computed for: `torch.nn.init.calculate_gain`'s
/// `nonlinearity` (and `kaiming_*`'s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nonlinearity {
    /// `'linear'`: gain 1.
    Linear,
    /// `'conv1d'`: gain 1.
    Conv1d,
    /// `'conv2d'`: gain 1.
    Conv2d,
    /// `'conv3d'`: gain 1.
    Conv3d,
    /// `'conv_transpose1d'`: gain 1.
    ConvTranspose1d,
    /// `'conv_transpose2d'`: gain 1.
    ConvTranspose2d,
    /// `'conv_transpose3d'`: gain 1.
    ConvTranspose3d,
    /// `'sigmoid'`: gain 1.
    Sigmoid,
    /// `'tanh'`: gain 5/3.
    Tanh,
    /// `'relu'`: gain √2.
    Relu,
    /// `'leaky_relu'` (kaiming's default): gain √(2 / (1 + negative_slope²)).
    #[default]
    LeakyRelu,
    /// `'selu'`: gain 3/4.
    Selu,
}

impl Nonlinearity {
    /// Every nonlinearity, in PyTorch's documentation order.
    pub const ALL: [Nonlinearity; 12] = [
        Nonlinearity::Linear,
        Nonlinearity::Conv1d,
        Nonlinearity::Conv2d,
        Nonlinearity::Conv3d,
        Nonlinearity::ConvTranspose1d,
        Nonlinearity::ConvTranspose2d,
        Nonlinearity::ConvTranspose3d,
        Nonlinearity::Sigmoid,
        Nonlinearity::Tanh,
        Nonlinearity::Relu,
        Nonlinearity::LeakyRelu,
        Nonlinearity::Selu,
    ];

    /// PyTorch's spelling, e.g. `"leaky_relu"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Nonlinearity::Linear => "linear",
            Nonlinearity::Conv1d => "conv1d",
            Nonlinearity::Conv2d => "conv2d",
            Nonlinearity::Conv3d => "conv3d",
            Nonlinearity::ConvTranspose1d => "conv_transpose1d",
            Nonlinearity::ConvTranspose2d => "conv_transpose2d",
            Nonlinearity::ConvTranspose3d => "conv_transpose3d",
            Nonlinearity::Sigmoid => "sigmoid",
            Nonlinearity::Tanh => "tanh",
            Nonlinearity::Relu => "relu",
            Nonlinearity::LeakyRelu => "leaky_relu",
            Nonlinearity::Selu => "selu",
        }
    }

    /// The nonlinearity PyTorch spells `name`.
    pub fn from_name(name: &str) -> Option<Nonlinearity> {
        Nonlinearity::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

fn zero() -> f64 {
    0.0
}
fn one() -> f64 {
    1.0
}
fn minus_two() -> f64 {
    -2.0
}
fn two() -> f64 {
    2.0
}

/// One scheme of `torch.nn.init` with its parameters (PyTorch's argument names and defaults).
///
/// Serialised with the scheme under `scheme`, as a model file writes it inline:
/// `{ scheme = "kaiming_normal", mode = "fan_out", nonlinearity = "relu" }`; parameters left out
/// take PyTorch's defaults (`constant` needs `val`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum Init {
    /// `uniform_(a=0, b=1)`: U(a, b).
    Uniform {
        /// Lower bound.
        #[serde(default = "zero")]
        a: f64,
        /// Upper bound.
        #[serde(default = "one")]
        b: f64,
    },
    /// `normal_(mean=0, std=1)`: N(mean, std²).
    Normal {
        /// Mean.
        #[serde(default = "zero")]
        mean: f64,
        /// Standard deviation.
        #[serde(default = "one")]
        std: f64,
    },
    /// `trunc_normal_(mean=0, std=1, a=-2, b=2)`: N(mean, std²) restricted to `[a, b]` (bounds
    /// in the values' units, not in standard deviations), by PyTorch's rejection sampling.
    TruncNormal {
        /// Mean of the normal before truncation.
        #[serde(default = "zero")]
        mean: f64,
        /// Its standard deviation.
        #[serde(default = "one")]
        std: f64,
        /// Lowest value.
        #[serde(default = "minus_two")]
        a: f64,
        /// Highest value.
        #[serde(default = "two")]
        b: f64,
    },
    /// `constant_(val)`: every value `val`.
    Constant {
        /// The value.
        val: f64,
    },
    /// `zeros_`.
    Zeros,
    /// `ones_`.
    Ones,
    /// `xavier_uniform_(gain=1)`: U(−a, a), `a = gain·√(6 / (fan_in + fan_out))`.
    XavierUniform {
        /// Scale factor.
        #[serde(default = "one")]
        gain: f64,
    },
    /// `xavier_normal_(gain=1)`: N(0, std²), `std = gain·√(2 / (fan_in + fan_out))`.
    XavierNormal {
        /// Scale factor.
        #[serde(default = "one")]
        gain: f64,
    },
    /// `kaiming_uniform_(a=0, mode='fan_in', nonlinearity='leaky_relu')`: U(−bound, bound),
    /// `bound = gain·√(3 / fan_mode)`.
    KaimingUniform {
        /// The negative slope of the rectifier after the layer (used with `leaky_relu` only).
        #[serde(default = "zero")]
        a: f64,
        /// Which fan.
        #[serde(default)]
        mode: FanMode,
        /// The function after the layer, for the gain.
        #[serde(default)]
        nonlinearity: Nonlinearity,
    },
    /// `kaiming_normal_(a=0, mode='fan_in', nonlinearity='leaky_relu')`: N(0, std²),
    /// `std = gain / √fan_mode`.
    KaimingNormal {
        /// The negative slope of the rectifier after the layer (used with `leaky_relu` only).
        #[serde(default = "zero")]
        a: f64,
        /// Which fan.
        #[serde(default)]
        mode: FanMode,
        /// The function after the layer, for the gain.
        #[serde(default)]
        nonlinearity: Nonlinearity,
    },
    /// `orthogonal_(gain=1)`: a (semi-)orthogonal matrix from the QR decomposition of a normal
    /// one, times `gain`; dimensions after the first are flattened.
    Orthogonal {
        /// Scale factor.
        #[serde(default = "one")]
        gain: f64,
    },
}

/// A parameter of a scheme that cannot take its value, e.g. `std` below 0.
#[derive(Clone, Debug, PartialEq)]
pub struct InitProblem {
    /// The parameter, by its PyTorch name (`std`, `b`, …).
    pub param: &'static str,
    /// Its value.
    pub value: f64,
    /// What it must be: `at least 0`, `at least a (1)`.
    pub expected: String,
}

impl InitProblem {
    /// `` `std` must be at least 0, got -1 ``.
    pub fn message(&self) -> String {
        format!("`{}` must be {}, got {}", self.param, self.expected, self.value)
    }
}

impl Init {
    /// Every scheme's name, as model files and PyTorch spell them (without the trailing `_`).
    pub const SCHEMES: [&'static str; 11] = [
        "uniform",
        "normal",
        "trunc_normal",
        "constant",
        "zeros",
        "ones",
        "xavier_uniform",
        "xavier_normal",
        "kaiming_uniform",
        "kaiming_normal",
        "orthogonal",
    ];

    /// The scheme called `name` with PyTorch's default parameters; `None` for an unknown name and
    /// for `constant`, whose `val` has no default.
    pub fn from_name(name: &str) -> Option<Init> {
        Some(match name {
            "uniform" => Init::Uniform { a: 0.0, b: 1.0 },
            "normal" => Init::Normal { mean: 0.0, std: 1.0 },
            "trunc_normal" => Init::TruncNormal { mean: 0.0, std: 1.0, a: -2.0, b: 2.0 },
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "xavier_uniform" => Init::XavierUniform { gain: 1.0 },
            "xavier_normal" => Init::XavierNormal { gain: 1.0 },
            "kaiming_uniform" => {
                Init::KaimingUniform { a: 0.0, mode: FanMode::FanIn, nonlinearity: Nonlinearity::LeakyRelu }
            }
            "kaiming_normal" => {
                Init::KaimingNormal { a: 0.0, mode: FanMode::FanIn, nonlinearity: Nonlinearity::LeakyRelu }
            }
            "orthogonal" => Init::Orthogonal { gain: 1.0 },
            _ => return None,
        })
    }

    /// The scheme's name, e.g. `"kaiming_normal"`.
    pub fn name(&self) -> &'static str {
        match self {
            Init::Uniform { .. } => "uniform",
            Init::Normal { .. } => "normal",
            Init::TruncNormal { .. } => "trunc_normal",
            Init::Constant { .. } => "constant",
            Init::Zeros => "zeros",
            Init::Ones => "ones",
            Init::XavierUniform { .. } => "xavier_uniform",
            Init::XavierNormal { .. } => "xavier_normal",
            Init::KaimingUniform { .. } => "kaiming_uniform",
            Init::KaimingNormal { .. } => "kaiming_normal",
            Init::Orthogonal { .. } => "orthogonal",
        }
    }

    /// PyTorch's in-place function, e.g. `"kaiming_normal_"` (the owner in error messages).
    pub fn function_name(&self) -> &'static str {
        match self {
            Init::Uniform { .. } => "uniform_",
            Init::Normal { .. } => "normal_",
            Init::TruncNormal { .. } => "trunc_normal_",
            Init::Constant { .. } => "constant_",
            Init::Zeros => "zeros_",
            Init::Ones => "ones_",
            Init::XavierUniform { .. } => "xavier_uniform_",
            Init::XavierNormal { .. } => "xavier_normal_",
            Init::KaimingUniform { .. } => "kaiming_uniform_",
            Init::KaimingNormal { .. } => "kaiming_normal_",
            Init::Orthogonal { .. } => "orthogonal_",
        }
    }

    /// The parameters the scheme `name` takes, by PyTorch's names (empty for an unknown name).
    pub fn params_of(name: &str) -> &'static [&'static str] {
        match name {
            "uniform" => &["a", "b"],
            "normal" => &["mean", "std"],
            "trunc_normal" => &["mean", "std", "a", "b"],
            "constant" => &["val"],
            "xavier_uniform" | "xavier_normal" | "orthogonal" => &["gain"],
            "kaiming_uniform" | "kaiming_normal" => &["a", "mode", "nonlinearity"],
            _ => &[],
        }
    }

    /// Whether the scheme needs a tensor of two or more dimensions: the fan-based ones (xavier,
    /// kaiming) and `orthogonal`. A bias or a normalisation layer's scale has one.
    pub fn needs_matrix(&self) -> bool {
        matches!(
            self,
            Init::XavierUniform { .. }
                | Init::XavierNormal { .. }
                | Init::KaimingUniform { .. }
                | Init::KaimingNormal { .. }
                | Init::Orthogonal { .. }
        )
    }

    /// The parameters that PyTorch refuses or that give no distribution: a negative `std`, `a`
    /// above `b`, a truncated normal with `std` 0 or an empty `[a, b]`, a value that is not
    /// finite.
    pub fn check(&self) -> Result<(), InitProblem> {
        let problem = |param, value, expected: String| Err(InitProblem { param, value, expected });
        let finite: Vec<(&'static str, f64)> = match *self {
            Init::Uniform { a, b } => vec![("a", a), ("b", b)],
            Init::Normal { mean, std } => vec![("mean", mean), ("std", std)],
            Init::TruncNormal { mean, std, a, b } => vec![("mean", mean), ("std", std), ("a", a), ("b", b)],
            Init::Constant { val } => vec![("val", val)],
            Init::Zeros | Init::Ones => vec![],
            Init::XavierUniform { gain } | Init::XavierNormal { gain } | Init::Orthogonal { gain } => {
                vec![("gain", gain)]
            }
            Init::KaimingUniform { a, .. } | Init::KaimingNormal { a, .. } => vec![("a", a)],
        };
        if let Some((param, v)) = finite.into_iter().find(|(_, v)| !v.is_finite()) {
            return problem(param, v, "a finite number".into());
        }
        match *self {
            Init::Uniform { a, b } if a > b => problem("b", b, format!("at least `a` ({a})")),
            Init::Normal { std, .. } if std < 0.0 => problem("std", std, "at least 0".into()),
            Init::TruncNormal { std, .. } if std <= 0.0 => problem("std", std, "greater than 0".into()),
            Init::TruncNormal { a, b, .. } if a >= b => problem("b", b, format!("greater than `a` ({a})")),
            _ => Ok(()),
        }
    }

    /// The scheme as a model-file value: its name when every parameter is PyTorch's default
    /// (`"kaiming_normal"`), else an inline table with the others
    /// (`{ scheme = "kaiming_normal", mode = "fan_out", nonlinearity = "relu" }`).
    pub fn to_toml(&self) -> String {
        let mut params: Vec<String> = vec![];
        let mut num = |key: &str, v: f64, default: f64| {
            if v != default {
                params.push(format!("{key} = {v:?}"));
            }
        };
        match *self {
            Init::Uniform { a, b } => {
                num("a", a, 0.0);
                num("b", b, 1.0);
            }
            Init::Normal { mean, std } => {
                num("mean", mean, 0.0);
                num("std", std, 1.0);
            }
            Init::TruncNormal { mean, std, a, b } => {
                num("mean", mean, 0.0);
                num("std", std, 1.0);
                num("a", a, -2.0);
                num("b", b, 2.0);
            }
            // `val` has no default: always written.
            Init::Constant { val } => params.push(format!("val = {val:?}")),
            Init::Zeros | Init::Ones => {}
            Init::XavierUniform { gain } | Init::XavierNormal { gain } | Init::Orthogonal { gain } => {
                num("gain", gain, 1.0)
            }
            Init::KaimingUniform { a, mode, nonlinearity } | Init::KaimingNormal { a, mode, nonlinearity } => {
                num("a", a, 0.0);
                if mode != FanMode::FanIn {
                    params.push(format!("mode = {:?}", mode.as_str()));
                }
                if nonlinearity != Nonlinearity::LeakyRelu {
                    params.push(format!("nonlinearity = {:?}", nonlinearity.as_str()));
                }
            }
        }
        if params.is_empty() {
            format!("{:?}", self.name())
        } else {
            format!("{{ scheme = {:?}, {} }}", self.name(), params.join(", "))
        }
    }
}

impl fmt::Display for Init {
    /// The model-file form: `kaiming_normal`, `{ scheme = "normal", std = 0.02 }`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_toml().trim_matches('"'))
    }
}

/// What a layer's parameters start from: `weight` for its weights (`weight`, `weight_ih_l0`, …),
/// `bias` for its biases; `None` keeps the layer's PyTorch default (or what the enclosing
/// block or the model says, see [`LayerInit::inherit`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerInit {
    /// The scheme of the weights (`init` in model files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Init>,
    /// The scheme of the biases (`bias_init` in model files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<Init>,
}

impl LayerInit {
    /// The weights from `init`, the biases as they are.
    pub fn weight(init: Init) -> LayerInit {
        LayerInit { weight: Some(init), bias: None }
    }

    /// The same with the biases from `init`.
    pub fn with_bias(mut self, init: Init) -> LayerInit {
        self.bias = Some(init);
        self
    }

    /// Whether it changes nothing (every layer keeps PyTorch's default).
    pub fn is_empty(&self) -> bool {
        self.weight.is_none() && self.bias.is_none()
    }

    /// What a layer with `targets` starts from, given its own choice (`self`) and what the
    /// enclosing block or the model chose (`outer`): its own, else the outer one when the layer
    /// inherits ([`InitTargets::inherits`]); the outer bias scheme only when it has biases.
    pub fn inherit(self, outer: LayerInit, targets: Option<InitTargets>) -> LayerInit {
        let Some(t) = targets else { return self };
        let outer = if t.inherits { outer } else { LayerInit::default() };
        LayerInit { weight: self.weight.or(outer.weight), bias: self.bias.or(if t.bias { outer.bias } else { None }) }
    }

    /// The choices of a block or the model (`outer`) overridden by this one's: what a block
    /// passes on to the layers inside it.
    pub fn over(self, outer: LayerInit) -> LayerInit {
        LayerInit { weight: self.weight.or(outer.weight), bias: self.bias.or(outer.bias) }
    }
}

/// What `init` and `bias_init` set in a layer kind ([`crate::layer::Layer::init_targets`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitTargets {
    /// The fewest dimensions of its weights: 2 or more for weight matrices and kernels (every
    /// scheme applies), 1 for a normalisation layer's scale (the fan-based schemes and
    /// `orthogonal` do not).
    pub weight_dims: usize,
    /// Whether it has biases.
    pub bias: bool,
    /// Whether the `init` and `bias_init` of the enclosing block or the model apply to it: yes
    /// for weight matrices and kernels (Linear, Conv2d, Embedding, RNN, LSTM, GRU); no for the
    /// normalisation layers, which keep ones and zeros unless they set their own.
    pub inherits: bool,
}

/// What a scheme draws from for a tensor of a given shape: the numbers PyTorch computes from
/// the fans and the gain ([`crate::init::draw`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Draw {
    /// U(low, high).
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// N(mean, std²).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// N(mean, std²) restricted to `[a, b]`.
    TruncNormal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
        /// Lowest value.
        a: f64,
        /// Highest value.
        b: f64,
    },
    /// Every value the same.
    Constant(f64),
    /// A (semi-)orthogonal matrix times `gain`.
    Orthogonal {
        /// Scale factor.
        gain: f64,
    },
}
