//! Pipelined training across a placed model's stages (GPipe, Huang et al. 2019):
//! [`crate::Trainer::pipeline_chunks`].
//!
//! A model whose layers sit on several devices is cut into *stages* where the placement changes
//! ([`strata_nn::Sequential::stages`]). Without pipelining a batch goes through the stages one
//! after another, so each device idles while the others work. With `k` chunks the batch is cut
//! into `k` micro-batches ([`crate::parallel`]'s split) and each stage runs on its own thread:
//! stage `s` computes micro-batch `c` while stage `s + 1` computes micro-batch `c − 1`. Every
//! stage runs all its forwards, then all its backwards (GPipe's schedule), so a step takes about
//! `(k + S − 1)` micro-batch slots of the slowest stage instead of `k · S`.
//!
//! **The numbers.** Micro-batch `c`'s gradient is its mean loss's, each stage reads its own
//! parameters' share of it and combines the micro-batches in order with
//! [`crate::parallel::Accumulator`] — element by element what accumulation over `k`
//! micro-batches computes, so a pipelined run equals `accumulate = k` bit for bit (losses,
//! weights, BatchNorm statistics, Dropout masks: micro-batch `c` draws call `base + c` of each
//! stream, as in accumulation). Only the order in which independent work happens changes.
//!
//! **Between stages.** Stage `s` moves its output, detached from the graph, to stage `s + 1`'s
//! device and hands it over; stage `s + 1` makes it a leaf that requires grad, runs its layers,
//! and after its backward hands the leaf's gradient back; stage `s` moves it to its own device
//! and continues backward from its output with it ([`Tensor::backward_with_grad`]). Moves are
//! exact, so this is the whole graph's backward through the same values. A stage's error stops the
//! step; the others see their neighbour gone and stop too, and the first real error is returned.

use crate::error::{Error, Result};
use crate::evaluate::count_correct;
use crate::parallel::{Accumulator, GradBuffer, streams_at};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, channel};
use strata_core::{Device, Precision, Tensor, autocast};
use strata_nn::{Loss, Module, Sequential};

/// One non-empty micro-batch of a step: its index `k` in the batch, the model's input (on the
/// input's device) and the labels (on the output's device).
pub(crate) struct Chunk {
    /// Its position in the batch (the combination's order and Dropout's stream offset).
    pub k: usize,
    /// The model's input for it.
    pub input: Tensor,
    /// Its labels.
    pub labels: Tensor,
}

/// What a pipelined step reports per micro-batch: its index, its mean loss and the correct
/// predictions (`None`: not a classifier's output).
pub(crate) type ChunkStats = (usize, f64, Option<usize>);

/// How a step is combined and run: the coefficients and divisor of
/// [`crate::parallel::coefficients`] (indexed by micro-batch), Dropout's streams at the step's
/// start (`None`: the model draws none), and the precision of the matrix products.
pub(crate) struct StepPlan<'a> {
    /// `c_k` per micro-batch.
    pub coeffs: &'a [f64],
    /// `D`.
    pub divisor: f64,
    /// The model's extra state before the step, when it has random streams.
    pub streams: Option<&'a BTreeMap<String, String>>,
    /// The trainer's precision, set on every stage's thread.
    pub precision: Precision,
}

/// A stage's message to its neighbour: micro-batch `k`'s activation (forward) or the gradient
/// of it (backward).
type Message = (usize, Tensor);

/// Why a stage stopped: its own error, or a neighbour that stopped first.
enum Stop {
    Failed(Error),
    NeighbourGone,
}

impl<E: Into<Error>> From<E> for Stop {
    fn from(e: E) -> Stop {
        Stop::Failed(e.into())
    }
}

/// `model` as the chain pipelining cuts into stages, when it is one.
pub(crate) fn chain(model: &dyn Module) -> Option<&Sequential> {
    model.as_any().and_then(|m| m.downcast_ref::<Sequential>())
}

