//! Joining and splitting along a dimension: `cat` and `stack` (one copy; backward hands each
//! input its slice of the gradient as a view), and `split` / `chunk` / `unbind`, views whose
//! backward writes every piece's gradient into one shared buffer.
//!
//! Why splitting needs its own op: with `narrow`, each piece's backward makes a zero tensor of
//! the whole input and the engine adds those up — T pieces cost T whole-size buffers, which for
//! a recurrent network's per-step slices of a `[T, N, 4H]` projection is quadratic in T. Here the
//! pieces add their gradients into one buffer held by a "hub" node between the input and the
//! pieces; the hub runs after every piece (the graph orders it so) and passes the buffer on.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernels, `gpu.rs` the GPU
//! path (the `gpu` feature).

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;

use crate::autograd::is_grad_enabled;
use crate::error::{Error, Result};
use crate::shape::{Layout, Shape};
use crate::storage::{CpuStorage, Storage};
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex};

// ------------------------------------------------------------------ cat and stack

/// The shared forward of `cat` and `stack`: `parts` are viewed as `[outer, size_i·inner]` and
/// joined along their second dimension into `out_shape`.
fn join(op: &'static str, parts: &[&Tensor], run_len: Vec<usize>, outer: usize, out_shape: Shape) -> Result<Storage> {
    #[cfg(feature = "gpu")]
    if parts[0].device().is_gpu() {
        return gpu::join(parts, &run_len, outer, &out_shape);
    }
    let storage = cpu::join(parts, &run_len, outer)?;
    debug_assert_eq!(storage.len(), out_shape.numel(), "{op}");
    Ok(storage.into())
}

/// Checks that every part shares the first one's device and type.
fn check_parts(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    let Some(first) = tensors.first() else {
        crate::bail_arg!(op, "expected a non-empty list of tensors");
    };
    tensors[1..].iter().try_for_each(|t| first.check_same(op, t))
}

/// Concatenates tensors along `dim`, as `torch.cat(tensors, dim)`.
///
/// # Shapes
/// - inputs: the same shape except along `dim`, e.g. `[N, a, F]`, `[N, b, F]`
/// - output: sizes along `dim` added, e.g. `[N, a + b, F]`
///
/// ```
/// # use strata_core::{Tensor, cat};
/// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2])?;
/// let b = Tensor::from_vec(vec![3.0f32, 4.0, 5.0, 6.0], &[2, 2])?;
/// assert_eq!(cat(&[&a, &b], 0)?.to_vec::<f32>()?, [1., 2., 3., 4., 5., 6.]);
/// # Ok::<(), strata_core::Error>(())
/// ```
pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
    check_parts("cat", tensors)?;
    let first = tensors[0];
    let d = first.shape().resolve_dim("cat", dim)?;
    for (i, t) in tensors.iter().enumerate().skip(1) {
        let fits = t.ndim() == first.ndim()
            && t.dims().iter().zip(first.dims()).enumerate().all(|(k, (a, b))| k == d || a == b);
        if !fits {
            let mut expected: Vec<String> = first.dims().iter().map(usize::to_string).collect();
            if t.ndim() == first.ndim() {
                expected[d] = "*".into();
            }
            return Err(Error::ShapeMismatch {
                op: "cat",
                what: "a tensor",
                got: t.shape().clone(),
                expected: format!(
                    "[{}] (tensor {i} must match tensor 0, of shape {}, in every dimension but {d})",
                    expected.join(", "),
                    first.shape()
                ),
            });
        }
    }
    let outer: usize = first.dims()[..d].iter().product();
    let inner: usize = first.dims()[d + 1..].iter().product();
    let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[d]).collect();
    let mut out_dims = first.dims().to_vec();
    out_dims[d] = sizes.iter().sum();
    let out_shape = Shape(out_dims);
    let storage = join("cat", tensors, sizes.iter().map(|s| s * inner).collect(), outer, out_shape.clone())?;
    Ok(Tensor::from_op(storage, out_shape, "cat", tensors, move |g| {
        // Each input's gradient is its slice of g along d (a view, no copy).
        let mut start = 0;
        let mut grads = Vec::with_capacity(sizes.len());
        for &s in &sizes {
            grads.push(Some(g.narrow(d as isize, start, s)?));
            start += s;
        }
        Ok(grads)
    }))
}

