//! Tests of `Conv2d`: initialisation and names, padding modes against pad-then-convolve, the
//! kind's model-file round trip, check and fixes.

use super::*;
use crate::layer::Layer;
use crate::spec::{ConvSpec, LayerSpec};

#[test]
fn pytorch_default_init_names_and_description() {
    let mut rng = Generator::new(5);
    let conv = Conv2dConfig::new(4, 64, 3).groups(2).init(&mut rng).unwrap();
    // fan_in = 4/2·3·3 = 18.
    let bound = 1.0 / 18f64.sqrt();
    let w = conv.weight.to_vec_f64();
    assert!(w.iter().all(|v| v.abs() <= bound));
    let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
    assert!((var - bound * bound / 3.0).abs() < 0.1 * bound * bound, "{var}");
    assert!(conv.bias.as_ref().unwrap().to_vec_f64().iter().all(|v| v.abs() <= bound));
    let names: Vec<_> = conv.named_parameters().into_iter().map(|(n, t)| (n, t.dims().to_vec())).collect();
    assert_eq!(names, [("weight".to_string(), vec![64, 2, 3, 3]), ("bias".to_string(), vec![64])]);
    assert_eq!(conv.num_parameters(), 64 * 18 + 64);
    assert_eq!(conv.describe(), "Conv2d 4 → 64, 3×3, groups 2");
    let c = Conv2dConfig::new(1, 8, (3, 2)).stride(2).padding((1, 0)).bias(false).init(&mut rng).unwrap();
    assert_eq!(c.describe(), "Conv2d 1 → 8, 3×2, stride 2, padding 1×0, no bias");
    assert!(c.own_parameters().len() == 1);
}

#[test]
fn invalid_configs_are_errors() {
    let msg = |c: Conv2dConfig| c.init(&mut Generator::new(0)).unwrap_err().to_string();
    assert_eq!(msg(Conv2dConfig::new(3, 4, 3).groups(2)), "Conv2d: in_channels must be divisible by groups (2), got 3");
    assert_eq!(
        msg(Conv2dConfig::new(4, 6, 3).groups(4)),
        "Conv2d: out_channels must be divisible by groups (4), got 6"
    );
    assert_eq!(msg(Conv2dConfig::new(0, 6, 3)), "Conv2d: in_channels must be at least 1, got 0");
    assert_eq!(
        msg(Conv2dConfig::new(1, 6, (3, 0))),
        "Conv2d: kernel_size must be at least 1 in each dimension, got (3, 0)"
    );
    assert_eq!(
        msg(Conv2dConfig::new(1, 6, 3).stride(0)),
        "Conv2d: stride must be at least 1 in each dimension, got (0, 0)"
    );
    assert!(msg(Conv2dConfig::new(1, 6, 3).dtype(DType::I64)).contains("f32 or f64"));
    // A forward on the wrong input is an error naming the op, not a panic.
    let conv = Conv2d::new(3, 4, 3).unwrap();
    let e = conv.forward(&Tensor::zeros(&[2, 1, 8, 8], DType::F32)).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: input has shape [2, 1, 8, 8], expected [N, 3, H, W]"), "{e}");
}

