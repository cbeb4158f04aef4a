//! `strata eval` and `strata predict` from a trained run's checkpoint: the summary, top-k, the
//! per-class report, and class names from the run file's `data.classes` or image folders.

use std::process::Command;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const IMAGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/assets/t10k-images-idx3-ubyte.gz");
const LABELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/assets/t10k-labels-idx1-ubyte.gz");

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
    // The embedded digits, named in the run file.
    let names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let run_file = tmp.path().join("named.toml");
    let list = names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    std::fs::write(&run_file, format!("[data]\nclasses = [{list}]\n")).unwrap();
    let (ok, _, err) = run(&["train", run_file.to_str().unwrap(), "--epochs", "3", "--quiet", "--out", d]);
    assert!(ok, "{err}");

    let (ok, out, err) = run(&["eval", d]);
    assert!(ok, "{err}");
    assert!(out.starts_with("held-out set (2000 samples): accuracy "), "{out}");
    let acc: f64 = out.split("accuracy ").nth(1).unwrap().split('%').next().unwrap().parse().unwrap();
    assert!(acc > 85.0, "{out}");
    // Ten classes: top-5 by default, at least the top-1 accuracy.
    let line = out.lines().nth(1).unwrap();
    let top5: f64 = line.strip_prefix("top-5 accuracy ").unwrap().split('%').next().unwrap().parse().unwrap();
    assert!(top5 >= acc && top5 > 95.0, "{out}");
    let f1: Vec<f64> = out
        .lines()
        .nth(2)
        .unwrap()
        .strip_prefix("F1: macro ")
        .unwrap()
        .split(", weighted ")
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(f1.iter().all(|f| (0.8..=1.0).contains(f)), "{out}");
    assert!(
        out.contains("confusion matrix") && out.contains(" seven eight  nine\n") && !out.contains("f1-score"),
        "{out}"
    );

    let (ok, out, err) = run(&["eval", d, "--report", "--top-k", "2"]);
    assert!(ok, "{err}");
    assert!(out.lines().nth(1).unwrap().starts_with("top-2 accuracy "), "{out}");
    assert!(out.contains("   precision    recall  f1-score   support\n\n        zero "), "{out}");
    for row in ["       seven ", "    accuracy ", "   macro avg ", "weighted avg "] {
        assert!(out.contains(row), "{row}: {out}");
    }
    let (ok, out, err) = run(&["eval", d, "--top-k", "0"]);
    assert!(ok && !out.contains("top-"), "{err}{out}");
    let (ok, _, err) = run(&["eval", d, "--top-k", "11"]);
    assert!(!ok && err.contains("--top-k 11: the held-out set has 10 classes; give at most 10"), "{err}");

    // The first test image of MNIST is a 7; as an IDX record and as a PNG file.
    let (ok, out, err) = run(&["predict", d, "--idx", IMAGES, "--index", "0", "--top", "1"]);
    assert!(ok, "{err}");
    assert!(out.trim_end().ends_with('%') && out.contains(": 7 (seven) "), "{out}");
    let arr = strata_data::read_idx(std::path::Path::new(IMAGES)).unwrap();
    let strata_data::IdxData::U8(pixels) = arr.data else { panic!("u8 images") };
    let png = tmp.path().join("seven.png");
    image::GrayImage::from_raw(28, 28, pixels[..784].to_vec()).unwrap().save(&png).unwrap();
    let (ok, out, err) = run(&["predict", d, png.to_str().unwrap(), "--top", "1"]);
    assert!(ok, "{err}");
    assert!(out.contains("seven.png: 7 (seven) "), "{out}");

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
    // Files given where images go that are IDX or CSV files are named with the flag that reads
    // them (decoding called them corrupt); --top 0 and --index without --idx are refused.
    let csv = tmp.path().join("rows.csv");
    std::fs::write(&csv, "1,2\n").unwrap();
    for (file, says) in [
        (IMAGES, "an IDX file, not an image\nfix: strata predict RUN --idx "),
        (csv.to_str().unwrap(), "a CSV file, not an image\nfix: strata predict RUN --csv "),
    ] {
        let (ok, _, err) = run(&["predict", d, file]);
        assert!(!ok && err.contains(says), "{err}");
    }
    let (ok, _, err) = run(&["predict", d, "--idx", IMAGES, "--index", "0", "--top", "0"]);
    assert!(!ok && err.contains("give at least 1"), "{err}");
    let (ok, _, err) = run(&["predict", d, "--index", "0"]);
    assert!(!ok && err.contains("required arguments were not provided:\n  --idx <FILE>"), "{err}");
    let (ok, _, err) = run(&["eval", tmp.path().join("nope").to_str().unwrap()]);
    assert!(!ok && err.contains("no such checkpoint file or run directory"), "{err}");
}