/// Stacks tensors of one shape along a new dimension `dim`, as `torch.stack(tensors, dim)`.
///
/// # Shapes
/// - inputs: k tensors of the same shape `[d0, …, dn]`
/// - output: `[d0, …, k, …, dn]` with `k` inserted at `dim` (`0..=n+1`; negative counts from
///   the end of the output's dimensions)
pub fn stack(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
    check_parts("stack", tensors)?;
    let first = tensors[0];
    let nd = first.ndim() as isize + 1;
    let d = if dim < 0 { dim + nd } else { dim };
    if !(0..nd).contains(&d) {
        return Err(Error::DimOutOfRange { op: "stack", dim, shape: first.shape().clone(), ndim: nd as usize });
    }
    let d = d as usize;
    for (i, t) in tensors.iter().enumerate().skip(1) {
        if t.shape() != first.shape() {
            return Err(Error::ShapeMismatch {
                op: "stack",
                what: "a tensor",
                got: t.shape().clone(),
                expected: format!("{} (tensor {i} must have the shape of tensor 0)", first.shape()),
            });
        }
    }
    let outer: usize = first.dims()[..d].iter().product();
    let inner: usize = first.dims()[d..].iter().product();
    let mut out_dims = first.dims().to_vec();
    out_dims.insert(d, tensors.len());
    let out_shape = Shape(out_dims);
    let storage = join("stack", tensors, vec![inner; tensors.len()], outer, out_shape.clone())?;
    let in_shape = first.shape().clone();
    let k = tensors.len();
    Ok(Tensor::from_op(storage, out_shape, "stack", tensors, move |g| {
        (0..k).map(|i| Ok(Some(g.narrow(d as isize, i, 1)?.reshape(in_shape.dims())?))).collect()
    }))
}

// ------------------------------------------------------------------ split, chunk, unbind

/// The gradient buffer the pieces of one split share: allocated by the first piece whose
/// backward runs, which also tells the hub (once) that a gradient is coming.
struct SharedGrad {
    buf: Option<CpuStorage>,
    announced: bool,
}

/// Splits `x` along dimension `d` into pieces of the given sizes (all views); with `squeeze`
/// the pieces (all of size 1) lose dimension `d`, as `unbind`.
fn split_views(x: &Tensor, op: &'static str, d: usize, sizes: &[usize], squeeze: bool) -> Result<Vec<Tensor>> {
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu::split_views(x, d, sizes, squeeze);
    }
    let in_shape = x.shape().clone();
    let piece_layout = |base: &Layout, start: usize, len: usize| {
        let mut l = base.clone();
        l.offset += start * l.strides[d];
        l.shape.0[d] = len;
        if squeeze {
            l.shape.0.remove(d);
            l.strides.remove(d);
        }
        l
    };
    let starts: Vec<usize> = sizes.iter().scan(0, |acc, &s| Some(std::mem::replace(acc, *acc + s))).collect();
    if !(is_grad_enabled() && x.requires_grad()) {
        // Nothing to differentiate: plain views.
        return Ok(starts
            .iter()
            .zip(sizes)
            .map(|(&s, &len)| Tensor::from_parts(x.buffer(), piece_layout(x.layout(), s, len), None))
            .collect());
    }
    let shared = Arc::new(Mutex::new(SharedGrad { buf: None, announced: false }));
    let hub_shared = shared.clone();
    let hub_shape = in_shape.clone();
    // The hub: the same view as x. Every piece's backward has run when its backward runs; it
    // ignores the (zero) announcement it receives and passes the accumulated buffer on.
    let hub = x.view_op(x.layout().clone(), op, move |g| {
        let buf = hub_shared.lock().unwrap_or_else(|e| e.into_inner()).buf.take();
        Ok(vec![Some(match buf {
            Some(b) => Tensor::from_storage(b, hub_shape),
            None => g.contiguous()?,
        })])
    });
    let contiguous = Layout::contiguous(in_shape.clone());
    let mut pieces = Vec::with_capacity(sizes.len());
    for (&start, &len) in starts.iter().zip(sizes) {
        let shared = shared.clone();
        let shape = in_shape.clone();
        // Where this piece sits in a contiguous buffer of the input's shape.
        let mut region = contiguous.clone();
        region.offset = start * contiguous.strides[d];
        region.shape.0[d] = len;
        let piece = hub.view_op(piece_layout(hub.layout(), start, len), op, move |g| {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            cpu::add_piece_grad(&mut s.buf, shape.numel(), &region, g)?;
            let dtype = g.dtype();
            // Only the first piece passes anything to the hub: a zero view (no allocation), so
            // the hub runs once and takes the buffer then.
            let announce = !std::mem::replace(&mut s.announced, true);
            Ok(vec![announce.then(|| Tensor::zeros(&[], dtype).expand(shape.dims())).transpose()?])
        });
        pieces.push(piece);
    }
    Ok(pieces)
}

