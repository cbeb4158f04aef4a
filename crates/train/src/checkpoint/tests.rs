//! Checkpoint tests: the checksum, the metadata checks, resume and best/latest selection.

use super::*;
use strata_nn::ModelSpec;
use strata_nn::model_file::to_toml;

const PATH: &str = "run/checkpoints/step-000000007.safetensors";

fn spec() -> ModelSpec {
    ModelSpec::new("Tiny").input(&[4]).linear("fc", 4, 3)
}

/// A run config of 10 epochs whose `optimizer.lr` must not be negative (as a CLI's check
/// would refuse it).
fn check(text: &str) -> std::result::Result<usize, String> {
    let epochs = default_config_check(text)?;
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    match table.get("optimizer").and_then(|o| o.get("lr")).and_then(toml::Value::as_float) {
        Some(lr) if lr < 0.0 => Err(format!("is out of range: optimizer.lr = {lr}: must be positive")),
        _ => Ok(epochs),
    }
}

fn from_bytes(bytes: &[u8], path: &Path) -> Result<(StateDict, StateDict, Meta)> {
    super::from_bytes(bytes, path, &check)
}

fn meta() -> Meta {
    Meta {
        epoch: 1,
        batch: 2,
        step: 7,
        best_val_acc: Some(0.5),
        skipped: 0,
        config: "[optimizer]\nlr = 0.01\n\n[training]\nepochs = 10\n".into(),
        model: to_toml(&spec()),
        mean: vec![0.1307],
        std: vec![0.3081],
        classes: vec!["a".into(), "b".into(), "c".into()],
        extra_state: BTreeMap::new(),
        callbacks: BTreeMap::new(),
    }
}

