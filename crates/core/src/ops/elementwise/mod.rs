//! Elementwise ops: binary arithmetic with NumPy/PyTorch broadcasting, unary maps, and ops with
//! a scalar. Backward of a broadcast operand sums the gradient over the broadcast dimensions.
//!
//! This file holds the API, shapes and autograd; `cpu.rs` the CPU kernels, `gpu.rs` and its
//! `.wgsl` the GPU ones (the `gpu` feature).

use crate::error::Result;
use crate::shape::{Layout, Shape};
use crate::storage::Storage;
use crate::tensor::Tensor;

pub(crate) mod cpu;
#[cfg(feature = "gpu")]
pub(crate) mod gpu;

// ------------------------------------------------------------------ binary ops

/// Which binary op: one enum so the four share the broadcasting and dispatch code.
#[derive(Clone, Copy, Debug)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

impl Binary {
    fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
        }
    }
}

fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    let name = op.name();
    a.check_same(name, b)?;
    let shape = Shape::broadcast(name, a.shape(), b.shape())?;
    let storage: Storage = match () {
        #[cfg(feature = "gpu")]
        _ if a.device().is_gpu() => gpu::binary(name, op.gpu_code(), a, b, &shape)?,
        _ => cpu::binary(op, a, b, &shape)?.into(),
    };
    let (a_saved, b_saved) = (a.clone(), b.clone());
    Ok(Tensor::from_op(storage, shape, name, &[a, b], move |g| {
        let (a, b) = (a_saved, b_saved);
        // d(a op b)/da and /db, then reduced back to each operand's own shape.
        let (da, db) = match op {
            Binary::Add => (g.clone(), g.clone()),
            Binary::Sub => (g.clone(), g.neg()?),
            Binary::Mul => (g.mul(&b)?, g.mul(&a)?),
            Binary::Div => {
                let da = g.div(&b)?;
                let db = da.mul(&a)?.div(&b)?.neg()?; // -g·a/b²
                (da, db)
            }
        };
        Ok(vec![Some(da.sum_to_shape(a.shape())?), Some(db.sum_to_shape(b.shape())?)])
    }))
}

impl Tensor {
    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        binary(self, other, Binary::Add)
    }
    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        binary(self, other, Binary::Sub)
    }
    /// `self * other` elementwise, broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        binary(self, other, Binary::Mul)
    }
    /// `self / other` elementwise, broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        binary(self, other, Binary::Div)
    }
}

/// `relu(a + b)` as one op, for the sum at the end of a residual block followed by its ReLU:
/// the same values and gradients as `a.add(b)?.relu()`, one pass over the activations instead
/// of two forward and one instead of two backward, and no intermediate sum kept alive. Shapes
/// that differ (broadcasting) take the two-op path.
///
/// # Shapes
/// - `a`, `b`: any shape, both the same (or broadcastable, unfused)
/// - output: the shape of `a + b`
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "add_relu";
    // Broadcasting, and devices without the fused kernel, take the two ops.
    if a.shape() != b.shape() || a.device().is_gpu() {
        return a.add(b)?.relu();
    }
    a.check_same(OP, b)?;
    let shape = a.shape().clone();
    let storage = cpu::add_relu(a, b, &shape)?;
    // The output decides the gradient mask (> 0 exactly where the sum was > 0).
    let storage = std::sync::Arc::new(storage);
    let saved_y = Tensor::from_parts(storage.clone(), Layout::contiguous(shape.clone()), None);
    Ok(Tensor::from_op_shared(storage, shape, OP, &[a, b], move |g| {
        let d = relu_backward(g, &saved_y)?;
        Ok(vec![Some(d.clone()), Some(d)])
    }))
}

// ------------------------------------------------------------------ unary ops

/// Which unary op: one enum so they share dispatch; each backward is one line below.
#[derive(Clone, Copy, Debug)]
enum Unary {
    Neg,
    Exp,
    Log,
    Relu,
    Sqrt,
    AddScalar(f64),
    MulScalar(f64),
}

