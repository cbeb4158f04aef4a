//! ONNX export: a [`ModelSpec`](crate::ModelSpec) and its weights as an ONNX model (opset
//! [`OPSET`], IR version [`IR_VERSION`]), for the runtimes models are served from (ONNX Runtime,
//! tract, TensorRT).
//!
//! The graph has one input, `input`, of shape `[batch, *spec.input]` with a symbolic batch
//! dimension (`dim_param = "batch"`; `[T, batch, F]` for a model that reads time-major
//! sequences; int64 for token ids), and one output, `output`. Each layer becomes the nodes
//! named by its dotted path (`block1.conv1`; a layer lowered to several nodes names them
//! `path`, `path/Erf`, …), and the weights are initializers named by their state_dict keys
//! (`fc1.weight`; the recurrent layers' reordered weights are `lstm/W_l0`, `lstm/R_l0`,
//! `lstm/B_l0`). Everything is in evaluation form: BatchNorm uses its running statistics (or
//! the batch's, without them, as PyTorch does) and Dropout is left out. Every layer kind
//! exports; what cannot (a model without an input shape, a missing weight) is an error naming
//! it ([`crate::Error::OnnxExport`], [`crate::Error::OnnxModel`]), never a silently different
//! graph.
//!
//! ```
//! use strata_nn::{Module, spec::ModelSpec, onnx};
//! let spec = ModelSpec::new("mlp").input(&[4]).linear("fc1", 4, 8).relu().linear("fc2", 8, 2);
//! let model = spec.build()?;
//! let bytes = onnx::to_bytes(&spec, &model.state_dict(), &[("strata.mean".into(), "0.5".into())])?;
//! assert!(!bytes.is_empty());
//! # Ok::<(), strata_nn::Error>(())
//! ```

mod export;
pub mod import;
pub mod proto;

pub use export::{IR_VERSION, OPSET, decode, export, to_bytes};
