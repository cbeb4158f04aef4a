//! Learning-rate schedules, evaluated per step from the run's total length: constant, step
//! decay, cosine annealing, one-cycle, each optionally after a linear warm-up. A pure function
//! of the step, so a resumed run continues on exactly the same curve.

/// The shape of the learning-rate curve after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decay {
    /// The base rate throughout.
    Constant,
    /// ×`gamma` every `step_size` epochs (PyTorch's `StepLR`, stepped per epoch).
    Step {
        /// Epochs between decays (at least 1).
        step_size: usize,
        /// The decay factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to `min_lr` over the run (`CosineAnnealingLR`).
    Cosine {
        /// The final rate.
        min_lr: f64,
    },
    /// PyTorch's `OneCycleLR` (cosine, `div_factor` 25, `final_div_factor` 1e4), peaking at the
    /// base rate after `pct_start` of the run.
    OneCycle {
        /// The fraction of the run spent increasing the rate.
        pct_start: f64,
    },
}

/// A learning-rate schedule: a linear warm-up over `warmup_epochs` (fractions allowed), then a
/// [`Decay`]. `Schedule::default()` is the constant rate with no warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// The curve after the warm-up.
    pub decay: Decay,
    /// Epochs of linear warm-up from `base/warmup_steps` to the base rate.
    pub warmup_epochs: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::constant()
    }
}

impl Schedule {
    /// The base rate throughout.
    pub fn constant() -> Schedule {
        Schedule { decay: Decay::Constant, warmup_epochs: 0.0 }
    }

    /// ×`gamma` every `step_size` epochs.
    pub fn step(step_size: usize, gamma: f64) -> Schedule {
        Schedule { decay: Decay::Step { step_size, gamma }, warmup_epochs: 0.0 }
    }

    /// Cosine annealing to `min_lr`.
    pub fn cosine(min_lr: f64) -> Schedule {
        Schedule { decay: Decay::Cosine { min_lr }, warmup_epochs: 0.0 }
    }

    /// One cycle, rising for `pct_start` of the run.
    pub fn one_cycle(pct_start: f64) -> Schedule {
        Schedule { decay: Decay::OneCycle { pct_start }, warmup_epochs: 0.0 }
    }

    /// This schedule after a linear warm-up of `epochs` epochs.
    pub fn warmup(self, epochs: f64) -> Schedule {
        Schedule { warmup_epochs: epochs, ..self }
    }

