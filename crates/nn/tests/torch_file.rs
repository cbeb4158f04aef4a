//! PyTorch checkpoints through the restricted unpickler (`strata_nn::torch_file`), against
//! fixtures made by real PyTorch (`tools/make_pt_fixtures.py`, torch 2.15): the tensors equal
//! PyTorch's bit for bit (contiguous, transposed, sliced, expanded, shared, every element type);
//! files that would run a command are refused by the global's name, and nothing runs; damaged
//! files are errors, never panics or hangs.

use proptest::prelude::*;
use safetensors::SafeTensors;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_nn::torch_file::{self, TorchDType, TorchStateDict};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_pt").join(name)
}

/// Every tensor of the reference safetensors file equals the converted one: same keys, element
/// types, shapes and bytes.
fn assert_equals_reference(sd: &TorchStateDict, reference: &Path) {
    let bytes = std::fs::read(reference).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut want: Vec<String> = st.names().into_iter().map(String::from).collect();
    want.sort();
    let mut got: Vec<String> = sd.tensors.iter().map(|(k, _)| k.clone()).collect();
    got.sort();
    assert_eq!(got, want, "{}", reference.display());
    for (k, t) in &sd.tensors {
        let r = st.tensor(k).unwrap();
        assert_eq!(t.dtype.safetensors_dtype(), r.dtype(), "{k}");
        assert_eq!(t.shape, r.shape(), "{k}");
        assert!(t.data == r.data(), "{k}: the bytes differ from PyTorch's");
    }
}

/// `torch.manual_seed(1); torch.save(SimpleNN().state_dict(), path)` holds the parameters that
/// `tools/check_state_dict.py save --seed 1` wrote as safetensors from the same model.
#[test]
fn simple_nn_state_dict_equals_pytorchs_bit_for_bit() {
    let sd = torch_file::load(fixture("simple_nn.pt")).unwrap();
    let keys: Vec<&str> = sd.tensors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]);
    assert_eq!(sd.tensors[0].1.shape, [128, 784]);
    assert_eq!((sd.from_key.as_deref(), sd.shared_storages), (None, 0));
    assert_equals_reference(&sd, &fixture("../torch_simple_nn_state_dict.safetensors"));
}

/// Transposed, sliced (storage offset 8), strided, expanded (stride 0), 0-d and empty tensors,
/// one storage viewed by three tensors, and thirteen element types (uint16 through
/// `_rebuild_tensor_v3` and an untyped storage) come out as `t.contiguous()` in PyTorch;
/// protocol 4 with deflated records gives the same.
#[test]
fn views_shared_storages_and_element_types_equal_pytorchs() {
    for name in ["views.pt", "views_p4_deflate.pt"] {
        let sd = torch_file::load(fixture(name)).unwrap();
        assert_equals_reference(&sd, &fixture("views.safetensors"));
        // shared.a, shared.b and shared.c view one storage; sliced and stepped another.
        assert_eq!(sd.shared_storages, 2, "{name}");
        let get = |k: &str| &sd.tensors.iter().find(|(n, _)| n == k).unwrap().1;
        assert_eq!(get("transposed").shape, [3, 4]);
        assert_eq!(get("scalar").shape, Vec::<usize>::new());
        assert_eq!(get("scalar").data, 42i64.to_le_bytes());
        assert_eq!(get("uint16").dtype, TorchDType::U16);
        assert_eq!(get("empty").data.len(), 0);
    }
}

/// A training checkpoint dict: the state_dict is taken from its `state_dict` entry; the other
/// entries (numbers, a string, a list, a tuple, an optimizer's state_dict) pass the allow-list.
#[test]
fn a_checkpoint_dict_gives_its_state_dict_entry() {
    let sd = torch_file::load(fixture("nested.pt")).unwrap();
    assert_eq!(sd.from_key.as_deref(), Some("state_dict"));
    assert_equals_reference(&sd, &fixture("nested.safetensors"));
}

