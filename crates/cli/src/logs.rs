//! `strata logs RUN_DIR...`: reads each run's `metrics.jsonl`, prints a summary (best epoch,
//! final metrics, test accuracy, time) and draws the loss and accuracy curves of all the runs,
//! overlaid, as `loss.{png,svg}` and `accuracy.{png,svg}`.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Once;

use crate::check::Verdict;

/// Options of `strata logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Run directories, each holding the `metrics.jsonl` that `strata train` writes.
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Where to write loss.png, loss.svg, accuracy.png and accuracy.svg (default: the first
    /// run directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Runs `strata logs`.
pub fn run(args: &LogsArgs) -> Result<Verdict> {
    let mut runs = args.runs.iter().map(|dir| Run::load(dir)).collect::<Result<Vec<_>>>()?;
    disambiguate_names(&mut runs);
    for (i, run) in runs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", run.summary());
    }
    if runs.len() > 1 {
        println!();
        print!("{}", comparison(&runs));
    }
    let out = args.out.clone().unwrap_or_else(|| args.runs[0].clone());
    std::fs::create_dir_all(&out).with_context(|| format!("creating the output directory {}", out.display()))?;
    let written = plot(&runs, &out)?;
    println!();
    println!("plots: {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(Verdict::Ok)
}

// ---------------------------------------------------------------------------------------------
// Reading metrics.jsonl

/// One line of `metrics.jsonl`; every figure may be absent or null. Unknown fields and unknown
/// events (`start`, `done`) are ignored, so that newer writers stay readable. The event's name
/// is `event` (runs written before 2026-12 called it `kind`; both are read).
#[derive(Deserialize, Debug, Default, Clone)]
struct Record {
    #[serde(default, alias = "event")]
    kind: Option<String>,
    epoch: Option<u64>,
    step: Option<u64>,
    loss: Option<f64>,
    train_loss: Option<f64>,
    train_acc: Option<f64>,
    val_loss: Option<f64>,
    val_acc: Option<f64>,
    test_loss: Option<f64>,
    test_acc: Option<f64>,
    samples_per_s: Option<f64>,
    time_s: Option<f64>,
}

/// A run directory's records, by kind.
struct Run {
    name: String,
    file: PathBuf,
    steps: Vec<Record>,
    epochs: Vec<Record>,
    test: Option<Record>,
    /// Wall time: `time_s` restarts from 0 when a run is resumed, so the run's time is the sum
    /// of each session's last `time_s`.
    time: Time,
}

#[derive(Default)]
struct Time {
    finished_sessions: f64,
    session: Option<f64>,
}

impl Time {
    fn add(&mut self, t: f64) {
        match self.session {
            Some(last) if t < last => {
                self.finished_sessions += last;
                self.session = Some(t);
            }
            _ => self.session = Some(self.session.map_or(t, |last| last.max(t))),
        }
    }

    fn total(&self) -> Option<f64> {
        self.session.map(|s| self.finished_sessions + s)
    }
}

impl Run {
    fn load(dir: &Path) -> Result<Run> {
        let file = dir.join("metrics.jsonl");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.is_dir() => {
                bail!("{} is not a run directory (it does not exist)", dir.display())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{} has no metrics.jsonl: is it a strata run directory?", dir.display())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let mut run = Run {
            name: run_name(dir),
            file: file.clone(),
            steps: vec![],
            epochs: vec![],
            test: None,
            time: Time::default(),
        };
        let mut records = 0;
        let lines = text.lines().count();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // A last line without its newline whose JSON ends before it is complete was cut
            // short (a run stopped while writing it: a power cut, a full disk): left out, said on
            // stderr (a resume drops it from the log too). Any other bad line is an error.
            if i + 1 == lines
                && !text.ends_with('\n')
                && serde_json::from_str::<serde_json::Value>(line).is_err_and(|e| e.is_eof())
            {
                eprintln!(
                    "{}:{}: the last line is cut short (the run stopped while writing it); left out",
                    file.display(),
                    i + 1
                );
                continue;
            }
            let record: Record = serde_json::from_str(line).map_err(|e| {
                let mut msg = e.to_string();
                if let Some(at) = msg.rfind(" at line ") {
                    msg.truncate(at); // the position is given below, as file:line:column
                }
                anyhow!("{}:{}:{}: not a metrics record: {msg}", file.display(), i + 1, e.column())
            })?;
            records += 1;
            run.add(record);
        }
        if records == 0 {
            bail!("{} holds no records yet", file.display());
        }
        Ok(run)
    }

    /// Files a record. A resumed run logs again from its checkpoint: a step or epoch that is not
    /// after the last one logged replaces the records from that point on.
    fn add(&mut self, r: Record) {
        if let Some(t) = finite(r.time_s) {
            self.time.add(t);
        }
        match r.kind.as_deref().unwrap_or_default() {
            "step" => {
                if let Some(s) = r.step {
                    while self.steps.last().and_then(|l| l.step).is_some_and(|l| l >= s) {
                        self.steps.pop();
                    }
                }
                self.steps.push(r);
            }
            "epoch" => {
                if let Some(e) = r.epoch {
                    while self.epochs.last().and_then(|l| l.epoch).is_some_and(|l| l >= e) {
                        self.epochs.pop();
                    }
                }
                self.epochs.push(r);
            }
            "test" => self.test = Some(r),
            _ => {}
        }
    }

    /// The epoch number of the `i`-th epoch record (1-based by position when absent).
    fn epoch_of(&self, i: usize) -> f64 {
        self.epochs[i].epoch.unwrap_or(i as u64 + 1) as f64
    }

    /// The best epoch: highest validation accuracy, or lowest validation loss when no accuracy
    /// was logged.
    fn best(&self) -> Option<(usize, &Record)> {
        let by_acc = self.epochs.iter().enumerate().filter(|(_, r)| finite(r.val_acc).is_some());
        if let Some(best) = by_acc.max_by(|a, b| a.1.val_acc.partial_cmp(&b.1.val_acc).unwrap().then(b.0.cmp(&a.0))) {
            return Some(best);
        }
        let by_loss = self.epochs.iter().enumerate().filter(|(_, r)| finite(r.val_loss).is_some());
        by_loss.min_by(|a, b| a.1.val_loss.partial_cmp(&b.1.val_loss).unwrap().then(a.0.cmp(&b.0)))
    }

    fn total_steps(&self) -> Option<u64> {
        self.epochs.iter().chain(&self.steps).chain(&self.test).filter_map(|r| r.step).max()
    }

    fn summary(&self) -> String {
        let mut s = format!("{} ({})\n", self.name, self.file.display());
        let steps = self.total_steps().map(|n| format!(", {} steps", group(n))).unwrap_or_default();
        s += &format!("  epochs   {}{steps}\n", self.epochs.len());
        match self.best() {
            Some((i, r)) => {
                s += &format!(
                    "  best     epoch {}:{}\n",
                    self.epoch_of(i),
                    metrics(&[("val acc", r.val_acc, true), ("val loss", r.val_loss, false)])
                )
            }
            None => s += "  best     - (no validation metrics logged)\n",
        }
        if let Some(r) = self.epochs.last() {
            let m = metrics(&[
                ("train loss", r.train_loss, false),
                ("train acc", r.train_acc, true),
                ("val loss", r.val_loss, false),
                ("val acc", r.val_acc, true),
            ]);
            s += &format!("  final    epoch {}:{m}\n", self.epoch_of(self.epochs.len() - 1));
        } else if let Some(r) = self.steps.last() {
            let at = r.step.map(|n| format!("step {}", group(n))).unwrap_or_else(|| "last step".into());
            s += &format!("  final    {at}:{}\n", metrics(&[("train loss", r.loss, false)]));
        }
        if let Some(r) = &self.test {
            let m = metrics(&[("acc", r.test_acc, true), ("loss", r.test_loss, false)]);
            s += &format!("  test     {}\n", m.trim_start());
        }
        let speed = self.epochs.iter().filter_map(|r| finite(r.samples_per_s)).collect::<Vec<_>>();
        let speed = if speed.is_empty() {
            String::new()
        } else {
            format!(", {} samples/s on average", group((speed.iter().sum::<f64>() / speed.len() as f64).round() as u64))
        };
        match self.time.total() {
            Some(t) => s += &format!("  time     {}{speed}\n", duration(t)),
            None => s += &format!("  time     -{speed}\n"),
        }
        s
    }
}

