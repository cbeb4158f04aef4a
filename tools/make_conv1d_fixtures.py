#!/usr/bin/env python3
"""Writes crates/nn/tests/fixtures/conv1d_parity.safetensors for crates/nn/tests/conv1d_parity.rs:
nn.Conv1d and the 1-d pools (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d), forward and
backward with real PyTorch, in f32 and f64.

    python3 tools/make_conv1d_fixtures.py

For each case NAME (below), with torch.manual_seed(seed) first:

    conv = nn.Conv1d(...).to(dtype)
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    y = conv(x); gy = torch.randn_like(y); y.backward(gy)

and it stores NAME.x, NAME.y, NAME.gy, NAME.grad.x, and for a convolution NAME.weight,
NAME.bias (when there is one), NAME.grad.weight, NAME.grad.bias.
"""

import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "nn", "tests", "fixtures")

# name, seed, constructor, input shape, dtype
CASES = [
    ("basic", 1, lambda: nn.Conv1d(3, 4, 3), (2, 3, 11), torch.float32),
    ("strided", 2, lambda: nn.Conv1d(4, 6, 5, stride=2, padding=2, dilation=2, groups=2), (2, 4, 17), torch.float32),
    ("same_reflect", 3, lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="reflect"), (2, 2, 9), torch.float32),
    ("circular", 4, lambda: nn.Conv1d(2, 2, 3, padding=2, padding_mode="circular", bias=False), (3, 2, 7), torch.float32),
    ("replicate", 5, lambda: nn.Conv1d(3, 3, 3, padding=1, padding_mode="replicate"), (2, 3, 6), torch.float32),
    ("depthwise", 6, lambda: nn.Conv1d(4, 8, 3, groups=4, padding=1), (2, 4, 10), torch.float32),
    ("unbatched", 7, lambda: nn.Conv1d(3, 5, 2, stride=3), (3, 14), torch.float32),
    ("f64", 8, lambda: nn.Conv1d(3, 4, 3, padding=1, dilation=2), (2, 3, 12), torch.float64),
    ("max_pool", 9, lambda: nn.MaxPool1d(3, stride=2, padding=1), (2, 3, 11), torch.float32),
    ("max_pool_dilated_ceil", 10, lambda: nn.MaxPool1d(2, stride=2, dilation=2, ceil_mode=True), (2, 2, 10), torch.float32),
    ("avg_pool", 11, lambda: nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 3, 10), torch.float32),
    ("avg_pool_plain", 12, lambda: nn.AvgPool1d(4), (2, 3, 13), torch.float32),
    ("adaptive_avg_pool", 13, lambda: nn.AdaptiveAvgPool1d(4), (2, 3, 11), torch.float32),
    ("global_avg_pool", 14, lambda: nn.AdaptiveAvgPool1d(1), (3, 9), torch.float64),
]


def main():
    out = {}
    for name, seed, make, shape, dtype in CASES:
        torch.manual_seed(seed)
        conv = make().to(dtype)
        x = torch.randn(*shape, dtype=dtype, requires_grad=True)
        y = conv(x)
        gy = torch.randn_like(y)
        y.backward(gy)
        out[f"{name}.x"] = x.detach().clone()
        out[f"{name}.y"] = y.detach().clone()
        out[f"{name}.gy"] = gy
        out[f"{name}.grad.x"] = x.grad.clone()
        if not isinstance(conv, nn.Conv1d):
            print(f"{name}: x {list(shape)} -> y {list(y.shape)}")
            continue
        out[f"{name}.weight"] = conv.weight.detach().clone()
        out[f"{name}.grad.weight"] = conv.weight.grad.clone()
        if conv.bias is not None:
            out[f"{name}.bias"] = conv.bias.detach().clone()
            out[f"{name}.grad.bias"] = conv.bias.grad.clone()
        print(f"{name}: x {list(shape)} -> y {list(y.shape)}")
    meta = {"torch_version": torch.__version__, "generator": "tools/make_conv1d_fixtures.py"}
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "conv1d_parity.safetensors"), metadata=meta)


if __name__ == "__main__":
    main()
