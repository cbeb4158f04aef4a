//! Reductions: sum and mean over any set of dimensions, max and argmax along one.
//!
//! Sums run in a fixed order (sequentially along the reduced elements, accumulated in f64), so
//! their results are identical whatever the thread count.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernels, `gpu.rs` and its
//! `.wgsl` the GPU ones (the `gpu` feature).

use crate::error::Result;
use crate::shape::{Layout, Shape};
use crate::storage::{CpuStorage, Storage};
use crate::tensor::Tensor;

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;

/// The layout that visits `t`'s elements with the kept dimensions outermost and the reduced ones
/// innermost, so each run of `reduced` consecutive visits makes one output element; plus the
/// output shape with and without kept size-1 dimensions.
fn reduction_plan(t: &Tensor, axes: &[usize]) -> (Layout, usize, Vec<usize>, Vec<usize>) {
    let l = t.layout();
    let (mut shape, mut strides) = (vec![], vec![]);
    let (mut keep_dims, mut out_dims) = (vec![], vec![]);
    for d in 0..t.ndim() {
        if !axes.contains(&d) {
            shape.push(l.shape.0[d]);
            strides.push(l.strides[d]);
            keep_dims.push(l.shape.0[d]);
            out_dims.push(l.shape.0[d]);
        } else {
            keep_dims.push(1);
        }
    }
    let mut reduced = 1;
    for &d in axes {
        shape.push(l.shape.0[d]);
        strides.push(l.strides[d]);
        reduced *= l.shape.0[d];
    }
    (Layout { shape: Shape(shape), strides, offset: l.offset }, reduced, keep_dims, out_dims)
}

fn resolve_axes(t: &Tensor, op: &'static str, axes: &[isize]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let d = t.shape().resolve_dim(op, a)?;
        if out.contains(&d) {
            crate::bail_arg!(op, "dimension {a} is listed twice");
        }
        out.push(d);
    }
    out.sort_unstable();
    Ok(out)
}

