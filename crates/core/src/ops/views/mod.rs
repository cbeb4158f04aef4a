//! Shape ops: reshape, flatten, (un)squeeze, transpose, narrow, expand — views that share the
//! buffer where the layout allows — plus `contiguous`, `to_dtype` and the broadcast reduction
//! `sum_to_shape` that backward passes use.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernels, `gpu.rs` and its
//! `.wgsl` the GPU ones (the `gpu` feature), `gpu_buffer.rs` those on bare buffers that the
//! tensor itself uses.

use crate::device::DType;
use crate::error::{Error, Result};
use crate::shape::{Layout, Shape};
use crate::tensor::Tensor;

mod cpu;
#[cfg(feature = "gpu")]
pub(crate) mod gpu;
#[cfg(feature = "gpu")]
pub(crate) mod gpu_buffer;

impl Tensor {
    /// This tensor with row-major contiguous layout: itself if it already is, else a copy.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        #[cfg(feature = "gpu")]
        if self.device().is_gpu() {
            let copied = self.gpu_copy()?;
            return Ok(Tensor::from_op(copied, self.shape().clone(), "contiguous", &[self], |g| {
                Ok(vec![Some(g.clone())])
            }));
        }
        Ok(Tensor::from_op(cpu::copy_contiguous(self)?, self.shape().clone(), "contiguous", &[self], |g| {
            Ok(vec![Some(g.clone())])
        }))
    }

    /// The same elements with another shape (same count). A view when the tensor is contiguous,
    /// a copy otherwise. One dimension may be given as `usize::MAX` to be inferred, like `-1`
    /// in PyTorch.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel = self.numel();
        let mut dims = shape.to_vec();
        // A product that overflows cannot match any tensor's element count.
        let sized: Vec<usize> = dims.iter().copied().filter(|&d| d != usize::MAX).collect();
        let known = crate::shape::checked_product(&sized).unwrap_or(usize::MAX);
        let inferred = dims.iter().filter(|&&d| d == usize::MAX).count();
        let fail = || Error::ReshapeNumel {
            from: self.shape().clone(),
            from_numel: numel,
            to: format!(
                "{:?}",
                shape.iter().map(|&d| if d == usize::MAX { -1 } else { d as isize }).collect::<Vec<_>>()
            ),
            to_numel: known,
        };
        if inferred > 1 || (inferred == 1 && (known == 0 || !numel.is_multiple_of(known))) {
            return Err(fail());
        }
        if let Some(d) = dims.iter_mut().find(|d| **d == usize::MAX) {
            *d = numel / known;
        }
        let new_shape = Shape(dims);
        if new_shape.checked_numel() != Some(numel) {
            return Err(fail());
        }
        if new_shape == *self.shape() {
            return Ok(self.clone());
        }
        let src = self.contiguous()?;
        let layout = Layout { offset: src.layout().offset, ..Layout::contiguous(new_shape) };
        let in_shape = self.shape().clone();
        Ok(src.view_op(layout, "reshape", move |g| Ok(vec![Some(g.reshape(in_shape.dims())?)])))
    }

    /// Flattens dimensions `start..=end` into one (negative indices count from the end);
    /// `flatten(1, -1)` turns `[N, C, H, W]` into `[N, C·H·W]`, like `nn.Flatten()`.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.ndim() == 0 {
            return self.reshape(&[1]);
        }
        let s = self.shape().resolve_dim("flatten", start)?;
        let e = self.shape().resolve_dim("flatten", end)?;
        if s > e {
            crate::bail_arg!(
                "flatten",
                "start dimension {start} comes after end dimension {end} for shape {}",
                self.shape()
            );
        }
        let d = self.dims();
        let mut dims: Vec<usize> = d[..s].to_vec();
        dims.push(d[s..=e].iter().product());
        dims.extend_from_slice(&d[e + 1..]);
        self.reshape(&dims)
    }

    /// Inserts a dimension of size 1 at `dim`.
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let n = self.ndim() as isize + 1;
        let d = if dim < 0 { dim + n } else { dim };
        if !(0..n).contains(&d) {
            return Err(Error::DimOutOfRange { op: "unsqueeze", dim, shape: self.shape().clone(), ndim: n as usize });
        }
        let mut dims = self.dims().to_vec();
        dims.insert(d as usize, 1);
        self.reshape(&dims)
    }

    /// Removes dimension `dim`, which must have size 1.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = self.shape().resolve_dim("squeeze", dim)?;
        if self.dims()[d] != 1 {
            crate::bail_arg!("squeeze", "dimension {d} of {} has size {}, not 1", self.shape(), self.dims()[d]);
        }
        let mut dims = self.dims().to_vec();
        dims.remove(d);
        self.reshape(&dims)
    }

    /// Swaps two dimensions (a view: only strides change).
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Result<Tensor> {
        let a = self.shape().resolve_dim("transpose", dim0)?;
        let b = self.shape().resolve_dim("transpose", dim1)?;
        let mut layout = self.layout().clone();
        layout.shape.0.swap(a, b);
        layout.strides.swap(a, b);
        Ok(self.view_op(layout, "transpose", move |g| Ok(vec![Some(g.transpose(a as isize, b as isize)?)])))
    }

    /// The transpose of a 2-D tensor (a view).
    pub fn t(&self) -> Result<Tensor> {
        if self.ndim() != 2 {
            return Err(Error::ShapeMismatch {
                op: "t",
                what: "input",
                got: self.shape().clone(),
                expected: "a 2-D tensor".into(),
            });
        }
        self.transpose(0, 1)
    }

    /// `len` elements of dimension `dim` starting at `start` (a view, no copy): `narrow(0, i, b)`
    /// is the mini-batch of rows `i..i+b`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = self.shape().resolve_dim("narrow", dim)?;
        let size = self.dims()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::RangeOutOfBounds {
                op: "narrow",
                dim: d,
                start,
                end: start.saturating_add(len),
                shape: self.shape().clone(),
            });
        }
        let mut layout = self.layout().clone();
        layout.offset += start * layout.strides[d];
        layout.shape.0[d] = len;
        let in_shape = self.shape().clone();
        Ok(self.view_op(layout, "narrow", move |g| {
            #[cfg(feature = "gpu")]
            if g.device().is_gpu() {
                return Ok(vec![Some(gpu::narrow_backward(g, &in_shape, d, start, len)?)]);
            }
            Ok(vec![Some(cpu::narrow_backward(g, &in_shape, d, start, len)?)])
        }))
    }

    /// This tensor broadcast to `shape` (a view with stride 0 on the repeated dimensions).
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        let target = Shape::from(shape);
        let b = Shape::broadcast("expand", self.shape(), &target)?;
        if b != target {
            return Err(Error::ShapeMismatch {
                op: "expand",
                what: "input",
                got: self.shape().clone(),
                expected: format!("a shape that broadcasts to {target}"),
            });
        }
        if target == *self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_to(&target);
        let in_shape = self.shape().clone();
        Ok(self.view_op(layout, "expand", move |g| Ok(vec![Some(g.sum_to_shape(&in_shape)?)])))
    }

    /// Sums a broadcast result back to `shape` (the shape of the operand that was broadcast):
    /// leading extra dimensions and dimensions where `shape` has 1 are summed out.
    pub fn sum_to_shape(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let lead = self.ndim() - shape.ndim();
        let mut axes: Vec<isize> = (0..lead as isize).collect();
        for (i, &d) in shape.dims().iter().enumerate() {
            if d == 1 && self.dims()[lead + i] != 1 {
                axes.push((lead + i) as isize);
            }
        }
        self.sum(&axes, true)?.reshape(shape.dims())
    }

    /// The values converted to another element type (float-to-float conversions are differentiable).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let from = self.dtype();
        #[cfg(feature = "gpu")]
        if self.device().is_gpu() {
            // f32 ↔ i64 only (the GPU holds no f64), so never differentiable.
            return Ok(Tensor::from_storage(gpu::convert(self, dtype)?, self.shape().clone()));
        }
        let storage = cpu::convert(self, dtype)?;
        if !(from.is_float() && dtype.is_float()) {
            return Ok(Tensor::from_storage(storage, self.shape().clone()));
        }
        Ok(Tensor::from_op(storage, self.shape().clone(), "to_dtype", &[self], move |g| {
            Ok(vec![Some(g.to_dtype(from)?)])
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    #[test]
    fn views_share_the_buffer_and_give_the_right_values() {
        let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), &[2, 3]).unwrap();
        let t = x.t().unwrap();
        assert_eq!(t.dims(), &[3, 2]);
        assert!(!t.is_contiguous());
        assert_eq!(t.to_vec::<f32>().unwrap(), [0., 3., 1., 4., 2., 5.]);
        let rows = x.narrow(0, 1, 1).unwrap();
        assert_eq!(rows.to_vec::<f32>().unwrap(), [3., 4., 5.]);
        assert_eq!(x.reshape(&[3, usize::MAX]).unwrap().dims(), &[3, 2]);
        assert_eq!(Tensor::zeros(&[4, 1, 28, 28], DType::F32).flatten(1, -1).unwrap().dims(), &[4, 784]);
        let e = x.reshape(&[4, 2]).unwrap_err();
        assert_eq!(e.to_string(), "reshape: cannot view [2, 3] (6 elements) as [4, 2] (8 elements)");
        assert!(
            x.narrow(0, 1, 2)
                .unwrap_err()
                .to_string()
                .contains("range 1..3 along dimension 0 is out of bounds for shape [2, 3]")
        );
        assert!(x.transpose(0, 2).unwrap_err().to_string().contains("dimension 2 is out of range"));
    }

    #[test]
    fn to_dtype_passes_the_gradient_back_in_the_input_type() {
        let x = Tensor::from_vec(vec![1.5f64, -2.0], &[2]).unwrap().requires_grad_().unwrap();
        x.to_dtype(DType::F32).unwrap().mul_scalar(3.0).unwrap().sum_all().unwrap().backward().unwrap();
        let g = x.grad().unwrap();
        assert_eq!(g.dtype(), DType::F64);
        assert_eq!(g.to_vec::<f64>().unwrap(), [3.0, 3.0]);
    }

    #[test]
    fn gradcheck_views() {
        let mut rng = Generator::new(21);
        let x = randn64(&[3, 4], &mut rng);
        let w = randn64(&[4, 3], &mut rng);
        // Multiply by a fixed tensor so the gradient is not uniform and a wrong mapping shows.
        gradcheck(std::slice::from_ref(&x), |t| t[0].t()?.mul(&w));
        gradcheck(std::slice::from_ref(&x), |t| t[0].reshape(&[4, 3])?.mul(&w));
        gradcheck(std::slice::from_ref(&x), |t| t[0].narrow(0, 1, 2)?.mul(&w.narrow(1, 0, 2)?.t()?.narrow(1, 0, 4)?));
        gradcheck(std::slice::from_ref(&x), |t| t[0].narrow(1, 1, 2)?.exp());
        let r = randn64(&[1, 4], &mut rng);
        gradcheck(&[r], |t| t[0].expand(&[3, 4])?.mul(&x));
        gradcheck(std::slice::from_ref(&x), |t| t[0].t()?.contiguous()?.mul(&w));
    }
}
