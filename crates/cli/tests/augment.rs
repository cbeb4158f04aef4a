//! `[augment]` end to end: training SimpleNN for 2 epochs on the embedded data with
//! augmentation on runs, says so in its header, and is deterministic — two runs with the same
//! seed, `--threads 1` against `--threads 2`, and a run resumed after its first epoch all end
//! with bit-identical parameters — while the augmentation really changes the training.

use std::path::Path;
use std::process::Command;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// The augmentation of the README's example, as `--set` flags.
const AUGMENT: [&str; 10] = [
    "--set",
    "augment.random_crop=28",
    "--set",
    "augment.crop_padding=4",
    "--set",
    "augment.degrees=10.0",
    "--set",
    "augment.translate=[0.1, 0.1]",
    "--set",
    "augment.scale=[0.9, 1.1]",
];

/// Runs `strata train` with `args`, checks it succeeded, and returns its stdout.
fn train(args: &[&str]) -> String {
    let o = Command::new(STRATA).arg("train").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{args:?}\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    stdout
}

/// A run of `epochs` epochs into `dir`, with `extra` flags.
fn run(dir: &Path, augment: bool, epochs: &str, extra: &[&str]) -> String {
    let mut args = vec!["--epochs", epochs, "--seed", "3", "--out", dir.to_str().unwrap()];
    if augment {
        args.extend_from_slice(&AUGMENT);
    }
    args.extend_from_slice(extra);
    train(&args)
}

fn params(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let sd = strata_nn::StateDict::load(dir.join("model.safetensors")).unwrap();
    sd.iter().map(|(k, t)| (k.to_string(), t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())).collect()
}

/// The epoch lines without their samples/s (the one figure allowed to differ).
fn epochs(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("epoch"))
        .map(|l| l.rsplitn(3, ' ').nth(2).unwrap().trim_end().to_string())
        .collect()
}

#[test]
fn augmented_training_runs_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);

    let one = run(&dir("one"), true, "2", &["--threads", "1"]);
    assert!(
        one.contains(
            "  augmentation: RandomCrop(28, padding=4) → RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)) \
             per training sample, seed 3"
        ),
        "{one}"
    );
    assert_eq!(epochs(&one).len(), 2, "{one}");
    let again = run(&dir("again"), true, "2", &["--threads", "1"]);
    let two = run(&dir("two"), true, "2", &["--threads", "2"]);
    assert_eq!(epochs(&one), epochs(&again));
    assert_eq!(epochs(&one), epochs(&two), "--threads 1 vs 2");
    assert!(params(&dir("one")) == params(&dir("again")), "two runs with the same seed");
    assert!(params(&dir("one")) == params(&dir("two")), "--threads 1 vs --threads 2");

    // Resumed after its first epoch, the run augments the second epoch as the straight run did.
    run(&dir("resumed"), true, "1", &["--threads", "2"]);
    train(&["--resume", dir("resumed").to_str().unwrap(), "--epochs", "2", "--quiet"]);
    assert!(params(&dir("one")) == params(&dir("resumed")), "resumed after epoch 1");

    // Off, the same seed trains on other batches: the augmentation took effect. Its header has
    // no augmentation line, and the saved config no [augment] section.
    let plain = run(&dir("plain"), false, "2", &["--threads", "1"]);
    assert!(!plain.contains("augmentation"), "{plain}");
    assert_ne!(epochs(&one), epochs(&plain));
    assert!(params(&dir("one")) != params(&dir("plain")));
    let saved = std::fs::read_to_string(dir("plain").join("config.toml")).unwrap();
    assert!(!saved.contains("augment"), "{saved}");
    let saved = std::fs::read_to_string(dir("one").join("config.toml")).unwrap();
    assert!(saved.contains("[augment]\nrandom_crop = 28\ncrop_padding = 4"), "{saved}");

    // The JSON start event names it too.
    let json = train(&["--epochs", "1", "--json", "--set", "augment.horizontal_flip=0.5"]);
    let start: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(start["augmentation"].as_str().unwrap().split(" per").next(), Some("RandomHorizontalFlip(p=0.5)"));
}

#[test]
fn bad_augmentation_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("rows.csv");
    std::fs::write(&csv, "a,b,label\n1,2,0\n3,4,1\n").unwrap();
    for (args, says) in [
        (&["--set", "augment.random_crop=36"][..], "the crop size 36×36 is larger than the padded image 28×28"),
        (&["--set", "augment.random_crop=24", "--set", "augment.crop_padding=2"], "set random_crop = 28"),
        (&["--set", "augment.horizontal_flip=2"], "augment.horizontal_flip is a probability in [0, 1]"),
        (&["--set", "data.source=csv", "--data", csv.to_str().unwrap(), "--set", "augment.degrees=5"], "not images"),
    ] {
        let o = Command::new(STRATA).arg("train").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && stderr.contains(says), "{args:?}: {stderr}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains("epoch"), "{args:?} trained");
    }
}
