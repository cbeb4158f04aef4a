"""W5's convolutions one by one in PyTorch: the counterpart of `bench/examples/conv_layers.rs`.

The median forward and backward time of each distinct convolution of
`examples/resnet_mnist_model.toml` at batch 128, on random data, in f32 or under
`torch.autocast("cpu", dtype=torch.bfloat16)` (the f32 input and weight cast to bf16 by each
call, as strata's autocast rounds them inside each product), so the two programs time the same
layers the same way:

    python3 bench/torch_conv_layers.py [f32|bf16] [--threads N]
    cargo run --release -p strata-bench --example conv_layers -- [f32|bf16]   # RAYON_NUM_THREADS=N

A W5 step runs the stem and the stride-2 layers once, `b1` twice and the 64-channel 3x3 three
times (the `step` line weights them so).
"""

import argparse
import time

import torch
import torch.nn.functional as F

# name, input channels, output channels, input side, kernel side, stride, padding, whether the
# input needs a gradient (not the stem's: the data); as in conv_layers.rs.
LAYERS = [
    ("stem 1->32 3x3", 1, 32, 28, 3, 1, 1, False),
    ("b1 32->32 3x3", 32, 32, 28, 3, 1, 1, True),
    ("b2.c1 32->64 3x3 s2", 32, 64, 28, 3, 2, 1, True),
    ("b2.sc 32->64 1x1 s2", 32, 64, 28, 1, 2, 0, True),
    ("b2.c2/b3 64->64 3x3", 64, 64, 14, 3, 1, 1, True),
]
# How many times a W5 step runs each layer.
PER_STEP = [1, 2, 1, 1, 3]
REPS = 12


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("precision", nargs="?", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    step = 0.0
    for (name, c, o, side, k, s, p, needs_dx), times in zip(LAYERS, PER_STEP):
        x = torch.randn(128, c, side, side).requires_grad_(needs_dx)
        w = (torch.randn(o, c, k, k) * 0.1).requires_grad_()
        forward, backward = [], []
        for _ in range(REPS):
            t = time.perf_counter()
            if args.precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = F.conv2d(x, w, stride=s, padding=p)
            else:
                y = F.conv2d(x, w, stride=s, padding=p)
            forward.append(time.perf_counter() - t)
            dy = torch.ones_like(y)
            t = time.perf_counter()
            y.backward(dy)
            backward.append(time.perf_counter() - t)
            w.grad = None
            x.grad = None
        fwd, bwd = sorted(forward)[REPS // 2] * 1e3, sorted(backward)[REPS // 2] * 1e3
        step += times * (fwd + bwd)
        print(f"{name:22} forward {fwd:6.2f} ms  backward {bwd:6.2f} ms")
    print(f"{'step (weighted)':22} {step:6.2f} ms")


if __name__ == "__main__":
    main()