/// The converted file holds the same tensors as PyTorch's reference, read back by safetensors.
#[test]
fn safetensors_output_reads_back_equal() {
    let sd = torch_file::load(fixture("views.pt")).unwrap();
    let bytes = sd.to_safetensors_bytes().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.safetensors");
    std::fs::write(&out, bytes).unwrap();
    let written = std::fs::read(&out).unwrap();
    let back = SafeTensors::deserialize(&written).unwrap().tensors();
    let again = TorchStateDict {
        tensors: sd
            .tensors
            .iter()
            .map(|(k, t)| {
                let v = &back.iter().find(|(n, _)| n == k).unwrap().1;
                (
                    k.clone(),
                    torch_file::TorchTensor { dtype: t.dtype, shape: v.shape().to_vec(), data: v.data().to_vec() },
                )
            })
            .collect(),
        ..Default::default()
    };
    assert_equals_reference(&again, &fixture("views.safetensors"));
}

/// As a strata state_dict: f16 and bf16 widened to f32, integers and bool to int64, exactly.
#[test]
fn strata_state_dict_widens_exactly() {
    let sd = torch_file::load(fixture("views.pt")).unwrap().to_state_dict().unwrap();
    let r = std::fs::read(fixture("views.safetensors")).unwrap();
    let r = SafeTensors::deserialize(&r).unwrap();
    let half: Vec<f32> = sd.get("half").unwrap().to_vec().unwrap();
    let raw = r.tensor("half").unwrap();
    assert_eq!(half.len(), 6);
    // IEEE half: (-1)^s × 2^(e-15) × (1 + m/1024), or m × 2^-24 when e = 0 (no inf/NaN here).
    for (v, c) in half.iter().zip(raw.data().chunks_exact(2)) {
        let h = u16::from_le_bytes([c[0], c[1]]);
        let (s, e, m) = (h >> 15, i32::from((h >> 10) & 0x1f), f64::from(h & 0x3ff));
        let mag = if e == 0 { m * 2f64.powi(-24) } else { 2f64.powi(e - 15) * (1.0 + m / 1024.0) };
        assert_eq!(f64::from(*v), if s == 1 { -mag } else { mag });
    }
    let bf: Vec<f32> = sd.get("bfloat").unwrap().to_vec().unwrap();
    let raw: Vec<u16> =
        r.tensor("bfloat").unwrap().data().chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(bf.iter().map(|v| (v.to_bits() >> 16) as u16).collect::<Vec<_>>(), raw);
    assert_eq!(sd.get("uint8").unwrap().to_vec::<i64>().unwrap(), [250, 251, 252, 253, 254, 255]);
    assert_eq!(sd.get("int8").unwrap().to_vec::<i64>().unwrap(), (-5..5).collect::<Vec<i64>>());
    assert_eq!(sd.get("bool").unwrap().to_vec::<i64>().unwrap(), [1, 0, 0, 1]);
    assert_eq!(sd.get("uint16").unwrap().to_vec::<i64>().unwrap(), [0, 1, 65535]);
    assert_eq!(sd.get("int32").unwrap().dims(), [2, 3]);
}

const MARKER: &str = "/tmp/strata-torch-convert-pwned";

/// Files whose pickles call `os.system('touch MARKER')` (or `eval` of it) when Python loads them
/// (`tools/make_pt_fixtures.py` proves each does) are refused by the global's name, and the
/// marker file does not appear: nothing ran.
#[test]
fn malicious_pickles_are_refused_by_name_and_nothing_runs() {
    for (name, global) in [
        ("malicious.pt", "`posix.system`"),
        ("malicious.pkl", "`posix.system`"),
        ("malicious_eval.pkl", "`builtins.eval`"),
    ] {
        let path = fixture(name);
        let bytes = std::fs::read(&path).unwrap();
        // The fixture really carries the command (a zip stores data.pkl uncompressed).
        assert!(bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "{name} lacks its payload");
        let _ = std::fs::remove_file(MARKER);
        let e = torch_file::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: refused: the pickle asks for the Python global {global}", path.display())),
            "{e}"
        );
        assert!(!Path::new(MARKER).exists(), "{name}: the command ran");
    }
    let e = torch_file::from_bytes(&std::fs::read(fixture("malicious.pt")).unwrap(), Path::new("malicious.pt"))
        .unwrap_err()
        .to_string();
    insta::assert_snapshot!("malicious_pt_refused", e);
}

