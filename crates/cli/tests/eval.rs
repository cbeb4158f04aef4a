//! `strata eval` and `strata predict` from a trained run's checkpoint.

use std::process::Command;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const IMAGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/assets/t10k-images-idx3-ubyte.gz");

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(STRATA).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn eval_and_predict_from_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    let (ok, _, err) = run(&["train", "--epochs", "3", "--quiet", "--out", d]);
    assert!(ok, "{err}");

    let (ok, out, err) = run(&["eval", d]);
    assert!(ok, "{err}");
    assert!(out.starts_with("held-out set (2000 samples): accuracy "), "{out}");
    assert!(out.contains("class  precision  recall  support") && out.contains("confusion matrix"), "{out}");
    let acc: f64 = out.split("accuracy ").nth(1).unwrap().split('%').next().unwrap().parse().unwrap();
    assert!(acc > 85.0, "{out}");

    // The first test image of MNIST is a 7; as an IDX record and as a PNG file.
    let (ok, out, err) = run(&["predict", d, "--idx", IMAGES, "--index", "0", "--top", "1"]);
    assert!(ok, "{err}");
    assert!(out.trim_end().ends_with('%') && out.contains(": 7 "), "{out}");
    let arr = strata_data::read_idx(std::path::Path::new(IMAGES)).unwrap();
    let strata_data::IdxData::U8(pixels) = arr.data else { panic!("u8 images") };
    let png = tmp.path().join("seven.png");
    image::GrayImage::from_raw(28, 28, pixels[..784].to_vec()).unwrap().save(&png).unwrap();
    let (ok, out, err) = run(&["predict", d, png.to_str().unwrap(), "--top", "1"]);
    assert!(ok, "{err}");
    assert!(out.contains("seven.png: 7 "), "{out}");

    // A float record holding NaN is refused, not predicted as NaN%.
    let mut values = vec![0.5f32; 2 * 784];
    values[784 + 3] = f32::NAN;
    let nan = tmp.path().join("nan.idx");
    let arr = strata_data::IdxArray { dims: vec![2, 28, 28], data: strata_data::IdxData::F32(values) };
    std::fs::write(&nan, arr.to_bytes()).unwrap();
    let (ok, out, err) = run(&["predict", d, "--idx", nan.to_str().unwrap(), "--index", "0", "--index", "1"]);
    assert!(!ok && err.contains("[1]: value 3 is NaN (the input must be finite numbers)"), "{out}{err}");
    let (ok, _, err) = run(&["predict", d, "--idx", IMAGES, "--index", "10000"]);
    assert!(!ok && err.contains("--index 10000 is out of range"), "{err}");
    let (ok, _, err) = run(&["eval", tmp.path().join("nope").to_str().unwrap()]);
    assert!(!ok && err.contains("no such checkpoint file or run directory"), "{err}");
}
