//! Learning-rate schedules, evaluated per step from the run's total length: constant, step
//! decay, cosine annealing, one-cycle, each optionally after a linear warm-up. A pure function
//! of the step, so a resumed run continues on exactly the same curve.

use crate::config::ScheduleConfig;

/// The learning rate at `step` (0-based) of a run of `total_steps` with `steps_per_epoch`.
pub fn lr_at(cfg: &ScheduleConfig, base_lr: f64, step: usize, steps_per_epoch: usize, total_steps: usize) -> f64 {
    let spe = steps_per_epoch.max(1) as f64;
    let warmup = (cfg.warmup_epochs * spe).round() as usize;
    if step < warmup {
        // Linear warm-up from base/warmup to base, as LinearLR(start_factor=1/warmup) does.
        return base_lr * (step + 1) as f64 / warmup as f64;
    }
    let (t, span) = ((step - warmup) as f64, (total_steps.saturating_sub(warmup)).max(1) as f64);
    match cfg.name.as_str() {
        "step" => {
            let epoch = (step as f64 / spe).floor() as i32;
            base_lr * cfg.gamma.powi(epoch / cfg.step_size.max(1) as i32)
        }
        "cosine" => cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t / span).cos()),
        "one_cycle" => {
            // PyTorch's OneCycleLR (cos annealing, div_factor 25, final_div_factor 1e4).
            let (initial, min) = (base_lr / 25.0, base_lr / 25.0 / 1e4);
            let up = (cfg.pct_start * span).max(1.0);
            let cos =
                |from: f64, to: f64, frac: f64| to + (from - to) / 2.0 * (1.0 + (std::f64::consts::PI * frac).cos());
            if t < up { cos(initial, base_lr, t / up) } else { cos(base_lr, min, (t - up) / (span - up).max(1.0)) }
        }
        _ => base_lr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str) -> ScheduleConfig {
        ScheduleConfig { name: name.into(), ..Default::default() }
    }

    #[test]
    fn shapes_of_the_schedules() {
        assert_eq!(lr_at(&cfg("constant"), 0.1, 57, 10, 100), 0.1);
        let step = ScheduleConfig { step_size: 2, gamma: 0.5, ..cfg("step") };
        assert_eq!(lr_at(&step, 0.1, 19, 10, 100), 0.1);
        assert!((lr_at(&step, 0.1, 20, 10, 100) - 0.05).abs() < 1e-15);
        assert!((lr_at(&cfg("cosine"), 0.1, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg("cosine"), 0.1, 50, 10, 100) - 0.05).abs() < 1e-12);
        let oc: Vec<f64> = (0..100).map(|s| lr_at(&cfg("one_cycle"), 0.1, s, 10, 100)).collect();
        let peak = oc.iter().cloned().fold(0.0, f64::max);
        assert!((peak - 0.1).abs() < 1e-3 && oc[0] < 0.01 && oc[99] < 1e-3);
        let warm = ScheduleConfig { warmup_epochs: 1.0, ..cfg("constant") };
        assert!((lr_at(&warm, 0.1, 4, 10, 100) - 0.05).abs() < 1e-12);
        assert_eq!(lr_at(&warm, 0.1, 10, 10, 100), 0.1);
    }
}