/// Runs one training step's micro-batches `chunks` (in order) through `model`'s `stages`
/// (ranges of its layers, in order, covering it) pipelined, each stage on its own thread. On
/// success every parameter holds the step's combined gradient; returns each micro-batch's stats
/// in order.
pub(crate) fn step(
    model: &Sequential,
    stages: &[Range<usize>],
    chunks: &[Chunk],
    loss_fn: &dyn Loss,
    plan: &StepPlan<'_>,
) -> Result<Vec<ChunkStats>> {
    let n = stages.len();
    // Between stages s − 1 and s: a forward channel and a backward one.
    let mut links: Vec<Links> = (0..n).map(|_| Links::default()).collect();
    for s in 1..n {
        let (tx, rx) = channel();
        links[s - 1].to_next = Some(tx);
        links[s].from_prev = Some(rx);
        let (tx, rx) = channel();
        links[s].to_prev = Some(tx);
        links[s - 1].from_next = Some(rx);
    }
    let results: Vec<std::thread::Result<std::result::Result<Vec<ChunkStats>, Stop>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = stages
            .iter()
            .zip(links)
            .enumerate()
            .map(|(s, (range, links))| {
                let stage = Stage {
                    range: range.clone(),
                    // Where the next stage's first layer is placed (every stage after the
                    // first starts with a placed layer).
                    next_device: stages.get(s + 1).and_then(|r| model.device_of(r.start)),
                    last: s + 1 == n,
                };
                std::thread::Builder::new().name(format!("strata-stage-{s}")).spawn_scoped(scope, move || {
                    autocast(plan.precision, || run_stage(model, stage, chunks, loss_fn, plan, links))
                })
            })
            .collect();
        // A stage whose thread could not start drops its channels: its neighbours stop too.
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join(),
                Err(e) => Ok(Err(Stop::Failed(Error::InvalidOption(format!(
                    "pipeline: could not start a stage's thread: {e}"
                ))))),
            })
            .collect()
    });
    let mut stats = Vec::new();
    let mut gone = false;
    for (s, r) in results.into_iter().enumerate() {
        match r {
            Ok(Ok(st)) => stats.extend(st),
            Ok(Err(Stop::Failed(e))) => return Err(e),
            Ok(Err(Stop::NeighbourGone)) => gone = true,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                return Err(Error::InvalidOption(format!("pipeline stage {s} stopped: {what}")));
            }
        }
    }
    if gone {
        return Err(Error::InvalidOption("a pipeline stage stopped without saying why".into()));
    }
    Ok(stats)
}

/// What a stage's thread runs: its layers, where its output goes, and whether it computes the
/// loss.
struct Stage {
    range: Range<usize>,
    next_device: Option<Device>,
    last: bool,
}

/// A stage's channels to its neighbours (`None` at the ends).
#[derive(Default)]
struct Links {
    from_prev: Option<Receiver<Message>>,
    to_next: Option<Sender<Message>>,
    from_next: Option<Receiver<Message>>,
    to_prev: Option<Sender<Message>>,
}

fn receive(rx: &Receiver<Message>, k: usize) -> std::result::Result<Tensor, Stop> {
    match rx.recv() {
        Ok((got, t)) if got == k => Ok(t),
        Ok((got, _)) => Err(Stop::Failed(Error::InvalidOption(format!(
            "pipeline: micro-batch {got} arrived where {k} was due (the stages' orders differ)"
        )))),
        Err(_) => Err(Stop::NeighbourGone),
    }
}

fn send(tx: &Sender<Message>, k: usize, t: Tensor) -> std::result::Result<(), Stop> {
    tx.send((k, t)).map_err(|_| Stop::NeighbourGone)
}

