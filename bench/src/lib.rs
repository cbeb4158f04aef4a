//! strata's benchmark workloads, the same ones `bench/torch_bench.py` runs in PyTorch:
//!
//! - **W1** SimpleNN (784→128→64→10, ReLU) + CrossEntropyLoss + SGD(lr 0.01, momentum 0.9),
//!   batch 64, training samples/s over an epoch of 60,000 synthetic samples;
//! - **W2** the same at batch 512;
//! - **W3** SimpleNN inference at batch 1 under `no_grad`, µs per forward;
//! - **W4** an MLP 784→2048→2048→10 (ReLU), batch 256, training samples/s and GFLOP/s;
//! - **W5** the convolutional ResNet of `examples/resnet_mnist_model.toml` (conv + BatchNorm +
//!   residual blocks) with the optimizer and batch size of `examples/resnet_mnist.toml` (SGD
//!   lr 0.05, momentum 0.9, weight decay 5e-4, batch 128), on `[N, 1, 28, 28]` inputs;
//! - **W6** the LSTM of `examples/lstm_mnist_model.toml` (28 rows of 28 pixels, hidden 128,
//!   last step → Linear) with `examples/lstm_mnist.toml`'s Adam (lr 0.002), batch 64, on
//!   `[N, 28, 28]` inputs.
//!
//! Every workload goes through the public API a user would write (`Module::forward`,
//! `CrossEntropyLoss`, the optimizers; W5/W6 build their models from the model files with
//! `ModelSpec::build`), not through engine internals, so the numbers are what a user gets. Each
//! training step is zero_grad + forward + loss + backward + step, as in PyTorch.
//!
//! Every workload runs on a [`Device`]: the model is moved there with `Module::to_device` before
//! its optimizer is made, and the data is moved there once, before the warm-up, as PyTorch CUDA
//! benchmarks do. On a GPU the timed part ends with a read of a value (the last loss, or W3's last
//! output), the only synchronisation, so the work still queued on the device is counted.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;
use strata_core::{DType, Device, Generator, Tensor};
use strata_nn::{
    Adam, AdamConfig, AdamW, CrossEntropyLoss, Error, Linear, ModelSpec, Module, Optimizer, Result, SGD, Sequential,
    SgdConfig, SimpleNN,
};

/// Samples in one W1/W2 epoch (MNIST's training set size).
pub const EPOCH_SAMPLES: usize = 60_000;
/// Input features (28×28 images, flattened).
pub const IN_FEATURES: usize = 784;
/// Classes.
pub const CLASSES: usize = 10;

/// A multi-layer perceptron `sizes[0] → sizes[1] → … → sizes[last]` with ReLU between layers
/// and logits out: W4's 784→2048→2048→10, and SimpleNN's shape when given 784→128→64→10.
///
/// # Shapes
/// - input: `[N, sizes[0]]`
/// - output: `[N, sizes[last]]`
pub struct Mlp {
    layers: Vec<Linear>,
    names: Vec<String>,
}

impl Mlp {
    /// Layers drawn from `rng` with PyTorch's Linear initialisation.
    pub fn new(sizes: &[usize], rng: &mut Generator) -> Result<Mlp> {
        let layers = sizes
            .windows(2)
            .map(|w| Linear::with_options(w[0], w[1], true, DType::F32, rng))
            .collect::<Result<Vec<_>>>()?;
        let names = (0..layers.len()).map(|i| format!("fc{}", i + 1)).collect();
        Ok(Mlp { layers, names })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.layers[0].forward(x)?;
        for layer in &self.layers[1..] {
            h = layer.forward(&h.relu()?)?;
        }
        Ok(h)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.names.iter().cloned().zip(self.layers.iter().map(|l| l as &dyn Module)).collect()
    }
}

/// SimpleNN initialised from `seed`, as the library builds it.
pub fn simple_nn(seed: u64) -> Result<SimpleNN> {
    let mut rng = Generator::new(seed);
    let mut layer = |i, o| Linear::with_options(i, o, true, DType::F32, &mut rng);
    Ok(SimpleNN { fc1: layer(784, 128)?, fc2: layer(128, 64)?, fc3: layer(64, 10)? })
}

