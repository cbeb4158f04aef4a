//! 2-D padding of the last two dimensions, as `torch.nn.functional.pad(x, (left, right, top,
//! bottom), mode)` with the modes `nn.Conv2d`'s `padding_mode` names: zeros, reflect,
//! replicate and circular. `Conv2d` applies it before a convolution with padding 0 when its
//! padding is not plain symmetric zeros.
//!
//! Every output element copies one input element (or is a zero), so the op is a gather through
//! two index tables, one per axis (`cpu.rs`), and its backward is the adjoint scatter-add
//! through the same tables: `d_x[src(oy), src(ox)] += d_y[oy, ox]`. On a GPU the pooling
//! kernels run it (one tap per output cell, divisors of 1).

mod cpu;

use super::with_float;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::storage::Element;
use crate::tensor::Tensor;

/// How the border of a padded plane is filled: `nn.Conv2d`'s `padding_mode` (PyTorch's names;
/// `F.pad` calls the first one `constant` with value 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PaddingMode {
    /// Zeros: `0 0 | a b c | 0 0`.
    #[default]
    Zeros,
    /// Mirror images without repeating the edge: `c b | a b c | b a`. Each padding must be
    /// smaller than the size it pads.
    Reflect,
    /// Copies of the edge element: `a a | a b c | c c`.
    Replicate,
    /// Wrap-around (periodic): `b c | a b c | a b`. Each padding must be at most the size it
    /// pads (it wraps around once).
    Circular,
}

impl PaddingMode {
    /// The name in model files and PyTorch: `"zeros"`, `"reflect"`, `"replicate"`, `"circular"`.
    pub fn name(self) -> &'static str {
        match self {
            PaddingMode::Zeros => "zeros",
            PaddingMode::Reflect => "reflect",
            PaddingMode::Replicate => "replicate",
            PaddingMode::Circular => "circular",
        }
    }

    /// Parses a name (see [`PaddingMode::name`]).
    pub fn from_name(name: &str) -> Option<PaddingMode> {
        PaddingMode::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Every mode, in PyTorch's order.
    pub const ALL: [PaddingMode; 4] =
        [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular];

    /// The largest padding this mode allows on one side of a dimension of `size`, as PyTorch
    /// enforces: `size − 1` for reflect (the mirror excludes the edge), `size` for circular
    /// (one wrap), none for zeros, and replicate needs a non-empty dimension.
    pub fn max_padding(self, size: usize) -> usize {
        match self {
            PaddingMode::Zeros => usize::MAX,
            PaddingMode::Replicate if size == 0 => 0,
            PaddingMode::Replicate => usize::MAX,
            PaddingMode::Reflect => size.saturating_sub(1),
            PaddingMode::Circular => size,
        }
    }

    /// Why a padding over [`PaddingMode::max_padding`] is refused, in PyTorch's terms.
    pub fn limit_reason(self) -> &'static str {
        match self {
            PaddingMode::Reflect => "reflect padding must be smaller than the dimension it pads",
            PaddingMode::Circular => "circular padding may wrap around at most once (padding ≤ the dimension)",
            PaddingMode::Replicate => "replicate padding needs a non-empty dimension",
            PaddingMode::Zeros => "",
        }
    }

    /// The input index that output position `o` of a dimension of `size` padded by `before`
    /// copies, or `None` for a zero. Assumes the padding is within [`PaddingMode::max_padding`].
    fn source(self, o: usize, before: usize, size: usize) -> Option<usize> {
        let (i, n) = (o as isize - before as isize, size as isize);
        let i = match self {
            PaddingMode::Zeros => return (0..n).contains(&i).then_some(i as usize),
            // Mirror about the edge element: −1 → 1, n → n − 2.
            PaddingMode::Reflect if i < 0 => -i,
            PaddingMode::Reflect if i >= n => 2 * (n - 1) - i,
            PaddingMode::Reflect => i,
            PaddingMode::Replicate => i.clamp(0, n - 1),
            PaddingMode::Circular => i.rem_euclid(n),
        };
        Some(i as usize)
    }
}