    /// The schedule's name as run files spell it: `constant`, `step`, `cosine`, `one_cycle`.
    pub fn name(&self) -> &'static str {
        match self.decay {
            Decay::Constant => "constant",
            Decay::Step { .. } => "step",
            Decay::Cosine { .. } => "cosine",
            Decay::OneCycle { .. } => "one_cycle",
        }
    }

    /// Checks the options against what PyTorch's schedulers accept, so a schedule that makes no
    /// sense is refused before the run instead of training on a rate nobody asked for: a warm-up
    /// of a finite number of epochs ≥ 0 and no longer than the run's `epochs`, a `step_size` of at
    /// least 1 epoch and a positive finite `gamma` (`StepLR`), a finite `min_lr` ≥ 0
    /// (`CosineAnnealingLR`'s `eta_min`), a `pct_start` from 0 to 1 (`OneCycleLR`).
    /// [`crate::Trainer::fit`] calls it.
    ///
    /// # Errors
    /// [`crate::Error::InvalidOption`] naming the option, its value and what it must be.
    pub fn validate(&self, epochs: usize) -> crate::Result<()> {
        let bad = |what: String| {
            Err(crate::Error::InvalidOption(format!("the `{}` learning-rate schedule: {what}", self.name())))
        };
        let w = self.warmup_epochs;
        if !(w.is_finite() && w >= 0.0) {
            return bad(format!("warmup_epochs = {w}: a warm-up is a finite number of epochs, 0 or more (0: none)"));
        }
        if w > epochs as f64 {
            return bad(format!(
                "warmup_epochs = {w} is longer than the run's {epochs} epochs, so the rate would never reach the base rate; give at most {epochs}"
            ));
        }
        match self.decay {
            Decay::Constant => Ok(()),
            Decay::Step { step_size: 0, .. } => {
                bad("step_size = 0: the rate decays every step_size epochs, at least 1 (PyTorch's StepLR)".into())
            }
            Decay::Step { gamma, .. } if !(gamma.is_finite() && gamma > 0.0) => {
                bad(format!("gamma = {gamma}: the decay factor must be positive and finite (0.1 is usual)"))
            }
            Decay::Cosine { min_lr } if !(min_lr.is_finite() && min_lr >= 0.0) => {
                bad(format!("min_lr = {min_lr}: the final rate must be finite and 0 or more"))
            }
            Decay::OneCycle { pct_start } if !(0.0..=1.0).contains(&pct_start) => bad(format!(
                "pct_start = {pct_start}: the fraction of the run spent raising the rate is from 0 to 1 (0.3 is usual)"
            )),
            _ => Ok(()),
        }
    }

    /// The learning rate at `step` (0-based) of a run of `total_steps` with `steps_per_epoch`.
    pub fn lr_at(&self, base_lr: f64, step: usize, steps_per_epoch: usize, total_steps: usize) -> f64 {
        let spe = steps_per_epoch.max(1) as f64;
        let warmup = (self.warmup_epochs * spe).round() as usize;
        if step < warmup {
            // Linear warm-up from base/warmup to base, as LinearLR(start_factor=1/warmup) does.
            return base_lr * (step + 1) as f64 / warmup as f64;
        }
        let (t, span) = ((step - warmup) as f64, (total_steps.saturating_sub(warmup)).max(1) as f64);
        match self.decay {
            Decay::Step { step_size, gamma } => {
                // In whole numbers: a step size beyond i32 (or a step count) must not wrap.
                let decays = step / steps_per_epoch.max(1) / step_size.max(1);
                base_lr * gamma.powi(i32::try_from(decays).unwrap_or(i32::MAX))
            }
            Decay::Cosine { min_lr } => {
                min_lr + (base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t / span).cos())
            }
            Decay::OneCycle { pct_start } => {
                let (initial, min) = (base_lr / 25.0, base_lr / 25.0 / 1e4);
                let up = (pct_start * span).max(1.0);
                let cos = |from: f64, to: f64, frac: f64| {
                    to + (from - to) / 2.0 * (1.0 + (std::f64::consts::PI * frac).cos())
                };
                if t < up { cos(initial, base_lr, t / up) } else { cos(base_lr, min, (t - up) / (span - up).max(1.0)) }
            }
            Decay::Constant => base_lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_the_schedules() {
        assert_eq!(Schedule::constant().lr_at(0.1, 57, 10, 100), 0.1);
        let step = Schedule::step(2, 0.5);
        assert_eq!(step.lr_at(0.1, 19, 10, 100), 0.1);
        assert!((step.lr_at(0.1, 20, 10, 100) - 0.05).abs() < 1e-15);
        assert!((Schedule::cosine(0.0).lr_at(0.1, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((Schedule::cosine(0.0).lr_at(0.1, 50, 10, 100) - 0.05).abs() < 1e-12);
        let oc: Vec<f64> = (0..100).map(|s| Schedule::one_cycle(0.3).lr_at(0.1, s, 10, 100)).collect();
        let peak = oc.iter().cloned().fold(0.0, f64::max);
        assert!((peak - 0.1).abs() < 1e-3 && oc[0] < 0.01 && oc[99] < 1e-3);
        let warm = Schedule::constant().warmup(1.0);
        assert!((warm.lr_at(0.1, 4, 10, 100) - 0.05).abs() < 1e-12);
        assert_eq!(warm.lr_at(0.1, 10, 10, 100), 0.1);
    }

    /// A step size beyond `i32` was cast into it: 2^32 became 0 (a division by zero panic) and
    /// `usize::MAX` became -1 (the rate grew ×1/gamma each epoch). It never decays within a run.
    #[test]
    fn a_huge_step_size_neither_panics_nor_wraps() {
        for step_size in [1usize << 32, usize::MAX, (1 << 31) + 1] {
            assert_eq!(Schedule::step(step_size, 0.5).lr_at(0.1, 1000, 10, 2000), 0.1, "{step_size}");
        }
        // Steps beyond i32 epochs: the exponent saturates, the rate underflows to 0.
        assert_eq!(Schedule::step(1, 0.5).lr_at(0.1, usize::MAX, 1, usize::MAX), 0.0);
    }

    /// Parameters PyTorch's schedulers refuse were taken silently (a NaN warm-up was none, a
    /// zero step size was 1, a negative gamma flipped the rate's sign mid-run).
    #[test]
    fn nonsense_parameters_are_refused() {
        let cases = [
            (Schedule::constant().warmup(f64::NAN), "warmup_epochs = NaN: a warm-up is a finite number of epochs"),
            (Schedule::constant().warmup(-1.0), "warmup_epochs = -1: a warm-up"),
            (Schedule::cosine(0.0).warmup(11.0), "warmup_epochs = 11 is longer than the run's 10 epochs"),
            (Schedule::step(0, 0.5), "step_size = 0: the rate decays every step_size epochs, at least 1"),
            (Schedule::step(2, -0.5), "gamma = -0.5: the decay factor must be positive and finite"),
            (Schedule::step(2, f64::INFINITY), "gamma = inf"),
            (Schedule::cosine(f64::NAN), "min_lr = NaN: the final rate must be finite and 0 or more"),
            (Schedule::cosine(-1e-3), "min_lr = -0.001"),
            (
                Schedule::one_cycle(1.5),
                "pct_start = 1.5: the fraction of the run spent raising the rate is from 0 to 1",
            ),
            (Schedule::one_cycle(f64::NAN), "pct_start = NaN"),
        ];
        for (s, want) in cases {
            let e = s.validate(10).unwrap_err().to_string();
            assert!(e.starts_with(&format!("the `{}` learning-rate schedule: ", s.name())) && e.contains(want), "{e}");
        }
        for ok in
            [Schedule::constant(), Schedule::step(1, 0.1), Schedule::cosine(0.0).warmup(10.0), Schedule::one_cycle(0.0)]
        {
            ok.validate(10).unwrap();
        }
    }
}
