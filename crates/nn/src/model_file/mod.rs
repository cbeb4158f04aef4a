//! Declarative model files (TOML). SimpleNN in ten lines:
//!
//! ```toml
//! name = "SimpleNN"
//! input = [784]
//! layers = [
//!   { name = "fc1", type = "Linear", in_features = 784, out_features = 128 },
//!   { type = "ReLU" },
//!   { name = "fc2", type = "Linear", in_features = 128, out_features = 64 },
//!   { type = "ReLU" },
//!   { name = "fc3", type = "Linear", in_features = 64, out_features = 10 },
//! ]
//! ```
//!
//! A layer is a table with a `type` (PyTorch's class name), an optional `name` (else its
//! position, as in `nn.Sequential`) and the type's options; `type = "Sequential"` with its own
//! `layers` nests a block. `[[layers]]` array-of-tables syntax works too. Unknown keys, wrong
//! types and impossible values are errors with file, line and column, all reported at once.
//!
//! Types and keys are PyTorch's class names and constructor arguments: `Conv2d` (`in_channels`,
//! `out_channels`, `kernel_size`, `stride`, `padding` — also `"same"` or `"valid"` —,
//! `padding_mode` (`"zeros"`, `"reflect"`, `"replicate"`, `"circular"`), `dilation`, `groups`,
//! `bias`; sizes as an int or an `[h, w]` pair), `Conv1d` (the same keys, sizes as integers),
//! `MaxPool1d`, `AvgPool1d`, `AdaptiveAvgPool1d` (sizes as integers), `MaxPool2d` and `AvgPool2d` (with `ceil_mode`;
//! AvgPool2d with `count_include_pad` and `divisor_override`), `AdaptiveAvgPool2d`,
//! `BatchNorm1d`, `BatchNorm2d` (`momentum = "None"` for a cumulative average), `LayerNorm`
//! (`normalized_shape` as an int or a list), `Embedding`, the activations (`GELU` with
//! `approximate = "tanh"`), `RNN`, `LSTM`, `GRU` (with `num_layers`, `bidirectional`,
//! `batch_first` — time-major models keep a symbolic batch — and `dropout` between layers) and
//! `LastStep`. `in_features`, `in_channels`, `num_features` and `input_size` may be left out and
//! are then inferred by the shape check.
//!
//! Branches applied to the same input and merged are `type = "Add"` (summed) or
//! `type = "Concat"` (joined along `dim`, default 1), with `branches = [[layers…], [layers…]]`;
//! an empty branch `[]` is the identity. A model fed token ids says `input_dtype = "i64"`; a
//! model in double precision (parameters, buffers and float activations) says `dtype = "f64"`.
//! `conv_algorithm = "fast"` lets every `Conv2d` use its fastest, less accurate algorithm
//! (`strata_core::ConvAlgorithm`).
//!
//! `init` and `bias_init` choose how a layer's weights and biases start, with
//! `torch.nn.init`'s schemes: a name (`init = "kaiming_normal"`) or an inline table with
//! PyTorch's parameter names (`init = { scheme = "kaiming_normal", mode = "fan_out",
//! nonlinearity = "relu" }`); given to a block or at the top of the file, they are the default
//! of the weight matrices and kernels inside (`init.rs`, [`crate::init`]).
//!
//! The parts: `parse.rs` reads a file (the model's keys and the containers; each layer kind
//! reads its own keys through [`keys::LayerFields`]), `write.rs` writes one back, `keys.rs` holds
//! the typed key readers, `init.rs` the `init` and `bias_init` keys, `suggest.rs` the "did you mean" matching and `error.rs` the located
//! errors.

pub mod error;
pub mod init;
pub mod keys;
pub mod parse;
pub mod suggest;
pub mod write;

pub use error::{ModelFileError, ModelFileErrors};
pub use parse::{load_model, parse_model, parse_model_at};
pub use write::to_toml;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{LayerSpec, ModelSpec, NamedLayer};
    use strata_core::{ConvAlgorithm, DType};

    #[test]
    fn sizes_in_every_toml_radix() {
        // 0xb1 is 177 (stripping every leading `b`/`0` once read it as 1), 0o17 is 15, 0b101 5.
        for (text, want) in [("0xb1", 177), ("0xb_0", 176), ("0o17", 15), ("0b101", 5), ("1_024", 1024)] {
            let model = format!("layers = [{{ type = \"Linear\", in_features = 4, out_features = {text} }}]");
            let spec = parse_model(&model, "t.toml", "m").unwrap_or_else(|e| panic!("{text}: {e}"));
            let LayerSpec::Linear { out_features, .. } = &spec.layers[0].spec else { panic!("{text}") };
            assert_eq!(*out_features, want, "{text}");
        }
    }

    #[test]
    fn to_toml_round_trips() {
        let text = "name = \"m\"\ninput = [1, 4, 4]\n[[layers]]\ntype = \"Flatten\"\n[[layers]]\nname = \"b\"\ntype = \"Sequential\"\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 16, out_features = 3, bias = false }, { type = \"ReLU\" }]\n";
        let spec = parse_model(text, "t.toml", "m").unwrap();
        let again = parse_model(&to_toml(&spec), "u.toml", "x").unwrap();
        let strip = |s: &ModelSpec| {
            let mut s = s.clone();
            fn clear(l: &mut [NamedLayer]) {
                for x in l {
                    x.origin = None;
                    if let LayerSpec::Sequential(inner) = &mut x.spec {
                        clear(inner);
                    }
                }
            }
            clear(&mut s.layers);
            s
        };
        assert_eq!(strip(&spec), strip(&again));
    }

    #[test]
    fn dtype_and_conv_algorithm_are_read_written_and_checked() {
        let text = "dtype = \"f64\"\nconv_algorithm = \"fast\"\nlayers = [{ type = \"Conv2d\", in_channels = 1, out_channels = 2, kernel_size = 3 }]\n";
        let spec = parse_model(text, "t.toml", "m").unwrap();
        assert_eq!((spec.dtype, spec.conv_algorithm), (DType::F64, ConvAlgorithm::Fast));
        let again = parse_model(&to_toml(&spec), "u.toml", "m").unwrap();
        assert_eq!((again.dtype, again.conv_algorithm), (DType::F64, ConvAlgorithm::Fast));
        let model = spec.build().unwrap();
        assert!(crate::Module::parameters(&model).iter().all(|p| p.dtype() == DType::F64));
        let plain = parse_model("layers = []\n", "t.toml", "m").unwrap();
        assert_eq!((plain.dtype, plain.conv_algorithm), (DType::F32, ConvAlgorithm::Default));
        assert!(!to_toml(&plain).contains("dtype") && !to_toml(&plain).contains("conv_algorithm"));
        let e = parse_model("dtype = \"f16\"\nconv_algorithm = \"winograd\"\nlayers = []\n", "bad.toml", "m")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.toml:1:9") && e.contains("`dtype` must be \"f32\""), "{e}");
        assert!(e.contains("bad.toml:2:18") && e.contains("`conv_algorithm` must be \"default\""), "{e}");
    }
}
