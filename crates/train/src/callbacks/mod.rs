//! The callbacks strata ships: [`EarlyStopping`], [`Checkpointing`], [`MetricsLog`]
//! (metrics.jsonl and TensorBoard) and [`ProgressBar`].

mod checkpointing;
mod early_stopping;
mod metrics_log;
mod progress;

pub use checkpointing::Checkpointing;
pub use early_stopping::{EarlyStopping, MONITORS, Mode};
pub use metrics_log::MetricsLog;
pub use progress::ProgressBar;