/// A small checkpoint's bytes: a 4 → 3 Linear with SGD momentum buffers.
fn checkpoint(meta: &Meta) -> Vec<u8> {
    let model = spec().build().unwrap();
    let mut optim = StateDict::new();
    for (k, t) in model.state_dict().iter() {
        optim.insert(format!("momentum_buffer.{k}"), t.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    save(&path, &model, &optim, meta).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn a_checkpoint_reads_back() {
    let bytes = checkpoint(&meta());
    let (params, optim, m) = from_bytes(&bytes, Path::new(PATH)).unwrap();
    assert_eq!(m, meta());
    assert_eq!((params.keys().count(), optim.keys().count()), (2, 2));
}

/// Callbacks' states read back whole: their text in the metadata, their tensors beside the
/// parameters (not among them); a callback tensor whose state is not in the metadata is refused.
#[test]
fn callback_states_read_back() {
    let mut kept = StateDict::new();
    kept.insert("fc.weight", strata_core::Tensor::from_vec(vec![0.5f32; 12], &[3, 4]).unwrap());
    let mut callbacks = BTreeMap::new();
    callbacks.insert("early_stopping".to_string(), CallbackState { value: "{\"wait\":2}".into(), tensors: kept });
    callbacks.insert("counter".to_string(), CallbackState { value: "7".into(), tensors: StateDict::new() });
    let with = Meta { callbacks, ..meta() };
    let (params, optim, m) = from_bytes(&checkpoint(&with), Path::new(PATH)).unwrap();
    assert_eq!(m, with);
    assert_eq!((params.keys().count(), optim.keys().count()), (2, 2));

    // The same tensor with no state of its key in the metadata.
    let model = spec().build().unwrap();
    let mut orphan = model.state_dict();
    orphan.insert(format!("{CALLBACK_PREFIX}lost.w"), strata_core::Tensor::from_vec(vec![1.0f32], &[1]).unwrap());
    let mut map = meta().to_map();
    map.insert(CHECKSUM_KEY.into(), PLACEHOLDER.into());
    let mut bytes = orphan.to_safetensors_bytes(Some(map)).unwrap();
    seal(&mut bytes);
    let e = from_bytes(&bytes, Path::new(PATH)).unwrap_err().to_string();
    assert!(e.starts_with(PATH) && e.contains("`__strata__.callback.lost.w` belongs to no callback state"), "{e}");
}

/// Every byte of the header (its length and its JSON), changed in any of several ways, is
/// caught; so is every byte of the tensors' data.
#[test]
fn any_changed_byte_is_caught() {
    let bytes = checkpoint(&meta());
    let header_end = header_range(&bytes).unwrap().end;
    let path = Path::new(PATH);
    for i in 0..bytes.len() {
        let masks: &[u8] =
            if i < header_end { &[0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff, 0x2a] } else { &[0x01, 0xff] };
        for &mask in masks {
            let mut damaged = bytes.clone();
            damaged[i] ^= mask;
            let e = from_bytes(&damaged, path).err().unwrap_or_else(|| panic!("byte {i} ^ {mask:#04x} not caught"));
            assert!(e.to_string().starts_with(PATH), "byte {i}: {e}");
        }
    }
    // Cut short, or lengthened.
    for len in [0, 7, 8, header_end, bytes.len() - 1] {
        assert!(from_bytes(&bytes[..len], path).is_err(), "cut to {len} bytes");
    }
    assert!(from_bytes(&[&bytes[..], b"\0"].concat(), path).is_err());
}

/// Metadata out of range, in a file whose checksum is right (as another writer could
/// produce): each refusal names the file, the key, the value and the fix.
#[test]
fn metadata_out_of_range_is_refused_by_name() {
    let cases: Vec<(&str, Meta)> = vec![
        ("epoch beyond the run", Meta { epoch: 12, batch: 0, step: 2000, ..meta() }),
        ("batch of the epoch after the last", Meta { epoch: 10, batch: 3, step: 2000, ..meta() }),
        ("step behind the position", Meta { epoch: 5, batch: 3, step: 4, ..meta() }),
        ("more skipped steps than steps", Meta { skipped: 8, ..meta() }),
        ("empty normalisation", Meta { mean: vec![], ..meta() }),
        ("zero std", Meta { std: vec![0.0], ..meta() }),
        ("non-finite std (stored as null)", Meta { std: vec![f32::NAN], ..meta() }),
        ("wrong length for the input", Meta { mean: vec![0.1, 0.2, 0.3], std: vec![1.0; 3], ..meta() }),
        ("mean and std of different lengths", Meta { mean: vec![0.1, 0.2], std: vec![1.0; 4], ..meta() }),
        ("config that does not parse", Meta { config: "[training]\nepochs = \"ten\"\n".into(), ..meta() }),
        ("config out of range", Meta { config: "[optimizer]\nlr = -1.0\n".into(), ..meta() }),
        (
            "model that does not parse",
            Meta { model: "name = \"Tiny\"\nlayers = [{ type = \"Lineer\" }]\n".into(), ..meta() },
        ),
    ];
    let mut report = String::new();
    for (what, m) in cases {
        let e = from_bytes(&checkpoint(&m), Path::new(PATH)).err().unwrap_or_else(|| panic!("{what}: accepted"));
        let e = format!("{e:#}");
        assert!(e.starts_with(PATH) && e.contains("fix:"), "{what}: {e}");
        report.push_str(&format!("# {what}\n{e}\n\n"));
    }
    // Damage caught by the checksum, and files that are not checkpoints.
    let good = checkpoint(&meta());
    let flip = |needle: &str, to: &str| {
        let text = replace_same_length(&good, needle, to);
        format!("{:#}", from_bytes(&text, Path::new(PATH)).unwrap_err())
    };
    report.push_str(&format!("# lr changed by one byte\n{}\n\n", flip("lr = 0.01", "lr = 0.91")));
    report.push_str(&format!("# checksum key damaged\n{}\n\n", flip("strata.checksum", "strata.checksun")));
    let sd = StateDict::new().to_safetensors_bytes(None).unwrap();
    report.push_str(&format!("# a plain state_dict\n{:#}\n", from_bytes(&sd, Path::new(PATH)).unwrap_err()));
    insta::assert_snapshot!("checkpoint_refusals", redact_checksums(&report));
}

/// `text` with the digits of every `crc32:` checksum hidden: they depend on the random
/// initial weights.
fn redact_checksums(text: &str) -> String {
    let mut parts = text.split("crc32:");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("crc32:########");
        out.push_str(part.get(8..).unwrap_or_default());
    }
    out
}

/// `bytes` with the first `from` replaced by `to` (same length), checksum untouched.
fn replace_same_length(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let i = bytes.windows(from.len()).position(|w| w == from.as_bytes()).expect("present");
    let mut out = bytes.to_vec();
    out[i..i + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// `--resume` of a run directory takes the newest checkpoint that verifies and moves the
/// damaged ones aside.
#[test]
fn resume_falls_back_to_the_newest_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path();
    std::fs::create_dir_all(dir(run)).unwrap();
    let good = checkpoint(&meta());
    std::fs::write(step_file(run, 7), &good).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(step_file(run, 14), &bad).unwrap();
    let (path, _, _, m) = load_for_resume(run).unwrap();
    assert_eq!((path, m.step), (step_file(run, 7), 7));
    assert!(dir(run).join("step-000000014.safetensors.damaged").exists());
    assert_eq!(list(run).len(), 1);
    std::fs::write(step_file(run, 7), &bad).unwrap();
    let e = format!("{:#}", load_for_resume(run).unwrap_err());
    assert!(e.contains("none of its 1 checkpoints verifies"), "{e}");
    let e = format!("{:#}", load_for_resume(run).unwrap_err());
    assert!(e.contains("no checkpoint to resume from") && e.contains("restarted automatically"), "{e}");
}

/// A run whose step checkpoint failed to write after its best one was written holds only
/// `best.safetensors`: `any` counts it as a run to resume, and `--resume` starts from it
/// (it must verify), so "continue it with --resume" is a way forward, not a loop.
#[test]
fn resume_starts_from_the_best_checkpoint_when_there_is_no_step_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path();
    std::fs::create_dir_all(dir(run)).unwrap();
    let best = dir(run).join("best.safetensors");
    let good = checkpoint(&Meta { epoch: 1, batch: 0, step: 5, ..meta() });
    std::fs::write(&best, &good).unwrap();
    assert!(any(run) && list(run).is_empty());
    let (path, _, _, m) = load_for_resume(run).unwrap();
    assert_eq!((path, m.epoch, m.step), (best.clone(), 1, 5));
    // Damaged, it is refused by name, not skipped for nothing.
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&best, &bad).unwrap();
    let e = format!("{:#}", load_for_resume(run).unwrap_err());
    assert!(e.contains("best.safetensors"), "{e}");
}

/// What eval, predict and export read: a file as given; a run's best checkpoint over its
/// newest step; a directory without any is an error naming the use, not resume's advice.
#[test]
fn best_or_latest_prefers_best_and_names_the_use() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path();
    let e = format!("{:#}", best_or_latest(run, "export").unwrap_err());
    assert!(e.contains("no checkpoint to export") && e.contains("not a run directory"), "{e}");
    assert!(!e.contains("resume"), "{e}");
    std::fs::create_dir_all(dir(run)).unwrap();
    for step in [3, 12] {
        std::fs::write(step_file(run, step), b"x").unwrap();
    }
    assert_eq!(best_or_latest(run, "export").unwrap(), step_file(run, 12));
    std::fs::write(dir(run).join("best.safetensors"), b"x").unwrap();
    assert_eq!(best_or_latest(run, "export").unwrap(), dir(run).join("best.safetensors"));
    assert_eq!(best_or_latest(&step_file(run, 3), "export").unwrap(), step_file(run, 3));
}