/// `data.classes` must name each class of the data once: the count is checked when the data
/// loads, naming what the data has.
#[test]
fn class_names_must_fit_the_data() {
    let (ok, _, err) = run(&["train", "--epochs", "1", "--set", "data.classes=[\"a\", \"b\"]"]);
    assert!(!ok && err.contains("data.classes names 2 classes, but the data has 10 (labels 0 to 9)"), "{err}");
    let (ok, _, err) = run(&["train", "--epochs", "1", "--set", "data.classes=[\"a\", \"a\"]"]);
    assert!(!ok && err.contains("data.classes names `a` twice (classes 0 and 1)"), "{err}");
}

/// An image folder's classes are its sub-folders' names, which `data.classes` may rename; eval's
/// report and predict show the names.
#[test]
fn image_folder_class_names() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("shapes");
    // Two classes told apart by brightness: dark and light 28×28 images, eight of each.
    for (class, base) in [("dark", 20u8), ("light", 220u8)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..8u8 {
            let img =
                image::GrayImage::from_fn(28, 28, |x, y| image::Luma([base.wrapping_add(((x + y) as u8 + i) % 16)]));
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let model = "name = \"tiny\"\nlayers = [{ type = \"Flatten\" }, { type = \"Linear\", out_features = 2 }]\n";
    std::fs::write(tmp.path().join("tiny.toml"), model).unwrap();
    let run_text = |classes: &str| {
        format!(
            "model = \"tiny.toml\"\n[data]\nsource = \"images\"\npath = {:?}\n{classes}[training]\nepochs = 2\nbatch_size = 4\n",
            root.display().to_string()
        )
    };
    let file = tmp.path().join("images.toml");
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();

    std::fs::write(&file, run_text("classes = [\"a\", \"b\", \"c\"]\n")).unwrap();
    let (ok, _, err) = run(&["train", file.to_str().unwrap(), "--quiet", "--out", d]);
    assert!(!ok && err.contains("data.classes names 3 classes, but the data has 2 (sub-folders dark, light)"), "{err}");

    // The folders' own names.
    std::fs::write(&file, run_text("")).unwrap();
    let (ok, _, err) = run(&["train", file.to_str().unwrap(), "--quiet", "--out", d]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["eval", d, "--report"]);
    assert!(ok, "{err}");
    assert!(!out.contains("top-"), "two classes: no top-k by default\n{out}");
    assert!(out.contains("        dark ") || out.contains("       light "), "{out}");
    // --data: another folder of the run's classes, here one of them only; a folder whose
    // sub-folder the run does not know is refused naming it and the run's classes.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("light")).unwrap();
    for i in 0..3 {
        std::fs::copy(root.join(format!("light/{i}.png")), other.join(format!("light/{i}.png"))).unwrap();
    }
    let (ok, out, err) = run(&["eval", d, "--data", other.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("other (3 samples): accuracy 100.00%") && out.contains(" dark light\n"), "{out}");
    std::fs::create_dir_all(other.join("blue")).unwrap();
    std::fs::copy(root.join("dark/0.png"), other.join("blue/0.png")).unwrap();
    let (ok, _, err) = run(&["eval", d, "--data", other.to_str().unwrap()]);
    assert!(!ok && err.contains("the sub-folders blue are not among the run's classes (dark, light)"), "{err}");

    // Renamed.
    std::fs::write(&file, run_text("classes = [\"night\", \"day\"]\n")).unwrap();
    let dir2 = tmp.path().join("run2");
    let (ok, _, err) = run(&["train", file.to_str().unwrap(), "--quiet", "--out", dir2.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["eval", dir2.to_str().unwrap(), "--report"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("confusion matrix")
            && out.contains("\n       night   day\n")
            && out.contains("\n       night     "),
        "{out}"
    );
    // A renamed run's classes are the folder's sub-folders in order.
    let (ok, out, err) = run(&["eval", dir2.to_str().unwrap(), "--data", root.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("shapes (16 samples): accuracy") && out.contains("\n       night   day\n"), "{out}");
    let png = root.join("light/3.png");
    let (ok, out, err) = run(&["predict", dir2.to_str().unwrap(), png.to_str().unwrap(), "--top", "2"]);
    assert!(ok, "{err}");
    assert!(out.contains("0 (night) ") && out.contains("1 (day) "), "{out}");
}

/// `strata predict --csv` for a model trained on a CSV file: the rows' features go through the
/// run's normalisation in the training file's column order, with or without the label column
/// (here first, by name), and a separable problem's far points get their own side's class;
/// rows of another width are refused naming both widths.
#[test]
fn predict_from_csv_rows_of_a_csv_trained_model() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    // Class 1 exactly where b > a, on a grid of 400 points; the label column first, by name.
    let mut train = String::from("y,a,b\n");
    for i in 0..20 {
        for j in 0..20 {
            let (a, b) = (i as f32 * 10.0 - 95.0, j as f32 * 10.0 - 95.0);
            if a != b {
                train += &format!("{},{a},{b}\n", (b > a) as u8);
            }
        }
    }
    std::fs::write(path("train.csv"), train).unwrap();
    std::fs::write(
        path("model.toml"),
        "name = \"Lin\"\ninput = [2]\n[[layers]]\nname = \"fc\"\ntype = \"Linear\"\nout_features = 2\n",
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "train",
        "--model",
        &path("model.toml"),
        "--set",
        "data.source=csv",
        "--data",
        &path("train.csv"),
        "--set",
        "data.label_column=y",
        "--set",
        "data.validation=40",
        "--set",
        "optimizer.name=adam",
        "--lr",
        "0.05",
        "--epochs",
        "20",
        "--quiet",
        "--out",
        &path("run"),
    ]);
    assert!(ok, "{err}");
    // Features only (a, b), then the same rows with the label column in front, as trained.
    std::fs::write(path("x.csv"), "-80,90\n85,-70\n").unwrap();
    std::fs::write(path("xl.csv"), "y,a,b\n1,-80,90\n0,85,-70\n").unwrap();
    let (ok, plain, err) = run(&["predict", &path("run"), "--csv", &path("x.csv"), "--top", "1"]);
    assert!(ok, "{err}");
    let classes: Vec<&str> = plain.lines().map(|l| l.rsplit(": ").next().unwrap().split(' ').next().unwrap()).collect();
    assert_eq!(classes, ["1", "0"], "{plain}");
    assert!(plain.starts_with(&format!("{} row 1: 1 ", path("x.csv"))), "{plain}");
    let (ok, labelled, err) = run(&["predict", &path("run"), "--csv", &path("xl.csv"), "--top", "1"]);
    assert!(ok, "{err}");
    assert_eq!(labelled.replace("xl.csv", "x.csv"), plain, "the label column changed the predictions");
    std::fs::write(path("wide.csv"), "1,2,3,4\n").unwrap();
    let (ok, _, err) = run(&["predict", &path("run"), "--csv", &path("wide.csv")]);
    assert!(!ok);
    assert!(
        err.contains("its rows have 4 columns, but the model takes 2 features: give the training file's 2 feature columns in its order, with or without its label column"),
        "{err}"
    );
    // eval --data: every row of another labelled file, read as the training file was (label
    // column by name); one with class 1 only still scores the model's two classes.
    let (ok, out, err) = run(&["eval", &path("run"), "--data", &path("xl.csv")]);
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("{} (2 samples): accuracy 100.00% (2/2)", path("xl.csv"))), "{out}");
    std::fs::write(path("ones.txt"), "y,a,b\n1,-80,90\n1,-60,70\n1,-90,95\n").unwrap();
    let (ok, out, err) = run(&["eval", &path("run"), "--data", &path("ones.txt")]);
    assert!(ok, "{err}");
    assert!(out.contains("(3 samples): accuracy 100.00% (3/3)") && out.contains("\n           0     1\n"), "{out}");
}

/// A directory without checkpoints (not a run, or a run stopped before its first checkpoint)
/// is refused by eval, predict and export naming what they wanted to do, not with resume's
/// advice to restart the run in place.
#[test]
fn a_directory_without_checkpoints_is_refused_by_use() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let onnx = tmp.path().join("m.onnx");
    for (args, says) in [
        (vec!["eval", d], "no checkpoint to evaluate or predict from"),
        (vec!["predict", d, IMAGES], "no checkpoint to evaluate or predict from"),
        (vec!["export", d, "-o", onnx.to_str().unwrap()], "no checkpoint to export"),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains(says) && err.contains("not a run directory"), "{args:?}: {err}");
        assert!(!err.contains("resume"), "{args:?}: {err}");
    }
    assert!(!onnx.exists());
}

