//! Tests of the pooling ops: hand-derived values, PyTorch's output-size rule, f64 finite
//! differences for every option, errors, and bit-identical results for 1 and 4 threads.

use super::{AvgPool2dOptions, MaxPool2dOptions, avg_pool2d_with, max_pool2d_with, pool_output_size};
use super::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};
use crate::testing::{assert_close, gradcheck, randn64};
use crate::{DType, Generator, Tensor};

fn grid() -> Tensor {
    // 4×4: 1..16 row-major.
    Tensor::from_vec((1..=16).map(|v| v as f64).collect(), &[1, 1, 4, 4]).unwrap()
}

#[test]
fn max_pool_by_hand() {
    let y = max_pool2d(&grid(), (2, 2), (2, 2), (0, 0), (1, 1)).unwrap();
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    assert_eq!(y.to_vec::<f64>().unwrap(), [6., 8., 14., 16.]);
    // Padding 1, stride 2, kernel 3: windows over rows {−1,0,1}, {1,2,3}.
    let y = max_pool2d(&grid(), (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
    assert_eq!(y.to_vec::<f64>().unwrap(), [6., 8., 14., 16.]);
    // Dilation 2, kernel 2: the window reads rows/columns {i, i+2}.
    let y = max_pool2d(&grid(), (2, 2), (1, 1), (0, 0), (2, 2)).unwrap();
    assert_eq!(y.to_vec::<f64>().unwrap(), [11., 12., 15., 16.]);
    // Negative inputs: padding never wins.
    let y = max_pool2d(&grid().neg().unwrap(), (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
    assert_eq!(y.to_vec::<f64>().unwrap(), [-1., -2., -5., -6.]);
    // Ties: the gradient goes to the first maximum only.
    let x = Tensor::from_vec(vec![5.0f64, 5.0, 1.0, 5.0], &[1, 2, 2]).unwrap().requires_grad_().unwrap();
    max_pool2d(&x, (2, 2), (2, 2), (0, 0), (1, 1)).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), [1., 0., 0., 0.]);
    // NaN propagates.
    let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, 2.0], &[1, 1, 2, 2]).unwrap();
    assert!(max_pool2d(&x, (2, 2), (2, 2), (0, 0), (1, 1)).unwrap().item().unwrap().is_nan());
}

#[test]
fn avg_pools_by_hand() {
    let y = avg_pool2d(&grid(), (2, 2), (2, 2), (0, 0), true).unwrap();
    assert_eq!(y.to_vec::<f64>().unwrap(), [3.5, 5.5, 11.5, 13.5]);
    // Padding 1, kernel 2, stride 2: the corner window holds only element 1 plus three zeros.
    let inc = avg_pool2d(&grid(), (2, 2), (2, 2), (1, 1), true).unwrap().to_vec::<f64>().unwrap();
    let exc = avg_pool2d(&grid(), (2, 2), (2, 2), (1, 1), false).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(inc.len(), 9);
    assert_eq!((inc[0], exc[0]), (0.25, 1.0));
    // The middle window (rows 1..3, columns 1..3) lies inside: both divide by 4.
    assert_eq!((inc[4], exc[4]), ((6. + 7. + 10. + 11.) / 4.0, (6. + 7. + 10. + 11.) / 4.0));
    // Adaptive 4×4 → 3×3: windows {0,1}, {1,2}, {2,3} in each axis.
    let y = adaptive_avg_pool2d(&grid(), (3, 3)).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(y[0], (1. + 2. + 5. + 6.) / 4.0);
    assert_eq!(y[8], (11. + 12. + 15. + 16.) / 4.0);
    // Global average pooling, and an output larger than the input.
    assert_eq!(adaptive_avg_pool2d(&grid(), (1, 1)).unwrap().item().unwrap(), 8.5);
    let up = adaptive_avg_pool2d(&grid(), (8, 5)).unwrap();
    assert_eq!(up.dims(), &[1, 1, 8, 5]);
    assert_eq!(up.to_vec::<f64>().unwrap()[0], 1.0);
}

