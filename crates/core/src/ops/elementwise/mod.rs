//! Elementwise ops: binary arithmetic with NumPy/PyTorch broadcasting, unary maps, and ops with
//! a scalar. Backward of a broadcast operand sums the gradient over the broadcast dimensions.

use super::{PAR_CHUNK, parallel_pays, wide, with_float, with_float2};
use crate::error::Result;
use crate::shape::{Layout, Shape};
use crate::storage::{Element, Float, Storage};
use crate::tensor::Tensor;
use rayon::prelude::*;

#[cfg(feature = "gpu")]
pub(crate) mod gpu;

// ------------------------------------------------------------------ kernels

/// `acc[i] += g[i]`, on the pool's threads for large buffers (elementwise, so the split does
/// not change the bits).
pub(crate) fn add_in_place<T: Float>(acc: &mut [T], g: &[T]) {
    assert_eq!(acc.len(), g.len(), "same length");
    let run = |a: &mut [T], g: &[T]| wide(|| a.iter_mut().zip(g).for_each(|(a, &g)| *a += g));
    if parallel_pays(acc.len()) {
        acc.par_chunks_mut(PAR_CHUNK).zip(g.par_chunks(PAR_CHUNK)).for_each(|(a, g)| run(a, g));
    } else {
        run(acc, g);
    }
}

/// `out[i] = f(a[i], b[i])` over the broadcast of two strided operands into `shape`.
fn binary_kernel<T: Float>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    shape: &Shape,
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let n = shape.numel();
    let mut out = T::take_buffer(n);
    if la.shape == *shape && lb.shape == *shape && la.is_contiguous() && lb.is_contiguous() {
        let (a, b) = (&a[la.offset..la.offset + n], &b[lb.offset..lb.offset + n]);
        let run = |o: &mut [T], a: &[T], b: &[T]| {
            wide(|| o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = f(x, y)))
        };
        if parallel_pays(n) {
            out.par_chunks_mut(PAR_CHUNK)
                .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
                .for_each(|(o, (a, b))| run(o, a, b));
        } else {
            run(&mut out, a, b);
        }
        return out;
    }
    let (la, lb) = (la.broadcast_to(shape), lb.broadcast_to(shape));
    let nd = shape.ndim();
    if n == 0 {
        return out;
    }
    if nd == 0 {
        out[0] = f(a[la.offset], b[lb.offset]);
        return out;
    }
    // Odometer over the outer dimensions; the innermost runs as a tight strided loop.
    let dims = &shape.0;
    let (inner, sa, sb) = (dims[nd - 1], la.strides[nd - 1], lb.strides[nd - 1]);
    let mut idx = vec![0usize; nd];
    let (mut ia, mut ib) = (la.offset, lb.offset);
    let mut at = 0;
    loop {
        for (j, o) in out[at..at + inner].iter_mut().enumerate() {
            *o = f(a[ia + j * sa], b[ib + j * sb]);
        }
        at += inner;
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            ia += la.strides[d];
            ib += lb.strides[d];
            if idx[d] < dims[d] {
                break;
            }
            ia -= la.strides[d] * dims[d];
            ib -= lb.strides[d] * dims[d];
            idx[d] = 0;
        }
    }
}

/// `out[i] = f(x[i])` in row-major order of `x`'s shape.
pub(crate) fn unary_kernel<T: Element, U: Element>(x: &[T], lx: &Layout, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let n = lx.shape.numel();
    let mut out = U::take_buffer(n);
    if lx.is_contiguous() {
        let x = &x[lx.offset..lx.offset + n];
        let run = |o: &mut [U], x: &[T]| wide(|| o.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v)));
        if parallel_pays(n) {
            out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).for_each(|(o, x)| run(o, x));
        } else {
            run(&mut out, x);
        }
        return out;
    }
    let mut at = 0;
    lx.for_each_run(|base, len, stride| {
        let dst = &mut out[at..at + len];
        if stride == 1 {
            dst.iter_mut().zip(&x[base..base + len]).for_each(|(o, &v)| *o = f(v));
        } else {
            dst.iter_mut().enumerate().for_each(|(j, o)| *o = f(x[base + j * stride]));
        }
        at += len;
    });
    out
}

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
    fn apply<T: Float>(self, x: T, y: T) -> T {
        match self {
            Binary::Add => x + y,
            Binary::Sub => x - y,
            Binary::Mul => x * y,
            Binary::Div => x / y,
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
        _ => {
            let (sa, sb) = (a.cpu_storage(name)?, b.cpu_storage(name)?);
            with_float2!(sa, sb, name, |va, vb: T| Ok(T::wrap(binary_kernel::<T>(
                va,
                a.layout(),
                vb,
                b.layout(),
                &shape,
                |x, y| op.apply(x, y)
            ))))?
            .into()
        }
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
    let (sa, sb) = (a.cpu_storage("add_relu")?, b.cpu_storage("add_relu")?);
    let storage = with_float2!(sa, sb, OP, |va, vb: T| Ok(T::wrap(binary_kernel::<T>(
        va,
        a.layout(),
        vb,
        b.layout(),
        &shape,
        |x, y| Unary::Relu.apply(x + y)
    ))))?;
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
    fn apply<T: Float>(self, x: T) -> T {
        match self {
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            // NaN propagates, as in PyTorch.
            Unary::Relu => {
                if x > T::ZERO || x.is_nan() {
                    x
                } else {
                    T::ZERO
                }
            }
            Unary::Sqrt => x.sqrt(),
            Unary::AddScalar(s) => x + T::from_f64(s),
            Unary::MulScalar(s) => x * T::from_f64(s),
        }
    }
}

fn unary(x: &Tensor, op: Unary) -> Result<Tensor> {
    let name = op.name();
    #[cfg(feature = "gpu")]
    if x.device().is_gpu() {
        let storage = gpu::unary(name, x, op)?;
        return Ok(unary_node(storage, x, op));
    }
    let s = x.cpu_storage(name)?;
    let l = x.layout();
    // One kernel per op, so each loop is a tight (vectorisable) map, not a match per element.
    let storage = with_float!(s, name, |v: T| Ok(T::wrap(match op {
        Unary::Neg => unary_kernel::<T, T>(v, l, |a| Unary::Neg.apply(a)),
        Unary::Exp => unary_kernel::<T, T>(v, l, |a| Unary::Exp.apply(a)),
        Unary::Log => unary_kernel::<T, T>(v, l, |a| Unary::Log.apply(a)),
        Unary::Relu => unary_kernel::<T, T>(v, l, |a| Unary::Relu.apply(a)),
        Unary::Sqrt => unary_kernel::<T, T>(v, l, |a| a.sqrt()),
        Unary::AddScalar(c) => {
            let c = T::from_f64(c);
            unary_kernel::<T, T>(v, l, |a| a + c)
        }
        Unary::MulScalar(c) => {
            let c = T::from_f64(c);
            unary_kernel::<T, T>(v, l, |a| a * c)
        }
    })))?;
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
    let (sg, sx) = (g.cpu_storage("relu")?, x.cpu_storage("relu")?);
    let storage = with_float2!(sg, sx, "relu backward", |vg, vx: T| {
        let keep = |gi: T, xi: T| if xi > T::ZERO { gi } else { T::ZERO };
        Ok(T::wrap(binary_kernel::<T>(vg, g.layout(), vx, x.layout(), x.shape(), keep)))
    })?;
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
