//! The pooling nodes that are more than one ONNX op: adaptive average pooling whose windows
//! are not a plain AveragePool (Slice + ReduceMean per window, one axis after another), and
//! AvgPool2d's `divisor_override` (window sums as a depthwise Conv of ones, then a scale).

use super::{Graph, int, ints, unsupported};
use crate::Result;
use crate::check::shape::{Dim, SymShape};
use crate::spec::LayerSpec;

impl Graph<'_> {
    /// `AdaptiveAvgPool2d(output_size)` on `x: [N, C, H, W]` (`out` = `[OH, OW]`), or
    /// `AdaptiveAvgPool1d` on `[N, C, L]` (`out` = `[OL]`), one spatial axis after the other
    /// (a window's mean is the mean over its rows of the means over its columns): an axis whose
    /// size the output divides is an `AveragePool` with kernel = stride = size / output (as
    /// PyTorch exports it); otherwise each output position is the `ReduceMean` of its window
    /// `[⌊i·S/O⌋, ⌈(i+1)·S/O⌉)` (PyTorch's adaptive windows), the positions concatenated.
    pub(super) fn adaptive_avg_pool(
        &mut self,
        path: &str,
        spec: &LayerSpec,
        out: &[usize],
        x: String,
    ) -> Result<String> {
        let (input, _) = self.shapes_of(path, spec)?;
        let size = |axis: usize| match input.0.get(axis) {
            Some(Dim::Fixed(n)) => Ok(*n),
            _ => Err(unsupported(path, spec, format!("input {input} has no fixed size in dimension {axis}"))),
        };
        let sizes = (0..out.len()).map(|i| size(2 + i)).collect::<Result<Vec<usize>>>()?;
        let first_node = self.nodes.len();
        let mut x = x;
        for (i, (&s, &o)) in sizes.iter().zip(out).enumerate() {
            let axis = 2 + i;
            if s == o {
                continue;
            }
            if s.is_multiple_of(o) {
                let mut k = vec![1; out.len()];
                k[i] = s / o;
                let attrs = vec![ints("kernel_shape", &k), ints("strides", &k)];
                x = self.node("AveragePool", &format!("{path}/AveragePool"), vec![x], attrs);
                continue;
            }
            let mut parts = vec![];
            for i in 0..o {
                let (start, end) = (i * s / o, ((i + 1) * s).div_ceil(o));
                let window = self.slice(&format!("{path}/Slice"), x.clone(), axis, start as i64, end as i64);
                let attrs = vec![ints("axes", &[axis]), int("keepdims", 1)];
                parts.push(self.node("ReduceMean", &format!("{path}/ReduceMean"), vec![window], attrs));
            }
            x = self.node("Concat", &format!("{path}/Concat"), parts, vec![int("axis", axis as i64)]);
        }
        // The layer's path names its last node (none when the output size is the input's).
        if self.nodes.len() > first_node {
            let name = self.fresh(path);
            let last = self.nodes.last_mut().expect("checked");
            let old = std::mem::replace(&mut last.name, name);
            self.names.remove(&old);
        }
        Ok(x)
    }

    /// `AvgPool2d` with `divisor_override` (ONNX's AveragePool divides by the window's size):
    /// each window's sum, a depthwise `Conv` with a kernel of ones (`[C, 1, kH, kW]`, `group =
    /// C`) over the zero-padded input, times `1/divisor`. With `ceil_mode` the last windows
    /// may hang over the bottom and right: extra zeros there, which add nothing to a sum.
    pub(super) fn sum_pool(
        &mut self,
        path: &str,
        spec: &LayerSpec,
        o: &strata_core::AvgPool2dOptions,
        divisor: usize,
        x: String,
    ) -> Result<String> {
        let (input, output) = self.shapes_of(path, spec)?;
        let fixed = |s: &SymShape, axis: usize| match s.0.get(axis) {
            Some(Dim::Fixed(n)) => Ok(*n),
            _ => Err(unsupported(path, spec, format!("{s} has no fixed size in dimension {axis}"))),
        };
        let (c, h, w, oh, ow) =
            (fixed(&input, 1)?, fixed(&input, 2)?, fixed(&input, 3)?, fixed(&output, 2)?, fixed(&output, 3)?);
        let (kh, kw) = o.kernel_size;
        let extra = |out: usize, stride: usize, k: usize, size: usize, pad: usize| {
            ((out.max(1) - 1) * stride + k).saturating_sub(size + 2 * pad)
        };
        let (eh, ew) = (extra(oh, o.stride.0, kh, h, o.padding.0), extra(ow, o.stride.1, kw, w, o.padding.1));
        let ones = self.constant(&format!("{path}/ones"), &[c, 1, kh, kw], &vec![1.0; c * kh * kw]);
        let attrs = vec![
            ints("kernel_shape", &[kh, kw]),
            ints("strides", &[o.stride.0, o.stride.1]),
            ints("pads", &[o.padding.0, o.padding.1, o.padding.0 + eh, o.padding.1 + ew]),
            int("group", c as i64),
        ];
        let sum = self.node("Conv", &format!("{path}/Conv"), vec![x, ones], attrs);
        let scale = self.constant(&format!("{path}/inverse_divisor"), &[], &[1.0 / divisor as f64]);
        Ok(self.node("Mul", path, vec![sum, scale], vec![]))
    }
}
