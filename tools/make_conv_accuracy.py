#!/usr/bin/env python3
"""PyTorch's own f32 error on 3x3 convolutions: the bound strata's default algorithm is held to.

Writes ``crates/core/tests/fixtures/conv_accuracy.txt``: for each shape, PyTorch's float32
error in the output, the input gradient and the weight gradient, measured against PyTorch's
float64 result on the same (float32-representable) values. The test
``ops::conv::tests::default_algorithm_is_within_twice_pytorchs_f32_error`` computes strata's
errors the same way and requires each to be at most twice PyTorch's.

The inputs need no tensor fixture: both sides draw them from one deterministic formula,
``value(seed, i) = top 24 bits of splitmix64(seed * 2**32 + i) / 2**23 - 1``, exact in float32
(the Rust side is ``counter_uniform`` in the test). The error measure, per tensor:
``max_i |got_i - ref_i| / max_i |ref_i|`` (the worst element relative to the tensor's scale).

    python3 tools/make_conv_accuracy.py      # torch with set_num_threads(1), CPU
"""

import pathlib

import numpy as np
import torch
import torch.nn.functional as F

# (n, c, h, w, o, padding, seed): 3x3 kernels, stride 1. The 28x28 planes are where strata's
# fast algorithm uses Winograd F(4x4); 14x14 and 7x7 are F(2x2)'s; 56x56 and 30x30 (no padding)
# vary the tiling's edges; 64 and 128 channels lengthen the sums.
SHAPES = [
    (4, 16, 28, 28, 16, 1, 1),
    (2, 64, 28, 28, 64, 1, 2),
    (4, 32, 14, 14, 32, 1, 3),
    (2, 128, 7, 7, 128, 1, 4),
    (2, 8, 56, 56, 8, 1, 5),
    (2, 16, 30, 30, 24, 0, 6),
    (3, 32, 28, 28, 16, 1, 7),
]

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def counter_uniform(seed, n):
    """splitmix64 of seed·2³² + i, top 24 bits → k/2²³ − 1 ∈ [−1, 1): exact in float32."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 32)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 23) - 1.0


def scaled_error(got, ref):
    return float((got.double() - ref).abs().max() / ref.abs().max())


def main():
    torch.set_num_threads(1)
    lines = [
        "# PyTorch's f32 error (max |f32 - f64| / max |f64|) on 3x3 stride-1 convolutions;",
        f"# written by tools/make_conv_accuracy.py with torch {torch.__version__}.",
        "# n c h w o padding seed err_y err_dx err_dw",
    ]
    for n, c, h, w, o, p, seed in SHAPES:
        x = counter_uniform(3 * seed, n * c * h * w).reshape(n, c, h, w)
        wt = counter_uniform(3 * seed + 1, o * c * 9).reshape(o, c, 3, 3)
        oh, ow = h + 2 * p - 2, w + 2 * p - 2
        dy = counter_uniform(3 * seed + 2, n * o * oh * ow).reshape(n, o, oh, ow)
        errs = []
        outs = {}
        for dtype in (torch.float64, torch.float32):
            xt = torch.tensor(x, dtype=dtype, requires_grad=True)
            wtt = torch.tensor(wt, dtype=dtype, requires_grad=True)
            y = F.conv2d(xt, wtt, padding=p)
            y.backward(torch.tensor(dy, dtype=dtype))
            outs[dtype] = (y.detach(), xt.grad, wtt.grad)
        for got, ref in zip(outs[torch.float32], outs[torch.float64]):
            errs.append(scaled_error(got, ref))
        lines.append(f"{n} {c} {h} {w} {o} {p} {seed} " + " ".join(f"{e:.3e}" for e in errs))
        print(lines[-1])
    out = pathlib.Path(__file__).resolve().parent.parent / "crates/core/tests/fixtures/conv_accuracy.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
