//! The walker: propagates a symbolic shape through a chain, one layer at a time — every layer
//! kind through its [`crate::layer::Layer::check`], the containers (blocks, residual blocks,
//! branches) by their rules here, since a container's rule is the walk of its chains — and
//! keeps the trace and every error.

use super::context::{CheckContext, Failure};
use super::error::{BranchOutput, LayerRef, Producer, ShapeError, ShapeErrorKind};
use super::fix::{Edit, Fix};
use super::memory::{TRAINING_COPIES, check_memory_copies};
use super::merge::{BranchEnd, conv_shortcut_fix, merge_add, merge_concat};
use super::report::{CheckReport, TraceRow};
use super::shape::SymShape;
use crate::spec::{LayerSpec, Merge, ModelSpec, NamedLayer};
use strata_core::{DType, Device};

/// The walk's state: the trace and errors so far, and what flows at this point of the chain.
struct Walker {
    trace: Vec<TraceRow>,
    errors: Vec<ShapeError>,
    /// Who decided the current last dimension (or channels).
    producer: Producer,
    /// The element type flowing at this point of the chain.
    dtype: DType,
    /// The last layer that computed float values (`None`: they are the input's, untouched).
    float_from: Option<LayerRef>,
    /// The placement the current chain's layers inherit (`None`: the model's device).
    scope: Option<Device>,
    /// Where the activation is at this point (`None`: the model's device).
    at: Option<Device>,
    /// The devices this machine has (placements are checked against them).
    present: Vec<Device>,
}

/// Checks `spec` for `input` (or the spec's own input) and, with `classes`, that the output is
/// one logit per class for a cross-entropy loss; then that the model can fit in this machine's
/// memory ([`super::check_memory`]).
pub fn check_spec(spec: &ModelSpec, input: Option<&SymShape>, classes: Option<usize>) -> CheckReport {
    check_spec_copies(spec, input, classes, TRAINING_COPIES)
}

/// [`check_spec`] for a model that is only run or converted (evaluation, prediction, export):
/// its memory counts one copy of each parameter, not training's gradients and optimizer state.
pub fn check_spec_to_run(spec: &ModelSpec, input: Option<&SymShape>) -> CheckReport {
    check_spec_copies(spec, input, None, 1)
}

fn check_spec_copies(spec: &ModelSpec, input: Option<&SymShape>, classes: Option<usize>, copies: u128) -> CheckReport {
    let mut report = check_shapes(spec, input, classes);
    if let Some(memory) = strata_core::Device::Cpu.total_memory()
        && report.errors.is_empty()
    {
        check_memory_copies(&mut report, spec.dtype, memory, copies);
    }
    report
}

/// Where the batch dimension of the model's input is, for samples of `sample_rank` dimensions:
/// 1 when the model reads time-major sequences — its first layer (after any `Dropout` or
/// element-wise activation, inside any leading block) is an RNN/LSTM/GRU or `LastStep` with
/// `batch_first = false` and a sample is `[T, F]` — so the input is `[T, N, F]`; else 0. A
/// model file's `input = [T, F]` is one sample either way, and whoever feeds the model (the
/// CLI) lays a batch out this way.
pub fn input_batch_dim(spec: &ModelSpec, sample_rank: usize) -> usize {
    fn first(layers: &[NamedLayer]) -> Option<&LayerSpec> {
        for l in layers {
            match &l.spec {
                LayerSpec::Sequential(inner) => return first(inner),
                LayerSpec::Dropout { .. }
                | LayerSpec::ReLU
                | LayerSpec::Sigmoid
                | LayerSpec::Tanh
                | LayerSpec::GELU { .. }
                | LayerSpec::SiLU
                | LayerSpec::Mish
                | LayerSpec::Hardswish
                | LayerSpec::Hardsigmoid
                | LayerSpec::ReLU6
                | LayerSpec::LeakyReLU { .. }
                | LayerSpec::ELU { .. } => continue,
                other => return Some(other),
            }
        }
        None
    }
    let time_major = match first(&spec.layers) {
        Some(LayerSpec::Recurrent(r)) => !r.batch_first,
        Some(LayerSpec::LastStep { batch_first }) => !batch_first,
        _ => false,
    };
    if time_major && sample_rank == 2 { 1 } else { 0 }
}