impl std::fmt::Display for PaddingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Pads the last two dimensions of `x`: `pad = [left, right, top, bottom]` elements
/// (`F.pad`'s order, last dimension first), filled as `mode` says; as
/// `torch.nn.functional.pad(x, pad, mode)` (with `mode = "constant"`, value 0, for zeros).
///
/// Differentiable: an input element gets the sum of the gradients of every output that copies
/// it (a reflected, wrapped or replicated border sends its gradient back to the elements it
/// copies).
///
/// # Shapes
/// - `x`: `[*, H, W]` (any leading dimensions; `[N, C, H, W]` for a convolution)
/// - output: `[*, top + H + bottom, left + W + right]`
/// - reflect: each padding `< H` (top, bottom) or `< W` (left, right); circular: `≤`;
///   replicate: `H, W ≥ 1` when padding
///
/// ```
/// # use strata_core::{Tensor, pad2d, PaddingMode};
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[1, 1, 1, 3])?;
/// let y = pad2d(&x, [2, 2, 0, 0], PaddingMode::Reflect)?;
/// assert_eq!(y.to_vec::<f32>()?, [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
/// # Ok::<(), strata_core::Error>(())
/// ```
pub fn pad2d(x: &Tensor, pad: [usize; 4], mode: PaddingMode) -> Result<Tensor> {
    const OP: &str = "pad2d";
    if x.ndim() < 2 {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "input",
            got: x.shape().clone(),
            expected: "[*, H, W]: at least 2 dimensions (the last two are padded)".into(),
        });
    }
    let nd = x.ndim();
    let (h, w) = (x.dims()[nd - 2], x.dims()[nd - 1]);
    let [left, right, top, bottom] = pad;
    for (side, p, dim, size) in
        [("left", left, nd - 1, w), ("right", right, nd - 1, w), ("top", top, nd - 2, h), ("bottom", bottom, nd - 2, h)]
    {
        if p > 0 && p > mode.max_padding(size) {
            crate::bail_arg!(
                OP,
                "{}: the {side} padding {p} of dimension {dim} is too large for input {} (size {size}); use at most {}",
                mode.limit_reason(),
                x.shape(),
                mode.max_padding(size)
            );
        }
    }
    // Sizes past a usize (or an output no buffer could hold) are refused, not wrapped around.
    let out_h = top.checked_add(h).and_then(|v| v.checked_add(bottom));
    let out_w = left.checked_add(w).and_then(|v| v.checked_add(right));
    let leading = &x.dims()[..nd - 2];
    let fits = |oh: usize, ow: usize| crate::shape::checked_product(&[leading, &[oh, ow][..]].concat()).is_some();
    if !matches!((out_h, out_w), (Some(oh), Some(ow)) if fits(oh, ow)) {
        crate::bail_arg!(
            OP,
            "padding {pad:?} of input {} gives an output too large to represent; use a smaller padding",
            x.shape()
        );
    }
    let rows: Vec<Option<usize>> = (0..top + h + bottom).map(|o| mode.source(o, top, h)).collect();
    let cols: Vec<Option<usize>> = (0..left + w + right).map(|o| mode.source(o, left, w)).collect();
    let planes = x.dims()[..nd - 2].iter().product::<usize>();
    let mut out_dims = x.dims().to_vec();
    (out_dims[nd - 2], out_dims[nd - 1]) = (rows.len(), cols.len());
    let out_shape = Shape(out_dims);
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        if x.dtype() != crate::DType::F32 {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: x.dtype(),
                hint: " on a GPU (padding takes f32 there)",
            });
        }
        // The pooling kernels with one tap (or none, a zero) per output cell and divisors of 1:
        // the forward gathers, the backward sums each input element's copies in a fixed order.
        let taps: Vec<Vec<u32>> = rows
            .iter()
            .flat_map(|&iy| cols.iter().map(move |&ix| iy.zip(ix).map(|(iy, ix)| (iy * w + ix) as u32)))
            .map(|tap| tap.into_iter().collect())
            .collect();
        let (cells, divisors) = (taps.len(), vec![1.0; taps.len()]);
        return super::pool::gpu::pool(OP, x, (planes, h * w, cells), || taps, Some(divisors), out_shape);
    }
    let parallel = super::tasks::parallel_for(out_shape.numel());

    let xc = x.contiguous()?.detach();
    let s = xc.cpu_storage("pad2d")?;
    let xo = xc.layout().offset;
    let storage = with_float!(s, OP, |v: T| {
        Ok(T::wrap(cpu::pad2d_forward::<T>(&v[xo..xo + x.numel()], planes, (h, w), &rows, &cols, parallel)))
    })?;
    let x_shape = x.shape().clone();
    Ok(Tensor::from_op(storage, out_shape, OP, &[x], move |g| {
        // d_x[src(oy), src(ox)] += d_y[oy, ox]: the adjoint of the gather.
        let gc = g.contiguous()?;
        let s = gc.cpu_storage("pad2d")?;
        let go = gc.layout().offset;
        let dx = with_float!(s, "pad2d backward", |v: T| {
            let dy = &v[go..go + gc.numel()];
            Ok(T::wrap(cpu::pad2d_backward::<T>(dy, planes, (h, w), &rows, &cols, parallel)))
        })?;
        Ok(vec![Some(Tensor::from_storage(dx, x_shape))])
    }))
}

