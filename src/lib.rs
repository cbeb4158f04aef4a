//! strata: define, check, train and ship small-to-medium neural networks.
//!
//! This facade re-exports the workspace crates: [`core`] (tensors, autograd, ops),
//! [`nn`] (modules, losses, optimizers, state_dicts) and [`data`] (datasets).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use strata_core as core;
pub use strata_data as data;
pub use strata_nn as nn;
