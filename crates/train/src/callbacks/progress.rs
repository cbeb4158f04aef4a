//! A progress bar per epoch on the terminal (indicatif): position, running loss and accuracy,
//! samples per second and the time left; nothing when stdout is not a terminal.

use crate::callback::{Callback, Control, EpochLog, Outcome, Progress, StepLog};
use crate::error::Result;
use std::io::IsTerminal;
use strata_nn::summary::group_digits;

/// Draws one bar per epoch, fitted to the terminal's width, cleared at the epoch's end.
#[derive(Default)]
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressBar {
    /// A bar drawn only when stdout is a terminal.
    pub fn new() -> ProgressBar {
        ProgressBar::default()
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Callback for ProgressBar {
    fn on_epoch_start(&mut self, p: &Progress) -> Result<()> {
        if !std::io::stdout().is_terminal() {
            return Ok(());
        }
        let s = p.state;
        let bar = indicatif::ProgressBar::new(s.steps_per_epoch as u64).with_position(s.batch as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                // `wide_bar` takes what the terminal's width leaves, so the line never wraps.
                "epoch {:>2}/{} [{{wide_bar}}] {{pos}}/{{len}} {{msg}} ETA {{eta}}",
                s.epoch + 1,
                s.epochs
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        self.bar = Some(bar);
        Ok(())
    }

    fn on_step_end(&mut self, _p: &Progress, s: &StepLog) -> Result<Control> {
        if let Some(bar) = &self.bar {
            bar.set_position(s.batch as u64);
            let acc = s.running_acc.map_or(String::new(), |a| format!("  acc {:5.2}%", 100.0 * a));
            bar.set_message(format!(
                "loss {:.4}{acc}  {} samples/s",
                s.running_loss,
                group_digits(s.samples_per_s as usize)
            ));
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, _p: &Progress, _e: &EpochLog) -> Result<Control> {
        self.clear();
        Ok(Control::Continue)
    }

    fn on_fit_end(&mut self, _p: &Progress, _o: &Outcome) -> Result<()> {
        self.clear();
        Ok(())
    }
}
