//! Activation functions: sigmoid, tanh, GELU (exact erf form, and PyTorch's tanh approximation),
//! SiLU, Mish, Hardswish, Hardsigmoid, ReLU6, leaky ReLU and ELU as pointwise maps with their derivatives beside them, and softmax /
//! log-softmax along a dimension (numerically stable: the maximum is subtracted first). The
//! `erf` used by GELU is FreeBSD's `s_erf.c` (via musl and the `libm` crate), accurate to below
//! one ulp in f64.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernels (and `erf`), `gpu.rs`
//! the GPU path (the `gpu` feature).

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;

use crate::autograd::make_node;
use crate::error::Result;
use crate::shape::{Layout, Shape};
use crate::storage::CpuStorage;
use crate::tensor::Tensor;
pub use cpu::erf;
use std::sync::Arc;

// ------------------------------------------------------------------ pointwise activations

/// Which pointwise activation: one enum so they share dispatch; each derivative sits one match
/// arm below its function (`cpu.rs`).
#[derive(Clone, Copy, Debug)]
enum Act {
    Sigmoid,
    Tanh,
    Gelu,
    GeluTanh,
    Silu,
    Mish,
    Hardswish,
    Hardsigmoid,
    Relu6,
    LeakyRelu(f64),
    Elu(f64),
}

impl Act {
    fn name(self) -> &'static str {
        match self {
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::Gelu | Act::GeluTanh => "gelu",
            Act::Silu => "silu",
            Act::Mish => "mish",
            Act::Hardswish => "hardswish",
            Act::Hardsigmoid => "hardsigmoid",
            Act::Relu6 => "relu6",
            Act::LeakyRelu(_) => "leaky_relu",
            Act::Elu(_) => "elu",
        }
    }
}

/// The output of an op whose backward needs its own output: the buffer is shared with the
/// closure through its `Arc` (saving the output *tensor* would make a reference cycle).
fn op_with_saved_output(
    out: CpuStorage,
    shape: Shape,
    name: &'static str,
    input: &Tensor,
    backward: impl FnOnce(&Tensor, Arc<CpuStorage>) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Tensor {
    let out = Arc::new(out);
    let saved = out.clone();
    let node = make_node(name, &[input], Box::new(move |g| backward(g, saved)));
    Tensor::from_parts(out, Layout::contiguous(shape), node)
}

fn pointwise(x: &Tensor, act: Act) -> Result<Tensor> {
    let name = act.name();
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu::pointwise(x, act);
    }
    let out = cpu::pointwise(x, act)?;
    let x_saved = x.clone();
    Ok(op_with_saved_output(out, x.shape().clone(), name, x, move |g, y| {
        let x = x_saved;
        let dx = cpu::pointwise_backward(g, &x, &y, act)?;
        Ok(vec![Some(Tensor::from_storage(dx, x.shape().clone()))])
    }))
}

impl Tensor {
    /// The logistic function `1 / (1 + e^(−x))`, as `torch.sigmoid`.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn sigmoid(&self) -> Result<Tensor> {
        pointwise(self, Act::Sigmoid)
    }

    /// The hyperbolic tangent, as `torch.tanh`.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn tanh(&self) -> Result<Tensor> {
        pointwise(self, Act::Tanh)
    }

    /// GELU in its exact form `x·Φ(x) = ½·x·(1 + erf(x/√2))`, PyTorch's default
    /// (`F.gelu(x, approximate='none')`).
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn gelu(&self) -> Result<Tensor> {
        pointwise(self, Act::Gelu)
    }

    /// GELU in PyTorch's tanh approximation `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    /// (`F.gelu(x, approximate='tanh')`), gradient by the same formula's derivative.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        pointwise(self, Act::GeluTanh)
    }

    /// SiLU (swish) `x·σ(x) = x / (1 + e^(−x))`, as `F.silu`.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn silu(&self) -> Result<Tensor> {
        pointwise(self, Act::Silu)
    }

    /// Mish `x·tanh(softplus(x)) = x·tanh(ln(1 + eˣ))`, as `F.mish`.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn mish(&self) -> Result<Tensor> {
        pointwise(self, Act::Mish)
    }

    /// Hardswish `x·min(max(x + 3, 0), 6)/6`, as `F.hardswish` (gradient `x/3 + ½` on
    /// `[−3, 3]`, 0 below, 1 above, as PyTorch's).
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn hardswish(&self) -> Result<Tensor> {
        pointwise(self, Act::Hardswish)
    }

    /// Hardsigmoid `clamp(x + 3, 0, 6)/6`, as `F.hardsigmoid` (gradient 1/6 strictly inside
    /// `(−3, 3)`, 0 elsewhere, as PyTorch's).
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn hardsigmoid(&self) -> Result<Tensor> {
        pointwise(self, Act::Hardsigmoid)
    }

    /// ReLU6 `min(max(x, 0), 6)`, as `F.relu6` (gradient 1 strictly inside `(0, 6)`, 0 elsewhere,
    /// as PyTorch's `hardtanh_backward`).
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn relu6(&self) -> Result<Tensor> {
        pointwise(self, Act::Relu6)
    }

    /// `x` where `x > 0`, else `negative_slope·x`, as `F.leaky_relu` (PyTorch's default slope is
    /// 0.01). The gradient at 0 is `negative_slope`, as in PyTorch.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn leaky_relu(&self, negative_slope: f64) -> Result<Tensor> {
        pointwise(self, Act::LeakyRelu(negative_slope))
    }

    /// `x` where `x > 0`, else `alpha·(eˣ − 1)`, as `F.elu` (PyTorch's default alpha is 1).
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn elu(&self, alpha: f64) -> Result<Tensor> {
        pointwise(self, Act::Elu(alpha))
    }
}