/// Synthetic inputs `[n, features]` uniform in [0, 1) and class targets `[n]`: a cheap hash
/// (SplitMix64) rather than Philox, so building 60,000 samples takes milliseconds. The values
/// do not matter to the timing; only their shapes do.
pub fn synthetic_data(n: usize, features: usize, classes: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let x: Vec<f32> = (0..n * features).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32).collect();
    let y: Vec<i64> = (0..n).map(|_| (next() % classes as u64) as i64).collect();
    Ok((Tensor::from_vec(x, &[n, features])?, Tensor::from_vec(y, &[n])?))
}

/// SGD with W1's hyper-parameters (lr 0.01, momentum 0.9).
pub fn sgd(model: &dyn Module) -> Result<SGD> {
    SGD::with_config(model.parameters(), SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() })
}

/// One training step on a batch: zero_grad + forward + loss + backward + step. Returns the loss
/// tensor (reading its value is left to the caller: it is not part of the timed step).
pub fn train_step(model: &dyn Module, opt: &mut dyn Optimizer, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    opt.zero_grad()?;
    let logits = model.forward(x)?;
    let loss = CrossEntropyLoss::new().forward(&logits, y)?;
    loss.backward()?;
    opt.step()?;
    Ok(loss)
}

/// One pass over `x`/`y` in batches of `batch` (the last one shorter, as PyTorch's DataLoader
/// without `drop_last`); batches are views of the data, not copies. Returns the final loss, read
/// back: on a GPU that read waits for the queued work, so a timer stopped after it counts it.
pub fn train_epoch(model: &dyn Module, opt: &mut dyn Optimizer, x: &Tensor, y: &Tensor, batch: usize) -> Result<f64> {
    let n = x.dims()[0];
    let mut loss = None;
    for start in (0..n).step_by(batch) {
        let len = batch.min(n - start);
        loss = Some(train_step(model, opt, &x.narrow(0, start, len)?, &y.narrow(0, start, len)?)?);
    }
    Ok(loss.map_or(Ok(f64::NAN), |l| l.item())?)
}

/// The largest tensor `device` holds in one buffer, in bytes (`None`: no limit, the CPU).
pub fn max_tensor_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cpu => None,
        #[cfg(feature = "gpu")]
        Device::Gpu(i) => strata_core::gpu::adapters()
            .into_iter()
            .find(|a| a.index == i)
            .map(|a| a.max_buffer_bytes.min(a.max_binding_bytes)),
        #[cfg(not(feature = "gpu"))]
        Device::Gpu(_) => None,
    }
}

/// A data set `x`/`y` (samples along dimension 0) moved to `device` once, as pieces of whole
/// batches of `batch`, each as large as the device's largest buffer allows: one piece, the
/// tensors themselves, on the CPU and wherever the data fits in one buffer (a CUDA-class GPU);
/// several on adapters with small buffers (llvmpipe binds 128 MiB at most, less than W1's
/// 188 MB). The batches and their order are the same either way.
pub fn data_on_device(x: &Tensor, y: &Tensor, batch: usize, device: Device) -> Result<Vec<(Tensor, Tensor)>> {
    let n = x.dims()[0];
    let row_bytes = (x.numel() / n.max(1) * x.dtype().size_in_bytes()).max(1) as u64;
    let rows = match max_tensor_bytes(device) {
        Some(max) if max / row_bytes < n as u64 => {
            let rows = (max / row_bytes) as usize / batch * batch;
            if rows == 0 {
                return Err(Error::option(
                    "benchmark data",
                    "batch",
                    batch,
                    format!(
                        "small enough for one batch ({} bytes) to fit the {max} bytes {device} holds in one buffer; \
                         or run on the CPU (--device cpu)",
                        row_bytes * batch as u64
                    ),
                ));
            }
            rows
        }
        _ => return Ok(vec![(x.to_device(device)?, y.to_device(device)?)]),
    };
    (0..n)
        .step_by(rows)
        .map(|start| {
            let len = rows.min(n - start);
            Ok((x.narrow(0, start, len)?.to_device(device)?, y.narrow(0, start, len)?.to_device(device)?))
        })
        .collect()
}

