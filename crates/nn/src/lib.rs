//! strata-nn: modules (`Linear`, `ReLU`, `Flatten`, `Sequential`), losses
//! (`CrossEntropyLoss`), optimizers (`SGD`, `Adam`, `AdamW` with `torch.optim`'s exact rules),
//! initialisation and state_dicts in safetensors with PyTorch's names and layouts.

pub mod activation;
pub mod check;
pub mod error;
pub mod flatten;
pub mod init;
pub mod linear;
pub mod loss;
pub mod model_file;
pub mod models;
pub mod module;
pub mod optim;
pub mod sequential;
pub mod spec;
pub mod state_dict;
pub mod summary;

pub use activation::ReLU;
pub use check::{CheckReport, SymShape};
pub use error::{Error, Result};
pub use flatten::Flatten;
pub use linear::Linear;
pub use loss::CrossEntropyLoss;
pub use models::SimpleNN;
pub use module::Module;
pub use optim::{Adam, AdamConfig, AdamW, Optimizer, SGD, SgdConfig};
pub use sequential::Sequential;
pub use spec::{LayerSpec, ModelSpec};
pub use state_dict::StateDict;
pub use summary::Summary;