// ------------------------------------------------------------------ softmax and log-softmax

/// `[outer, size, inner]`: the input seen around dimension `d`, so the softmax runs over `size`
/// elements `inner` apart.
fn around(shape: &Shape, d: usize) -> (usize, usize, usize) {
    let dims = shape.dims();
    (dims[..d].iter().product(), dims[d], dims[d + 1..].iter().product())
}

fn softmax_impl(x: &Tensor, dim: isize, log: bool) -> Result<Tensor> {
    let name = if log { "log_softmax" } else { "softmax" };
    if x.ndim() == 0 {
        // A scalar is a line of one element, as in PyTorch.
        return softmax_impl(&x.reshape(&[1])?, 0, log)?.reshape(&[]);
    }
    let d = x.shape().resolve_dim(name, dim)?;
    #[cfg(feature = "gpu")]
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        return gpu::softmax(x, d, log);
    }
    let geo = around(x.shape(), d);
    let out = cpu::softmax(x, geo, log)?;
    let shape = x.shape().clone();
    Ok(op_with_saved_output(out, shape.clone(), name, x, move |g, y| {
        let dx = cpu::softmax_backward(g, &y, geo, log)?;
        Ok(vec![Some(Tensor::from_storage(dx, shape))])
    }))
}

impl Tensor {
    /// `e^(x_i) / Σ_j e^(x_j)` along `dim` (negative counts from the end), as
    /// `torch.softmax(x, dim)`; computed stably, with the maximum subtracted first.
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape, each line along `dim` summing to 1
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        softmax_impl(self, dim, false)
    }

    /// `x_i − log Σ_j e^(x_j)` along `dim`, as `torch.log_softmax(x, dim)`; stable for any
    /// magnitude (logits of ±1e4 give finite results).
    ///
    /// # Shapes
    /// - input: any shape; output: the same shape
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        softmax_impl(self, dim, true)
    }
}

#[cfg(test)]
mod tests {
    use super::erf;
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{DType, Generator, Tensor};