#[test]
fn other_files_are_explained() {
    let e = torch_file::load(fixture("legacy.pt")).unwrap_err().to_string();
    assert!(e.ends_with("legacy.pt: a legacy (pre-1.6, non-zip) torch.save file, which strata does not read; re-save it in the zip format: `torch.save(torch.load(path, weights_only=True), new_path)`"), "{e}");
    let e = torch_file::load(fixture("views.safetensors")).unwrap_err().to_string();
    assert!(e.contains("views.safetensors: not a torch.save file (no zip archive, no pickle: it starts with"), "{e}");
    let e = torch_file::from_bytes(b"\x80\x02}q\x00.", Path::new("x.pkl")).unwrap_err().to_string();
    assert_eq!(e, "x.pkl: a bare pickle, not a torch.save zip archive: it holds a dict of 0 entries and no tensors");
    let e = torch_file::load(fixture("absent.pt")).unwrap_err().to_string();
    assert!(e.contains("absent.pt: reading the PyTorch file failed"), "{e}");
    // A zip that torch.save did not write.
    let zip = zip_of(&[("a/readme.txt", b"hello".as_slice())]);
    let e = torch_file::from_bytes(&zip, Path::new("r.zip")).unwrap_err().to_string();
    assert!(e.starts_with("r.zip: a zip archive without data.pkl"), "{e}");
    // A dict that is no state_dict.
    let zip = zip_of(&[("a/data.pkl", b"\x80\x02}(X\x05\x00\x00\x00epochK\x03u.".as_slice())]);
    let e = torch_file::from_bytes(&zip, Path::new("c.pt")).unwrap_err().to_string();
    assert!(e.contains("c.pt: the file's dict is no state_dict: not tensors: `epoch` (the int 3)"), "{e}");
    let zip = zip_of(&[("a/data.pkl", b"\x80\x02}.".as_slice()), ("a/byteorder", b"big".as_slice())]);
    let e = torch_file::from_bytes(&zip, Path::new("b.pt")).unwrap_err().to_string();
    assert!(e.contains("big-endian"), "{e}");
}

/// A zip archive of stored records.
fn zip_of(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in records {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// The records of a fixture, data.pkl first.
fn records(name: &str) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(fixture(name)).unwrap()).unwrap();
    let mut out = vec![];
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let mut b = vec![];
        f.read_to_end(&mut b).unwrap();
        out.push((f.name().unwrap().to_string(), b));
    }
    out.sort_by_key(|(n, _)| !n.ends_with("data.pkl"));
    out
}

/// Whatever a successful read returns is self-consistent: each tensor's bytes fill its shape.
fn consistent(sd: &TorchStateDict) -> bool {
    sd.tensors.iter().all(|(_, t)| t.data.len() == t.shape.iter().product::<usize>() * t.dtype.size())
}

