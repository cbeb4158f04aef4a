//! strata: define, check, train and ship small-to-medium neural networks.
//!
//! `use strata::prelude::*;` gives the whole API for a training program. The workspace's crates
//! are here under short names:
//!
//! - [`core`] ([`strata_core`]): tensors, autograd, ops on the CPU and GPUs.
//! - [`nn`] ([`strata_nn`]): layers, losses, optimizers, model specs and files, state_dicts.
//! - [`data`] ([`strata_data`]): data sets (MNIST's IDX, CSV, image folders), loaders.
//! - [`train`] ([`strata_train`]): the [`Trainer`](strata_train::Trainer) (Keras' `fit()`),
//!   its callbacks (early stopping, checkpoints, metrics.jsonl and TensorBoard, progress),
//!   schedules and checkpoints.
//!
//! # Example
//! PyTorch's SimpleNN on the MNIST digits embedded in the library, one epoch, with early
//! stopping watching the validation loss:
//!
//! ```
//! use strata::prelude::*;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let (mut train, mut val) = embedded_mnist()?; // 8,000 and 2,000 images [1, 28, 28]
//!     train.normalize(MNIST_MEAN, MNIST_STD)?;
//!     val.normalize(MNIST_MEAN, MNIST_STD)?;
//!
//!     let model = ModelSpec::new("SimpleNN")
//!         .input(&[784])
//!         .linear("fc1", 784, 128)
//!         .relu()
//!         .linear("fc2", 128, 64)
//!         .relu()
//!         .linear("fc3", 64, 10)
//!         .build()?;
//!     let sgd = SGD::with_config(model.parameters(), SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() })?;
//!
//!     let history = Trainer::new(&model, Box::new(sgd))
//!         .loss(CrossEntropyLoss::new())
//!         .epochs(1)
//!         .batch_size(64)
//!         .callback(EarlyStopping::new("val_loss").patience(2).restore_best(true))
//!         .fit(&train, Some(&val))?;
//!
//!     let val = history.last_val().expect("validation data was given");
//!     println!("held-out accuracy {:.2}%", 100.0 * val.accuracy.unwrap_or(0.0));
//!     assert!(val.accuracy.unwrap_or(0.0) > 0.8);
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[doc(inline)]
pub use strata_core as core;
#[doc(inline)]
pub use strata_data as data;
#[doc(inline)]
pub use strata_nn as nn;
#[doc(inline)]
pub use strata_train as train;

/// Everything a training program needs, in one `use`: tensors, layers, losses, optimizers,
/// data sets and loaders, the trainer and its callbacks (see [`strata_train::prelude`]).
pub mod prelude {
    pub use strata_train::prelude::*;
}