/// [`train_epoch`] over a data set in pieces ([`data_on_device`]): one pass over every piece in
/// order, the final loss read back once at the end. One piece is exactly `train_epoch`.
pub fn train_pieces(
    model: &dyn Module,
    opt: &mut dyn Optimizer,
    pieces: &[(Tensor, Tensor)],
    batch: usize,
) -> Result<f64> {
    if let [(x, y)] = pieces {
        return train_epoch(model, opt, x, y, batch);
    }
    let mut loss = None;
    for (x, y) in pieces {
        let n = x.dims()[0];
        for start in (0..n).step_by(batch) {
            let len = batch.min(n - start);
            loss = Some(train_step(model, opt, &x.narrow(0, start, len)?, &y.narrow(0, start, len)?)?);
        }
    }
    Ok(loss.map_or(Ok(f64::NAN), |l| l.item())?)
}

/// Multiply-adds of one sample's forward pass through Linear layers of `sizes`.
pub fn forward_macs(sizes: &[usize]) -> usize {
    sizes.windows(2).map(|w| w[0] * w[1]).sum()
}

/// FLOPs of one training sample: forward (2·MACs), weight gradients (2·MACs) and input
/// gradients (2·MACs) for every layer but the first (the data needs no gradient). PyTorch and
/// strata both skip that input gradient, so both are credited with the same count.
pub fn train_flops_per_sample(sizes: &[usize]) -> f64 {
    let fwd = forward_macs(sizes) as f64;
    let first = (sizes[0] * sizes[1]) as f64;
    2.0 * (3.0 * fwd - first)
}

/// One measured figure, printed as a JSON line.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// `W1` … `W6`.
    pub workload: &'static str,
    /// Where the model and data lived.
    pub device: Device,
    /// The GPU adapter's name (`None` on the CPU).
    pub adapter: Option<String>,
    /// Whether that adapter is a software one (llvmpipe and the like: correctness, not speed).
    pub software_adapter: Option<bool>,
    /// Threads in the pool.
    pub threads: usize,
    /// Batch size.
    pub batch: usize,
    /// Samples processed in the timed part (training) or forward calls (W3).
    pub samples: usize,
    /// Seconds of the timed part.
    pub seconds: f64,
    /// Training throughput.
    pub samples_per_s: Option<f64>,
    /// Inference latency.
    pub latency_us: Option<f64>,
    /// Achieved arithmetic rate of the GEMM work.
    pub gflop_s: Option<f64>,
    /// Final loss (a sanity check that training ran).
    pub loss: Option<f64>,
    /// Parameters of the model (W5/W6: printed so both systems can be seen to train the same network).
    pub params: Option<usize>,
    /// Set for workloads that do not exist yet.
    pub status: Option<&'static str>,
    /// The product precision the workload ran under (`--precision`; f32 by default).
    pub precision: strata_core::Precision,
}

impl Record {
    /// The JSON line (hand-written: a few numbers and names do not need a serialiser).
    pub fn to_json(&self) -> String {
        let mut s =
            format!("{{\"workload\":\"{}\",\"system\":\"strata\",\"device\":\"{}\"", self.workload, self.device);
        if let Some(name) = &self.adapter {
            s += &format!(",\"adapter\":\"{}\"", json_escape(name));
        }
        if let Some(software) = self.software_adapter {
            s += &format!(",\"software_adapter\":{software}");
        }
        s += &format!(",\"threads\":{},\"precision\":\"{}\"", self.threads, self.precision);
        if let Some(status) = self.status {
            s += &format!(",\"status\":\"{status}\"}}");
            return s;
        }
        s += &format!(",\"batch\":{},\"samples\":{},\"seconds\":{:.6}", self.batch, self.samples, self.seconds);
        let num = |name: &str, v: Option<f64>| v.map(|v| format!(",\"{name}\":{v:.6}")).unwrap_or_default();
        s += &num("samples_per_s", self.samples_per_s);
        s += &num("latency_us", self.latency_us);
        s += &num("gflop_s", self.gflop_s);
        s += &num("loss", self.loss.filter(|l| l.is_finite()));
        if let Some(p) = self.params {
            s += &format!(",\"params\":{p}");
        }
        if let Some(kb) = peak_rss_kb() {
            s += &format!(",\"peak_rss_mb\":{:.1}", kb as f64 / 1024.0);
        }
        s + "}"
    }
}

/// `text` as the inside of a JSON string: quotes, backslashes and control characters escaped.
pub fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out
}

