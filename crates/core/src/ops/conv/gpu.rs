//! conv2d on a GPU: the input unfolded into columns (`im2col.wgsl`), one batched GEMM per
//! direction (the matmul kernel), and the input gradient folded back by a gather (`col2im`).
//! Grouped and depthwise convolutions batch the GEMMs over the groups.

use super::geom::ConvGeom;
use crate::device::DType;
use crate::error::Result;
use crate::gpu::{Kernel, groups_1d, output};
use crate::shape::{Layout, Shape};
use crate::storage::Storage;
use crate::tensor::Tensor;

const IM2COL: Kernel = Kernel { name: "im2col", wgsl: include_str!("im2col.wgsl"), entry: "im2col_main" };
const COL2IM: Kernel = Kernel { name: "col2im", wgsl: include_str!("im2col.wgsl"), entry: "col2im_main" };

/// The kernels' parameter words for `g`. The kernels compute input positions in 32-bit signed
/// arithmetic (`oh·stride + kh·dilation − padding` as `i32`), so a geometry reaching past
/// 2³¹ − 1 — a padding, stride or dilation that large — is refused here: its words would wrap
/// and the kernels read the wrong pixels (a silently wrong result).
fn words(g: &ConvGeom) -> Result<Vec<u32>> {
    let values = [
        g.n,
        g.c,
        g.h,
        g.w,
        g.kh,
        g.kw,
        g.oh,
        g.ow,
        g.stride.0,
        g.stride.1,
        g.padding.0,
        g.padding.1,
        g.dilation.0,
        g.dilation.1,
    ];
    let max = i32::MAX as usize;
    // The furthest tap from the padded origin, and the far edge of the padded input.
    let reach = |o: usize, s: usize, k: usize, d: usize| {
        o.saturating_sub(1).checked_mul(s).zip((k - 1).checked_mul(d)).and_then(|(a, b)| a.checked_add(b))
    };
    let fits = |v: Option<usize>| v.is_some_and(|v| v <= max);
    let ok = values.iter().all(|&v| v <= max)
        && fits(reach(g.oh, g.stride.0, g.kh, g.dilation.0))
        && fits(reach(g.ow, g.stride.1, g.kw, g.dilation.1))
        && fits(g.h.checked_add(g.padding.0))
        && fits(g.w.checked_add(g.padding.1));
    if !ok {
        crate::bail_arg!(
            "conv2d",
            "stride {:?}, padding {:?} and dilation {:?} over a {}×{} input reach past 2³¹ − 1, beyond the GPU \
             kernels' 32-bit arithmetic; run this convolution on the CPU (`.to_device(Device::Cpu)`)",
            g.stride,
            g.padding,
            g.dilation,
            g.h,
            g.w
        );
    }
    Ok(values.iter().map(|&v| v as u32).collect())
}

/// The columns of contiguous `x` `[N, C, H, W]`: `[N, C·KH·KW, OH·OW]`.
fn im2col(x: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let b = x.gpu_f32_buffer("conv2d")?;
    let (k, l) = (g.c * g.kh * g.kw, g.oh * g.ow);
    let n = g.n * k * l;
    let out = output(&b.ctx, "conv2d", n, DType::F32)?;
    b.ctx.dispatch(&IM2COL, &words(g)?, &[b.raw(), out.raw()], groups_1d(n))?;
    Ok(Tensor::from_storage(Storage::Gpu(out), Shape(vec![g.n, k, l])))
}

/// The input gradient `[N, C, H, W]` from the columns' gradient `[N, C·KH·KW, OH·OW]`.
fn col2im(dcols: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let dcols = dcols.detach_owned()?;
    let b = dcols.gpu_f32_buffer("conv2d")?;
    let n = g.n * g.c * g.h * g.w;
    let out = output(&b.ctx, "conv2d", n, DType::F32)?;
    b.ctx.dispatch(&COL2IM, &words(g)?, &[b.raw(), out.raw()], groups_1d(n))?;
    Ok(Tensor::from_storage(Storage::Gpu(out), Shape(vec![g.n, g.c, g.h, g.w])))
}

