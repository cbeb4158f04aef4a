"""Checks strata's ONNX exports with the ONNX checker and ONNX Runtime (a second runtime beside
the tract-onnx test): for every DIR/NAME.onnx with its DIR/NAME.io.safetensors (`input` and
strata's `output`, written by `STRATA_ONNX_DUMP=DIR cargo test -p strata-nn --test onnx_export`),
runs `onnx.checker.check_model(full_check=True)` (which also infers every shape), runs the model
with onnxruntime's CPU provider on `input`, and compares with `output`:
|ort - strata| <= 1e-5 * max(|strata|, 1) element-wise, the tract test's tolerance. It also
runs the model on `input_small` (batch 1, or 2 for a BatchNorm that uses the batch's statistics)
against `output_small`, to exercise the symbolic batch dimension (older dumps without them: the
first sample of `input`).

    pip install onnx onnxruntime
    STRATA_ONNX_DUMP=/tmp/onnx cargo test -p strata-nn --test onnx_export
    python3 tools/check_onnx.py /tmp/onnx

A double-precision model whose ops ONNX Runtime's CPU provider has no double kernel for
(Conv, Elu, Erf, AveragePool, RNN, LSTM, GRU in onnxruntime 1.32) passes the checker but cannot
run: it is reported as skipped, with the op, not as a failure (the Rust test checks such a
graph's nodes against the same model's f32 export, which both runtimes run).

Exits 1 if any model fails; prints one line per model.
"""

import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file


class NoDoubleKernel(Exception):
    """ONNX Runtime cannot run a double-precision op of a model that passed the checker."""


def check(path):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    io = load_file(path[: -len(".onnx")] + ".io.safetensors")
    x, want = io["input"], io["output"]
    small = (io["input_small"], io["output_small"]) if "input_small" in io else (x[:1], want[:1])
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        session.run(None, {"input": small[0]})
    except Exception as e:
        message = str(e)
        double = want.dtype == np.float64
        if double and ("NOT_IMPLEMENTED" in message or "does not support double" in message):
            raise NoDoubleKernel(message.split(":")[-1].strip()) from e
        raise
    worst = 0.0
    for inp, expected in [(x, want), small]:
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
    failed = skipped = 0
    for path in paths:
        name = os.path.basename(path)
        try:
            problem = check(path)
        except NoDoubleKernel as e:
            print(f"{name}: checker ok; skipped by ONNX Runtime, which has no double kernel: {e}")
            skipped += 1
            continue
        except Exception as e:  # the checker's and the runtime's errors, reported per model
            problem = f"{type(e).__name__}: {e}"
        print(f"{name}: {'ok' if problem is None else 'FAILED: ' + problem}")
        failed += problem is not None
    ran = len(paths) - skipped
    print(f"{ran - failed} of {ran} models pass", end="")
    print(f" ({skipped} more double-precision models pass the checker only)" if skipped else "")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
