//! Matrix product with PyTorch's `matmul` semantics: 2-D × 2-D, batched `[..., m, k] × [..., k, n]`
//! with broadcasting of the batch dimensions, and 1-D operands promoted to a row or a column.
//! Backward: dA = dC·Bᵀ and dB = Aᵀ·dC, where the transposes are strided views the GEMM reads
//! directly (no copies), then summed over broadcast batch dimensions.

#[cfg(target_arch = "x86_64")]
mod amx;
mod bf16;
pub(crate) mod cpu;
#[cfg(target_arch = "x86_64")]
mod f32_x86;
mod gemm_crate;
#[cfg(target_arch = "x86_64")]
mod gemv_x86;
#[cfg(feature = "gpu")]
pub(crate) mod gpu;
#[cfg(target_arch = "x86_64")]
mod packed;

use super::with_float2;
use crate::error::{Error, Result};
use crate::shape::{Layout, Shape};
use crate::storage::{Element, Float};
use crate::tensor::Tensor;
pub use cpu::{CpuKernels, cpu_kernels};
use cpu::{MatRef, gemm};

impl Tensor {
    /// Matrix product, as `torch.matmul`.
    ///
    /// # Shapes
    /// - `[m, k] × [k, n] → [m, n]`
    /// - `[..., m, k] × [..., k, n] → [..., m, n]`, batch dimensions broadcast
    /// - a 1-D left operand `[k]` acts as `[1, k]`, a 1-D right operand `[k]` as `[k, 1]`, and the
    ///   added dimension is removed from the result
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.check_same("matmul", other)?;
        if self.ndim() == 0 || other.ndim() == 0 {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                what: "operand",
                got: Shape(vec![]),
                expected: "at least one dimension (use `mul` for scalars)".into(),
            });
        }
        match (self.ndim(), other.ndim()) {
            (1, 1) => self.unsqueeze(0)?.matmul(&other.unsqueeze(1)?)?.reshape(&[]),
            (1, _) => self.unsqueeze(0)?.matmul(other)?.squeeze(-2),
            (_, 1) => self.matmul(&other.unsqueeze(1)?)?.squeeze(-1),
            _ => matmul_nd(self, other),
        }
    }
}

fn matmul_nd(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ad, bd) = (a.dims(), b.dims());
    let (m, k) = (ad[ad.len() - 2], ad[ad.len() - 1]);
    let (k2, n) = (bd[bd.len() - 2], bd[bd.len() - 1]);
    if k != k2 {
        return Err(Error::MatmulShape {
            op: "matmul",
            lhs: a.shape().clone(),
            rhs: b.shape().clone(),
            lhs_k: k,
            rhs_k: k2,
        });
    }
    let a_batch = Shape(ad[..ad.len() - 2].to_vec());
    let b_batch = Shape(bd[..bd.len() - 2].to_vec());
    let batch = Shape::broadcast("matmul", &a_batch, &b_batch)?;
    let (al, bl) = (a.layout(), b.layout());
    let (ars, acs) = (al.strides[ad.len() - 2], al.strides[ad.len() - 1]);
    let (brs, bcs) = (bl.strides[bd.len() - 2], bl.strides[bd.len() - 1]);
    let mut out_dims = batch.0.clone();
    out_dims.extend([m, n]);
    #[cfg(feature = "gpu")]
    if a.device().is_gpu() {
        let batch_layout = |t: &Tensor, own: &Shape| Layout {
            shape: own.clone(),
            strides: t.layout().strides[..own.ndim()].to_vec(),
            offset: t.layout().offset,
        };
        let storage = gpu::gemm(
            "matmul",
            gpu::Operand { t: a, batch: batch_layout(a, &a_batch), rs: ars, cs: acs },
            gpu::Operand { t: b, batch: batch_layout(b, &b_batch), rs: brs, cs: bcs },
            (batch.numel(), m, k, n),
            None,
            false,
        )?;
        return Ok(matmul_node(storage, Shape(out_dims), a, b));
    }
    // Offsets of each batch's matrix in each operand (stride 0 along broadcast dimensions).
    let offsets = |t: &Tensor, own: &Shape| {
        let l = t.layout();
        let nb = own.ndim();
        let bl =
            Layout { shape: own.clone(), strides: l.strides[..nb].to_vec(), offset: l.offset }.broadcast_to(&batch);
        let mut v = Vec::with_capacity(batch.numel());
        bl.for_each_index(|o| v.push(o));
        v
    };
    let (a_off, b_off) = (offsets(a, &a_batch), offsets(b, &b_batch));
    let (sa, sb) = (a.cpu_storage("matmul")?, b.cpu_storage("matmul")?);
    let storage = with_float2!(sa, sb, "matmul", |va, vb: T| {
        let mut out = T::take_buffer(batch.numel() * m * n);
        for (i, (&ao, &bo)) in a_off.iter().zip(&b_off).enumerate() {
            let lhs = MatRef { data: va, offset: ao, rs: ars, cs: acs };
            let rhs = MatRef { data: vb, offset: bo, rs: brs, cs: bcs };
            gemm::<T>(m, n, k, &mut out[i * m * n..(i + 1) * m * n], lhs, rhs, false);
        }
        Ok(T::wrap(out))
    })?;
    Ok(matmul_node(storage.into(), Shape(out_dims), a, b))
}