/// One stage's share of the step: all its forwards, then all its backwards, in micro-batch
/// order; its parameters end holding their combined gradient.
fn run_stage(
    model: &Sequential,
    stage: Stage,
    chunks: &[Chunk],
    loss_fn: &dyn Loss,
    plan: &StepPlan<'_>,
    links: Links,
) -> std::result::Result<Vec<ChunkStats>, Stop> {
    let Stage { range, next_device, last } = stage;
    let layers: Vec<(&str, &dyn Module)> = model.layers().skip(range.start).take(range.len()).collect();
    let params: Vec<Tensor> = layers.iter().flat_map(|(_, m)| m.parameters()).collect();
    // This stage's Dropout streams: the model's, restricted to its layers' paths.
    let own = |path: &str| layers.iter().any(|(name, _)| path == *name || path.starts_with(&format!("{name}.")));
    let streams: Option<BTreeMap<String, String>> =
        plan.streams.map(|s| s.iter().filter(|(p, _)| own(p)).map(|(p, v)| (p.clone(), v.clone())).collect());
    // Per micro-batch: the stage's input leaf (None on the first stage) and its output (the
    // loss on the last stage).
    let mut saved: Vec<(usize, Option<Tensor>, Tensor)> = Vec::with_capacity(chunks.len());
    let mut stats = Vec::new();
    for chunk in chunks {
        let k = chunk.k;
        let input = match &links.from_prev {
            Some(rx) => Some(receive(rx, k)?.requires_grad_()?),
            None => None,
        };
        if let Some(at) = streams.as_ref().and_then(|s| streams_at(s, k as u64)) {
            model.load_extra_state(&at)?;
        }
        let output = model.forward_layers(input.as_ref().unwrap_or(&chunk.input), range.clone())?;
        if last {
            let loss = loss_fn.loss(&output, &chunk.labels)?;
            stats.push((k, loss.item()?, count_correct(&output, &chunk.labels)?));
            saved.push((k, input, loss));
        } else {
            // The activation goes to the next stage's device here, on this thread: a GPU runs
            // the ops it recorded when they are read back, and a read-back waits for all the
            // device's work — done by the next stage, it would wait for this stage's next
            // micro-batch too, and the two would take turns instead of overlapping.
            let out = output.detach();
            let out = match next_device {
                Some(d) if out.device() != d => out.to_device(d)?,
                _ => out,
            };
            if let Some(tx) = &links.to_next {
                send(tx, k, out)?;
            }
            saved.push((k, input, output));
        }
    }
    let mut acc = Accumulator::default();
    for (k, input, output) in saved {
        for p in &params {
            p.zero_grad()?;
        }
        match &links.from_next {
            // The gradient arrives on the next stage's device: back to this one's.
            Some(rx) => output.backward_with_grad(&receive(rx, k)?.to_device(output.device())?)?,
            None => output.backward()?,
        }
        if let (Some(input), Some(tx)) = (input, &links.to_prev) {
            let grad = match input.grad() {
                Some(g) => g,
                None => Tensor::zeros(input.dims(), input.dtype()).to_device(input.device())?,
            };
            send(tx, k, grad)?;
        }
        acc.add_grads(&params, plan.coeffs[k])?;
    }
    acc.finish(plan.divisor).unwrap_or_else(|| GradBuffer::zeros(&params)).write(&params)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::{coefficients, micro_batch_ranges};
    use strata_core::{DType, Generator};
    use strata_nn::{BatchNorm1d, CrossEntropyLoss, Dropout, Linear, ReLU};

    fn model() -> Sequential {
        let mut rng = Generator::new(11);
        Sequential::new()
            .add_module("fc1", Linear::with_options(6, 8, true, DType::F32, &mut rng).unwrap())
            .unwrap()
            .add_module("bn", BatchNorm1d::new(8).unwrap())
            .unwrap()
            .append(ReLU)
            .unwrap()
            .add_module("drop", Dropout::with_seed(0.3, 5).unwrap())
            .unwrap()
            .add_module("fc2", Linear::with_options(8, 5, true, DType::F32, &mut rng).unwrap())
            .unwrap()
            .append(ReLU)
            .unwrap()
            .add_module("head", Linear::with_options(5, 3, true, DType::F32, &mut rng).unwrap())
            .unwrap()
    }

    /// What the trainer's accumulation computes for micro-batches `chunks`: per micro-batch,
    /// zeroed gradients, its Dropout streams, forward, mean loss, backward, read out and
    /// combined in order.
    fn accumulated(m: &Sequential, chunks: &[Chunk], coeffs: &[f64], divisor: f64) -> Vec<ChunkStats> {
        let params = m.parameters();
        let streams = m.extra_state();
        let mut acc = Accumulator::default();
        let mut stats = Vec::new();
        for c in chunks {
            m.zero_grad().unwrap();
            m.load_extra_state(&streams_at(&streams, c.k as u64).unwrap()).unwrap();
            let out = m.forward(&c.input).unwrap();
            let loss = CrossEntropyLoss::new().loss(&out, &c.labels).unwrap();
            loss.backward().unwrap();
            stats.push((c.k, loss.item().unwrap(), count_correct(&out, &c.labels).unwrap()));
            acc.add(&GradBuffer::read(&params).unwrap(), coeffs[c.k]);
        }
        acc.finish(divisor).unwrap().write(&params).unwrap();
        stats
    }

    /// Everything a step leaves behind: gradients, parameters' values, BatchNorm's running
    /// statistics and the Dropout streams' positions.
    type After = (Vec<Vec<f32>>, Vec<Vec<f32>>, BTreeMap<String, String>);

    fn after(m: &Sequential) -> After {
        let grads = m.parameters().iter().map(|p| p.grad().unwrap().to_vec::<f32>().unwrap()).collect();
        let buffers = m.named_buffers().iter().filter_map(|(_, b)| b.to_vec::<f32>().ok()).collect();
        (grads, buffers, m.extra_state())
    }

    #[test]
    fn three_cpu_stages_give_accumulations_numbers_bit_for_bit() {
        let mut rng = Generator::new(3);
        let x = Tensor::randn(&[10, 6], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let y = Tensor::from_vec((0..10).map(|i| i % 3).collect::<Vec<i64>>(), &[10]).unwrap();
        // 10 samples in 3 micro-batches: 4, 3, 3 (coefficients 4, 3, 3 over 10).
        let ranges = micro_batch_ranges(10, 3);
        let chunks: Vec<Chunk> = ranges
            .iter()
            .enumerate()
            .map(|(k, r)| Chunk {
                k,
                input: x.narrow(0, r.start, r.len()).unwrap(),
                labels: y.narrow(0, r.start, r.len()).unwrap(),
            })
            .collect();
        let (coeffs, divisor) = coefficients(&ranges.iter().map(|r| r.len()).collect::<Vec<_>>());
        let want_model = model();
        let want_stats = accumulated(&want_model, &chunks, &coeffs, divisor);
        let want = after(&want_model);
        assert!(want.2.values().any(|v| v.ends_with("step=3")), "Dropout drew three masks: {:?}", want.2);
        // The same step cut at every placement of two and three stages.
        let one: Vec<Range<usize>> = std::iter::once(0..7).collect();
        for stages in [one, vec![0..2, 2..7], vec![0..2, 2..4, 4..7], vec![0..1, 1..6, 6..7]] {
            let m = model();
            let streams = m.extra_state();
            let plan = StepPlan { coeffs: &coeffs, divisor, streams: Some(&streams), precision: Precision::F32 };
            let stats = step(&m, &stages, &chunks, &CrossEntropyLoss::new(), &plan).unwrap();
            assert_eq!(stats, want_stats, "stages {stages:?}");
            assert_eq!(after(&m), want, "stages {stages:?}");
        }
    }

    #[test]
    fn a_stage_error_stops_the_step_with_that_error() {
        let m = model();
        let chunks =
            [Chunk { k: 0, input: Tensor::ones(&[2, 7], DType::F32), labels: Tensor::zeros(&[2], DType::I64) }];
        let plan = StepPlan { coeffs: &[1.0], divisor: 1.0, streams: None, precision: Precision::F32 };
        let err = step(&m, &[0..2, 2..7], &chunks, &CrossEntropyLoss::new(), &plan).unwrap_err().to_string();
        assert!(err.contains("fc1"), "the first stage's shape error, naming the layer: {err}");
    }
}