/// `"same"` pads to the input's size, splitting an even span with the extra element after;
/// each non-zero mode equals `pad2d` then an unpadded convolution.
#[test]
fn same_and_padding_modes_forward() {
    assert_eq!(
        (same_padding(3, 1), same_padding(4, 1), same_padding(4, 3), same_padding(1, 5)),
        ((1, 1), (1, 2), (4, 5), (0, 0))
    );
    let mut rng = Generator::new(1);
    let x = Tensor::randn(&[2, 4, 7, 6], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    for (k, d) in [((3, 3), (1, 1)), ((4, 2), (1, 1)), ((2, 3), (3, 2))] {
        for mode in PaddingMode::ALL {
            let cfg =
                Conv2dConfig::new(4, 6, k).dilation(d).groups(2).padding("same").padding_mode(mode).dtype(DType::F64);
            let conv = cfg.init(&mut rng).unwrap();
            let y = conv.forward(&x).unwrap();
            assert_eq!(y.dims(), &[2, 6, 7, 6], "{k:?} {d:?} {mode}");
            // The definition: pad as F.pad, then convolve with padding 0.
            let unpadded = Conv2d { config: cfg.clone().padding(0), ..conv.clone() };
            let want = unpadded.forward(&pad2d(&x, cfg.pads(), mode).unwrap()).unwrap();
            strata_core::testing::assert_close(&y.to_vec_f64(), &want.to_vec_f64(), 0.0, 0.0);
        }
    }
    // "valid" is 0; an explicit padding with a mode; the unbatched input goes through pad2d too.
    assert_eq!(Conv2dConfig::new(1, 1, 3).padding("valid"), Conv2dConfig::new(1, 1, 3));
    let conv = Conv2dConfig::new(4, 2, 3).padding((2, 1)).padding_mode(PaddingMode::Circular).init(&mut rng).unwrap();
    assert_eq!(conv.forward(&Tensor::zeros(&[4, 5, 5], DType::F32)).unwrap().dims(), &[2, 7, 5]);
    assert_eq!(conv.describe(), "Conv2d 4 → 2, 3×3, padding 2×1 circular");
    let e = Conv2dConfig::new(1, 1, 3).padding("same").stride(2).init(&mut rng).unwrap_err().to_string();
    assert_eq!(
        e,
        "Conv2d: padding must be explicit for a strided convolution (\"same\" needs stride 1, as in PyTorch), \
         got \"same\" with stride (2, 2)"
    );
    let e = conv.forward(&Tensor::zeros(&[1, 4, 1, 5], DType::F32)).unwrap_err().to_string();
    assert!(e.contains("circular padding may wrap around at most once"), "{e}");
}

#[test]
fn unknown_padding_string_is_an_error_like_pytorch_raises() {
    // It used to panic in the builder; now the config keeps it and validation reports it.
    let mut rng = Generator::new(0);
    for given in ["SAME", "full", ""] {
        let cfg = Conv2dConfig::new(1, 1, 3).padding(given);
        let e = cfg.validate().unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "Conv2d: padding must be an int, an (h, w) pair, \"same\" or \"valid\" (lowercase, as in PyTorch), got {given:?}"
            )
        );
        assert_eq!(cfg.init(&mut rng).unwrap_err().to_string(), e);
    }
    // A later valid padding replaces the bad one.
    let cfg = Conv2dConfig::new(1, 1, 3).padding("SAME").padding("same");
    assert_eq!(cfg, Conv2dConfig::new(1, 1, 3).padding("same"));
    assert!(cfg.init(&mut rng).is_ok());
}

