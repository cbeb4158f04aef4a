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
    // Key by key only: the checks across keys added since (a warm-up longer than the run,
    // keep_last = 0) concern training it further, which `--resume` checks after its overrides;
    // a checkpoint that strata wrote before them is still read.
    config.validate_stored().map_err(|e| format!("is out of range: {e}"))?;
    Ok(config.training.epochs)
}

/// Reads a checkpoint: parameters, optimizer state and metadata, all verified.
pub fn load(path: &Path) -> Result<(StateDict, StateDict, Meta)> {
    Ok(strata_train::checkpoint::load_with(path, &run_config)?)
}

/// Refuses a checkpoint whose class names (`strata.classes`) are not one per output of its
/// model (`report`, the check of the model it stores): the names would be matched to the wrong
/// scores, or to none. No names (a run whose data had none) is fine.
pub fn check_class_names(file: &Path, meta: &Meta, report: &strata_nn::CheckReport) -> Result<()> {
    let names = meta.classes.len();
    let Some(output) = report.output.as_ref() else { return Ok(()) };
    let outputs = output.sample_numel();
    if names == 0 || names == outputs {
        return Ok(());
    }
    let shown = match &meta.classes[..] {
        c if c.len() > 6 => format!("{}, …", c[..6].join(", ")),
        c => c.join(", "),
    };
    anyhow::bail!(
        "{}: its metadata names {names} classes (`strata.classes`: {shown}), but its model gives {outputs} scores per sample (output {output}): the names cannot be matched to the model's outputs; the file is damaged or was not written by strata train\nfix: use another checkpoint of the run, or retrain",
        file.display()
    )
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
