//! The elementwise ops' CPU kernels: the broadcasting binary loop, the strided unary map (which
//! `contiguous`, `to_dtype` and the activations reuse), the in-place gradient sum, and each op's
//! arithmetic (`Binary::apply`, `Unary::apply`) with the `with_float!` dispatch on the buffers.

use super::{Binary, Unary};
use crate::error::Result;
use crate::ops::{PAR_CHUNK, parallel_pays, wide, with_float, with_float2};
use crate::shape::{Layout, Shape};
use crate::storage::{CpuStorage, Element, Float};
use crate::tensor::Tensor;
use rayon::prelude::*;

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

// ------------------------------------------------------------------ the ops on host buffers

impl Binary {
    fn apply<T: Float>(self, x: T, y: T) -> T {
        match self {
            Binary::Add => x + y,
            Binary::Sub => x - y,
            Binary::Mul => x * y,
            Binary::Div => x / y,
        }
    }
}

impl Unary {
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

/// `op(a, b)` over the broadcast of `a` and `b` into `shape`, into a fresh buffer.
pub(super) fn binary(op: Binary, a: &Tensor, b: &Tensor, shape: &Shape) -> Result<CpuStorage> {
    let name = op.name();
    let (sa, sb) = (a.cpu_storage(name)?, b.cpu_storage(name)?);
    with_float2!(sa, sb, name, |va, vb: T| Ok(T::wrap(binary_kernel::<T>(
        va,
        a.layout(),
        vb,
        b.layout(),
        shape,
        |x, y| op.apply(x, y)
    ))))
}

/// `relu(a + b)` for two operands of the same `shape`, in one pass, into a fresh buffer.
pub(super) fn add_relu(a: &Tensor, b: &Tensor, shape: &Shape) -> Result<CpuStorage> {
    const OP: &str = "add_relu";
    let (sa, sb) = (a.cpu_storage("add_relu")?, b.cpu_storage("add_relu")?);
    with_float2!(sa, sb, OP, |va, vb: T| Ok(T::wrap(binary_kernel::<T>(
        va,
        a.layout(),
        vb,
        b.layout(),
        shape,
        |x, y| Unary::Relu.apply(x + y)
    ))))
}

/// Unary `op` over `x` (any layout, read in row-major order), into a fresh buffer.
pub(super) fn unary(x: &Tensor, op: Unary) -> Result<CpuStorage> {
    let name = op.name();
    let s = x.cpu_storage(name)?;
    let l = x.layout();
    // One kernel per op, so each loop is a tight (vectorisable) map, not a match per element.
    with_float!(s, name, |v: T| Ok(T::wrap(match op {
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
    })))
}

/// `g` where `x > 0`, else 0 (ReLU's backward), into a fresh buffer of `x`'s shape.
pub(super) fn relu_backward(g: &Tensor, x: &Tensor) -> Result<CpuStorage> {
    let (sg, sx) = (g.cpu_storage("relu")?, x.cpu_storage("relu")?);
    with_float2!(sg, sx, "relu backward", |vg, vx: T| {
        let keep = |gi: T, xi: T| if xi > T::ZERO { gi } else { T::ZERO };
        Ok(T::wrap(binary_kernel::<T>(vg, g.layout(), vx, x.layout(), x.shape(), keep)))
    })
}
