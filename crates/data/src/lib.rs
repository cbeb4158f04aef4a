//! strata-data: data sets and loaders for strata.
//!
//! - [`idx`]: a hardened reader for the IDX format MNIST ships in (raw or gzip), which
//!   validates every header claim before allocating so corrupt or hostile files fail with a
//!   clear [`DataError`] instead of a panic or an out-of-memory abort.
//! - [`Dataset`]: labelled samples in one flat `f32` buffer, with subsetting, a seeded
//!   train/held-out split, normalisation and class counts.
//! - [`load_mnist_dir`]: MNIST from the four standard files in a directory.
//! - [`embedded_mnist`]: the MNIST test set compiled into the binary, split 8,000 / 2,000, so
//!   everything works offline with no download.
//! - [`read_csv`]: numeric CSV data sets (raw or gzip) with header detection and a label column
//!   by name or index; errors give the line and column.
//! - [`ImageFolder`]: PNG/JPEG images in one sub-folder per class, torchvision's layout.
//! - [`transforms`]: per-channel [`compute_stats`] and normalisation, scaling, flattening.
//! - [`augment`]: per-sample image augmentation, torchvision's [`RandomCrop`],
//!   [`RandomHorizontalFlip`], [`RandomAffine`] and [`Normalize`] chained by an [`Augment`]
//!   pipeline, seeded per (seed, epoch, sample) so results never depend on the thread count.
//! - [`DataLoader`]: seeded shuffling, a [`BatchSize`] or the full set per step, drop_last, and
//!   background prefetching ([`DataLoader::epoch_prefetched`]), and augmentation
//!   ([`DataLoader::augment`]) as batches are gathered.
//!
//! Pixels are always returned scaled to `[0, 1]`; normalising (e.g. with [`MNIST_MEAN`] and
//! [`MNIST_STD`]) is the caller's choice.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod augment;
pub mod csv;
pub mod dataset;
pub mod embedded;
pub mod error;
pub mod idx;
pub mod image_folder;
pub mod loader;
pub mod mnist;
pub mod transforms;

pub use augment::{Augment, Normalize, PadMode, RandomAffine, RandomCrop, RandomHorizontalFlip};
pub use csv::{CsvOptions, LabelColumn, MAX_CLASSES, parse_csv, read_csv, read_csv_unlabelled};
pub use dataset::Dataset;
pub use embedded::{EMBEDDED_HOLDOUT, EMBEDDED_SPLIT_SEED, embedded_mnist, embedded_mnist_unsplit};
pub use error::{DataError, Result};
pub use idx::{IdxArray, IdxData, MAX_DIMS, parse_idx, read_idx};
pub use image_folder::{IMAGE_EXTENSIONS, ImageFolder, ImageFolderOptions, MAX_IMAGE_VALUES, load_image};
pub use loader::{Batch, BatchSize, DataLoader, Prefetched};
pub use mnist::{MNIST_MEAN, MNIST_STD, load_mnist_dir};
pub use transforms::compute_stats;