/// The product's tensor with its autograd node.
fn matmul_node(storage: crate::storage::Storage, shape: Shape, a: &Tensor, b: &Tensor) -> Tensor {
    let (a_saved, b_saved) = (a.clone(), b.clone());
    let (need_a, need_b) = (a.requires_grad(), b.requires_grad());
    Tensor::from_op(storage, shape, "matmul", &[a, b], move |g| {
        let (a, b) = (a_saved, b_saved);
        let da = if need_a { Some(g.matmul(&b.transpose(-2, -1)?)?.sum_to_shape(a.shape())?) } else { None };
        let db = if need_b { Some(a.transpose(-2, -1)?.matmul(g)?.sum_to_shape(b.shape())?) } else { None };
        Ok(vec![da, db])
    })
}

/// `out[m×n] = x[m×k] · wᵀ (+ bias rows)`, with `w` stored `[n, k]` as PyTorch's Linear weight:
/// the transpose is expressed through strides. Shared by the fused `linear` op.
pub(crate) fn linear_forward<T: Float>(
    x: MatRef<T>,
    w: &[T],
    bias: Option<&[T]>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<T> {
    let mut out = T::take_buffer(m * n);
    if let Some(b) = bias
        && n > 0
    {
        out.chunks_exact_mut(n).for_each(|row| row.copy_from_slice(b));
    }
    // wᵀ: element (p, j) is w[j*k + p].
    let wt = MatRef { data: w, offset: 0, rs: 1, cs: k };
    gemm(m, n, k, &mut out, x, wt, bias.is_some());
    out
}

#[cfg(test)]
mod tests {
    use crate::testing::{assert_close, gradcheck, randn64};
    use crate::{Generator, Tensor};

    #[test]
    fn small_products_by_hand() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        let b = Tensor::from_vec(vec![7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0], &[3, 2]).unwrap();
        assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>().unwrap(), [58., 64., 139., 154.]);
        // Transposed views go straight to the kernel.
        assert_eq!(b.t().unwrap().matmul(&a.t().unwrap()).unwrap().to_vec::<f32>().unwrap(), [58., 139., 64., 154.]);
        let v = Tensor::from_vec(vec![1.0f32, 1.0, 1.0], &[3]).unwrap();
        assert_eq!(a.matmul(&v).unwrap().to_vec::<f32>().unwrap(), [6., 15.]);
        assert_eq!(v.matmul(&v).unwrap().dims(), &[] as &[usize]);
        let e = a.matmul(&a).unwrap_err();
        assert_eq!(
            e.to_string(),
            "matmul: cannot multiply [2, 3] by [2, 3]: the first has 3 columns (its last dimension) \
             but the second has 2 rows (its second-to-last dimension); they must be equal"
        );
    }

    #[test]
    fn large_product_matches_naive_sum() {
        // Big enough to take the multithreaded path.
        let mut rng = Generator::new(5);
        let (m, k, n) = (160, 200, 150);
        let a = randn64(&[m, k], &mut rng);
        let b = randn64(&[k, n], &mut rng);
        let c = a.matmul(&b).unwrap().to_vec_f64();
        let (av, bv) = (a.to_vec_f64(), b.to_vec_f64());
        let mut naive = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                naive[i * n + j] = (0..k).map(|p| av[i * k + p] * bv[p * n + j]).sum();
            }
        }
        assert_close(&c, &naive, 1e-12, 1e-10);
    }

    #[test]
    fn gradcheck_matmul() {
        let mut rng = Generator::new(41);
        let cases: [(&[usize], &[usize]); 6] = [
            (&[3, 4], &[4, 2]),
            (&[2, 3, 4], &[2, 4, 5]),
            (&[2, 3, 4], &[4, 5]),
            (&[3, 1, 2, 4], &[5, 4, 3]),
            (&[4], &[4, 3]),
            (&[2, 4], &[4]),
        ];
        for (sa, sb) in cases {
            let a = randn64(sa, &mut rng);
            let b = randn64(sb, &mut rng);
            gradcheck(&[a, b], |t| t[0].matmul(&t[1]));
        }
        let a = randn64(&[4, 3], &mut rng);
        let b = randn64(&[5, 4], &mut rng);
        gradcheck(&[a, b], |t| t[0].t()?.matmul(&t[1].t()?));
    }
}