impl Tensor {
    /// Splits along `dim` into pieces of the given sizes (which must add up to the dimension's
    /// size), as `torch.split(x, sizes, dim)`. The pieces are views; their gradients are gathered
    /// into one buffer in backward, whatever the number of pieces.
    ///
    /// # Shapes
    /// - input: `[…, S, …]` with `S` at `dim`
    /// - outputs: `[…, sizes[i], …]`
    pub fn split_with_sizes(&self, sizes: &[usize], dim: isize) -> Result<Vec<Tensor>> {
        let d = self.shape().resolve_dim("split", dim)?;
        // An overflowing sum cannot match the dimension (it would wrap to any value).
        let total = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
        if total != Some(self.dims()[d]) {
            let total = total.map_or_else(|| "more than a usize holds".to_string(), |t| t.to_string());
            crate::bail_arg!(
                "split",
                "sizes {sizes:?} add up to {total}, but dimension {d} of {} has size {}",
                self.shape(),
                self.dims()[d]
            );
        }
        split_views(self, "split", d, sizes, false)
    }

    /// Splits along `dim` into `chunks` equal pieces, as `torch.chunk` when the size divides
    /// evenly (the LSTM's four gates from one `[N, 4H]` product); an uneven split is an error.
    ///
    /// # Shapes
    /// - input: `[…, S, …]` with `S` at `dim`, a multiple of `chunks`
    /// - outputs: `chunks` tensors `[…, S / chunks, …]`
    pub fn chunk(&self, chunks: usize, dim: isize) -> Result<Vec<Tensor>> {
        let d = self.shape().resolve_dim("chunk", dim)?;
        let size = self.dims()[d];
        if chunks == 0 || !size.is_multiple_of(chunks) {
            crate::bail_arg!(
                "chunk",
                "dimension {d} of {} has size {size}, which does not split into {chunks} equal chunks",
                self.shape()
            );
        }
        split_views(self, "chunk", d, &vec![size / chunks; chunks], false)
    }

    /// The slices along `dim`, each without that dimension, as `torch.unbind(x, dim)`: a
    /// `[T, N, F]` sequence becomes T tensors `[N, F]` (views).
    ///
    /// # Shapes
    /// - input: `[…, S, …]` with `S` at `dim`
    /// - outputs: `S` tensors of the input's shape without `dim`
    pub fn unbind(&self, dim: isize) -> Result<Vec<Tensor>> {
        let d = self.shape().resolve_dim("unbind", dim)?;
        split_views(self, "unbind", d, &vec![1; self.dims()[d]], true)
    }
}

