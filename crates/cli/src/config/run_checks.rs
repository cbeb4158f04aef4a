//! The run file's checks across keys, of the run as a whole ([`RunConfig::validate_run`]): a
//! warm-up longer than the run, no step checkpoint kept. Beside the key-by-key checks
//! ([`RunConfig::validate_stored`]), and run with them by [`RunConfig::validate`].

use super::RunConfig;
use anyhow::{Result, bail};

impl RunConfig {
    /// The checks of the run as a whole, across keys: a warm-up longer than the run, no step
    /// checkpoint kept. A checkpoint's stored config is not held to them (it is read by `eval`,
    /// `predict` and `export` as it was written, when strata accepted them); `--resume` checks
    /// them after its overrides, which can fix them (`--epochs`, `--set schedule.…`,
    /// `--set training.keep_last=…` are applied on resume).
    pub fn validate_run(&self) -> Result<()> {
        let (warmup, epochs) = (self.schedule.warmup_epochs, self.training.epochs);
        if warmup > epochs as f64 {
            bail!(
                "schedule.warmup_epochs = {warmup} is longer than the run: training.epochs (--epochs) = {epochs}, so the learning rate would still be warming up when the run ends and never reach optimizer.lr ({}), and the `{}` schedule after it would never start\nfix: give schedule.warmup_epochs at most {epochs} (--set schedule.warmup_epochs=…; a few percent of the run is usual), or train for {} epochs or more (--epochs {})",
                self.optimizer.lr,
                self.schedule.name,
                warmup.ceil(),
                warmup.ceil()
            );
        }
        if self.training.keep_last == 0 {
            bail!(
                "training.keep_last = 0 asks to keep no step checkpoint, but --resume continues a run from its newest one, so strata keeps at least 1\nfix: give training.keep_last = 1 to keep only the newest (--set training.keep_last=1; the default is 3, and best.safetensors is kept besides them), or a number at least as large as the run's checkpoints to keep them all"
            );
        }
        Ok(())
    }
}