/// The convolution of `x` by `weight` (+ `bias`) on the GPU, with its backward.
///
/// The columns `[N, C·KH·KW, L]` are `[N, G, K', L]` by group (`K' = C/G·KH·KW`) and the
/// weight `[O, C/G, KH, KW]` is `[G, O/G, K']`, so every GEMM is batched over `(n, group)`:
/// a grouped (or depthwise) convolution is the same three GEMMs with one more batch dimension.
pub(super) fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, g: ConvGeom) -> Result<Tensor> {
    use crate::ops::matmul::gpu::{Operand, gemm};
    let xc = x.detach().contiguous()?;
    let cols = im2col(&xc, &g)?;
    let groups = g.groups;
    let (og, kg, l) = (g.o / groups, g.c / groups * g.kh * g.kw, g.oh * g.ow);
    let k = g.c * g.kh * g.kw;
    let w2 = weight.detach().reshape(&[g.o, kg])?.detach_owned()?;
    // Where matrix (n, group) of `t` starts: `per_n` apart by sample, `per_g` by group.
    let per = move |t: &Tensor, per_n: usize, per_g: usize| Layout {
        shape: Shape(vec![g.n, groups]),
        strides: vec![per_n, per_g],
        offset: t.layout().offset,
    };
    let batches = g.n * groups;
    // y[n, group] = W[group] [O/G, K'] · cols[n, group] [K', L]: the weight broadcast over the batch.
    let y = gemm(
        "conv2d",
        Operand { t: &w2, batch: per(&w2, 0, og * kg), rs: kg, cs: 1 },
        Operand { t: &cols, batch: per(&cols, k * l, kg * l), rs: l, cs: 1 },
        (batches, og, kg, l),
        None,
        false,
    )?;
    let mut y = Tensor::from_storage(y, Shape(vec![g.n, g.o, g.oh, g.ow]));
    if let Some(b) = bias {
        y = y.add(&b.detach().reshape(&[1, g.o, 1, 1])?)?;
    }
    let inputs: Vec<&Tensor> = match bias {
        Some(b) => vec![x, weight, b],
        None => vec![x, weight],
    };
    let needs = (x.requires_grad(), weight.requires_grad(), bias.is_some_and(Tensor::requires_grad));
    let has_bias = bias.is_some();
    let w_shape = weight.shape().clone();
    Ok(Tensor::from_op(y.buffer(), y.shape().clone(), "conv2d", &inputs, move |dy| {
        // dy: [N, O, OH, OW] as [N, O, L] = [N, G, O/G, L].
        let dy = dy.detach_owned()?.reshape(&[g.n, g.o, l])?;
        let dx = if needs.0 {
            // dcols[n, group] = W[group]ᵀ [K', O/G] · dy[n, group] [O/G, L]
            let dcols = gemm(
                "conv2d",
                Operand { t: &w2, batch: per(&w2, 0, og * kg), rs: 1, cs: kg },
                Operand { t: &dy, batch: per(&dy, g.o * l, og * l), rs: l, cs: 1 },
                (batches, kg, og, l),
                None,
                false,
            )?;
            Some(col2im(&Tensor::from_storage(dcols, Shape(vec![g.n, k, l])), &g)?)
        } else {
            None
        };
        let dw = if needs.1 {
            // dW[group] = Σ_n dy[n, group] [O/G, L] · cols[n, group]ᵀ [L, K']
            let per_sample = gemm(
                "conv2d",
                Operand { t: &dy, batch: per(&dy, g.o * l, og * l), rs: l, cs: 1 },
                Operand { t: &cols, batch: per(&cols, k * l, kg * l), rs: 1, cs: l },
                (batches, og, l, kg),
                None,
                false,
            )?;
            let per_sample = Tensor::from_storage(per_sample, Shape(vec![g.n, g.o, kg]));
            Some(per_sample.sum(&[0], false)?.reshape(w_shape.dims())?)
        } else {
            None
        };
        let mut out = vec![dx, dw];
        if has_bias {
            out.push(if needs.2 { Some(dy.sum(&[0, 2], false)?) } else { None });
        }
        Ok(out)
    }))
}
