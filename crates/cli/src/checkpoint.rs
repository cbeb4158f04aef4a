//! Checkpoints as the CLI reads them: strata-train's format (see
//! [`strata_train::checkpoint`]), with the run config stored in each one read and range-checked
//! as a run file, so a checkpoint whose config the CLI would refuse is refused by name.

use crate::config::RunConfig;
use anyhow::Result;
use std::path::Path;
use strata_nn::StateDict;
#[cfg(test)]
pub use strata_train::checkpoint::save;
pub use strata_train::checkpoint::{Loaded, Meta, OPTIM_PREFIX, any, best_or_latest, dir};

/// Reads a checkpoint's run config as a run file: its epochs, or why it cannot be used.
fn run_config(text: &str) -> std::result::Result<usize, String> {
    let config: RunConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(String::new(), |s| format!(" (line {})", text[..s.start].lines().count().max(1)));
        format!("does not parse{line}: {}", e.message())
    })?;
    config.validate().map_err(|e| format!("is out of range: {e}"))?;
    Ok(config.training.epochs)
}

/// Reads a checkpoint: parameters, optimizer state and metadata, all verified.
pub fn load(path: &Path) -> Result<(StateDict, StateDict, Meta)> {
    Ok(strata_train::checkpoint::load_with(path, &run_config)?)
}

/// What `--resume` starts from (see [`strata_train::checkpoint::load_for_resume`]).
pub fn load_for_resume(run_or_file: &Path) -> Result<Loaded> {
    Ok(strata_train::checkpoint::load_for_resume_with(run_or_file, &run_config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run config the CLI refuses (a negative learning rate) is refused in a checkpoint too.
    #[test]
    fn the_stored_run_config_is_checked_as_a_run_file() {
        assert_eq!(run_config(&toml::to_string(&RunConfig::default()).unwrap()), Ok(10));
        let e = run_config("[optimizer]\nlr = -1.0\n").unwrap_err();
        assert!(e.starts_with("is out of range:") && e.contains("lr"), "{e}");
        let e = run_config("[training]\nepochs = \"ten\"\n").unwrap_err();
        assert!(e.starts_with("does not parse (line 2)"), "{e}");
    }
}