/// `ceil_mode` and `divisor_override` by hand (each value also checked against
/// `torch.nn.functional` in f64).
#[test]
fn ceil_mode_and_divisor_override_by_hand() {
    let max = |x: &Tensor, o: MaxPool2dOptions| max_pool2d_with(x, &o).unwrap();
    let avg = |x: &Tensor, o: AvgPool2dOptions| avg_pool2d_with(x, &o).unwrap();
    let (m3, a3) = (MaxPool2dOptions::new((3, 3)), AvgPool2dOptions::new((3, 3)));
    // 4×4, kernel 3, stride 2: floor mode has one window; ceil mode adds rows/columns {2, 3}.
    let y = max(&grid(), MaxPool2dOptions { stride: (2, 2), ..m3 });
    assert_eq!(y.to_vec::<f64>().unwrap(), [11.]);
    let y = max(&grid(), MaxPool2dOptions { stride: (2, 2), ceil_mode: true, ..m3 });
    assert_eq!((y.dims(), y.to_vec::<f64>().unwrap()), (&[1, 1, 2, 2][..], vec![11., 12., 15., 16.]));
    // Average of the same windows: no padding, so the divisor is the clipped window (9, 6, 6, 4)
    // with or without count_include_pad.
    for count_include_pad in [true, false] {
        let y = avg(&grid(), AvgPool2dOptions { stride: (2, 2), ceil_mode: true, count_include_pad, ..a3 });
        assert_eq!(y.to_vec::<f64>().unwrap(), [54. / 9., 45. / 6., 72. / 6., 54. / 4.]);
    }
    // Ones 6×6, kernel 3, stride 2, padding 1: ceil mode adds a 4th window over padded rows
    // 5..7, i.e. input row 5 and one padded row; the part past the padding is not counted.
    let ones = Tensor::ones(&[1, 1, 6, 6], crate::DType::F64);
    let o = AvgPool2dOptions { stride: (2, 2), padding: (1, 1), ceil_mode: true, ..a3 };
    let y = avg(&ones, o).to_vec::<f64>().unwrap();
    assert_eq!(y.len(), 16);
    // Corners: 4/9 (3×3 window, 2×2 inside), 2/6 (3×2, 2×1), 1/4 (2×2, 1×1).
    assert_eq!((y[0], y[3], y[12], y[15]), (4. / 9., 2. / 6., 2. / 6., 1. / 4.));
    assert_eq!((y[5], y[7]), (1.0, 3. / 6.));
    let y = avg(&ones, AvgPool2dOptions { count_include_pad: false, ..o }).to_vec::<f64>().unwrap();
    assert_eq!(y, [1.0; 16]);
    // divisor_override replaces every divisor: the sums over 4, 6, 9, 2, 1 elements, halved.
    let y = avg(&ones, AvgPool2dOptions { divisor_override: Some(2), ..o }).to_vec::<f64>().unwrap();
    assert_eq!((y[0], y[1], y[5], y[7], y[15]), (2., 3., 4.5, 1.5, 0.5));
    // Without ceil mode too, and the gradient: each input gets Σ d_y / 2 over its windows.
    let x = grid().requires_grad_().unwrap();
    let y = avg(&x, AvgPool2dOptions { divisor_override: Some(2), ..AvgPool2dOptions::new((2, 2)) });
    assert_eq!(y.to_vec::<f64>().unwrap(), [7., 11., 23., 27.]);
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), [0.5; 16]);
    // 5×5, kernel 2, stride 2, padding 1: a 4th window would start in the right padding, so
    // PyTorch drops it and ceil mode gives 3, as floor mode.
    let five = Tensor::ones(&[1, 1, 5, 5], crate::DType::F64);
    let o2 = AvgPool2dOptions { padding: (1, 1), ceil_mode: true, ..AvgPool2dOptions::new((2, 2)) };
    assert_eq!(avg(&five, o2).dims(), &[1, 1, 3, 3]);
    // Dilation 2 on 6×6 (1..36): windows read rows/columns {0, 2}, {2, 4} and, in ceil mode, {4}.
    let g6 = Tensor::from_vec((1..=36).map(|v| v as f64).collect(), &[1, 1, 6, 6]).unwrap().requires_grad_().unwrap();
    let o = MaxPool2dOptions { dilation: (2, 2), ceil_mode: true, ..MaxPool2dOptions::new((2, 2)) };
    let y = max(&g6, o);
    assert_eq!(y.to_vec::<f64>().unwrap(), [15., 17., 17., 27., 29., 29., 27., 29., 29.]);
    // The gradient goes to each window's maximum, summed where windows share it.
    y.sum_all().unwrap().backward().unwrap();
    let g = g6.grad().unwrap().to_vec::<f64>().unwrap();
    assert_eq!((g[14], g[16], g[26], g[28], g.iter().sum::<f64>()), (1., 2., 2., 4., 9.));
    // Ceil mode lets a kernel wider than the input run off its end (2 wide, kernel 3, stride 2).
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
    assert_eq!(max(&x, MaxPool2dOptions { stride: (2, 2), ceil_mode: true, ..m3 }).item().unwrap(), 4.0);
    assert_eq!(avg(&x, AvgPool2dOptions { stride: (2, 2), ceil_mode: true, ..a3 }).item().unwrap(), 2.5);
    // The defaults are the old functions'.
    let x = randn64(&[2, 3, 7, 6], &mut Generator::new(5));
    let same = |a: Tensor, b: Tensor| assert_eq!(a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    same(max(&x, MaxPool2dOptions::new((2, 3))), max_pool2d(&x, (2, 3), (2, 3), (0, 0), (1, 1)).unwrap());
    same(avg(&x, AvgPool2dOptions::new((3, 2))), avg_pool2d(&x, (3, 2), (3, 2), (0, 0), true).unwrap());
}

