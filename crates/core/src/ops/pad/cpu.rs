//! The CPU kernels of 2-D padding: a gather through per-axis index tables (forward) and its
//! adjoint, a scatter-add through the same tables (backward).

use super::super::tasks::for_each_chunk;
use crate::storage::Float;

/// Where each output row (or column) of a padded plane reads from: an input index, or `None`
/// for a zero. Built once per call by `super::source_index`, shared by forward and backward.
pub(crate) type Taps = [Option<usize>];

/// `out[p, oy, ox] = x[p, rows[oy], cols[ox]]` (0 where either is `None`), for each of the
/// `planes` contiguous `h×w` planes of `x`.
pub(crate) fn pad2d_forward<T: Float>(
    x: &[T],
    planes: usize,
    (h, w): (usize, usize),
    rows: &Taps,
    cols: &Taps,
    parallel: bool,
) -> Vec<T> {
    let (hw, ow) = (h * w, cols.len());
    // From the buffer pool (see `storage`), each plane zeroed by its own task: the padding the
    // taps do not cover stays zero.
    let mut out = T::take_buffer(planes * rows.len() * ow);
    for_each_chunk(&mut out, rows.len() * ow, parallel, |p, out_p| {
        out_p.fill(T::ZERO);
        let plane = &x[p * hw..(p + 1) * hw];
        for (out_row, &iy) in out_p.chunks_mut(ow.max(1)).zip(rows) {
            let Some(iy) = iy else { continue };
            let in_row = &plane[iy * w..(iy + 1) * w];
            for (o, &ix) in out_row.iter_mut().zip(cols) {
                if let Some(ix) = ix {
                    *o = in_row[ix];
                }
            }
        }
    });
    out
}

/// The adjoint of [`pad2d_forward`]: `d_x[p, rows[oy], cols[ox]] += d_y[p, oy, ox]`, in
/// row-major order of the output (a fixed order, so results do not depend on threads). An
/// input element that several outputs copy (an edge under `replicate`, a reflected or wrapped
/// border) gets the sum of their gradients.
pub(crate) fn pad2d_backward<T: Float>(
    dy: &[T],
    planes: usize,
    (h, w): (usize, usize),
    rows: &Taps,
    cols: &Taps,
    parallel: bool,
) -> Vec<T> {
    let (hw, ow) = (h * w, cols.len());
    let ohw = rows.len() * ow;
    // From the buffer pool, each plane zeroed by its own task before the gradients are added.
    let mut dx = T::take_buffer(planes * hw);
    for_each_chunk(&mut dx, hw, parallel, |p, dx_p| {
        dx_p.fill(T::ZERO);
        let g = &dy[p * ohw..(p + 1) * ohw];
        for (g_row, &iy) in g.chunks(ow.max(1)).zip(rows) {
            let Some(iy) = iy else { continue };
            let dx_row = &mut dx_p[iy * w..(iy + 1) * w];
            for (&gi, &ix) in g_row.iter().zip(cols) {
                if let Some(ix) = ix {
                    dx_row[ix] += gi;
                }
            }
        }
    });
    dx
}
