//! The divergence message with the run file's fixes, and the input layout (strata-train's).

use crate::config::RunConfig;
pub use strata_train::InputLayout;

/// The error of a diverged run: where, what went non-finite, and what to try.
pub(super) fn divergence_message(
    epoch: usize,
    step: usize,
    batch: usize,
    batches: usize,
    report: &str,
    config: &RunConfig,
) -> String {
    let o = &config.optimizer;
    let clip = match config.training.clip_grad_norm {
        Some(c) => format!("a smaller training.clip_grad_norm (now {c})"),
        None => "gradient clipping (training.clip_grad_norm = 1.0, or --set training.clip_grad_norm=1.0)".into(),
    };
    format!(
        "training diverged at epoch {epoch}, step {step} (batch {batch} of {batches}): a non-finite loss, gradient or parameter\n  \
         first non-finite: {report}\n  \
         nothing from this step on was saved (checkpoints and `best` hold the last finite model)\n  \
         try: a lower learning rate (--lr, now {}), {clip}, or training.on_divergence = \"skip\" to skip such steps",
        o.lr
    )
}