/// [`check_spec`] without the memory check: shapes, element types and classes only.
///
/// `input` (else the spec's own) is one sample's shape with the batch: `[N, …]`, moved to
/// `[T, N, F]` for a model that reads time-major sequences (see [`input_batch_dim`]).
pub fn check_shapes(spec: &ModelSpec, input: Option<&SymShape>, classes: Option<usize>) -> CheckReport {
    let input = input.cloned().or_else(|| spec.input.as_deref().map(SymShape::batched)).map(|x| {
        match (x.batch_dim(), x.sample()) {
            (Some(0), Some(sample)) if input_batch_dim(spec, sample.len()) == 1 => SymShape::batched_at(&sample, 1),
            _ => x,
        }
    });
    let mut report = CheckReport {
        name: spec.name.clone(),
        input: input.clone(),
        input_dtype: spec.input_dtype,
        trace: vec![],
        errors: vec![],
        output: None,
        resolved: spec.clone(),
    };
    let Some(input) = input else {
        report.errors.push(ShapeError {
            layer: None,
            input: None,
            kind: ShapeErrorKind::NoInput,
            fixes: vec![Fix {
                text:
                    "set `input = [784]` (the shape of one sample) in the model file, or pass --input 784 (or 1x28x28)"
                        .into(),
                edits: vec![],
            }],
        });
        return report;
    };
    let mut w = Walker {
        trace: vec![],
        errors: vec![],
        producer: Producer::Input,
        dtype: spec.input_dtype,
        float_from: None,
        scope: spec.device,
        at: spec.device,
        // Asked only of a placed model: listing GPU adapters starts their drivers.
        present: if spec.is_placed() { strata_core::devices() } else { vec![Device::Cpu] },
    };
    if let Some(d) = spec.device.filter(|d| !w.present.contains(d)) {
        w.errors.push(ShapeError {
            layer: None,
            input: None,
            kind: ShapeErrorKind::NoSuchDevice { device: d, present: w.present.clone() },
            fixes: vec![Fix {
                text: "set `device = \"cpu\"` in the model file, or run with --device-map (e.g. 'layer=cpu')".into(),
                edits: vec![],
            }],
        });
    }
    let (out, resolved) = w.chain(&spec.layers, "", "", 0, input);
    if let Some(classes) = classes {
        w.check_classes(&out, classes);
    }
    report.trace = w.trace;
    report.errors = w.errors;
    report.output = Some(out);
    report.resolved.layers = resolved;
    report
}

/// The error for merged outputs on different devices, with the fix: place the whole block on
/// the first branch's device (or, when that is the model's device, on the CPU).
fn devices_differ(path: &str, ends: &[(String, Option<Device>)]) -> Failure {
    let to = ends.iter().find_map(|(_, d)| *d).unwrap_or(Device::Cpu);
    let fix = Fix {
        text: format!("place the whole block on one device: --device-map '{path}={to}', and no device inside it"),
        edits: vec![Edit::SetDevice { path: path.into(), device: to }],
    };
    (ShapeErrorKind::DevicesDiffer { ends: ends.to_vec() }, vec![fix])
}

