//! `strata export`: a run's checkpoint with its trained weights and normalisation, a model file
//! with `--weights`, and the errors for what cannot be exported. The graphs' numerics are
//! tested against tract in strata-nn (`tests/onnx_export.rs`).

use std::path::Path;
use std::process::Command;
use strata_nn::StateDict;
use strata_nn::onnx::{self, proto::ModelProto};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(STRATA).current_dir(ROOT).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn read(path: &Path) -> ModelProto {
    onnx::decode(&std::fs::read(path).unwrap()).unwrap()
}

/// The initializer `key` holds exactly the state_dict's f32 values.
fn assert_weight(m: &ModelProto, sd: &StateDict, key: &str) {
    let init = m.graph.as_ref().unwrap().initializer.iter().find(|t| t.name == key).unwrap();
    let want: Vec<u8> = sd.get(key).unwrap().to_vec::<f32>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(init.raw_data == want, "{key} differs from the checkpoint");
}

#[test]
fn a_run_exports_its_trained_weights_and_normalisation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    let (ok, _, err) = run(&["train", "--epochs", "1", "--quiet", "--out", d]);
    assert!(ok, "{err}");
    let sd = StateDict::load(dir.join("checkpoints/best.safetensors")).unwrap();

    let out = tmp.path().join("run.onnx");
    let (ok, stdout, err) = run(&["export", d, "-o", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        stdout.starts_with(&format!("wrote {} (ONNX opset 17, input [batch, 784]; 109,386 ", out.display())),
        "{stdout}"
    );
    let m = read(&out);
    let meta: Vec<(&str, &str)> = m.metadata_props.iter().map(|p| (p.key.as_str(), p.value.as_str())).collect();
    let keys: Vec<&str> = meta.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["strata.mean", "strata.std", "strata.classes"]);
    let mean: Vec<f32> = serde_json::from_str(meta[0].1).unwrap();
    let std: Vec<f32> = serde_json::from_str(meta[1].1).unwrap();
    assert!(mean.len() == 1 && std.len() == 1 && std[0] > 0.0, "{meta:?}");
    assert_eq!(meta[2].1, r#"["0","1","2","3","4","5","6","7","8","9"]"#);
    let nodes: Vec<&str> = m.graph.as_ref().unwrap().node.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nodes, ["fc1", "1", "fc2", "3", "fc3"]);
    for key in ["fc1.weight", "fc1.bias", "fc3.weight"] {
        assert_weight(&m, &sd, key);
    }

    // The same weights through a model file and --weights; no normalisation is known there.
    let out2 = tmp.path().join("file.onnx");
    let ckpt = dir.join("checkpoints/best.safetensors");
    let (ok, _, err) =
        run(&["export", "examples/simple_nn.toml", "--weights", ckpt.to_str().unwrap(), "-o", out2.to_str().unwrap()]);
    assert!(ok, "{err}");
    let m2 = read(&out2);
    assert!(m2.metadata_props.is_empty());
    assert_weight(&m2, &sd, "fc2.weight");
}

#[test]
fn a_model_file_alone_exports_fresh_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("resnet.onnx");
    let (ok, stdout, err) = run(&["export", "examples/resnet_mnist_model.toml", "-o", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(stdout.ends_with("from fresh initialisation (no --weights))\n"), "{stdout}");
    let m = read(&out);
    let ops: Vec<&str> = m.graph.as_ref().unwrap().node.iter().take(3).map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Conv", "BatchNormalization", "Relu"]);
}

#[test]
fn sequence_models_export_with_their_input_types() {
    // Token ids into an Embedding and an LSTM: an int64 input; pixels read row by row.
    let tmp = tempfile::tempdir().unwrap();
    for (file, input, ops) in [
        ("embedding_lstm", "input [batch, 28] of int64 token ids", ["Gather", "Transpose", "Shape"]),
        ("lstm_mnist_model", "input [batch, 28, 28]", ["Transpose", "Shape", "Slice"]),
    ] {
        let out = tmp.path().join(format!("{file}.onnx"));
        let (ok, stdout, err) = run(&["export", &format!("examples/{file}.toml"), "-o", out.to_str().unwrap()]);
        assert!(ok, "{err}");
        assert!(stdout.contains(&format!("(ONNX opset 17, {input}; ")), "{stdout}");
        let m = read(&out);
        let graph = m.graph.as_ref().unwrap();
        let elem = graph.input[0].r#type.as_ref().unwrap().tensor_type.as_ref().unwrap().elem_type;
        assert_eq!(elem, if file == "embedding_lstm" { onnx::proto::INT64 } else { onnx::proto::FLOAT });
        let first: Vec<&str> = graph.node.iter().take(3).map(|n| n.op_type.as_str()).collect();
        assert_eq!(first, ops);
        assert!(graph.node.iter().any(|n| n.name == "lstm" && n.op_type == "LSTM"));
    }
}

#[test]
fn what_cannot_be_exported_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.onnx");
    let o = out.to_str().unwrap();
    // Every layer kind exports; a model without an input shape cannot (no graph input).
    let no_input = tmp.path().join("no_input.toml");
    std::fs::write(
        &no_input,
        "name = \"m\"\nlayers = [{ name = \"fc\", type = \"Linear\", in_features = 4, out_features = 2 }]\n",
    )
    .unwrap();
    let cases: [&[&str]; 3] = [
        &["export", no_input.to_str().unwrap(), "-o", o],
        &["export", "examples", "--weights", "w.safetensors", "-o", o],
        &["export", "runs/no_such_run", "-o", o],
    ];
    let mut errors = Vec::new();
    for args in cases {
        let (ok, _, err) = run(args);
        assert!(!ok);
        errors.push(err.replace(tmp.path().to_str().unwrap(), "[TMP]"));
    }
    assert!(!out.exists());
    insta::assert_snapshot!(errors.join(""));
}

/// An existing output file is kept unless `--force` (as `convert` and `import`): export
/// replaced it silently.
#[test]
fn an_existing_output_is_kept_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.onnx");
    std::fs::write(&out, b"precious").unwrap();
    let o = out.to_str().unwrap();
    let (ok, _, err) = run(&["export", "examples/simple_nn.toml", "-o", o]);
    assert!(!ok && err.contains("the file exists; pass --force to replace it, or choose another -o"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let (ok, _, err) = run(&["export", "examples/simple_nn.toml", "-o", o, "--force"]);
    assert!(ok, "{err}");
    assert!(read(&out).graph.is_some());
}
