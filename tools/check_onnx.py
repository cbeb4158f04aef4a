"""Checks strata's ONNX exports with the ONNX checker and ONNX Runtime (a second runtime beside
the tract-onnx test): for every DIR/NAME.onnx with its DIR/NAME.io.safetensors (`input` and
strata's `output`, written by `STRATA_ONNX_DUMP=DIR cargo test -p strata-nn --test onnx_export`),
runs `onnx.checker.check_model(full_check=True)` (which also infers every shape), runs the model
with onnxruntime's CPU provider on `input`, and compares with `output`:
|ort - strata| <= 1e-5 * max(|strata|, 1) element-wise, the tract test's tolerance. It also
runs the model at batch 1 (the first sample) to exercise the symbolic batch dimension.

    pip install onnx onnxruntime
    STRATA_ONNX_DUMP=/tmp/onnx cargo test -p strata-nn --test onnx_export
    python3 tools/check_onnx.py /tmp/onnx

Exits 1 if any model fails; prints one line per model.
"""

import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file


def check(path):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    io = load_file(path[: -len(".onnx")] + ".io.safetensors")
    x, want = io["input"], io["output"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for inp, expected in [(x, want), (x[:1], want[:1])]:
        (got,) = session.run(None, {"input": inp})
        if got.shape != expected.shape:
            return f"shape {got.shape}, strata {expected.shape}"
        rel = np.abs(got - expected) / np.maximum(np.abs(expected), 1.0)
        worst = max(worst, float(rel.max()))
    return None if worst <= 1e-5 else f"max relative difference {worst:.3g} > 1e-5"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    paths = sorted(glob.glob(os.path.join(sys.argv[1], "*.onnx")))
    if not paths:
        sys.exit(f"no .onnx files in {sys.argv[1]}")
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    failed = 0
    for path in paths:
        try:
            problem = check(path)
        except Exception as e:  # the checker's and the runtime's errors, reported per model
            problem = f"{type(e).__name__}: {e}"
        name = os.path.basename(path)
        print(f"{name}: {'ok' if problem is None else 'FAILED: ' + problem}")
        failed += problem is not None
    print(f"{len(paths) - failed} of {len(paths)} models pass")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
