//! Augmentation end to end: torchvision parity of the deterministic parts (fixture from
//! `tools/make_augment_fixtures.py`), determinism of the loader's augmented batches across
//! thread counts, prefetch depths, batch sizes and shuffles, and a property test that random
//! parameters never panic and keep shapes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use safetensors::SafeTensors;
use strata_data::augment::{AffineParams, ImageShape};
use strata_data::{Augment, DataLoader, Dataset, Normalize, PadMode, RandomAffine, RandomCrop, RandomHorizontalFlip};

/// The fixture's tensors as `f64` values with their shapes.
fn fixture() -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/augment_parity.safetensors"))
        .expect("the fixture (tools/make_augment_fixtures.py)");
    let st = SafeTensors::deserialize(&bytes).expect("a safetensors file");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => {
                    data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect()
                }
                safetensors::Dtype::F64 => {
                    data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
                }
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

fn image_of(fx: &BTreeMap<String, (Vec<usize>, Vec<f64>)>, index: f64) -> (Vec<f32>, ImageShape) {
    let name = ["img_a", "img_b", "img_c"][index as usize];
    let (shape, values) = &fx[&format!("image.{name}")];
    (values.iter().map(|&v| v as f32).collect(), [shape[0], shape[1], shape[2]])
}

fn assert_close(case: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{case}: length");
    let worst = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    assert!(worst <= tol, "{case}: worst difference {worst:e} > {tol:e}");
}

/// torchvision 0.29 (`F.hflip`, `F.crop(F.pad(…))`, `F.affine(…, BILINEAR)`) against strata's
/// transforms with the same explicit parameters. Flip and crop copy values, so they must be
/// equal exactly. The affine warp computes its sampling grid in f32 in torchvision and in f64
/// here: positions up to ~20 pixels from the centre differ by a few f32 ulps (~2e-6 px), which
/// moves a bilinear value by at most that times the step between neighbours (≤ 1 here); the
/// worst case measured is 2.5e-6.
#[test]
fn torchvision_parity() {
    let fx = fixture();
    let (mut flips, mut crops, mut affines) = (0, 0, 0);
    for (key, (shape, want)) in &fx {
        let parts: Vec<&str> = key.split('.').collect();
        match parts[..] {
            ["flip", img, "y"] => {
                let x = &fx[&format!("image.{img}")].1;
                let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                let got = RandomHorizontalFlip::hflip(&x, [shape[0], shape[1], shape[2]]).unwrap();
                assert_close(key, &got, want, 0.0);
                flips += 1;
            }
            ["crop", case, "y"] => {
                let p = &fx[&format!("crop.{case}.params")].1;
                let (x, shape) = image_of(&fx, p[0]);
                let u = |i: usize| p[i] as usize;
                let crop = RandomCrop::rect(u(1), u(2))
                    .padding_ltrb([u(3), u(4), u(5), u(6)])
                    .padding_mode(PadMode::ALL[u(7)])
                    .fill(vec![p[8] as f32]);
                let got = crop.crop_at(&x, shape, u(9), u(10)).unwrap();
                assert_close(key, &got, want, 0.0);
                crops += 1;
            }
            ["affine", case, "y"] => {
                let p = &fx[&format!("affine.{case}.params")].1;
                let (x, shape) = image_of(&fx, p[0]);
                let params = AffineParams { angle: p[1], translate: [p[2], p[3]], scale: p[4] };
                let got = RandomAffine::new(0.0).warp(&x, shape, params).unwrap();
                assert_close(key, &got, want, 1e-5);
                affines += 1;
            }
            _ => {}
        }
    }
    assert_eq!((flips, crops, affines), (3, 7, 10), "every case of the fixture was checked");
}