impl Walker {
    fn chain(
        &mut self,
        layers: &[NamedLayer],
        prefix: &str,
        pos_prefix: &str,
        depth: usize,
        mut x: SymShape,
    ) -> (SymShape, Vec<NamedLayer>) {
        let mut resolved = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let path = format!("{prefix}{}", l.name);
            let position_label = format!("{pos_prefix}{}", i + 1);
            let (y, spec) = self.layer(l, &path, i + 1, &position_label, depth, x);
            resolved.push(NamedLayer {
                name: l.name.clone(),
                spec,
                origin: l.origin.clone(),
                device: l.device,
                init: l.init,
            });
            x = y;
        }
        (x, resolved)
    }

    fn layer(
        &mut self,
        l: &NamedLayer,
        path: &str,
        position: usize,
        label: &str,
        depth: usize,
        x: SymShape,
    ) -> (SymShape, LayerSpec) {
        let mut spec = l.spec.clone();
        let row = self.trace.len();
        let mut lref = LayerRef { path: path.to_string(), desc: spec.to_string(), position };
        self.trace.push(TraceRow {
            layer: lref.clone(),
            depth,
            position_label: label.to_string(),
            input: x.clone(),
            output: x.clone(),
            spec: spec.clone(),
            error: None,
            device: l.device.or(self.scope),
        });
        let mut error: Option<Failure> = None;
        let mut merge_parts = None;
        let mut dtype_error = None;
        // Placement: this layer runs where it says, or where its block (or the model) does; its
        // input is moved there. A device the machine lacks is an error with the override.
        let device = l.device.or(self.scope);
        if let Some(d) = l.device.filter(|d| !self.present.contains(d)) {
            // The CPU is on every machine (and the fix reads the same on each).
            let fix_to = Device::Cpu;
            self.errors.push(ShapeError {
                layer: Some(lref.clone()),
                input: Some(x.clone()),
                kind: ShapeErrorKind::NoSuchDevice { device: d, present: self.present.clone() },
                fixes: vec![Fix {
                    text: format!(
                        "run {path} on {fix_to}: --device-map '{path}={fix_to}' (or device = \"{fix_to}\" in the \
                         file; `strata devices` lists the others)"
                    ),
                    edits: vec![Edit::SetDevice { path: path.into(), device: fix_to }],
                }],
            });
            self.trace[row].error = Some(self.errors.len() - 1);
        }
        if device.is_some() {
            self.at = device;
        }
        // The trace shows where the layer runs: its placement, or where its input already is.
        self.trace[row].device = self.at;
        let outer_scope = std::mem::replace(&mut self.scope, device);
        let (y, leaf) = match spec.layer() {
            Some(mut layer) => {
                let mut cx = CheckContext {
                    path,
                    layer: &lref,
                    producer: &mut self.producer,
                    dtype: self.dtype,
                    float_from: self.float_from.as_ref(),
                    error: None,
                };
                // The element type first (only an Embedding takes token ids; Flatten passes
                // them on), on the layer as written.
                dtype_error = layer.dtype_error(&cx, &x);
                let y = layer.check(&mut cx, &x);
                error = cx.error;
                spec = layer.to_spec();
                (y, Some(layer))
            }
            None => {
                let y = self.container(&mut spec, path, label, depth, &x, &lref, &mut error, &mut merge_parts);
                (y, None)
            }
        };
        self.scope = outer_scope;
        // A parameter larger than the device holds in one buffer cannot be placed there.
        if let (Some(layer), Some(d)) = (&leaf, device.filter(|d| d.is_gpu() && self.present.contains(d)))
            && let Some(max) = strata_core::max_tensor_bytes(d)
            && let Some((name, shape)) = layer
                .parameter_shapes()
                .unwrap_or_default()
                .into_iter()
                .find(|(_, s)| s.iter().product::<usize>() as u64 * 4 > max)
        {
            let bytes = shape.iter().product::<usize>() as u64 * 4;
            let reason = format!(
                "its {name} {shape:?} takes {bytes} bytes in f32, more than the {max} bytes {d} holds in one buffer"
            );
            self.errors.push(ShapeError {
                layer: Some(lref.clone()),
                input: Some(x.clone()),
                kind: ShapeErrorKind::BadLayer { reason },
                fixes: vec![Fix {
                    text: format!("run {path} on cpu: --device-map '{path}=cpu'"),
                    edits: vec![Edit::SetDevice { path: path.into(), device: Device::Cpu }],
                }],
            });
            self.trace[row].error.get_or_insert(self.errors.len() - 1);
        }
        lref.desc = spec.to_string();
        self.finish_row(row, &spec, y.clone());
        if dtype_error.is_some() {
            // The wrong element type comes first: the shapes may be what the fix would make right.
            error = dtype_error;
        }
        if let Some((kind, fixes)) = error {
            self.trace[row].error = Some(self.errors.len());
            self.errors.push(ShapeError { layer: Some(lref.clone()), input: Some(x), kind, fixes });
        }
        match &leaf {
            Some(layer) => {
                if let Some(p) = layer.produces(&lref) {
                    self.producer = p;
                }
            }
            None if matches!(spec, LayerSpec::Branches { .. }) => {
                self.producer = Producer::Merge(lref.clone(), merge_parts)
            }
            None => {}
        }
        // Every layer but Flatten and the blocks computes floats from here on (also after an
        // element-type error: as if it had been fixed).
        if leaf.is_some_and(|l| !l.keeps_element_type()) {
            self.dtype = DType::F32;
            self.float_from = Some(lref);
        }
        (y, spec)
    }

    /// The rules of the containers: a block is its chain; a residual block adds its body and
    /// shortcut; branches are merged by `Add` or `Concat`.
    #[allow(clippy::too_many_arguments)]
    fn container(
        &mut self,
        spec: &mut LayerSpec,
        path: &str,
        label: &str,
        depth: usize,
        x: &SymShape,
        lref: &LayerRef,
        error: &mut Option<Failure>,
        merge_parts: &mut Option<String>,
    ) -> SymShape {
        let x = x.clone();
        match spec {
            LayerSpec::Sequential(inner) => {
                let (y, resolved) = self.chain(inner, &format!("{path}."), &format!("{label}."), depth + 1, x.clone());
                *inner = resolved;
                y
            }
            LayerSpec::Branches { branches, merge } => {
                let before = (self.producer.clone(), self.dtype, self.float_from.clone());
                let entry = self.at;
                let mut ends = Vec::with_capacity(branches.len());
                let mut end_devices = Vec::with_capacity(branches.len());
                for (i, b) in branches.iter_mut().enumerate() {
                    (self.producer, self.dtype, self.float_from) = before.clone();
                    self.at = entry;
                    let bpath = format!("{path}.branches.{i}");
                    let blabel = format!("{label}.{}", branch_label(i));
                    let (y, resolved) = self.branch(b, &bpath, i + 1, &blabel, depth + 1, x.clone());
                    end_devices.push((bpath.clone(), self.at));
                    let out = BranchOutput { path: bpath, shape: y, identity: resolved.is_empty() };
                    ends.push(BranchEnd { out, producer: self.producer.clone(), dtype: self.dtype });
                    *b = resolved;
                }
                let (y, merge_error, parts) = match *merge {
                    Merge::Add => merge_add(&ends),
                    Merge::Concat { dim } => merge_concat(path, dim, &ends),
                };
                *error = merge_error;
                if error.is_none() && end_devices.iter().any(|(_, d)| *d != end_devices[0].1) {
                    *error = Some(devices_differ(path, &end_devices));
                }
                if error.is_none() && ends.iter().any(|e| e.dtype != ends[0].dtype) {
                    let (ids, floats): (Vec<&BranchEnd>, Vec<&BranchEnd>) =
                        ends.iter().partition(|e| e.dtype == DType::I64);
                    *error = Some((
                        ShapeErrorKind::BadLayer {
                            reason: format!(
                                "`{}` passes on i64 token ids but `{}` produces float values; merged branches must hold one element type",
                                ids[0].out.path, floats[0].out.path
                            ),
                        },
                        vec![],
                    ));
                }
                self.dtype = if ends.iter().all(|e| e.dtype == DType::I64) { DType::I64 } else { DType::F32 };
                self.float_from = if ends.iter().all(|e| e.out.identity) { before.2 } else { Some(lref.clone()) };
                *merge_parts = parts;
                y
            }
            LayerSpec::Residual { body, shortcut } => {
                let before = self.producer.clone();
                let entry = self.at;
                let (yb, rb) = self.chain(body, &format!("{path}.body."), &format!("{label}."), depth + 1, x.clone());
                *body = rb;
                let body_at = std::mem::replace(&mut self.at, entry);
                let after_body = self.producer.clone();
                let identity = shortcut.is_none();
                let ys = match shortcut {
                    Some(sc) => {
                        self.producer = before;
                        let (ys, rs) =
                            self.chain(sc, &format!("{path}.shortcut."), &format!("{label}.s"), depth + 1, x.clone());
                        *sc = rs;
                        ys
                    }
                    None => x.clone(),
                };
                let after_shortcut = std::mem::replace(&mut self.producer, after_body.clone());
                let shortcut_at = std::mem::replace(&mut self.at, body_at);
                if body_at != shortcut_at {
                    // (A shape mismatch below replaces it: that one shows first.)
                    let name = if identity { "shortcut (identity)" } else { "shortcut" };
                    let ends = [(format!("{path}.body"), body_at), (format!("{path}.{name}"), shortcut_at)];
                    *error = Some(devices_differ(path, &ends));
                }
                if yb != ys {
                    let mut fixes = vec![];
                    if identity && ys.rank() == 4 && yb.rank() == 4 {
                        fixes.extend(conv_shortcut_fix(path, &ys, &yb));
                    }
                    if let (Some(i), Some(o), 2, 2) = (ys.last(), yb.last(), ys.rank(), yb.rank()) {
                        if identity {
                            fixes.push(Fix {
                                text: format!("add a projection shortcut Linear({i}, {o}) to {path}"),
                                edits: vec![Edit::SetShortcut { path: path.into(), in_features: i, out_features: o }],
                            });
                        } else if let Producer::Linear(p) = &after_shortcut {
                            fixes.push(Fix {
                                text: format!("make {} produce {o} features", p.path),
                                edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: o }],
                            });
                        }
                        if let Producer::Linear(p) = &after_body {
                            fixes.push(Fix {
                                text: format!("make {} produce {i} features", p.path),
                                edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: i }],
                            });
                        }
                    }
                    *error =
                        Some((ShapeErrorKind::ResidualMismatch { body: yb.clone(), shortcut: ys, identity }, fixes));
                }
                yb
            }
            _ => x,
        }
    }

    /// One branch of an `Add` or `Concat`: a row of its own (so an identity branch shows too),
    /// then its layers.
    fn branch(
        &mut self,
        layers: &[NamedLayer],
        path: &str,
        position: usize,
        label: &str,
        depth: usize,
        x: SymShape,
    ) -> (SymShape, Vec<NamedLayer>) {
        let row = self.trace.len();
        let spec = LayerSpec::Sequential(layers.to_vec());
        self.trace.push(TraceRow {
            layer: LayerRef { path: path.to_string(), desc: spec.to_string(), position },
            depth,
            position_label: label.to_string(),
            input: x.clone(),
            output: x.clone(),
            spec,
            error: None,
            device: self.scope,
        });
        let (y, resolved) = self.chain(layers, &format!("{path}."), label, depth + 1, x);
        self.finish_row(row, &LayerSpec::Sequential(resolved.clone()), y.clone());
        (y, resolved)
    }

    fn finish_row(&mut self, row: usize, spec: &LayerSpec, y: SymShape) {
        let r = &mut self.trace[row];
        r.output = y;
        r.spec = spec.clone();
        r.layer.desc = spec.to_string();
    }

    fn check_classes(&mut self, out: &SymShape, classes: usize) {
        if out.rank() == 2 && out.last() == Some(classes) {
            return;
        }
        let fixes = match (&self.producer, out.last()) {
            (Producer::Linear(p), Some(_)) if out.rank() == 2 => {
                let in_f = self.trace.iter().find(|r| r.layer.path == p.path).and_then(|r| r.input.last()).unwrap_or(0);
                vec![Fix {
                    text: format!("make {} Linear({in_f}, {classes})", p.path),
                    edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: classes }],
                }]
            }
            (_, Some(last)) if out.rank() == 2 => {
                vec![Fix {
                    text: format!("end the model with Linear({last}, {classes})"),
                    edits: vec![Edit::AppendLinear { in_features: last, out_features: classes }],
                }]
            }
            _ => vec![Fix {
                text: format!("end the model with Flatten and Linear({}, {classes})", out.sample_numel()),
                edits: vec![],
            }],
        };
        self.errors.push(ShapeError {
            layer: None,
            input: None,
            kind: ShapeErrorKind::ClassCount { classes, logits: out.clone(), producer: self.producer.clone() },
            fixes,
        });
    }
}

/// Trace labels of branches: `a`, `b`, … (`2.a1` is the first layer of the first branch of the
/// second layer).
fn branch_label(i: usize) -> String {
    match u8::try_from(i) {
        Ok(i) if i < 26 => char::from(b'a' + i).to_string(),
        _ => format!("[{i}]"),
    }
}