#[cfg(test)]
mod tests {
    use super::{cat, stack};
    use crate::testing::{gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    fn seq(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|v| v as f32).collect(), shape).unwrap()
    }

    #[test]
    fn values_by_hand() {
        let a = seq(&[2, 2]);
        let b = seq(&[2, 1]).add_scalar(10.0).unwrap();
        assert_eq!(cat(&[&a, &b], 1).unwrap().to_vec::<f32>().unwrap(), [0., 1., 10., 2., 3., 11.]);
        assert_eq!(cat(&[&a, &a], 0).unwrap().dims(), &[4, 2]);
        let s = stack(&[&a, &a.add_scalar(4.0).unwrap()], 1).unwrap();
        assert_eq!(s.dims(), &[2, 2, 2]);
        assert_eq!(s.to_vec::<f32>().unwrap(), [0., 1., 4., 5., 2., 3., 6., 7.]);
        assert_eq!(stack(&[&a, &a], -1).unwrap().dims(), &[2, 2, 2]);
        assert_eq!(stack(&[&a], 0).unwrap().dims(), &[1, 2, 2]);
        // Integer tensors join too (token ids).
        let i = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
        assert_eq!(cat(&[&i, &i], 0).unwrap().to_vec::<i64>().unwrap(), [1, 2, 1, 2]);
        // A transposed (strided) input is read in its logical order.
        assert_eq!(cat(&[&a.t().unwrap()], 0).unwrap().to_vec::<f32>().unwrap(), [0., 2., 1., 3.]);
        let pieces = seq(&[2, 6]).chunk(3, 1).unwrap();
        assert_eq!(pieces[1].to_vec::<f32>().unwrap(), [2., 3., 8., 9.]);
        let rows = seq(&[3, 2]).unbind(0).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].dims(), &[2]);
        assert_eq!(rows[2].to_vec::<f32>().unwrap(), [4., 5.]);
        let parts = seq(&[5]).split_with_sizes(&[2, 3], 0).unwrap();
        assert_eq!(parts[1].to_vec::<f32>().unwrap(), [2., 3., 4.]);
    }

    #[test]
    fn errors_name_the_shapes() {
        let a = seq(&[2, 3]);
        let e = cat(&[&a, &seq(&[3, 2])], 1).unwrap_err().to_string();
        assert_eq!(
            e,
            "cat: a tensor has shape [3, 2], expected [2, *] (tensor 1 must match tensor 0, of shape [2, 3], in every dimension but 1)"
        );
        assert!(cat(&[], 0).unwrap_err().to_string().contains("non-empty"));
        assert!(
            cat(&[&a, &Tensor::zeros(&[2, 3], DType::F64)], 0)
                .unwrap_err()
                .to_string()
                .contains("element types differ")
        );
        let e = stack(&[&a, &seq(&[2, 4])], 0).unwrap_err().to_string();
        assert!(e.contains("stack: a tensor has shape [2, 4], expected [2, 3]"), "{e}");
        assert!(stack(&[&a], 3).unwrap_err().to_string().contains("dimension 3 is out of range"));
        assert!(a.chunk(2, 1).unwrap_err().to_string().contains("does not split into 2 equal chunks"));
        assert!(a.split_with_sizes(&[1, 1], 1).unwrap_err().to_string().contains("add up to 2"));
    }

    #[test]
    fn gradcheck_cat_and_stack() {
        let mut rng = Generator::new(71);
        let (a, b) = (randn64(&[2, 3, 4], &mut rng), randn64(&[2, 1, 4], &mut rng));
        gradcheck(&[a.clone(), b.clone()], |t| cat(&[&t[0], &t[1]], 1));
        gradcheck(&[a.clone(), a.clone()], |t| cat(&[&t[0], &t[1], &t[0]], -1));
        gradcheck(&[a.clone(), b.clone()], |t| cat(&[&t[0].transpose(0, 2)?, &t[1].transpose(0, 2)?], 1));
        for dim in [0, 1, 2, 3, -1] {
            gradcheck(&[a.clone(), a.clone()], |t| stack(&[&t[0], &t[1]], dim));
        }
        gradcheck(std::slice::from_ref(&a), |t| stack(&[&t[0].transpose(0, 2)?, &t[0].transpose(0, 2)?.exp()?], 1));
    }

    #[test]
    fn gradcheck_split_chunk_unbind() {
        let mut rng = Generator::new(72);
        let x = randn64(&[3, 4, 6], &mut rng);
        let w = randn64(&[3, 4, 2], &mut rng);
        // Each piece used differently, so a misplaced gradient shows.
        gradcheck(std::slice::from_ref(&x), |t| {
            let p = t[0].chunk(3, 2)?;
            p[0].mul(&w)?.add(&p[1].exp()?)?.sub(&p[2].mul(&p[2])?)
        });
        gradcheck(std::slice::from_ref(&x), |t| {
            let p = t[0].unbind(1)?;
            stack(&[&p[3], &p[0].exp()?, &p[2].mul_scalar(3.0)?], 0)
        });
        // Only some pieces used; a piece used twice; a strided input; nested splits.
        gradcheck(std::slice::from_ref(&x), |t| Ok(t[0].split_with_sizes(&[1, 3], 1)?[1].clone()));
        gradcheck(std::slice::from_ref(&x), |t| {
            let p = t[0].unbind(0)?;
            p[1].mul(&p[1])?.add(&p[1])
        });
        gradcheck(std::slice::from_ref(&x), |t| {
            let p = t[0].transpose(0, 2)?.unbind(1)?;
            let q = p[2].chunk(2, 0)?;
            q[1].exp()?.add(&q[0])
        });
        // The same input split twice: both splits' gradients add up.
        gradcheck(std::slice::from_ref(&x), |t| {
            let p = t[0].unbind(0)?;
            let q = t[0].chunk(3, 0)?;
            p[1].add(&q[1].squeeze(0)?.exp()?)
        });
    }

    #[test]
    fn pieces_of_a_constant_record_nothing() {
        let x = seq(&[2, 4]);
        let p = x.chunk(2, 1).unwrap();
        assert!(p.iter().all(|t| !t.requires_grad()));
        let y = x.requires_grad_().unwrap();
        let p = y.unbind(0).unwrap();
        assert_eq!(p[0].grad_fn_name(), Some("unbind"));
    }
}