/// PyTorch's `pooling_output_shape`, hand-computed.
#[test]
fn output_size_rule() {
    // (size, kernel, stride, padding, dilation) → (floor, ceil)
    let cases = [
        ((4, 2, 2, 0, 1), (Some(2), Some(2))),
        ((5, 2, 2, 0, 1), (Some(2), Some(3))),
        ((5, 2, 2, 1, 1), (Some(3), Some(3))), // the 4th window would start in the padding
        ((6, 3, 2, 1, 1), (Some(3), Some(4))), // the 4th starts on the last input row
        ((7, 3, 3, 1, 1), (Some(3), Some(3))),
        ((8, 3, 3, 1, 1), (Some(3), Some(3))), // the 4th would start in the padding
        ((9, 3, 3, 1, 1), (Some(3), Some(4))),
        ((6, 2, 2, 0, 2), (Some(2), Some(3))),
        ((2, 3, 2, 0, 1), (None, Some(1))),
        ((2, 3, 1, 0, 1), (None, None)),
        ((1, 3, 2, 0, 1), (None, None)),
        ((1, 1, 1, 0, 1), (Some(1), Some(1))),
        ((9, 3, 1, 1, 1), (Some(9), Some(9))),
    ];
    for ((n, k, s, p, d), (floor, ceil)) in cases {
        assert_eq!(pool_output_size(n, k, s, p, d, false), floor, "{:?}", (n, k, s, p, d));
        assert_eq!(pool_output_size(n, k, s, p, d, true), ceil, "{:?} ceil", (n, k, s, p, d));
    }
    assert_eq!(pool_output_size(4, 0, 1, 0, 1, true), None);
    assert_eq!(pool_output_size(4, 2, 0, 0, 1, true), None);
}