impl Unary {
    fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Relu => "relu",
            Unary::Sqrt => "sqrt",
            Unary::AddScalar(_) => "add_scalar",
            Unary::MulScalar(_) => "mul_scalar",
        }
    }
}

fn unary(x: &Tensor, op: Unary) -> Result<Tensor> {
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        let storage = gpu::unary(op.name(), x, op)?;
        return Ok(unary_node(storage, x, op));
    }
    let storage = cpu::unary(x, op)?;
    Ok(unary_node(storage.into(), x, op))
}

/// The result of unary `op` on `x` with its autograd node.
fn unary_node(storage: Storage, x: &Tensor, op: Unary) -> Tensor {
    let x_saved = x.clone();
    Tensor::from_op(storage, x.shape().clone(), op.name(), &[x], move |g| {
        let x = x_saved;
        let dx = match op {
            Unary::Neg => g.neg()?,
            Unary::Exp => g.mul(&x.exp()?)?,
            Unary::Log => g.div(&x)?,
            // The gradient at exactly 0 is 0, as in PyTorch (`threshold_backward`).
            Unary::Relu => relu_backward(g, &x)?,
            // d√x = 1 / (2√x)
            Unary::Sqrt => g.div(&x.sqrt()?.mul_scalar(2.0)?)?,
            Unary::AddScalar(_) => g.clone(),
            Unary::MulScalar(s) => g.mul_scalar(s)?,
        };
        Ok(vec![Some(dx)])
    })
}

impl Tensor {
    /// `-self`.
    pub fn neg(&self) -> Result<Tensor> {
        unary(self, Unary::Neg)
    }
    /// `e^self`.
    pub fn exp(&self) -> Result<Tensor> {
        unary(self, Unary::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        unary(self, Unary::Log)
    }
    /// `max(self, 0)`; its gradient at 0 is 0, as in PyTorch.
    pub fn relu(&self) -> Result<Tensor> {
        unary(self, Unary::Relu)
    }
    /// `√self` elementwise (NaN below 0, as `torch.sqrt`).
    pub fn sqrt(&self) -> Result<Tensor> {
        unary(self, Unary::Sqrt)
    }
    /// `self + s`.
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        unary(self, Unary::AddScalar(s))
    }
    /// `self * s`.
    pub fn mul_scalar(&self, s: f64) -> Result<Tensor> {
        unary(self, Unary::MulScalar(s))
    }
}

/// `g` where `x > 0`, else 0: ReLU's backward in one pass (PyTorch's `threshold_backward`).
pub(crate) fn relu_backward(g: &Tensor, x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        g.check_same("relu backward", x)?;
        let storage = gpu::binary("relu backward", gpu::RELU_BACKWARD, g, x, x.shape())?;
        return Ok(Tensor::from_storage(storage, x.shape().clone()));
    }
    let storage = cpu::relu_backward(g, x)?;
    Ok(Tensor::from_storage(storage, x.shape().clone()))
}

#[cfg(test)]
mod tests {
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{Generator, Tensor};