/// `eval --data DIR` of a run trained on IDX images reads only the folder's test pair, all it
/// evaluates on: the training pair need not be there (all four files were required). A missing
/// test file is named, with the names tried.
#[test]
fn eval_data_needs_only_the_test_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let d = run_dir.to_str().unwrap();
    let (ok, _, err) = run(&["train", "--epochs", "1", "--quiet", "--out", d]);
    assert!(ok, "{err}");
    let data = tmp.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(IMAGES, data.join("t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::copy(LABELS, data.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let (ok, out, err) = run(&["eval", d, "--data", data.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.starts_with("test set (10000 samples): accuracy "), "{out}");
    std::fs::remove_file(data.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let (ok, _, err) = run(&["eval", d, "--data", data.to_str().unwrap()]);
    let dd = data.display();
    assert!(!ok);
    assert_eq!(
        err,
        format!(
            "error: --data {dd}: no `t10k-labels-idx1-ubyte` file (tried {dd}/t10k-labels-idx1-ubyte and {dd}/t10k-labels-idx1-ubyte.gz); the test set is read from MNIST's test pair, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz), and only from them\nfix: put `t10k-labels-idx1-ubyte` or `t10k-labels-idx1-ubyte.gz` in {dd}, or give the folder that holds it (--data DIR)\n"
        )
    );
}

/// Writes at `path` a valid checkpoint (checksum and all) of a Linear 4 → 3 model named `fc`,
/// whose metadata names `classes` and stores the run config `config`.
fn small_checkpoint(path: &std::path::Path, classes: &[&str], config: &str) {
    let model_text = "name = \"Small\"\ninput = [4]\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 4, out_features = 3 }]\n";
    let model = strata_nn::model_file::parse_model(model_text, "small", "model").unwrap().build().unwrap();
    let meta = strata_train::checkpoint::Meta {
        epoch: 1,
        batch: 0,
        step: 5,
        config: config.into(),
        model: model_text.into(),
        mean: vec![0.5],
        std: vec![0.25],
        classes: classes.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    strata_train::checkpoint::save(path, &model, &strata_nn::StateDict::new(), &meta).unwrap();
}

/// A checkpoint whose class names are not one per output of its model (a forged or mismatched
/// file: two names for three scores) is refused by `eval`, `predict` and `export`, which show
/// or store the names beside the scores. One with a name per output predicts with the names;
/// so does one whose stored run config has a warm-up longer than the run and `keep_last = 0`,
/// which strata accepted before refusing them for a run: its checkpoints are still read.
#[test]
fn class_names_must_be_one_per_output_of_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    std::fs::write(path("rows.csv"), "0.5,0.5,0.5,0.5\n").unwrap();
    let config = "[training]\nepochs = 10\n";
    small_checkpoint(tmp.path().join("two.safetensors").as_path(), &["cat", "dog"], config);
    let onnx = path("two.onnx");
    for args in [
        &["eval", &path("two.safetensors")][..],
        &["predict", &path("two.safetensors"), "--csv", &path("rows.csv")],
        &["export", &path("two.safetensors"), "-o", &onnx],
    ] {
        let (ok, out, err) = run(args);
        assert!(!ok, "{args:?}: {out}");
        assert_eq!(
            err,
            format!(
                "error: {}: its metadata names 2 classes (`strata.classes`: cat, dog), but its model gives 3 scores per sample (output [N, 3]): the names cannot be matched to the model's outputs; the file is damaged or was not written by strata train\nfix: use another checkpoint of the run, or retrain\n",
                path("two.safetensors")
            ),
            "{args:?}"
        );
    }
    assert!(!std::path::Path::new(&onnx).exists());
    let old = "[schedule]\nwarmup_epochs = 20.0\n[training]\nepochs = 10\nkeep_last = 0\n";
    small_checkpoint(tmp.path().join("three.safetensors").as_path(), &["cat", "dog", "eel"], old);
    let (ok, out, err) = run(&["predict", &path("three.safetensors"), "--csv", &path("rows.csv"), "--top", "3"]);
    assert!(ok, "{err}");
    for name in ["(cat)", "(dog)", "(eel)"] {
        assert!(out.contains(name), "{out}");
    }
}