/// Whether every element of every tensor in `tensors` is finite (see [`Tensor::all_finite`]):
/// on a GPU, one device-side check per tensor and a single read, instead of one per tensor (a
/// training loop checks all its gradients at once). Tensors on several devices are checked
/// per device.
pub fn all_finite(tensors: &[Tensor]) -> bool {
    #[cfg(feature = "gpu")]
    {
        let mut devices: Vec<crate::Device> = vec![];
        for d in tensors.iter().map(Tensor::device).filter(|d| d.is_gpu()) {
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
        for device in devices {
            let on: Vec<&Tensor> = tensors.iter().filter(|t| t.device() == device).collect();
            // A device that fails to answer counts as non-finite: the caller stops or skips.
            if !gpu::all_finite(&on).unwrap_or(false) {
                return false;
            }
        }
    }
    tensors.iter().filter(|t| !t.device().is_gpu()).all(cpu::all_finite)
}

impl Tensor {
    /// Sum over `axes` (negative counts from the end); `keepdim` keeps them as size 1.
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = resolve_axes(self, "sum", axes)?;
        let (plan, reduced, keep_dims, out_dims) = reduction_plan(self, &axes);
        let shape = Shape(if keepdim { keep_dims.clone() } else { out_dims });
        let storage: Storage = match () {
            #[cfg(feature = "gpu")]
            _ if self.device().is_gpu() => gpu::sum(self, &plan, reduced, shape.numel())?,
            _ => cpu::sum(self, &plan, reduced, shape.numel())?,
        };
        let in_shape = self.shape().clone();
        Ok(Tensor::from_op(storage, shape, "sum", &[self], move |g| {
            // Every input element received the gradient of the sum it went into.
            Ok(vec![Some(g.reshape(&keep_dims)?.expand(in_shape.dims())?)])
        }))
    }

    /// Whether every element is finite (no NaN, no ±∞), as `torch.isfinite(t).all()`; integer
    /// tensors always are. Not recorded by autograd: training loops call it on losses,
    /// gradients and parameters to catch divergence.
    pub fn all_finite(&self) -> bool {
        all_finite(std::slice::from_ref(self))
    }

    /// Sum of all elements, shape `[]`.
    pub fn sum_all(&self) -> Result<Tensor> {
        let axes: Vec<isize> = (0..self.ndim() as isize).collect();
        self.sum(&axes, false)
    }

    /// Mean over `axes`.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let resolved = resolve_axes(self, "mean", axes)?;
        let count: usize = resolved.iter().map(|&d| self.dims()[d]).product();
        self.sum(axes, keepdim)?.mul_scalar(1.0 / count as f64)
    }

    /// Mean of all elements, shape `[]`.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.sum_all()?.mul_scalar(1.0 / self.numel() as f64)
    }

    /// Maximum along `dim` (the first one on ties; NaN wins, as in PyTorch). The gradient flows
    /// to the element that was chosen.
    pub fn max(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let d = self.shape().resolve_dim("max", dim)?;
        let in_shape = self.shape().clone();
        let keep: Vec<usize> = in_shape.dims().iter().enumerate().map(|(i, &s)| if i == d { 1 } else { s }).collect();
        let out_shape = Shape(if keepdim { keep.clone() } else { without(&in_shape, d) });
        #[cfg(feature = "gpu")]
        if self.device().is_gpu() {
            // The indices stay on the device; the backward gathers there.
            let (values, index) = self.gpu_max(d)?;
            return Ok(Tensor::from_op(values, out_shape, "max", &[self], move |g| {
                Ok(vec![Some(gpu::max_backward(g, &index, &in_shape, d)?)])
            }));
        }
        let (values, index) = self.max_with_index(d)?;
        Ok(Tensor::from_op(values, out_shape, "max", &[self], move |g| {
            Ok(vec![Some(cpu::max_backward(g, &in_shape, &keep, d, &index)?)])
        }))
    }

    /// Index of the maximum along `dim` as an `i64` tensor (the first one on ties).
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let d = self.shape().resolve_dim("argmax", dim)?;
        let shape: Vec<usize> = if keepdim {
            self.dims().iter().enumerate().map(|(i, &s)| if i == d { 1 } else { s }).collect()
        } else {
            without(self.shape(), d)
        };
        #[cfg(feature = "gpu")]
        if self.device().is_gpu() {
            // The indices stay on the device (accuracy counts them there).
            let (_, index) = self.gpu_max(d)?;
            return Ok(Tensor::from_storage(index, Shape(shape)));
        }
        let (_, index) = self.max_with_index(d)?;
        Ok(Tensor::from_storage(CpuStorage::I64(index), Shape(shape)))
    }

    /// The maxima along `d` (kept as size 1), detached, computed on the GPU without reading
    /// anything back.
    #[cfg(feature = "gpu")]
    pub(crate) fn gpu_max_keepdim(&self, d: usize) -> Result<Tensor> {
        let (values, _) = self.gpu_max(d)?;
        let dims: Vec<usize> = self.dims().iter().enumerate().map(|(i, &s)| if i == d { 1 } else { s }).collect();
        Ok(Tensor::from_storage(values, Shape(dims)))
    }

    #[cfg(feature = "gpu")]
    fn gpu_max(&self, d: usize) -> Result<(Storage, Storage)> {
        if self.dims()[d] == 0 {
            crate::bail_arg!("max", "dimension {d} of {} is empty: there is no maximum", self.shape());
        }
        let (plan, reduced, _, out_dims) = reduction_plan(self, &[d]);
        gpu::max(self, &plan, reduced, out_dims.iter().product())
    }

    /// The maxima along `d` and their indices, on the CPU.
    fn max_with_index(&self, d: usize) -> Result<(Storage, Vec<i64>)> {
        if self.dims()[d] == 0 {
            crate::bail_arg!("max", "dimension {d} of {} is empty: there is no maximum", self.shape());
        }
        let (plan, reduced, _, _) = reduction_plan(self, &[d]);
        cpu::max(self, &plan, reduced)
    }
}

fn without(shape: &Shape, d: usize) -> Vec<usize> {
    shape.dims().iter().enumerate().filter(|&(i, _)| i != d).map(|(_, &s)| s).collect()
}

#[cfg(test)]
mod tests {
    use crate::testing::{gradcheck, randn64};
    use crate::{Generator, Tensor};