#[test]
fn gradcheck_pools() {
    let mut rng = Generator::new(71);
    let x = randn64(&[2, 3, 7, 6], &mut rng);
    let one = std::slice::from_ref(&x);
    // Max pooling: continuous random inputs have no ties, so the finite differences are exact.
    gradcheck(one, |t| max_pool2d(&t[0], (2, 2), (2, 2), (0, 0), (1, 1)));
    gradcheck(one, |t| max_pool2d(&t[0], (3, 2), (2, 1), (1, 1), (1, 1)));
    gradcheck(one, |t| max_pool2d(&t[0], (3, 3), (1, 2), (1, 0), (2, 2)));
    gradcheck(one, |t| avg_pool2d(&t[0], (2, 2), (2, 2), (0, 0), true));
    gradcheck(one, |t| avg_pool2d(&t[0], (3, 3), (2, 2), (1, 1), true));
    gradcheck(one, |t| avg_pool2d(&t[0], (3, 2), (2, 1), (1, 1), false));
    gradcheck(one, |t| adaptive_avg_pool2d(&t[0], (3, 4)));
    gradcheck(one, |t| adaptive_avg_pool2d(&t[0], (1, 1)));
    gradcheck(one, |t| adaptive_avg_pool2d(&t[0], (9, 5)));
    // ceil_mode (7×6 leaves partial windows at the bottom/right) and divisor_override.
    let mp = |k, s, p, d| MaxPool2dOptions {
        stride: s,
        padding: p,
        dilation: d,
        ceil_mode: true,
        ..MaxPool2dOptions::new(k)
    };
    let ap = |k, s, p, cip, div| AvgPool2dOptions {
        stride: s,
        padding: p,
        ceil_mode: true,
        count_include_pad: cip,
        divisor_override: div,
        ..AvgPool2dOptions::new(k)
    };
    gradcheck(one, |t| max_pool2d_with(&t[0], &mp((2, 2), (2, 2), (0, 0), (1, 1))));
    gradcheck(one, |t| max_pool2d_with(&t[0], &mp((3, 3), (2, 4), (1, 1), (1, 1))));
    gradcheck(one, |t| max_pool2d_with(&t[0], &mp((2, 3), (3, 2), (1, 0), (2, 2))));
    gradcheck(one, |t| avg_pool2d_with(&t[0], &ap((3, 3), (2, 2), (1, 1), true, None)));
    gradcheck(one, |t| avg_pool2d_with(&t[0], &ap((3, 3), (2, 2), (1, 1), false, None)));
    gradcheck(one, |t| avg_pool2d_with(&t[0], &ap((2, 3), (3, 2), (0, 1), true, Some(5))));
    gradcheck(one, |t| {
        avg_pool2d_with(
            &t[0],
            &AvgPool2dOptions { divisor_override: Some(3), ..ap((3, 2), (2, 1), (1, 1), true, None) },
        )
    });
    gradcheck(one, |t| {
        avg_pool2d_with(&t[0], &AvgPool2dOptions { ceil_mode: false, ..ap((3, 3), (2, 2), (1, 1), false, Some(7)) })
    });
    // Unbatched and non-contiguous inputs.
    gradcheck(&[randn64(&[3, 5, 4], &mut rng)], |t| max_pool2d(&t[0], (2, 2), (1, 1), (1, 1), (1, 1)));
    gradcheck(&[randn64(&[3, 5, 4], &mut rng)], |t| avg_pool2d_with(&t[0], &ap((2, 2), (2, 3), (1, 1), true, None)));
    gradcheck(one, |t| avg_pool2d(&t[0].transpose(2, 3)?, (2, 3), (2, 2), (1, 1), false));
}

#[test]
fn f32_matches_f64() {
    let mut rng = Generator::new(72);
    let x = randn64(&[2, 3, 9, 7], &mut rng);
    let x32 = x.to_dtype(DType::F32).unwrap();
    type Pool = fn(&Tensor) -> crate::Result<Tensor>;
    let pools: [Pool; 5] = [
        |t| max_pool2d(t, (3, 3), (2, 2), (1, 1), (1, 1)),
        |t| avg_pool2d(t, (3, 3), (2, 2), (1, 1), true),
        |t| adaptive_avg_pool2d(t, (4, 3)),
        |t| max_pool2d_with(t, &MaxPool2dOptions { ceil_mode: true, ..MaxPool2dOptions::new((2, 2)) }),
        |t| {
            let o = AvgPool2dOptions {
                padding: (1, 1),
                ceil_mode: true,
                divisor_override: Some(4),
                ..AvgPool2dOptions::new((3, 3))
            };
            avg_pool2d_with(t, &AvgPool2dOptions { stride: (2, 2), ..o })
        },
    ];
    for f in pools {
        assert_close(&f(&x32).unwrap().to_vec_f64(), &f(&x).unwrap().to_vec_f64(), 1e-6, 1e-6);
    }
}