/// The device's adapter for a [`Record`]: its name and whether it is a software one (`None` on
/// the CPU, and for an index no adapter has).
pub fn adapter_info(device: Device) -> Option<(String, bool)> {
    match device {
        Device::Cpu => None,
        #[cfg(feature = "gpu")]
        Device::Gpu(i) => strata_core::gpu::adapters().into_iter().find(|a| a.index == i).map(|a| {
            let software = a.is_software();
            (a.name, software)
        }),
        #[cfg(not(feature = "gpu"))]
        Device::Gpu(_) => None,
    }
}

/// Checks that `device` can run the workloads, before any is built: a GPU needs the `gpu`
/// feature and an adapter at that index; a one-element tensor goes there and back. The error
/// says what is missing and how to get it.
pub fn check_device(device: Device) -> Result<()> {
    if device.is_gpu() {
        Tensor::from_vec(vec![1.0f32], &[1])?.to_device(device)?.to_vec::<f32>()?;
    }
    Ok(())
}

/// Fills in the device fields of a record made on `device`.
fn on_device(record: Record, device: Device) -> Record {
    let (adapter, software_adapter) = adapter_info(device).unzip();
    Record { device, adapter, software_adapter, ..record }
}

/// Waits until `device` has run everything queued so far, by reading `t` back (the only
/// synchronisation of the GPU backend); nothing on the CPU, whose ops are done when they return.
pub fn synchronize(t: &Tensor, device: Device) -> Result<()> {
    if device.is_gpu() {
        std::hint::black_box(t.to_vec::<f32>()?);
    }
    Ok(())
}

/// The process's peak resident set size in KiB (`VmHWM`), on Linux.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// W1/W2 on `device`: one warm-up pass over a few batches, then `epochs` timed epochs of
/// `samples` at `batch` (more than one only to profile the steady state).
pub fn run_simple_nn_training(
    workload: &'static str,
    batch: usize,
    samples: usize,
    epochs: usize,
    device: Device,
) -> Result<Record> {
    let (x, y) = synthetic_data(samples, IN_FEATURES, CLASSES, 1)?;
    let data = data_on_device(&x, &y, batch, device)?;
    drop((x, y));
    let model = simple_nn(0)?;
    model.to_device(device)?;
    let mut opt = sgd(&model)?;
    let (x0, y0) = &data[0];
    let warm = (20 * batch).min(x0.dims()[0]);
    train_epoch(&model, &mut opt, &x0.narrow(0, 0, warm)?, &y0.narrow(0, 0, warm)?, batch)?;
    let t = Instant::now();
    let mut loss = f64::NAN;
    for _ in 0..epochs {
        loss = train_pieces(&model, &mut opt, &data, batch)?;
    }
    let seconds = t.elapsed().as_secs_f64();
    let samples = samples * epochs;
    let flops = train_flops_per_sample(&[784, 128, 64, 10]) * samples as f64;
    let record = Record {
        workload,
        threads: rayon::current_num_threads(),
        batch,
        samples,
        seconds,
        samples_per_s: Some(samples as f64 / seconds),
        gflop_s: Some(flops / seconds / 1e9),
        loss: Some(loss),
        ..Default::default()
    };
    Ok(on_device(record, device))
}

/// W3 on `device`: SimpleNN forward at batch 1 under `no_grad`; the median over blocks of
/// `calls / 20` forwards of the mean time per forward (on a GPU each block ends by reading its
/// last output back, so the block's queued work is counted).
pub fn run_inference(calls: usize, device: Device) -> Result<Record> {
    let model = simple_nn(0)?;
    model.to_device(device)?;
    let (x, _) = synthetic_data(1, IN_FEATURES, CLASSES, 3)?;
    let x = x.to_device(device)?;
    let _guard = strata_core::NoGradGuard::new();
    let block = (calls / 20).max(1);
    // Each output is dropped before the next forward (its buffer reused), as in PyTorch's loop.
    let run_block = || -> Result<()> {
        for i in 0..block {
            let out = std::hint::black_box(model.forward(&x)?);
            if i + 1 == block {
                synchronize(&out, device)?;
            }
        }
        Ok(())
    };
    run_block()?;
    let mut per_call = Vec::with_capacity(20);
    for _ in 0..20 {
        let t = Instant::now();
        run_block()?;
        per_call.push(t.elapsed().as_secs_f64() / block as f64);
    }
    per_call.sort_by(f64::total_cmp);
    let median = per_call[per_call.len() / 2];
    let record = Record {
        workload: "W3",
        threads: rayon::current_num_threads(),
        batch: 1,
        samples: block * 20,
        seconds: per_call.iter().sum::<f64>() * block as f64,
        latency_us: Some(median * 1e6),
        gflop_s: Some(2.0 * forward_macs(&[784, 128, 64, 10]) as f64 / median / 1e9),
        ..Default::default()
    };
    Ok(on_device(record, device))
}