/// Pruning deletes only files strata named: a user's `step-1.safetensors` (which `parse` read
/// as step 1, the oldest), `step-+2.safetensors`, and a folder spelled like a checkpoint were
/// listed — the first two deleted by `prune`, the folder failing it (and the run with it) and
/// renamed aside by a resume.
#[test]
fn pruning_leaves_files_strata_did_not_name() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path();
    std::fs::create_dir_all(dir(run)).unwrap();
    let mine = ["step-1.safetensors", "step-+2.safetensors", "step-0000000003.safetensors"];
    for name in mine {
        std::fs::write(dir(run).join(name), b"the user's own").unwrap();
    }
    std::fs::create_dir(step_file(run, 4)).unwrap();
    for step in [5, 6, 1_000_000_000] {
        std::fs::write(step_file(run, step), b"x").unwrap();
    }
    assert_eq!(
        list(run),
        vec![(5, step_file(run, 5)), (6, step_file(run, 6)), (1_000_000_000, step_file(run, 1_000_000_000))]
    );
    prune(run, 1).unwrap();
    assert_eq!(list(run), vec![(1_000_000_000, step_file(run, 1_000_000_000))]);
    for name in mine {
        assert_eq!(std::fs::read(dir(run).join(name)).unwrap(), b"the user's own", "{name}");
    }
    assert!(step_file(run, 4).is_dir());
}