    #[test]
    fn all_finite_finds_any_nan_or_infinity() {
        for n in [1, 15, 16, 17, 40] {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                for at in [0, n / 2, n - 1] {
                    let mut v = vec![1.5f64; n];
                    assert!(Tensor::from_vec(v.clone(), &[n]).unwrap().all_finite());
                    v[at] = bad;
                    let t = Tensor::from_vec(v, &[n]).unwrap();
                    assert!(!t.all_finite(), "{bad} at {at} of {n}");
                    assert!(!t.to_dtype(crate::DType::F32).unwrap().all_finite());
                }
            }
        }
        // f32 overflow is infinite; a non-contiguous view is scanned too.
        let big = Tensor::from_vec(vec![f32::MAX, 1.0, f32::MAX, 2.0], &[2, 2]).unwrap();
        assert!(big.all_finite() && !big.mul_scalar(2.0).unwrap().all_finite());
        assert!(!big.mul_scalar(2.0).unwrap().t().unwrap().all_finite());
    }

    #[test]
    fn sums_means_and_maxima() {
        let x = Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 4.0, 2.0, 6.0], &[2, 3]).unwrap();
        assert_eq!(x.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(), [5., 7., 9.]);
        assert_eq!(x.sum(&[1], true).unwrap().dims(), &[2, 1]);
        assert_eq!(x.mean(&[-1], false).unwrap().to_vec::<f32>().unwrap(), [3., 4.]);
        assert_eq!(x.sum_all().unwrap().item().unwrap(), 21.0);
        assert_eq!(x.max(1, false).unwrap().to_vec::<f32>().unwrap(), [5., 6.]);
        assert_eq!(x.max(0, false).unwrap().to_vec::<f32>().unwrap(), [4., 5., 6.]);
        assert_eq!(x.argmax(1, false).unwrap().to_vec::<i64>().unwrap(), [1, 2]);
        assert_eq!(x.argmax(0, true).unwrap().dims(), &[1, 3]);
        // Ties go to the first index, as in PyTorch.
        let t = Tensor::from_vec(vec![2.0f32, 7.0, 7.0], &[3]).unwrap();
        assert_eq!(t.argmax(0, false).unwrap().to_vec::<i64>().unwrap(), [1]);
    }

    #[test]
    fn sums_over_zero_size_dimensions() {
        // PyTorch: a sum over an empty dimension is 0 per output element, a mean NaN; an empty
        // kept dimension gives an empty result.
        let e = Tensor::zeros(&[0, 3], crate::DType::F32);
        assert_eq!(e.sum_all().unwrap().to_vec::<f32>().unwrap(), [0.0]);
        assert!(e.mean_all().unwrap().item().unwrap().is_nan());
        let s = e.sum(&[0], false).unwrap();
        assert_eq!((s.dims(), s.to_vec::<f32>().unwrap()), (&[3][..], vec![0.0; 3]));
        let s = e.sum(&[1], true).unwrap();
        assert_eq!((s.dims(), s.to_vec::<f32>().unwrap().len()), (&[0, 1][..], 0));
        let s = Tensor::zeros(&[2, 0, 4], crate::DType::F64).sum(&[0, 1], false).unwrap();
        assert_eq!((s.dims(), s.to_vec::<f64>().unwrap()), (&[4][..], vec![0.0; 4]));
        // The gradient of a sum over nothing reaches no element.
        let x = Tensor::zeros(&[0, 3], crate::DType::F64).requires_grad_().unwrap();
        x.sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().dims(), &[0, 3]);
    }

    #[test]
    fn gradcheck_reductions() {
        let mut rng = Generator::new(31);
        let x = randn64(&[2, 3, 4], &mut rng);
        let w = randn64(&[2, 1, 4], &mut rng);
        gradcheck(std::slice::from_ref(&x), |t| t[0].sum(&[1], true)?.mul(&w));
        gradcheck(std::slice::from_ref(&x), |t| t[0].sum(&[0, 2], false)?.exp());
        gradcheck(std::slice::from_ref(&x), |t| t[0].mean(&[-1], false)?.exp());
        gradcheck(std::slice::from_ref(&x), |t| t[0].mean_all()?.exp());
        gradcheck(std::slice::from_ref(&x), |t| t[0].max(1, true)?.mul(&w));
        gradcheck(std::slice::from_ref(&x), |t| t[0].max(2, false)?.exp());
        // Reductions of non-contiguous views.
        gradcheck(std::slice::from_ref(&x), |t| t[0].transpose(0, 2)?.sum(&[1], false)?.exp());
    }
}