/// W4 on `device`: the 784→2048→2048→10 MLP at batch 256; two warm-up steps, then `steps`
/// timed steps.
pub fn run_big_mlp(steps: usize, device: Device) -> Result<Record> {
    const SIZES: [usize; 4] = [784, 2048, 2048, 10];
    let batch = 256;
    let mut rng = Generator::new(0);
    let model = Mlp::new(&SIZES, &mut rng)?;
    model.to_device(device)?;
    let mut opt = sgd(&model)?;
    let (x, y) = synthetic_data(batch * steps, IN_FEATURES, CLASSES, 2)?;
    let (x, y) = (x.to_device(device)?, y.to_device(device)?);
    train_epoch(&model, &mut opt, &x.narrow(0, 0, 2 * batch)?, &y.narrow(0, 0, 2 * batch)?, batch)?;
    let t = Instant::now();
    let loss = train_epoch(&model, &mut opt, &x, &y, batch)?;
    let seconds = t.elapsed().as_secs_f64();
    let samples = batch * steps;
    let record = Record {
        workload: "W4",
        threads: rayon::current_num_threads(),
        batch,
        samples,
        seconds,
        samples_per_s: Some(samples as f64 / seconds),
        gflop_s: Some(train_flops_per_sample(&SIZES) * samples as f64 / seconds / 1e9),
        loss: Some(loss),
        ..Default::default()
    };
    Ok(on_device(record, device))
}

/// The repository's `examples/` folder (model and run files), found from this crate's source
/// location so the binary works from any directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("examples")
}

/// What W5/W6 take from a run file: the model file it names, the `[optimizer]` table and the
/// batch size. Only the keys these two run files use are read; the learning-rate schedule is
/// left out (the bench runs at the base rate: a schedule changes no work per step).
#[derive(Debug, Clone)]
pub struct RunFile {
    /// The model, parsed from the model file the run file names.
    pub spec: ModelSpec,
    /// `optimizer.name`: `sgd`, `adam` or `adamw`.
    pub optimizer: String,
    /// `optimizer.lr`.
    pub lr: f64,
    /// `optimizer.momentum` (SGD; 0 when absent).
    pub momentum: f64,
    /// `optimizer.weight_decay` (0 when absent).
    pub weight_decay: f64,
    /// `training.batch_size`.
    pub batch_size: usize,
}

impl RunFile {
    /// Reads `examples/<name>` and the model file it refers to.
    pub fn load(name: &str) -> Result<RunFile> {
        let bad = |message: String| Error::InvalidState { owner: "run file", key: name.to_string(), reason: message };
        let path = examples_dir().join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let doc: toml::Table = text.parse().map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let get = |table: &str, key: &str| doc.get(table).and_then(|t| t.get(key));
        let float =
            |table: &str, key: &str| get(table, key).and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)));
        let model = doc.get("model").and_then(|m| m.as_str()).ok_or_else(|| bad(format!("{name}: no `model` path")))?;
        let model_path = path.parent().expect("a file has a folder").join(model);
        let spec = strata_nn::model_file::load_model(&model_path).map_err(|e| bad(e.to_string()))?;
        Ok(RunFile {
            spec,
            optimizer: get("optimizer", "name").and_then(|v| v.as_str()).unwrap_or("sgd").to_string(),
            lr: float("optimizer", "lr").ok_or_else(|| bad(format!("{name}: no optimizer.lr")))?,
            momentum: float("optimizer", "momentum").unwrap_or(0.0),
            weight_decay: float("optimizer", "weight_decay").unwrap_or(0.0),
            batch_size: get("training", "batch_size")
                .and_then(|v| v.as_integer())
                .ok_or_else(|| bad(format!("{name}: no training.batch_size")))? as usize,
        })
    }

    /// The model with fresh parameters (seed 0), as `strata train` builds it.
    pub fn build(&self) -> Result<Sequential> {
        strata_core::manual_seed(0);
        self.spec.build()
    }

    /// The run file's optimizer over `params`, with PyTorch's defaults for what it leaves out.
    pub fn optimizer(&self, params: Vec<Tensor>) -> Result<Box<dyn Optimizer>> {
        let adam = AdamConfig { lr: self.lr, weight_decay: self.weight_decay, ..Default::default() };
        Ok(match self.optimizer.as_str() {
            "adam" => Box::new(Adam::with_config(params, adam)?),
            "adamw" => Box::new(AdamW::with_config(params, adam)?),
            _ => Box::new(SGD::with_config(
                params,
                SgdConfig {
                    lr: self.lr,
                    momentum: self.momentum,
                    weight_decay: self.weight_decay,
                    ..Default::default()
                },
            )?),
        })
    }
}

