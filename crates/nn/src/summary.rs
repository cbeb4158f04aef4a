//! Model summaries (what Keras' `model.summary()` prints and PyTorch lacks): per layer its path,
//! type, output shape, parameters (trainable and not), multiply-accumulates per sample and
//! activation memory at a batch size, with totals. Computed from the spec alone.
//!
//! MACs count the multiply-adds of Linear, Conv2d (`O·OH·OW·(C/g)·kH·kW`) and recurrent layers
//! (`T·Σ_k D·G·H·(in_k + H)`); normalisation, pooling, activations, embedding lookups and the
//! merges of branches count as 0. A block's row (Sequential, Residual, Add, Concat, and each
//! branch) shows the totals of the layers inside it.

use crate::check::memory::{group_digits_u128, human_bytes_u128};
use crate::check::report::{CheckReport, dtype_note, table};
use crate::check::shape::{SymShape, saturating_product};
use strata_core::{DType, Device};

/// One row of a summary.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// Dotted path.
    pub path: String,
    /// Nesting depth.
    pub depth: usize,
    /// `Linear 784 → 128`.
    pub layer_type: String,
    /// Output shape.
    pub output: SymShape,
    /// Trainable parameters of the layer itself (blocks: their layers' sum).
    pub params: usize,
    /// Non-trainable parameters (buffers such as running statistics).
    pub non_trainable: usize,
    /// Multiply-accumulates per sample.
    pub macs: usize,
    /// Bytes of the output at the summary's batch size (f32).
    pub activation_bytes: usize,
    /// Whether the row is a block whose layers follow.
    pub is_block: bool,
    /// Where it runs when the model is placed (`None`: wherever the model is moved).
    pub device: Option<Device>,
}

/// An activation crossing devices in a placed model: into `layer`, from `from` to `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// The layer whose input moves.
    pub layer: String,
    /// Where the activation was (`None`: the model's device).
    pub from: Option<Device>,
    /// Where the layer runs.
    pub to: Option<Device>,
    /// Bytes per sample (f32), forward; the gradient moves the same bytes back.
    pub bytes_per_sample: usize,
}

/// A summary table with totals.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The model's name.
    pub name: String,
    /// The input shape.
    pub input: SymShape,
    /// The input's element type (`I64` for token ids).
    pub input_dtype: DType,
    /// The batch size used for activation memory.
    pub batch_size: usize,
    /// The rows, blocks before their layers.
    pub rows: Vec<SummaryRow>,
    /// Total trainable parameters (PyTorch's `sum(p.numel() for p in model.parameters())`).
    pub total_params: usize,
    /// Total non-trainable parameters.
    pub total_non_trainable: usize,
    /// Total multiply-accumulates per sample.
    pub total_macs: usize,
    /// Total activation bytes at the batch size.
    pub total_activation_bytes: usize,
    /// The device boundaries of a placed model, in forward order (empty when not placed).
    pub transfers: Vec<Transfer>,
}

impl Summary {
    /// The summary of a model that checked without errors (`report.errors` empty).
    pub fn from_report(report: &CheckReport, batch_size: usize) -> Summary {
        let mut rows: Vec<SummaryRow> = report
            .trace
            .iter()
            .map(|r| {
                let params = r
                    .spec
                    .own_parameter_shapes()
                    .unwrap_or_default()
                    .iter()
                    .map(|(_, s)| saturating_product(s))
                    .fold(0, usize::saturating_add);
                let macs = r.spec.macs(&r.output);
                // Running statistics count as non-trainable (as Keras does); the
                // `num_batches_tracked` counter is not a parameter.
                let non_trainable = r
                    .spec
                    .own_buffer_shapes()
                    .unwrap_or_default()
                    .iter()
                    .filter(|(n, _)| n != "num_batches_tracked")
                    .map(|(_, s)| saturating_product(s))
                    .fold(0, usize::saturating_add);
                let is_block = r.spec.is_block();
                SummaryRow {
                    path: r.layer.path.clone(),
                    depth: r.depth,
                    layer_type: r.spec.to_string(),
                    output: r.output.clone(),
                    params,
                    non_trainable,
                    macs,
                    activation_bytes: if is_block {
                        0
                    } else {
                        saturating_product(&[r.output.sample_numel(), batch_size, 4])
                    },
                    is_block,
                    device: r.device,
                }
            })
            .collect();
        // A leaf layer on another device than the one before it moves its input there.
        let mut transfers = vec![];
        let mut at = report.resolved.device;
        for r in report.trace.iter().filter(|r| !r.spec.is_block()) {
            if r.device.is_some() && r.device != at {
                let bytes_per_sample = saturating_product(&[r.input.sample_numel(), 4]);
                transfers.push(Transfer { layer: r.layer.path.clone(), from: at, to: r.device, bytes_per_sample });
                at = r.device;
            }
        }
        // A block's figures are its layers' totals (rows after it at a greater depth).
        for i in (0..rows.len()).rev() {
            if rows[i].is_block {
                let d = rows[i].depth;
                let inner: Vec<&SummaryRow> =
                    rows[i + 1..].iter().take_while(|r| r.depth > d).filter(|r| !r.is_block).collect();
                let (p, n, m, a) = inner.iter().fold((0, 0, 0, 0), |acc, r| add_row(acc, r));
                rows[i].params = p;
                rows[i].non_trainable = n;
                rows[i].macs = m;
                rows[i].activation_bytes = a;
            }
        }
        let leaves = rows.iter().filter(|r| !r.is_block);
        let total = leaves.fold((0, 0, 0, 0), add_row);
        Summary {
            name: report.name.clone(),
            input: report.input.clone().unwrap_or(SymShape(vec![])),
            input_dtype: report.input_dtype,
            batch_size,
            rows,
            total_params: total.0,
            total_non_trainable: total.1,
            total_macs: total.2,
            total_activation_bytes: total.3,
            transfers,
        }
    }

