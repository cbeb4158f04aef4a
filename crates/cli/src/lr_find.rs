//! `strata lr-find`: the learning-rate range test. From fresh weights, train for a few hundred
//! steps while the learning rate grows exponentially from `--start-lr` to `--end-lr`, record the
//! smoothed loss, stop once it diverges, plot loss against learning rate and suggest a rate:
//! where the loss falls fastest (the steepest slope of loss against log-lr).

use crate::check::Verdict;
use crate::logs::{FONT, HEIGHT, WIDTH, register_plot_font};
use crate::train::{InputLayout, TrainArgs, build};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, FromArgMatches};
use plotters::prelude::*;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use strata_core::{AutocastGuard, Precision};
use strata_data::DataLoader;
use strata_nn::Module;

/// Options of `strata lr-find`: the run (as `strata train` reads it, through the flags that
/// change what the test measures), where the plots go, and the range.
#[derive(Args, Debug)]
pub struct LrFindArgs {
    /// A run file (TOML): model, data, optimizer, training options, as for `strata train`.
    run: Option<PathBuf>,
    /// A model file (overrides the run file's `model`).
    #[arg(long, value_name = "MODEL.toml")]
    model: Option<PathBuf>,
    /// A folder with the four MNIST IDX files (data.source = "mnist", data.path = DIR), or a CSV
    /// file (`*.csv`, `*.csv.gz`: data.source = "csv"), as for `strata train`.
    #[arg(long, value_name = "DIR|FILE.csv")]
    data: Option<PathBuf>,
    /// training.batch_size: a number, or `full` for the whole training set per step.
    #[arg(long, value_name = "N|full")]
    batch_size: Option<String>,
    /// training.seed: the initial weights and the order of the batches.
    #[arg(long)]
    seed: Option<u64>,
    /// training.threads.
    #[arg(long)]
    threads: Option<usize>,
    /// training.dtype: run the test in f32 or f64.
    #[arg(long, value_name = "f32|f64")]
    dtype: Option<String>,
    /// training.device: `cpu`, `gpu` or `gpu:N`.
    #[arg(long, value_name = "cpu|gpu|gpu:N")]
    device: Option<String>,
    /// training.precision: bf16 runs the test with bf16 matrix products, as a bf16 run trains
    /// (the run file's precision otherwise; f32 by default).
    #[arg(long, value_name = "f32|bf16")]
    precision: Option<String>,
    /// Any other key of the run file: `--set optimizer.name=adam --set optimizer.momentum=0.8`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Where to write lr_find.png and lr_find.svg. Absent: the run's directory, as `strata
    /// train` would use it (training.out, else `runs/<run file name>`); with no run file and no
    /// training.out, no plot is written (the suggestion is printed either way).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The first learning rate.
    #[arg(long, default_value_t = 1e-7)]
    start_lr: f64,
    /// The last learning rate.
    #[arg(long, default_value_t = 10.0)]
    end_lr: f64,
    /// Steps over the range (the test stops early when the loss diverges).
    #[arg(long, default_value_t = 200)]
    steps: usize,
}

/// The smoothing of the loss curve (an exponential moving average, bias-corrected).
const BETA: f64 = 0.98;

/// `strata train`'s options for the same run: lr-find's flags handed to train's own parser, so
/// each means exactly what it means to `train` (overrides, validation, messages).
fn train_args(args: &LrFindArgs) -> Result<TrainArgs> {
    // `--flag=value` keeps a value that starts with `-` a value.
    let flag = |name: &str, value: &std::ffi::OsStr| {
        let mut f = OsString::from(format!("--{name}="));
        f.push(value);
        f
    };
    let mut argv = vec![OsString::from("lr-find")];
    let paths = [("model", &args.model), ("data", &args.data)];
    argv.extend(paths.iter().filter_map(|(n, v)| v.as_ref().map(|p| flag(n, p.as_os_str()))));
    let values = [
        ("batch-size", args.batch_size.clone()),
        ("seed", args.seed.map(|s| s.to_string())),
        ("threads", args.threads.map(|t| t.to_string())),
        ("dtype", args.dtype.clone()),
        ("device", args.device.clone()),
        ("precision", args.precision.clone()),
    ];
    argv.extend(values.iter().filter_map(|(n, v)| v.as_ref().map(|v| flag(n, v.as_ref()))));
    argv.extend(args.set.iter().map(|kv| flag("set", kv.as_ref())));
    if let Some(run) = &args.run {
        argv.extend([OsString::from("--"), run.clone().into_os_string()]);
    }
    let command = TrainArgs::augment_args(clap::Command::new("lr-find"));
    let matches = command.try_get_matches_from(argv).map_err(|e| anyhow!("{e}"))?;
    Ok(TrainArgs::from_arg_matches(&matches)?)
}