#[cfg(test)]
mod tests {
    use super::{PaddingMode, pad2d};
    use crate::testing::{gradcheck, randn64};
    use crate::{Generator, Tensor};

    /// `[[1, 2, 3], [4, 5, 6]]` as `[1, 1, 2, 3]`, f64.
    fn x23() -> Tensor {
        Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 1, 2, 3]).unwrap()
    }

    /// The padded plane of `x23()` as rows, and the gradient of its sum (how many outputs copy
    /// each input element).
    fn pad_and_count(pad: [usize; 4], mode: PaddingMode) -> (Vec<Vec<f64>>, Vec<f64>) {
        let x = x23().requires_grad_().unwrap();
        let y = pad2d(&x, pad, mode).unwrap();
        let ow = y.dims()[3];
        let rows = y.to_vec_f64().chunks(ow).map(<[f64]>::to_vec).collect();
        y.sum_all().unwrap().backward().unwrap();
        (rows, x.grad().unwrap().to_vec_f64())
    }

    #[test]
    fn every_mode_by_hand() {
        // Padding 1 on every side of [[1, 2, 3], [4, 5, 6]], as F.pad(x, (1, 1, 1, 1), mode).
        let (y, d) = pad_and_count([1, 1, 1, 1], PaddingMode::Reflect);
        let (a, b) = (vec![5.0, 4.0, 5.0, 6.0, 5.0], vec![2.0, 1.0, 2.0, 3.0, 2.0]);
        assert_eq!(y, [a.clone(), b.clone(), a, b]);
        // Rows are each copied twice; column 1 three times (itself and both mirrors).
        assert_eq!(d, [2.0, 6.0, 2.0, 2.0, 6.0, 2.0]);

        let (y, d) = pad_and_count([1, 1, 1, 1], PaddingMode::Replicate);
        let (a, b) = (vec![1.0, 1.0, 2.0, 3.0, 3.0], vec![4.0, 4.0, 5.0, 6.0, 6.0]);
        assert_eq!(y, [a.clone(), a, b.clone(), b]);
        assert_eq!(d, [4.0, 2.0, 4.0, 4.0, 2.0, 4.0]);

        let (y, d) = pad_and_count([1, 1, 1, 1], PaddingMode::Circular);
        let (a, b) = (vec![6.0, 4.0, 5.0, 6.0, 4.0], vec![3.0, 1.0, 2.0, 3.0, 1.0]);
        assert_eq!(y, [a.clone(), b.clone(), a, b]);
        assert_eq!(d, [4.0, 2.0, 4.0, 4.0, 2.0, 4.0]);

        // Asymmetric zeros, as "same" padding for a 2×2 kernel puts the extra on the right and
        // bottom: here the other way round, to check the order [left, right, top, bottom].
        let (y, d) = pad_and_count([0, 1, 1, 0], PaddingMode::Zeros);
        assert_eq!(y, [vec![0.0; 4], vec![1.0, 2.0, 3.0, 0.0], vec![4.0, 5.0, 6.0, 0.0]]);
        assert_eq!(d, [1.0; 6]);

        // Circular padding of the full size wraps exactly once.
        let (y, _) = pad_and_count([3, 0, 0, 0], PaddingMode::Circular);
        assert_eq!(y, [vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0, 4.0, 5.0, 6.0]]);
        // No padding is the identity.
        assert_eq!(pad_and_count([0; 4], PaddingMode::Reflect).0, [vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Generator::new(7);
        let x = randn64(&[2, 3, 4, 5], &mut rng);
        for mode in PaddingMode::ALL {
            // Asymmetric, and at each mode's limit where it has one (reflect < size, circular ≤).
            let pads: &[[usize; 4]] = match mode {
                PaddingMode::Reflect => &[[2, 1, 3, 0], [4, 4, 3, 3]],
                PaddingMode::Circular => &[[2, 1, 3, 0], [5, 5, 4, 4]],
                _ => &[[2, 1, 3, 0], [6, 6, 5, 5]],
            };
            for &pad in pads {
                gradcheck(std::slice::from_ref(&x), |t| pad2d(&t[0], pad, mode));
            }
        }
        // Unbatched and non-contiguous inputs.
        let xt = randn64(&[3, 5, 4], &mut rng).transpose(1, 2).unwrap();
        for mode in PaddingMode::ALL {
            gradcheck(std::slice::from_ref(&xt), |t| pad2d(&t[0], [1, 2, 2, 1], mode));
            let y = pad2d(&xt, [1, 2, 2, 1], mode).unwrap();
            let yc = pad2d(&xt.contiguous().unwrap(), [1, 2, 2, 1], mode).unwrap();
            assert_eq!(y.dims(), &[3, 7, 8]);
            assert_eq!(y.to_vec_f64(), yc.to_vec_f64());
        }
    }

    #[test]
    fn f32_matches_f64_exactly() {
        // Padding copies values, so f32 and f64 agree bit for bit on f32-representable data.
        let x64 = randn64(&[2, 2, 3, 4], &mut Generator::new(3));
        let x32 = x64.to_dtype(crate::DType::F32).unwrap();
        for mode in PaddingMode::ALL {
            let a = pad2d(&x32, [2, 1, 1, 2], mode).unwrap().to_vec_f64();
            let b = pad2d(&x32.to_dtype(crate::DType::F64).unwrap(), [2, 1, 1, 2], mode).unwrap().to_vec_f64();
            assert_eq!(a, b, "{mode}");
        }
    }

    #[test]
    fn too_much_padding_is_an_error_naming_the_limit() {
        let x = x23();
        let e = pad2d(&x, [3, 0, 0, 0], PaddingMode::Reflect).unwrap_err().to_string();
        assert_eq!(
            e,
            "pad2d: reflect padding must be smaller than the dimension it pads: the left padding 3 of dimension 3 \
             is too large for input [1, 1, 2, 3] (size 3); use at most 2"
        );
        let e = pad2d(&x, [0, 0, 0, 3], PaddingMode::Circular).unwrap_err().to_string();
        assert!(e.contains("circular padding may wrap around at most once") && e.contains("bottom padding 3"), "{e}");
        // Zeros and replicate have no limit.
        assert_eq!(pad2d(&x, [9, 9, 9, 9], PaddingMode::Replicate).unwrap().dims(), &[1, 1, 20, 21]);
        assert_eq!(pad2d(&x, [9, 9, 9, 9], PaddingMode::Zeros).unwrap().dims(), &[1, 1, 20, 21]);
        assert!(pad2d(&Tensor::ones(&[3], crate::DType::F32), [1; 4], PaddingMode::Zeros).is_err());
        assert!(pad2d(&Tensor::from_vec(vec![1i64, 2], &[1, 2]).unwrap(), [1; 4], PaddingMode::Zeros).is_err());
    }

    #[test]
    fn names_round_trip() {
        for m in PaddingMode::ALL {
            assert_eq!(PaddingMode::from_name(m.name()), Some(m));
        }
        assert_eq!(PaddingMode::from_name("constant"), None);
    }
}