    #[test]
    fn broadcast_values() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        let b = Tensor::from_vec(vec![10.0f32, 20.0, 30.0], &[3]).unwrap();
        assert_eq!(a.add(&b).unwrap().to_vec::<f32>().unwrap(), [11., 22., 33., 14., 25., 36.]);
        let c = Tensor::from_vec(vec![2.0f32, 4.0], &[2, 1]).unwrap();
        assert_eq!(a.div(&c).unwrap().to_vec::<f32>().unwrap(), [0.5, 1., 1.5, 1., 1.25, 1.5]);
        let err = a.add(&Tensor::zeros(&[2], crate::DType::F32)).unwrap_err();
        assert!(err.to_string().starts_with("add: shapes [2, 3] and [2] cannot be broadcast"));
    }

    #[test]
    fn add_relu_is_add_then_relu() {
        let mut rng = Generator::new(13);
        let (a, b) = (randn64(&[4, 3, 5], &mut rng), randn64(&[4, 3, 5], &mut rng));
        let fused = super::add_relu(&a, &b).unwrap();
        assert_eq!(fused.to_vec_f64(), a.add(&b).unwrap().relu().unwrap().to_vec_f64());
        gradcheck(&[a.clone(), b.clone()], |t| super::add_relu(&t[0], &t[1]));
        // Gradient 0 where the sum is exactly 0, as relu's; broadcasting falls back to two ops.
        let x = Tensor::from_vec(vec![-1.0f32, 1.0, 2.0], &[3]).unwrap().requires_grad_().unwrap();
        let y = Tensor::from_vec(vec![1.0f32, 1.0, -3.0], &[3]).unwrap().requires_grad_().unwrap();
        super::add_relu(&x, &y).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [0.0, 1.0, 0.0]);
        assert_eq!(y.grad().unwrap().to_vec::<f32>().unwrap(), [0.0, 1.0, 0.0]);
        let c = randn64(&[5], &mut rng);
        assert_eq!(super::add_relu(&a, &c).unwrap().to_vec_f64(), a.add(&c).unwrap().relu().unwrap().to_vec_f64());
    }

    #[test]
    fn relu_grad_at_zero_is_zero() {
        let x = Tensor::from_vec(vec![-1.0f32, 0.0, 2.0], &[3]).unwrap().requires_grad_().unwrap();
        x.relu().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0, 1.0]);
    }

    #[test]
    fn gradcheck_binary_with_broadcasting() {
        let mut rng = Generator::new(11);
        for (sa, sb) in [(&[3, 4][..], &[3, 4][..]), (&[4, 1, 3], &[5, 1]), (&[2, 3], &[]), (&[1], &[2, 2])] {
            let a = randn64(sa, &mut rng);
            // Keep the divisor away from 0.
            let b = randn64(sb, &mut rng).mul_scalar(0.1).unwrap().add_scalar(2.0).unwrap();
            gradcheck(&[a.clone(), b.clone()], |t| t[0].add(&t[1]));
            gradcheck(&[a.clone(), b.clone()], |t| t[0].sub(&t[1]));
            gradcheck(&[a.clone(), b.clone()], |t| t[0].mul(&t[1]));
            gradcheck(&[a.clone(), b.clone()], |t| t[0].div(&t[1]));
        }
    }

    #[test]
    fn gradcheck_unary() {
        let mut rng = Generator::new(12);
        let x = randn64(&[3, 5], &mut rng);
        gradcheck(std::slice::from_ref(&x), |t| t[0].neg());
        gradcheck(std::slice::from_ref(&x), |t| t[0].exp());
        gradcheck(std::slice::from_ref(&x), |t| t[0].relu());
        gradcheck(std::slice::from_ref(&x), |t| t[0].mul_scalar(-2.5)?.add_scalar(1.0));
        let pos = x.mul(&x).unwrap().add_scalar(0.5).unwrap();
        gradcheck(&[pos], |t| t[0].log());
    }

    #[test]
    fn same_tensor_twice_accumulates() {
        // d(x*x)/dx = 2x: both uses of x must add into one gradient.
        let x = Tensor::from_vec(vec![3.0f64, -1.5], &[2]).unwrap().requires_grad_().unwrap();
        x.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(&x.grad().unwrap().to_vec_f64(), &[6.0, -3.0], 1e-12, 0.0);
    }

    #[test]
    fn gradient_sums_in_place_leave_shared_gradients_alone() {
        // a + a: add's backward hands the same gradient tensor to both uses of a, so the sum
        // for a must not be taken in place (it would double the second operand as well).
        // a·2 + a·3 + a: three fresh gradients summed, the later sums in place.
        let x = Tensor::from_vec(vec![1.5f32, -2.0, 0.25], &[3]).unwrap().requires_grad_().unwrap();
        let a = x.mul_scalar(1.0).unwrap();
        a.add(&a).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [2.0, 2.0, 2.0]);
        x.zero_grad().unwrap();
        let a = x.mul_scalar(1.0).unwrap();
        let y = a.mul_scalar(2.0).unwrap().add(&a.mul_scalar(3.0).unwrap()).unwrap().add(&a).unwrap();
        y.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
        // y·x = 6x²: d/dx = 12x.
        assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), [18.0, -24.0, 3.0]);
    }
}