/// A run's name: its directory's name (`.` and `..` resolved).
fn run_name(dir: &Path) -> String {
    let named = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    named
        .or_else(|| dir.canonicalize().ok()?.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// Runs from different parents may share a directory name; those are named by their path.
fn disambiguate_names(runs: &mut [Run]) {
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    for run in runs.iter_mut() {
        if names.iter().filter(|n| **n == run.name).count() > 1 {
            run.name = run.file.parent().map(|p| p.display().to_string()).unwrap_or_default();
        }
    }
}

fn comparison(runs: &[Run]) -> String {
    let header = ["run", "epochs", "best val acc", "final val loss", "test acc", "time"];
    let rows: Vec<[String; 6]> = runs
        .iter()
        .map(|r| {
            let best = r.best().map_or("-".into(), |(i, b)| match finite(b.val_acc) {
                Some(a) => format!("{} (epoch {})", percent(a), r.epoch_of(i)),
                None => "-".into(),
            });
            let final_val_loss =
                r.epochs.last().and_then(|e| finite(e.val_loss)).map_or("-".into(), |l| format!("{l:.4}"));
            let test = r.test.as_ref().and_then(|t| finite(t.test_acc)).map_or("-".into(), percent);
            [
                r.name.clone(),
                r.epochs.len().to_string(),
                best,
                final_val_loss,
                test,
                r.time.total().map_or("-".into(), duration),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // The name column is left-aligned, the figures right-aligned.
            let pad = " ".repeat(w - cell.chars().count());
            l += &if i == 0 { format!("  {cell}{pad}") } else { format!("  {pad}{cell}") };
        }
        l.trim_end().to_string() + "\n"
    };
    let mut s = line(header.to_vec());
    for row in &rows {
        s += &line(row.iter().map(String::as_str).collect());
    }
    s
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// `  name value` for each figure that was logged; accuracies as percentages.
fn metrics(items: &[(&str, Option<f64>, bool)]) -> String {
    let mut s = String::new();
    for &(name, value, is_acc) in items {
        if let Some(v) = finite(value) {
            s += &if is_acc { format!("  {name} {}", percent(v)) } else { format!("  {name} {v:.4}") };
        }
    }
    if s.is_empty() { "  -".into() } else { s }
}

fn percent(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        let m = (seconds / 60.0).floor();
        let h = (m / 60.0).floor();
        if h >= 1.0 {
            format!("{h:.0} h {:02.0} min ({seconds:.0} s)", m - h * 60.0)
        } else {
            format!("{m:.0} min {:02.0} s ({seconds:.0} s)", (seconds - m * 60.0).floor())
        }
    }
}

fn group(n: u64) -> String {
    strata_nn::summary::group_digits(n as usize)
}

// ---------------------------------------------------------------------------------------------
// Plots

pub(crate) const WIDTH: u32 = 960;
pub(crate) const HEIGHT: u32 = 600;
pub(crate) const FONT: &str = "sans-serif";

/// Colour-blind-safe colours (Okabe–Ito), one per run.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// How a curve is drawn: per-step training figures are thin and pale, per-epoch figures are
/// solid with a dot per epoch, the test result is one triangle.
#[derive(Clone, Copy)]
enum Look {
    Steps,
    Train,
    Val,
    Test,
}

struct Curve {
    label: String,
    color: RGBColor,
    look: Look,
    points: Vec<(f64, f64)>,
}

struct Chart {
    title: &'static str,
    y_desc: &'static str,
    curves: Vec<Curve>,
    /// The y axis always reaches 100 (accuracy in percent) rather than the highest point.
    percent: bool,
}

/// Draws `loss.*` and `accuracy.*` into `out`; returns the files written.
fn plot(runs: &[Run], out: &Path) -> Result<Vec<PathBuf>> {
    register_plot_font();
    let mut written = Vec::new();
    for (stem, chart) in [("loss", loss_chart(runs)), ("accuracy", accuracy_chart(runs))] {
        let png = out.join(format!("{stem}.png"));
        let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
            draw(&root, &chart).map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
        }
        image::save_buffer_with_format(&png, &pixels, WIDTH, HEIGHT, image::ColorType::Rgb8, image::ImageFormat::Png)
            .with_context(|| format!("writing {}", png.display()))?;
        written.push(png);

        let svg = out.join(format!("{stem}.svg"));
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, (WIDTH, HEIGHT)).into_drawing_area();
            draw(&root, &chart).map_err(|e| anyhow!("drawing {}: {e}", svg.display()))?;
        }
        std::fs::write(&svg, text).with_context(|| format!("writing {}", svg.display()))?;
        written.push(svg);
    }
    Ok(written)
}