    #[test]
    fn erf_reference_values() {
        // Values from mpmath (50 digits), rounded to f64.
        let cases = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (1.5, 0.9661051464753108),
            (2.5, 0.999593047982555),
            (-3.0, -0.9999779095030014),
            (4.0, 0.9999999845827421),
            (7.0, 1.0),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() <= 2e-16, "erf({x}) = {}, want {want}", erf(x));
        }
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
    }

    #[test]
    fn f32_tanh_matches_the_correctly_rounded_value() {
        use super::cpu::Real;
        let mut worst = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4 * (1.0 + (i as f32).abs() * 1e-5);
            let want = (x as f64).tanh();
            let got = Real::tanh(x) as f64;
            worst = worst.max((got - want).abs() / (want.abs().max(f32::MIN_POSITIVE as f64) * f32::EPSILON as f64));
        }
        // Within one f32 ulp of the exact value everywhere (tanhf's own guarantee).
        assert!(worst <= 1.0, "{worst} ulp");
        assert!(Real::tanh(f32::NAN).is_nan());
        assert_eq!(Real::tanh(f32::INFINITY), 1.0);
        assert_eq!(Real::tanh(-1e-30f32), -1e-30);
    }

    #[test]
    fn values_by_hand() {
        let x = Tensor::from_vec(vec![-2.0f64, -0.5, 0.0, 0.5, 2.0], &[5]).unwrap();
        let e = |v: f64| v.exp();
        assert_close(
            &x.sigmoid().unwrap().to_vec_f64(),
            &[1.0 / (1.0 + e(2.0)), 1.0 / (1.0 + e(0.5)), 0.5, 1.0 / (1.0 + e(-0.5)), 1.0 / (1.0 + e(-2.0))],
            1e-15,
            0.0,
        );
        assert_close(
            &x.tanh().unwrap().to_vec_f64(),
            &[-(2.0f64).tanh(), -(0.5f64).tanh(), 0.0, 0.5f64.tanh(), 2.0f64.tanh()],
            1e-15,
            0.0,
        );
        assert_eq!(x.leaky_relu(0.1).unwrap().to_vec_f64(), [-0.2, -0.05, 0.0, 0.5, 2.0]);
        assert_close(
            &x.elu(2.0).unwrap().to_vec_f64(),
            &[2.0 * (e(-2.0) - 1.0), 2.0 * (e(-0.5) - 1.0), 0.0, 0.5, 2.0],
            1e-15,
            0.0,
        );
        // GELU(x) = x·Φ(x); Φ(2) = 0.9772498680518208.
        let g = x.gelu().unwrap().to_vec_f64();
        assert_close(
            &[g[4], g[0], g[2]],
            &[2.0 * 0.9772498680518208, -2.0 * (1.0 - 0.9772498680518208), 0.0],
            1e-15,
            1e-16,
        );
        // The tanh form: 0.5·2·(1 + tanh(√(2/π)·(2 + 0.044715·8))) = 1.954597694087775 (mpmath),
        // gelu(−x) = gelu(x) − x (as for the exact form), and 0 at 0.
        let g = x.gelu_tanh().unwrap().to_vec_f64();
        assert_close(&[g[4], g[0], g[2]], &[1.954597694087775, 1.954597694087775 - 2.0, 0.0], 1e-15, 1e-16);
        // SiLU(x) = x·σ(x): 0 at 0, and silu(−x) = silu(x) − x.
        let s = x.silu().unwrap().to_vec_f64();
        assert_close(&[s[4], s[0], s[2]], &[2.0 / (1.0 + e(-2.0)), 2.0 / (1.0 + e(-2.0)) - 2.0, 0.0], 1e-15, 1e-16);
        // Mish(2) = 2·tanh(ln(1 + e²)); Hardswish: 0 at or below −3, x above 3, x(x+3)/6 between.
        let m = x.mish().unwrap().to_vec_f64();
        assert_close(&[m[4], m[2]], &[2.0 * (1.0 + e(2.0)).ln().tanh(), 0.0], 1e-15, 1e-16);
        let h = Tensor::from_vec(vec![-4.0f64, -3.0, -1.0, 0.5, 3.0, 4.0], &[6]).unwrap().hardswish().unwrap();
        assert_close(&h.to_vec_f64(), &[0.0, 0.0, -1.0 / 3.0, 0.5 * 3.5 / 6.0, 3.0, 4.0], 1e-15, 0.0);
        let hs = Tensor::from_vec(vec![-4.0f64, -1.5, 0.0, 3.0, 7.0], &[5]).unwrap();
        assert_close(&hs.hardsigmoid().unwrap().to_vec_f64(), &[0.0, 0.25, 0.5, 1.0, 1.0], 1e-15, 0.0);
        assert_eq!(hs.relu6().unwrap().to_vec_f64(), [0.0, 0.0, 0.0, 3.0, 6.0]);
        // Softmax of [0, ln 3] is [1/4, 3/4].
        let s = Tensor::from_vec(vec![0.0f64, 3f64.ln()], &[2]).unwrap();
        assert_close(&s.softmax(0).unwrap().to_vec_f64(), &[0.25, 0.75], 1e-15, 0.0);
        assert_close(&s.log_softmax(-1).unwrap().to_vec_f64(), &[0.25f64.ln(), 0.75f64.ln()], 1e-15, 0.0);
    }

    #[test]
    fn gradients_at_zero_follow_pytorch() {
        let x = Tensor::from_vec(vec![0.0f32], &[1]).unwrap().requires_grad_().unwrap();
        x.leaky_relu(0.2).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [0.2]);
        x.set_grad(None).unwrap();
        x.elu(0.5).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [0.5]);
    }

    #[test]
    fn hardswish_gradient_at_its_kinks_follows_pytorch() {
        // hardswish_backward: 0 below −3, x/3 + ½ on [−3, 3] (both ends included), 1 above.
        let x = Tensor::from_vec(vec![-3.0f32, 3.0, -3.5, 3.5], &[4]).unwrap().requires_grad_().unwrap();
        x.hardswish().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [-0.5, 1.5, 0.0, 1.0]);
        // hardsigmoid_backward: 1/6 strictly inside (−3, 3); hardtanh_backward (ReLU6): 1
        // strictly inside (0, 6).
        x.set_grad(None).unwrap();
        x.hardsigmoid().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0, 0.0, 0.0]);
        let y = Tensor::from_vec(vec![0.0f32, 6.0, 1.0, -2.0], &[4]).unwrap().requires_grad_().unwrap();
        y.relu6().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(y.grad().unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn softmax_is_stable_for_huge_logits() {
        let x = Tensor::from_vec(vec![1e4f32, -1e4, 0.0, 1e4], &[2, 2]).unwrap();
        let y = x.softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(y, [1.0, 0.0, 0.0, 1.0]);
        let l = x.log_softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(l, [0.0, -2e4, -1e4, 0.0]);
        assert!(x.softmax(2).unwrap_err().to_string().contains("softmax: dimension 2 is out of range"));
        let i = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
        assert!(i.sigmoid().unwrap_err().to_string().contains("sigmoid: not supported for I64"));
    }

    #[test]
    fn gradcheck_pointwise() {
        let mut rng = Generator::new(61);
        let x = randn64(&[3, 5], &mut rng).mul_scalar(2.0).unwrap();
        gradcheck(std::slice::from_ref(&x), |t| t[0].sigmoid());
        gradcheck(std::slice::from_ref(&x), |t| t[0].tanh());
        gradcheck(std::slice::from_ref(&x), |t| t[0].gelu());
        gradcheck(std::slice::from_ref(&x), |t| t[0].gelu_tanh());
        gradcheck(std::slice::from_ref(&x), |t| t[0].leaky_relu(0.03));
        gradcheck(std::slice::from_ref(&x), |t| t[0].elu(1.3));
        gradcheck(std::slice::from_ref(&x), |t| t[0].silu());
        gradcheck(std::slice::from_ref(&x), |t| t[0].mish());
        // Away from Hardswish's kinks at ±3 (finite differences straddling one disagree).
        let away = Tensor::from_vec(vec![-4.0f64, -2.5, -0.7, 0.0, 1.3, 2.9, 3.2, 5.0], &[8]).unwrap();
        gradcheck(std::slice::from_ref(&away), |t| t[0].hardswish());
        gradcheck(std::slice::from_ref(&away), |t| t[0].hardsigmoid());
        let off_kinks = Tensor::from_vec(vec![-1.0f64, 0.5, 2.0, 5.5, 7.0], &[5]).unwrap();
        gradcheck(&[off_kinks], |t| t[0].relu6());
        // A strided (transposed) input.
        gradcheck(std::slice::from_ref(&x), |t| t[0].t()?.gelu());
        gradcheck(std::slice::from_ref(&x), |t| t[0].t()?.gelu_tanh());
        gradcheck(std::slice::from_ref(&x), |t| t[0].t()?.sigmoid());
    }

    #[test]
    fn gradcheck_softmax() {
        let mut rng = Generator::new(62);
        let x = randn64(&[2, 3, 4], &mut rng);
        for dim in [0, 1, 2, -1] {
            gradcheck(std::slice::from_ref(&x), |t| t[0].softmax(dim));
            gradcheck(std::slice::from_ref(&x), |t| t[0].log_softmax(dim));
        }
        gradcheck(std::slice::from_ref(&x), |t| t[0].transpose(0, 2)?.softmax(1));
        gradcheck(&[randn64(&[], &mut rng)], |t| t[0].log_softmax(0));
        let _ = DType::F64;
    }
}