#[test]
fn shape_errors() {
    let x = Tensor::zeros(&[2, 3, 4, 4], DType::F32);
    let msg = |r: crate::Result<Tensor>| r.unwrap_err().to_string();
    assert_eq!(
        msg(max_pool2d(&Tensor::zeros(&[3, 4], DType::F32), (2, 2), (2, 2), (0, 0), (1, 1))),
        "max_pool2d: input has shape [3, 4], expected [N, C, H, W] (4 dimensions) or [C, H, W] (3 dimensions, unbatched)"
    );
    assert_eq!(
        msg(max_pool2d(&x, (5, 2), (1, 1), (0, 0), (1, 1))),
        "max_pool2d: input has shape [2, 3, 4, 4], expected a height (dimension 2) of at least 5: the kernel spans 5 \
         (size 5, dilation 1) but the height padded by 0 on each side is only 4; use a smaller kernel or dilation, \
         more padding, or a larger input"
    );
    assert_eq!(
        msg(max_pool2d(&x, (3, 3), (1, 1), (2, 1), (1, 1))),
        "max_pool2d: padding (2, 1) is more than half the kernel span: with kernel_size (3, 3) and dilation (1, 1) \
         it may be at most (1, 1)"
    );
    assert!(msg(avg_pool2d(&x, (2, 2), (2, 2), (0, 2), true)).contains("may be at most (1, 1)"));
    assert_eq!(
        msg(avg_pool2d(&x, (2, 0), (2, 2), (0, 0), true)),
        "avg_pool2d: kernel_size must be at least 1 in each dimension, got (2, 0)"
    );
    assert_eq!(
        msg(adaptive_avg_pool2d(&x, (0, 2))),
        "adaptive_avg_pool2d: output_size must be at least 1 in each dimension, got (0, 2)"
    );
    assert!(msg(adaptive_avg_pool2d(&Tensor::zeros(&[1, 1, 0, 3], DType::F32), (1, 1))).contains("at least 1"));
    assert!(msg(max_pool2d(&Tensor::zeros(&[4], DType::I64), (1, 1), (1, 1), (0, 0), (1, 1))).contains("[N, C, H, W]"));
    // divisor_override 0 (PyTorch: "divisor must be not zero"), and ceil mode's own minimum size.
    let a = AvgPool2dOptions { divisor_override: Some(0), ..AvgPool2dOptions::new((2, 2)) };
    assert_eq!(
        msg(avg_pool2d_with(&x, &a)),
        "avg_pool2d: divisor_override must be at least 1, got 0 (leave it unset to divide by the window size)"
    );
    let m = MaxPool2dOptions { stride: (1, 2), ceil_mode: true, ..MaxPool2dOptions::new((6, 6)) };
    assert_eq!(
        msg(max_pool2d_with(&x, &m)),
        "max_pool2d: input has shape [2, 3, 4, 4], expected a height (dimension 2) of at least 6: the kernel spans 6 \
         (size 6, dilation 1) but the height padded by 0 on each side is only 4 (with ceil_mode, plus stride − 1 = 0); \
         use a smaller kernel or dilation, more padding, or a larger input"
    );
    // The width passes: 4 + (2 − 1) = 5 < 6 still fails, so widen the stride to 3.
    let m = MaxPool2dOptions { stride: (3, 3), ceil_mode: true, ..MaxPool2dOptions::new((6, 6)) };
    assert_eq!(max_pool2d_with(&x, &m).unwrap().dims(), &[2, 3, 1, 1]);
}

#[test]
fn one_and_four_threads_give_identical_bits() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut rng = Generator::new(73);
            // 33·32 planes, 20×20 outputs of 9 taps each: 3.8M, above the threading threshold.
            const { assert!(33 * 32 * 400 * 9 >= crate::ops::tasks::PAR_WORK) };
            let x = Tensor::randn(&[33, 32, 40, 40], 0.0, 1.0, DType::F32, &mut rng).unwrap().requires_grad_().unwrap();
            let a = max_pool2d(&x, (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
            let b = avg_pool2d(&x, (3, 3), (2, 2), (1, 1), false).unwrap();
            let c = adaptive_avg_pool2d(&x, (7, 7)).unwrap();
            let loss = a.sum_all().unwrap().add(&b.mul(&b).unwrap().sum_all().unwrap()).unwrap();
            loss.add(&c.mul(&c).unwrap().sum_all().unwrap()).unwrap().backward().unwrap();
            let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            [bits(&a), bits(&b), bits(&c), bits(&x.grad().unwrap())]
        })
    };
    assert_eq!(run(1), run(4));
}