/// Registers the compiled-in DejaVu Sans as the plots' font (once per process), so plots have
/// text on machines without any fonts.
pub(crate) fn register_plot_font() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).ok().expect("DejaVu Sans is a valid font");
    });
}

/// Where each step record falls on an epoch axis: step s of epoch e is at
/// `(e - 1) + (s - end of epoch e-1) / (steps in epoch e)`, so runs with different batch sizes
/// line up. Epochs still running take the length of the last finished one.
fn step_positions(run: &Run) -> Vec<(f64, f64)> {
    let ends: Vec<(u64, u64)> =
        run.epochs.iter().enumerate().filter_map(|(i, r)| Some((r.epoch.unwrap_or(i as u64 + 1), r.step?))).collect();
    let end_of = |e: u64| ends.iter().find(|(ep, _)| *ep == e).map(|(_, s)| *s);
    let last_len = ends.windows(2).last().map(|w| w[1].1.saturating_sub(w[0].1)).or(ends.first().map(|e| e.1));
    run.steps
        .iter()
        .filter_map(|r| {
            let (loss, step, epoch) = (finite(r.loss)?, r.step?, r.epoch?);
            let start = if epoch <= 1 { 0 } else { end_of(epoch - 1)? };
            let len = match end_of(epoch) {
                Some(end) => end.saturating_sub(start),
                None => last_len?,
            };
            let into = step.saturating_sub(start) as f64 / len.max(1) as f64;
            Some(((epoch - 1) as f64 + into.min(1.0), loss))
        })
        .collect()
}