/// Every truncation of a checkpoint is an error.
#[test]
fn truncated_files_are_errors() {
    let bytes = std::fs::read(fixture("nested.pt")).unwrap();
    for n in 0..bytes.len() {
        assert!(torch_file::from_bytes(&bytes[..n], Path::new("t.pt")).is_err(), "{n} bytes");
    }
    assert!(torch_file::from_bytes(&bytes, Path::new("t.pt")).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A mutated data.pkl (bytes changed, inserted, removed, cut short), re-zipped with the real
    /// storages: an error or a consistent result, quickly; never a panic or a hang.
    #[test]
    fn mutated_pickles_never_panic_or_hang(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let recs = records("views.pt");
        let mut pkl = recs[0].1.clone();
        for (at, byte, kind) in edits {
            let i = at.index(pkl.len().max(1));
            match kind {
                0 | 1 if i < pkl.len() => pkl[i] = byte,
                2 => pkl.insert(i.min(pkl.len()), byte),
                _ if i < pkl.len() => { pkl.remove(i); }
                _ => {}
            }
        }
        if let Some(c) = cut {
            pkl.truncate(c.index(pkl.len() + 1));
        }
        let mut all: Vec<(&str, &[u8])> = vec![(recs[0].0.as_str(), &pkl)];
        all.extend(recs[1..].iter().map(|(n, b)| (n.as_str(), b.as_slice())));
        let start = Instant::now();
        let zipped = torch_file::from_bytes(&zip_of(&all), Path::new("m.pt"));
        let bare = torch_file::from_bytes(&pkl, Path::new("m.pkl"));
        prop_assert!(start.elapsed() < Duration::from_secs(5));
        if let Ok(sd) = &zipped { prop_assert!(consistent(sd)); }
        // A bare pickle never yields tensors: at best it is "a bare pickle, not an archive".
        prop_assert!(bare.is_err());
    }

    /// A mutated archive (any bytes changed, or cut short): an error or a consistent result.
    #[test]
    fn mutated_archives_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = std::fs::read(fixture("nested.pt")).unwrap();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len() + 1));
        }
        if let Ok(sd) = torch_file::from_bytes(&bytes, Path::new("m.pt")) {
            prop_assert!(consistent(&sd));
        }
    }

    /// Views over a real storage with arbitrary offsets, sizes and strides: written out, or
    /// refused as reaching beyond the storage; never a panic, never an allocation the file
    /// cannot justify.
    #[test]
    fn arbitrary_views_are_checked(
        offset in 0u32..40,
        dims in proptest::collection::vec((0u32..6, 0u32..8), 0..4),
        huge in any::<bool>(),
    ) {
        let mut size = vec![];
        let mut stride = vec![];
        for (s, st) in &dims {
            size.push(if huge { u64::from(*s) << 40 } else { u64::from(*s) });
            stride.push(u64::from(*st));
        }
        let pkl = rebuild_pickle(u64::from(offset), &size, &stride);
        let storage: Vec<u8> = (0..64u8).collect(); // 16 float32 elements
        let zip = zip_of(&[("a/data.pkl", &pkl), ("a/data/0", &storage)]);
        match torch_file::from_bytes(&zip, Path::new("v.pt")) {
            Ok(sd) => {
                prop_assert!(consistent(&sd));
                prop_assert_eq!(sd.tensors[0].1.shape.iter().map(|&d| d as u64).collect::<Vec<_>>(), size);
            }
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.contains("reaches beyond its storage") || e.contains("more than"), "{}", e);
            }
        }
    }
}

/// `{'w': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 16), offset, size, stride,
/// False, OrderedDict())}` as protocol 2 writes it.
fn rebuild_pickle(offset: u64, size: &[u64], stride: &[u64]) -> Vec<u8> {
    let mut p = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x10tQ".to_vec();
    let long = |p: &mut Vec<u8>, v: u64| {
        p.extend_from_slice(b"\x8a\x09");
        p.extend_from_slice(&v.to_le_bytes());
        p.push(0);
    };
    long(&mut p, offset);
    for list in [size, stride] {
        p.push(b'(');
        for &v in list {
            long(&mut p, v);
        }
        p.push(b't');
    }
    p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtRu.");
    p
}

