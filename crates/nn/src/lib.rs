//! strata-nn: modules (`Linear`, `ReLU`, `Flatten`, `Sequential`), losses
//! (`CrossEntropyLoss`, …, chosen by name with `LossConfig`), optimizers (`SGD`, `Adam`, `AdamW`,
//! `RMSprop`, `Adagrad` with `torch.optim`'s exact rules), initialisation and state_dicts in
//! safetensors with PyTorch's names and layouts, and classification metrics (`metrics`:
//! confusion matrix, F1, top-k accuracy).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod activation;
pub mod batch_norm;
pub mod branches;
pub mod build;
pub mod check;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod error;
pub mod flatten;
pub mod group_norm;
pub mod init;
pub mod layer;
pub mod layer_norm;
pub mod linear;
pub mod loss;
pub mod loss_config;
pub mod metrics;
pub mod model_file;
pub mod models;
pub mod module;
pub mod onnx;
pub mod optim;
pub mod pool;
pub mod pool1d;
pub mod recurrent;
pub mod registry;
pub mod residual;
pub mod sequential;
pub mod spec;
pub mod state_dict;
pub mod summary;
pub mod torch_file;

pub use activation::{
    ELU, GELU, Hardsigmoid, Hardswish, LeakyReLU, LogSoftmax, Mish, ReLU, ReLU6, SiLU, Sigmoid, Softmax, Tanh,
};
pub use batch_norm::{BatchNorm, BatchNorm1d, BatchNorm2d, BatchNormConfig};
pub use branches::{Branches, Merge};
pub use check::{CheckReport, SymShape};
pub use conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, IntoPadding, IntoPair, Padding, same_padding};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use error::{Error, Result};
pub use flatten::Flatten;
pub use layer::{Layer, LayerKind};
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use linear::Linear;
pub use loss::{BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss, NLLLoss};
pub use loss_config::{LossConfig, OneHotTargets};
pub use models::SimpleNN;
pub use module::Module;
pub use optim::{Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, Optimizer, RMSprop, RMSpropConfig, SGD, SgdConfig};
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
pub use pool1d::{AdaptiveAvgPool1d, AvgPool1d, MaxPool1d};
pub use recurrent::{CellWeights, GRU, LSTM, LastStep, Nonlinearity, RNN, RecurrentOptions};
pub use residual::Residual;
pub use sequential::Sequential;
pub use spec::{LayerSpec, ModelSpec};
pub use state_dict::StateDict;
pub use summary::Summary;
