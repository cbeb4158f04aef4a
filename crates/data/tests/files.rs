//! Reading IDX files and MNIST directories from disk, through the public API only.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use strata_data::{DataError, IdxArray, IdxData, load_mnist_dir, read_idx};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn round_trip_raw_and_gzip_files() {
    let dir = tempfile::tempdir().unwrap();
    let arrays = [
        IdxArray { dims: vec![5, 3, 4], data: IdxData::U8((0..60).collect()) },
        IdxArray { dims: vec![7], data: IdxData::I32(vec![-5, 0, 1, 2, 3, i32::MAX, i32::MIN]) },
        IdxArray { dims: vec![2, 2], data: IdxData::F64(vec![0.25, -1.0, 1e10, 3.5]) },
    ];
    for (k, a) in arrays.iter().enumerate() {
        let raw = a.to_bytes();
        // Compression is detected from content, so a misleading name must not matter.
        for (name, bytes) in [
            (format!("a{k}.idx"), raw.clone()),
            (format!("a{k}.gz"), gzip(&raw)),
            (format!("a{k}-gz-no-suffix"), gzip(&raw)),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(&read_idx(&path).unwrap(), a, "{}", path.display());
        }
    }
}

#[test]
fn errors_from_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lying.gz");
    let mut b = vec![0, 0, 8, 3];
    // 100,000 images declared (78 MB, less than any machine's memory), none there.
    for d in [100_000u32, 28, 28] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    std::fs::write(&path, gzip(&b)).unwrap();
    let e = read_idx(&path).unwrap_err();
    assert!(matches!(e, DataError::Truncated { actual_bytes: 0, gzip: true, .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    // 4e9 images (3.1 TB): refused before inflating, the file named.
    let mut b = vec![0, 0, 8, 3];
    for d in [4_000_000_000u32, 28, 28] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    std::fs::write(&path, gzip(&b)).unwrap();
    let e = read_idx(&path).unwrap_err();
    if strata_core::Device::Cpu.total_memory().is_none() {
        eprintln!("skipped the memory half: this machine's memory is unknown");
        return;
    }
    assert!(matches!(e, DataError::LargerThanMemory { declared_bytes: 3_136_000_000_000, .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

/// `../shared/data/mnist` relative to the workspace root.
fn shared_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist")
}

#[test]
fn real_mnist_if_present() {
    let dir = shared_mnist();
    if !dir.is_dir() {
        // Straight to stderr: libtest captures println!, and a skip must show in the output.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"real_mnist_if_present: SKIPPED, ../shared/data/mnist not found\n",
        );
        return;
    }
    let (train, test) = load_mnist_dir(&dir).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.sample_shape, vec![1, 28, 28]);
    assert_eq!(train.class_counts(), vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert_eq!(test.class_counts(), vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    // The published normalisation constants describe these pixels.
    let n = train.features.len() as f64;
    let mean = train.features.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = train.features.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    assert!((mean - strata_data::MNIST_MEAN as f64).abs() < 1e-3, "{mean}");
    assert!((var.sqrt() - strata_data::MNIST_STD as f64).abs() < 1e-3, "{}", var.sqrt());
}