    /// The table as text.
    pub fn render(&self) -> String {
        // A device column only for a placed model (the others read as before).
        let placed = self.rows.iter().any(|r| r.device.is_some());
        let device_name = |d: Option<Device>| d.map_or("(model's)".to_string(), |d| d.to_string());
        let mut header = vec![
            "layer".to_string(),
            "type".into(),
            "output".into(),
            "params".into(),
            "non-trainable".into(),
            "MACs/sample".into(),
            format!("activations (N={})", self.batch_size),
        ];
        if placed {
            header.push("device".into());
        }
        let mut rows = vec![header];
        for r in &self.rows {
            let mut row = vec![
                format!("{}{}", "  ".repeat(r.depth), r.path),
                r.layer_type.clone(),
                r.output.to_string(),
                group_digits(r.params),
                group_digits(r.non_trainable),
                group_digits(r.macs),
                human_bytes(r.activation_bytes),
            ];
            if placed {
                row.push(device_name(r.device));
            }
            rows.push(row);
        }
        let mut total = vec![
            "total".into(),
            String::new(),
            String::new(),
            group_digits(self.total_params),
            group_digits(self.total_non_trainable),
            group_digits(self.total_macs),
            human_bytes(self.total_activation_bytes),
        ];
        if placed {
            total.push(String::new());
        }
        rows.push(total);
        let mut s = format!("{}: input {}{}\n", self.name, self.input, dtype_note(self.input_dtype));
        s.push_str(&table(&rows, &[false, false, false, true, true, true, true, false][..rows[0].len()]));
        s.push_str(&format!(
            "{} parameters ({} trainable, {} non-trainable): {} in f32\n",
            group_digits(self.total_params.saturating_add(self.total_non_trainable)),
            group_digits(self.total_params),
            group_digits(self.total_non_trainable),
            human_bytes(self.total_params.saturating_add(self.total_non_trainable).saturating_mul(4))
        ));
        if placed {
            // Per device: parameter and activation memory; then each boundary's traffic.
            let mut devices: Vec<Option<Device>> = vec![];
            for r in self.rows.iter().filter(|r| !r.is_block) {
                if !devices.contains(&r.device) {
                    devices.push(r.device);
                }
            }
            for d in devices {
                let on = self.rows.iter().filter(|r| !r.is_block && r.device == d);
                let (p, n, _, a) = on.fold((0, 0, 0, 0), add_row);
                s.push_str(&format!(
                    "on {}: {} parameters ({} in f32), activations {} at N={}\n",
                    device_name(d),
                    group_digits(p.saturating_add(n)),
                    human_bytes(p.saturating_add(n).saturating_mul(4)),
                    human_bytes(a),
                    self.batch_size
                ));
            }
            for t in &self.transfers {
                s.push_str(&format!(
                    "into {}: {} → {}, {} per sample forward (and its gradient back)\n",
                    t.layer,
                    device_name(t.from),
                    device_name(t.to),
                    human_bytes(t.bytes_per_sample)
                ));
            }
        }
        s
    }
}

/// A block's (or the model's) totals plus one row's figures, saturating at `usize::MAX`.
fn add_row(acc: (usize, usize, usize, usize), r: &SummaryRow) -> (usize, usize, usize, usize) {
    (
        acc.0.saturating_add(r.params),
        acc.1.saturating_add(r.non_trainable),
        acc.2.saturating_add(r.macs),
        acc.3.saturating_add(r.activation_bytes),
    )
}

/// `1234567` → `1,234,567`; a count that overflowed (saturated at `usize::MAX`) is
/// `≥18,446,744,073,709,551,615`: at least that, all that is known of it.
pub fn group_digits(n: usize) -> String {
    if n == usize::MAX {
        return format!("≥{}", group_digits_u128(n as u128));
    }
    group_digits_u128(n as u128)
}

/// Bytes as `512 B`, `32.0 KiB`, `1.5 MiB` (and GiB, TiB… past 1 GiB); an overflowed count
/// (saturated at `usize::MAX`) is `≥16.0 EiB`.
pub fn human_bytes(b: usize) -> String {
    match b {
        usize::MAX => format!("≥{}", human_bytes_u128(b as u128)),
        b if b < 1024 * 1024 * 1024 => match b {
            b if b < 1024 => format!("{b} B"),
            b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
            b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
        },
        b => human_bytes_u128(b as u128),
    }
}