/// A zip archive of deflated records.
fn deflated_zip_of(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in records {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A data.pkl of millions of one-byte opcodes that each build something (empty dicts here; DUPs
/// and MEMOIZEs alike) deflates to a few KiB; the values it builds are counted, and it is refused
/// at 256 MiB of them. Unpacked to its 256 MiB limit it took gigabytes (a 1.6 GB allocation for
/// 67 million DUPs).
#[test]
fn a_pickle_building_millions_of_values_is_refused() {
    for op in [b'}', 0x94] {
        let mut pkl = b"\x80\x02N".to_vec();
        pkl.extend(std::iter::repeat_n(op, 16 << 20));
        pkl.push(b'.');
        let zip = deflated_zip_of(&[("a/data.pkl", &pkl)]);
        assert!(zip.len() < 100_000, "{} bytes", zip.len());
        let e = torch_file::from_bytes(&zip, Path::new("bomb.pt")).unwrap_err().to_string();
        assert!(e.contains("the pickle builds more than 256 MiB of values and objects"), "{e}");
    }
}

/// A tensor's size (and stride) of more than 64 dimensions is refused before its items are read.
/// Any length was read: one size tuple of 200,000 ones shared by 20,000 tensors, 54 KB deflated,
/// made 64 GB of shapes.
#[test]
fn a_tensor_of_more_than_64_dimensions_is_refused() {
    let ones = vec![1u64; 65];
    let pkl = rebuild_pickle(0, &ones, &ones);
    let storage: Vec<u8> = (0..64u8).collect();
    let zip = zip_of(&[("a/data.pkl", &pkl), ("a/data/0", &storage)]);
    let e = torch_file::from_bytes(&zip, Path::new("r.pt")).unwrap_err().to_string();
    assert!(e.contains("the size has 65 dimensions, more than the 64 a tensor may have"), "{e}");
    let ones = vec![1u64; 64];
    let zip = zip_of(&[("a/data.pkl", &rebuild_pickle(0, &ones, &ones)), ("a/data/0", &storage)]);
    assert_eq!(torch_file::from_bytes(&zip, Path::new("r.pt")).unwrap().tensors[0].1.shape, vec![1; 64]);
}

/// `{'a': …, 'b': …}`: two tensors over the storage records `key_a` and `key_b`, each named by its
/// own persistent id (`numel` float32 elements), each viewing element 0.
fn two_tensors_pickle(key_a: &str, numel_a: u32, key_b: &str, numel_b: u32) -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    for (name, key, numel) in [("a", key_a, numel_a), ("b", key_b, numel_b)] {
        p.extend(b"X\x01\x00\x00\x00");
        p.extend(name.as_bytes());
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX");
        p.extend((key.len() as u32).to_le_bytes());
        p.extend(key.as_bytes());
        p.extend(b"X\x03\x00\x00\x00cpuJ");
        p.extend(numel.to_le_bytes());
        p.extend(b"tQK\x00(K\x01t(K\x01t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend(b"u.");
    p
}

/// Persistent ids naming one storage record share it: it is read once, and ids that disagree on
/// its size are an error. Each id read the record anew: one 64 MiB deflated record (66 KB of
/// file) named by 200 ids took 12.8 GB.
#[test]
fn persistent_ids_naming_one_record_share_it() {
    let storage: Vec<u8> = (0..64u8).collect();
    let zip = zip_of(&[("a/data.pkl", &two_tensors_pickle("0", 16, "0", 16)), ("a/data/0", &storage)]);
    let sd = torch_file::from_bytes(&zip, Path::new("s.pt")).unwrap();
    assert_eq!(sd.shared_storages, 1);
    assert_eq!(sd.tensors[1].1.data, &storage[..4]);
    let zip = zip_of(&[("a/data.pkl", &two_tensors_pickle("0", 16, "0", 8)), ("a/data/0", &storage)]);
    let e = torch_file::from_bytes(&zip, Path::new("s.pt")).unwrap_err().to_string();
    assert!(e.contains("the record `a/data/0` holds 64 bytes, its persistent id says 32"), "{e}");
}

/// The storage records read together are held to the bound the tensors are (4 × the file's
/// length + 256 MiB), checked before each record is read: deflated records of zeros could
/// otherwise unpack to about 1000 × the file.
#[test]
fn storages_beyond_what_the_file_can_hold_are_refused_before_reading() {
    let storage: Vec<u8> = (0..64u8).collect();
    let pkl = two_tensors_pickle("0", 16, "1", 100 << 20);
    let zip = zip_of(&[("a/data.pkl", &pkl), ("a/data/0", &storage), ("a/data/1", &storage)]);
    let e = torch_file::from_bytes(&zip, Path::new("s.pt")).unwrap_err().to_string();
    assert!(e.contains("`b`: its storage brings the storages read to more than"), "{e}");
}