/// Falls back to raw step numbers (scaled to the epoch axis) when epochs cannot place the steps.
fn step_curve(run: &Run) -> Vec<(f64, f64)> {
    let placed = step_positions(run);
    if !placed.is_empty() || run.steps.is_empty() {
        return placed;
    }
    let max_step = run.steps.iter().filter_map(|r| r.step).max().unwrap_or(1).max(1) as f64;
    let epochs = run.epochs.len().max(1) as f64;
    run.steps.iter().filter_map(|r| Some((r.step? as f64 / max_step * epochs, finite(r.loss)?))).collect()
}

fn epoch_curve(run: &Run, field: impl Fn(&Record) -> Option<f64>, scale: f64) -> Vec<(f64, f64)> {
    (0..run.epochs.len()).filter_map(|i| Some((run.epoch_of(i), finite(field(&run.epochs[i]))? * scale))).collect()
}

fn loss_chart(runs: &[Run]) -> Chart {
    let mut curves = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let steps = step_curve(run);
        let (train, look) = if steps.is_empty() {
            (epoch_curve(run, |r| r.train_loss, 1.0), Look::Train)
        } else {
            (steps, Look::Steps)
        };
        curves.push(Curve { label: format!("{} train", run.name), color, look, points: train });
        curves.push(Curve {
            label: format!("{} val", run.name),
            color,
            look: Look::Val,
            points: epoch_curve(run, |r| r.val_loss, 1.0),
        });
        if let Some(t) = &run.test
            && let Some(loss) = finite(t.test_loss)
        {
            let x = t.epoch.map(|e| e as f64).unwrap_or(run.epochs.len() as f64);
            curves.push(Curve {
                label: format!("{} test", run.name),
                color,
                look: Look::Test,
                points: vec![(x, loss)],
            });
        }
    }
    Chart { title: "Loss", y_desc: "loss", curves, percent: false }
}