/// W5/W6 on `device`: the model and optimizer of run file `run`, synthetic data of `sample`
/// shape (MNIST's `[1, 28, 28]` or `[28, 28]`), `warmup` untimed batches, then `batches` timed
/// ones.
pub fn run_from_file(
    workload: &'static str,
    run: &str,
    sample: &[usize],
    warmup: usize,
    batches: usize,
    device: Device,
) -> Result<Record> {
    let rf = RunFile::load(run)?;
    let model = rf.build()?;
    model.to_device(device)?;
    let mut opt = rf.optimizer(model.parameters())?;
    let batch = rf.batch_size;
    let n = batch * (warmup + batches);
    let (x, y) = synthetic_data(n, sample.iter().product(), CLASSES, 4)?;
    let mut dims = vec![n];
    dims.extend_from_slice(sample);
    let (x, y) = (x.reshape(&dims)?.to_device(device)?, y.to_device(device)?);
    let warm = batch * warmup;
    if warm > 0 {
        train_epoch(&model, opt.as_mut(), &x.narrow(0, 0, warm)?, &y.narrow(0, 0, warm)?, batch)?;
    }
    let (xt, yt) = (x.narrow(0, warm, n - warm)?, y.narrow(0, warm, n - warm)?);
    let t = Instant::now();
    let loss = train_epoch(&model, opt.as_mut(), &xt, &yt, batch)?;
    let seconds = t.elapsed().as_secs_f64();
    let samples = n - warm;
    let record = Record {
        workload,
        threads: rayon::current_num_threads(),
        batch,
        samples,
        seconds,
        samples_per_s: Some(samples as f64 / seconds),
        loss: Some(loss),
        params: Some(model.num_parameters()),
        ..Default::default()
    };
    Ok(on_device(record, device))
}

/// W5 on `device`: the ResNet of `examples/resnet_mnist.toml`, batch 128, on `[N, 1, 28, 28]`.
pub fn run_resnet(warmup: usize, batches: usize, device: Device) -> Result<Record> {
    run_from_file("W5", "resnet_mnist.toml", &[1, 28, 28], warmup, batches, device)
}

/// W6 on `device`: the LSTM of `examples/lstm_mnist.toml`, batch 64, on `[N, 28, 28]`.
pub fn run_lstm(warmup: usize, batches: usize, device: Device) -> Result<Record> {
    run_from_file("W6", "lstm_mnist.toml", &[28, 28], warmup, batches, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_files_give_the_issue_s_settings() {
        let r = RunFile::load("resnet_mnist.toml").unwrap();
        assert_eq!(
            (r.optimizer.as_str(), r.lr, r.momentum, r.weight_decay, r.batch_size),
            ("sgd", 0.05, 0.9, 5e-4, 128)
        );
        let l = RunFile::load("lstm_mnist.toml").unwrap();
        assert_eq!((l.optimizer.as_str(), l.lr, l.batch_size), ("adam", 0.002, 64));
        // The parameter counts torch_bench.py prints for its copies of the two models.
        assert_eq!(r.build().unwrap().num_parameters(), 151_274);
        assert_eq!(l.build().unwrap().num_parameters(), 82_186);
    }
}