/// The model-file keys read and write back; bad values are located errors; the shape check
/// refuses strided "same" and too much reflect/circular padding, and every fix it suggests
/// makes the model check.
#[test]
fn padding_keys_round_trip_and_check() {
    use crate::model_file::{parse_model, to_toml};
    use crate::spec::ModelSpec;
    let text = "input = [3, 9, 8]\nlayers = [\n\
        { name = \"a\", type = \"Conv2d\", out_channels = 4, kernel_size = [4, 3], padding = \"same\", padding_mode = \"reflect\" },\n\
        { name = \"b\", type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding = \"valid\" },\n\
        { name = \"c\", type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding = [1, 2], padding_mode = \"circular\" },\n\
        { name = \"d\", type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding_mode = \"replicate\" },\n]\n";
    let spec = parse_model(text, "t.toml", "m").unwrap();
    let conv = |i: usize| match &spec.layers[i].spec {
        LayerSpec::Conv2d(c) => c.clone(),
        other => panic!("{other:?}"),
    };
    assert!(conv(0).padding_same && conv(0).padding_mode == PaddingMode::Reflect);
    assert_eq!((conv(1).padding, conv(1).padding_same, conv(1).padding_mode), ((0, 0), false, PaddingMode::Zeros));
    assert_eq!((conv(2).padding, conv(2).padding_mode), ((1, 2), PaddingMode::Circular));
    assert_eq!(conv(0).describe(), "Conv2d ? → 4, 4×3, padding same reflect");
    assert_eq!(conv(1).describe(), "Conv2d ? → 4, 3×3");
    assert_eq!(conv(3).describe(), "Conv2d ? → 4, 3×3, padding 0 replicate");
    let written = to_toml(&spec);
    assert!(written.contains("padding = \"same\"") && written.contains("padding_mode = \"reflect\""), "{written}");
    assert_eq!(written.matches("padding_mode").count(), 3, "{written}");
    let again = parse_model(&written, "u.toml", "m").unwrap();
    let specs = |m: &ModelSpec| m.layers.iter().map(|l| l.spec.clone()).collect::<Vec<_>>();
    assert_eq!(specs(&again), specs(&spec));
    // 9×8 → same → 9×8 → valid 3×3 → 7×6 → padding [1, 2] → 7×8 → 3×3 → 5×6.
    let report = spec.check(None).unwrap();
    assert_eq!(report.output.unwrap().to_string(), "[N, 4, 5, 6]");
    let model = spec.build().unwrap();
    assert_eq!(model.forward(&Tensor::zeros(&[2, 3, 9, 8], DType::F32)).unwrap().dims(), &[2, 4, 5, 6]);
    let resolved = spec.resolve(None).unwrap();
    assert_eq!(ModelSpec::from_module("m", &model).map(|m| specs(&m)), Some(specs(&resolved)));

    // Bad values: located, named by key, with the accepted values.
    let bad = "layers = [\n\
        { type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding = \"full\" },\n\
        { type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding_mode = \"constant\" },\n\
        { type = \"Conv2d\", out_channels = 4, kernel_size = 3, padding_mode = \"mirror\", padding = 1.5 },\n]\n";
    let e = parse_model(bad, "bad.toml", "m").unwrap_err().to_string();
    assert!(e.contains("bad.toml:2:") && e.contains("unknown padding \"full\" for Conv2d"), "{e}");
    assert!(e.contains("\"same\" (output as large as the input, stride 1)"), "{e}");
    assert!(e.contains("bad.toml:3:") && e.contains("Conv2d calls constant zero padding \"zeros\""), "{e}");
    assert!(e.contains("padding_mode is one of \"zeros\", \"reflect\", \"replicate\", \"circular\""), "{e}");
    assert!(e.contains("`padding` must be an integer, an [height, width] pair or a string, found float"), "{e}");

    // Every fix of an error makes the model check.
    let fixes_work = |m: &ModelSpec, want: &str| {
        let report = m.check(None).unwrap_err();
        let text = report.render_errors();
        assert!(text.contains(want), "{text}");
        let fixes = &report.errors[0].fixes;
        assert!(!fixes.is_empty(), "{text}");
        for fix in fixes {
            let mut fixed = m.clone();
            assert!(fixed.apply(&fix.edits), "{}", fix.text);
            assert!(
                fixed.check(None).is_ok(),
                "{} leaves {}",
                fix.text,
                fixed.check(None).unwrap_err().render_errors()
            );
        }
        text
    };
    let one = |input: &[usize], c: ConvSpec| ModelSpec::new("m").input(input).layer("conv", LayerSpec::Conv2d(c));
    let mut strided = ConvSpec::new(Some(3), 4, (3, 3));
    (strided.padding_same, strided.stride) = (true, (2, 2));
    let text = fixes_work(&one(&[3, 9, 8], strided), "padding = \"same\" needs stride 1");
    assert!(text.contains("make conv stride 1, as padding \"same\" needs (output 9×8)"), "{text}");
    assert!(text.contains("keep stride 2 with an explicit padding = 1 on conv (output 5×4)"), "{text}");
    let mut reflect = ConvSpec::new(Some(3), 4, (3, 3));
    (reflect.padding, reflect.padding_mode) = ((1, 3), PaddingMode::Reflect);
    let text = fixes_work(
        &one(&[3, 9, 3], reflect.clone()),
        "the left padding of 3 is too large for an input width of 3 (9×3): reflect padding must be smaller",
    );
    assert!(text.contains("make conv padding (1, 2) (the most reflect padding fits 9×3)"), "{text}");
    assert!(text.contains("make conv padding_mode \"zeros\""), "{text}");
    let mut circular = ConvSpec::new(Some(3), 4, (7, 1));
    (circular.padding_same, circular.padding_mode) = (true, PaddingMode::Circular);
    fixes_work(
        &one(&[3, 2, 5], circular),
        "the top padding of 3 is too large for an input height of 2 (2×5): circular padding may wrap",
    );
    (reflect.padding) = (1, 2);
    assert!(one(&[3, 9, 3], reflect).check(None).is_ok());
}