/// `n` images `[1, 16, 14]` whose pixels are a hash of (sample, position); label = index, so a
/// batch's labels name its samples.
fn images(n: usize) -> Dataset {
    let features =
        (0..n * 224).map(|v| ((v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / 16_777_216.0).collect();
    Dataset { features, labels: (0..n).collect(), sample_shape: vec![1, 16, 14], num_classes: n }
}

fn pipeline() -> Augment {
    Augment::new()
        .then(RandomCrop::new(14).padding(3).padding_mode(PadMode::Reflect))
        .then(RandomHorizontalFlip::new(0.5))
        .then(RandomAffine::new(15.0).translate(0.1, 0.2).scale(0.8, 1.2))
}

/// Each sample's augmented values in one epoch, by sample index (its label).
fn by_sample(batches: impl Iterator<Item = strata_data::Batch>) -> BTreeMap<i64, Vec<f32>> {
    let mut out = BTreeMap::new();
    for b in batches {
        let n = b.y.numel();
        let x = b.x.to_vec::<f32>().unwrap();
        let per = x.len() / n.max(1);
        for (i, y) in b.y.to_vec::<i64>().unwrap().into_iter().enumerate() {
            assert!(out.insert(y, x[i * per..(i + 1) * per].to_vec()).is_none(), "sample {y} twice");
        }
    }
    out
}

#[test]
fn batches_do_not_depend_on_threads_prefetch_batch_size_or_order() {
    let d = images(150);
    let aug = pipeline();
    let loader = |bs: usize| DataLoader::new(&d, bs).shuffle(11).augment(aug.clone(), 5).unwrap();
    // Batches of 100 hold 100 × 196 values, over the threshold: in the pool of 4 they are spread
    // over its threads, in the pool of 1 augmented in order on the calling thread.
    let reference: Vec<Vec<f32>> = {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        pool.install(|| loader(100).epoch(2).map(|b| b.x.to_vec::<f32>().unwrap()).collect())
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    let four: Vec<Vec<f32>> = pool.install(|| loader(100).epoch(2).map(|b| b.x.to_vec::<f32>().unwrap()).collect());
    assert!(reference == four, "1 vs 4 threads");
    assert_eq!(loader(100).epoch(2).next().unwrap().x.dims(), &[100, 1, 14, 14]);

    // Per sample: the same whatever the batch size, the prefetch depth and the shuffle order.
    let want = by_sample(loader(64).epoch(2));
    assert_eq!(want.len(), 150);
    for bs in [1, 7, 150] {
        for depth in [0, 1, 3] {
            let got = loader(bs).epoch_prefetched(2, depth, by_sample);
            assert!(got == want, "batch size {bs}, depth {depth}");
        }
    }
    let other_order = DataLoader::new(&d, 64).shuffle(999).augment(aug.clone(), 5).unwrap();
    assert!(by_sample(other_order.epoch(2)) == want, "another shuffle, same augmentation seed");
    let unshuffled = DataLoader::new(&d, 64).augment(aug.clone(), 5).unwrap();
    assert!(by_sample(unshuffled.epoch(2)) == want);
    // Inside the pool of 4 and on the prefetch thread too.
    let got = pool.install(|| loader(32).epoch_prefetched(2, 2, by_sample));
    assert!(got == want);

    // Another epoch or seed augments differently; every sample changes.
    let epoch3 = by_sample(loader(64).epoch(3));
    let seed6 = by_sample(DataLoader::new(&d, 64).shuffle(11).augment(aug.clone(), 6).unwrap().epoch(2));
    let changed = |other: &BTreeMap<i64, Vec<f32>>| want.iter().filter(|(k, v)| other[k] != **v).count();
    assert!(changed(&epoch3) > 140 && changed(&seed6) > 140, "{} {}", changed(&epoch3), changed(&seed6));
    // And each sample is what Augment::apply gives with its generator.
    let (x, _) = d.sample(17).unwrap();
    let alone = aug.apply(x, &d.sample_shape, &mut Augment::generator(5, 2, 17)).unwrap();
    assert_eq!(want[&17], alone);
}

#[test]
fn loaders_without_augmentation_and_non_image_data() {
    let d = images(10);
    let plain = by_sample(DataLoader::new(&d, 4).epoch(0));
    let none = by_sample(DataLoader::new(&d, 4).augment(None, 1).unwrap().epoch(0));
    let empty = by_sample(DataLoader::new(&d, 4).augment(Augment::new(), 1).unwrap().epoch(0));
    assert!(plain == none && plain == empty);
    assert_eq!(plain[&3], d.sample(3).unwrap().0);
    assert_eq!(DataLoader::new(&d, 4).augment(pipeline(), 0).unwrap().sample_shape(), [1, 14, 14]);

    let rows = Dataset { features: vec![0.0; 40], labels: vec![0; 10], sample_shape: vec![4], num_classes: 1 };
    let e = DataLoader::new(&rows, 4).augment(pipeline(), 0).unwrap_err().to_string();
    assert!(e.contains("augmentation needs image samples [C, H, W], but these samples have shape [4]"), "{e}");
    let small = Dataset { features: vec![0.0; 9], labels: vec![0], sample_shape: vec![1, 3, 3], num_classes: 1 };
    let e = DataLoader::new(&small, 1).augment(pipeline(), 0).unwrap_err().to_string();
    assert!(e.contains("reflect padding must be smaller than the side it pads"), "{e}");
}

/// A random transform with random, possibly invalid, parameters.
fn transform() -> impl Strategy<Value = strata_data::augment::Transform> {
    let fill = prop::collection::vec(-2.0f32..2.0, 1..4);
    prop_oneof![
        (0usize..12, 0usize..12, [0usize..6, 0usize..6, 0usize..6, 0usize..6], 0usize..4, fill.clone()).prop_map(
            |(h, w, padding, mode, fill)| RandomCrop::rect(h, w)
                .padding_ltrb(padding)
                .padding_mode(PadMode::ALL[mode])
                .fill(fill)
                .into()
        ),
        (-0.5f64..1.5).prop_map(|p| RandomHorizontalFlip::new(p).into()),
        (
            -10.0f64..360.0,
            prop::option::of([-0.2f64..1.2, -0.2f64..1.2]),
            prop::option::of([-0.5f64..3.0, 0.0f64..3.0]),
            fill
        )
            .prop_map(|(d, translate, scale, fill)| RandomAffine { degrees: [-d, d], translate, scale, fill }.into()),
        (prop::collection::vec(-1.0f32..1.0, 1..4), prop::collection::vec(-0.5f32..2.0, 1..4))
            .prop_map(|(m, s)| Normalize::new(m, s).into()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random pipelines on random images never panic: they either apply, giving exactly the
    /// promised shape and finite values, or are refused with an error by `output_shape`.
    #[test]
    fn random_parameters_never_panic_and_keep_shapes(
        shape in prop::collection::vec(0usize..9, 1..5),
        steps in prop::collection::vec(transform(), 0..4),
        seed in any::<u64>(),
        index in 0usize..1000,
    ) {
        let aug = steps.into_iter().fold(Augment::new(), Augment::then);
        let x: Vec<f32> = (0..shape.iter().product::<usize>()).map(|v| (v % 7) as f32 / 7.0).collect();
        let mut rng = Augment::generator(seed, 3, index);
        match aug.output_shape(&shape) {
            Ok(out_shape) => {
                let out = aug.apply(&x, &shape, &mut rng).unwrap();
                prop_assert_eq!(out.len(), out_shape.iter().product::<usize>());
                prop_assert!(out.iter().all(|v| v.is_finite()));
                // The loader agrees, batch and all.
                let d = Dataset { features: x.clone(), labels: vec![0], sample_shape: shape.clone(), num_classes: 1 };
                let b = DataLoader::new(&d, 1).augment(aug.clone(), seed).unwrap().epoch(3).next().unwrap();
                let mut dims = vec![1];
                dims.extend_from_slice(&out_shape);
                prop_assert_eq!(b.x.dims(), &dims[..]);
            }
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(aug.apply(&x, &shape, &mut rng).is_err());
            }
        }
    }

    /// Explicit parameters, in range or not, never panic either.
    #[test]
    fn explicit_parameters_never_panic(
        h in 1usize..6, w in 1usize..6,
        top in 0usize..12, left in 0usize..12, pad in 0usize..8, mode in 0usize..4,
        angle in -1e6f64..1e6, tx in -1e9f64..1e9, ty in -50.0f64..50.0, scale in -1.0f64..1e3,
    ) {
        let x = vec![0.5f32; h * w];
        let crop = RandomCrop::rect(h, w).padding(pad).padding_mode(PadMode::ALL[mode]);
        if let Ok(out) = crop.crop_at(&x, [1, h, w], top, left) {
            prop_assert_eq!(out.len(), h * w);
        }
        let params = AffineParams { angle, translate: [tx, ty], scale };
        if let Ok(out) = RandomAffine::new(0.0).warp(&x, [1, h, w], params) {
            prop_assert_eq!(out.len(), h * w);
            prop_assert!(out.iter().all(|v| (0.0..=0.5 + 1e-6).contains(v)), "{:?}", out);
        }
    }
}