/// Runs `strata lr-find`.
pub fn run(args: &LrFindArgs) -> Result<Verdict> {
    if !(args.start_lr > 0.0 && args.end_lr > args.start_lr && args.end_lr.is_finite()) {
        bail!("--start-lr and --end-lr must satisfy 0 < start < end, got {} and {}", args.start_lr, args.end_lr);
    }
    if !(args.end_lr / args.start_lr).is_finite() {
        bail!(
            "--end-lr / --start-lr is too large a range ({:e} / {:e}): the rates must stay finite numbers; raise --start-lr",
            args.end_lr,
            args.start_lr
        );
    }
    if args.steps < 10 {
        bail!("--steps must be at least 10, got {}", args.steps);
    }
    let train = train_args(args)?;
    let Some(mut b) = build(&train)? else { return Ok(Verdict::Failed) };
    if b.data.train.is_empty() {
        bail!(
            "the training set is empty ({}): lr-find needs training samples; check data.path and data.validation",
            b.data.description
        );
    }
    // More than the training set asks for one batch of all of it (what the loader gives).
    let batch = b.config.training.batch_size.resolve(b.data.train.len()).min(b.data.train.len());
    let loader = DataLoader::new(&b.data.train, batch).shuffle(b.config.training.seed);
    let layout = InputLayout::of(&b.resolved, &b.sample).on(b.device).labels_on(b.resolved.output_device(b.device));
    let ratio = (args.end_lr / args.start_lr).powf(1.0 / (args.steps - 1) as f64);
    // The products in the run's precision, as `strata train` would run them (validated by `build`).
    let precision = Precision::parse(&b.config.training.precision).expect("validated");
    let _autocast = AutocastGuard::new(precision);
    let (mut avg, mut best) = (0.0, f64::INFINITY);
    let mut points: Vec<(f64, f64)> = vec![];
    'outer: for epoch in 0.. {
        for batch in loader.epoch(epoch) {
            let i = points.len();
            if i == args.steps {
                break 'outer;
            }
            let lr = args.start_lr * ratio.powf(i as f64);
            b.optimizer.set_lr(lr)?;
            b.optimizer.zero_grad()?;
            let loss = b.loss.loss(&b.model.forward(&layout.apply(&batch.x)?)?, &layout.labels(&batch.y)?)?;
            loss.backward()?;
            b.optimizer.step()?;
            let l = loss.item()?;
            avg = BETA * avg + (1.0 - BETA) * l;
            let smoothed = avg / (1.0 - BETA.powi(i as i32 + 1));
            if !smoothed.is_finite() || smoothed > 4.0 * best {
                break 'outer;
            }
            best = best.min(smoothed);
            points.push((lr, smoothed));
        }
    }
    let (steepest, min_loss) = suggest(&points).context("the loss diverged at once: lower --start-lr")?;
    // Where `train` would write this run, unless --out says.
    let run_dir = || {
        let stem = |r: &PathBuf| PathBuf::from("runs").join(r.file_stem().unwrap_or_default());
        b.config.training.out.clone().or_else(|| args.run.as_ref().map(stem))
    };
    let files = match args.out.clone().or_else(run_dir) {
        Some(out) => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            plot(&points, steepest, &out)?
        }
        None => vec![],
    };
    println!(
        "lr-find: {} steps from lr {:.2e} to {:.2e} (batch {batch}{})",
        points.len(),
        args.start_lr,
        points.last().map_or(0.0, |p| p.0),
        if precision == Precision::Bf16 { ", bf16 products" } else { "" }
    );
    println!("  lowest smoothed loss {:.4} at lr {:.2e}", min_loss.1, min_loss.0);
    println!("  steepest descent at lr {:.2e}", steepest.0);
    println!("suggested learning rate: {:.2e}", steepest.0);
    if files.is_empty() {
        println!("plots: none written (--out DIR writes lr_find.png and lr_find.svg there)");
    } else {
        println!("plots: {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(Verdict::Ok)
}

/// The point of steepest descent (most negative slope of loss against log-lr, before the
/// minimum) and the point of minimum loss.
fn suggest(points: &[(f64, f64)]) -> Option<((f64, f64), (f64, f64))> {
    let min_i = (0..points.len()).min_by(|&a, &b| points[a].1.total_cmp(&points[b].1))?;
    let slope = |i: usize| (points[i + 1].1 - points[i].1) / (points[i + 1].0.ln() - points[i].0.ln());
    // Skip the first tenth: the smoothing has not settled there.
    let start = points.len() / 10;
    let steep = (start..min_i.max(start + 1).min(points.len().saturating_sub(1)))
        .min_by(|&a, &b| slope(a).total_cmp(&slope(b)));
    Some((points[steep.unwrap_or(min_i)], points[min_i]))
}

fn plot(points: &[(f64, f64)], mark: (f64, f64), out: &Path) -> Result<Vec<PathBuf>> {
    register_plot_font();
    let (png, svg) = (out.join("lr_find.png"), out.join("lr_find.svg"));
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, points, mark).map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
    }
    image::save_buffer_with_format(&png, &pixels, WIDTH, HEIGHT, image::ColorType::Rgb8, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", png.display()))?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, points, mark).map_err(|e| anyhow!("drawing {}: {e}", svg.display()))?;
    }
    std::fs::write(&svg, text).with_context(|| format!("writing {}", svg.display()))?;
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    points: &[(f64, f64)],
    mark: (f64, f64),
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (x0, x1) = (points.first().map_or(1e-7, |p| p.0), points.last().map_or(1.0, |p| p.0).max(points[0].0 * 10.0));
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.05;
    let y_min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) * 0.95;
    // A flat curve at 0 (a loss that cannot fall) still needs an axis.
    let y_max = if y_max > y_min { y_max } else { y_min + 1.0 };
    let mut ctx = ChartBuilder::on(root)
        .caption("Learning-rate range test", (FONT, 26))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((x0..x1).log_scale(), y_min..y_max)?;
    ctx.configure_mesh()
        .x_desc("learning rate (log scale)")
        .y_desc("smoothed training loss")
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    let blue = RGBColor(0, 114, 178);
    ctx.draw_series(LineSeries::new(points.iter().copied(), blue.stroke_width(2)))?
        .label("loss")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    let orange = RGBColor(213, 94, 0);
    ctx.draw_series(std::iter::once(Circle::new(mark, 7, orange.filled())))?
        .label(format!("suggested {:.1e}", mark.0))
        .legend(move |(x, y)| Circle::new((x + 10, y), 5, orange.filled()));
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()?;
    root.present()
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn suggestion_is_the_steepest_descent_before_the_minimum() {
        // Flat, then a steep drop around 1e-3, a minimum at 1e-2, then divergence.
        let lrs: Vec<f64> = (0..50).map(|i| 1e-6 * 10f64.powf(i as f64 / 10.0)).collect();
        let loss = |lr: f64| {
            if lr < 1e-4 {
                2.3
            } else if lr < 1e-2 {
                2.3 - 0.5 * (lr.log10() + 4.0)
            } else {
                1.3 + (lr.log10() + 2.0)
            }
        };
        let points: Vec<(f64, f64)> = lrs.iter().map(|&l| (l, loss(l))).collect();
        let (steep, min) = suggest(&points).unwrap();
        assert!((min.0.log10() - (-2.0)).abs() < 0.11, "{min:?}");
        assert!(steep.0 >= 1e-4 && steep.0 < 1e-2, "{steep:?}");
    }
}