fn accuracy_chart(runs: &[Run]) -> Chart {
    let mut curves = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let train = epoch_curve(run, |r| r.train_acc, 100.0);
        curves.push(Curve { label: format!("{} train", run.name), color, look: Look::Train, points: train });
        let val = epoch_curve(run, |r| r.val_acc, 100.0);
        curves.push(Curve { label: format!("{} val", run.name), color, look: Look::Val, points: val });
        if let Some(t) = &run.test
            && let Some(acc) = finite(t.test_acc)
        {
            let x = t.epoch.map(|e| e as f64).unwrap_or(run.epochs.len() as f64);
            let points = vec![(x, acc * 100.0)];
            curves.push(Curve { label: format!("{} test", run.name), color, look: Look::Test, points });
        }
    }
    Chart { title: "Accuracy", y_desc: "accuracy (%)", curves, percent: true }
}

/// An axis label: `3` rather than `3.0`, `0.25` rather than `0.250`.
fn tick(v: &f64) -> String {
    let v = if v.abs() < 5e-4 { 0.0 } else { *v }; // no "-0"
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let points = || chart.curves.iter().flat_map(|c| c.points.iter());
    // A little room on the right, so that the last epoch's markers are not cut in half.
    let x_max = points().map(|p| p.0).fold(1.0, f64::max).ceil() * 1.03;
    let (y_min, y_max) = if chart.percent {
        let low = points().map(|p| p.1).fold(100.0, f64::min);
        // Start at a round number below the lowest point, so that late epochs are not squashed.
        (((low - 1.0) / 5.0).floor().max(0.0) * 5.0, 100.0)
    } else {
        let high = points().map(|p| p.1).fold(0.0, f64::max);
        (0.0, if high > 0.0 { high * 1.05 } else { 1.0 })
    };
    let mut ctx = ChartBuilder::on(root)
        .caption(chart.title, (FONT, 26))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, y_min..y_max)?;
    ctx.configure_mesh()
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .x_desc("epoch")
        .y_desc(chart.y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    for curve in chart.curves.iter().filter(|c| !c.points.is_empty()) {
        let color = curve.color;
        let data = curve.points.iter().copied();
        match curve.look {
            Look::Steps => {
                ctx.draw_series(LineSeries::new(data, color.mix(0.45).stroke_width(1)))?
                    .label(&curve.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.45).stroke_width(1)));
            }
            Look::Train => {
                let style = color.mix(0.8).stroke_width(2);
                ctx.draw_series(DashedLineSeries::new(data, 6, 4, style))?.label(&curve.label).legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (8, 0)], style)
                        + PathElement::new(vec![(12, 0), (20, 0)], style)
                });
            }
            Look::Val => {
                ctx.draw_series(LineSeries::new(data.clone(), color.stroke_width(3)))?
                    .label(&curve.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
                ctx.draw_series(data.map(|p| Circle::new(p, 4, color.filled())))?;
            }
            Look::Test => {
                ctx.draw_series(data.map(|p| TriangleMarker::new(p, 8, color.filled())))?
                    .label(&curve.label)
                    .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, color.filled()));
            }
        }
    }
    ctx.configure_series_labels()
        .position(if chart.percent { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight })
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()?;
    root.present()
}
