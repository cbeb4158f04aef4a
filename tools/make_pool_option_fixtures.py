#!/usr/bin/env python3
"""Generate PyTorch reference values for strata's pooling options: ``ceil_mode`` for
``nn.MaxPool2d`` and ``nn.AvgPool2d``, ``count_include_pad`` and ``divisor_override`` for
``nn.AvgPool2d``.

Writes ``crates/nn/tests/fixtures/pool_option_parity.safetensors`` (via
``safetensors.torch.save_file``), read by ``crates/nn/tests/pool_option_parity.rs`` so the
Rust tests need no PyTorch.  Regenerate with::

    python3 tools/make_pool_option_fixtures.py

(torch 2.x, numpy, safetensors; the output is deterministic: one thread, fixed seeds.)
The safetensors metadata holds ``torch_version`` and ``generator``.

Global settings (applied before anything else)::

    torch.set_num_threads(1)

Cases (``<name>.*`` keys)
-------------------------
Every case is one pooling module applied to a random input in float32 and, separately, in
float64 (names end in ``_f32`` / ``_f64``), with a random upstream gradient::

    torch.manual_seed(seed)                       # seed = 1000 + the case's index in CASES
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    y = pool(x)
    gy = torch.randn(*y.shape, dtype=dtype)
    y.backward(gy)
    # <name>.x, <name>.y, <name>.gy, <name>.grad_x = x.grad
    # <name>.config = int64 [kind (0 MaxPool2d, 1 AvgPool2d), kH, kW, sH, sW, pH, pW, dH, dW,
    #                        ceil_mode, count_include_pad, divisor_override (0: None)]

where ``pool`` is, for every MaxPool2d geometry ``(k, s, p, d, shape)`` in ``MAX_GEOMETRIES``
below and ``ceil_mode`` in ``(False, True)``::

    nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)

and for every AvgPool2d geometry ``(k, s, p, shape)`` in ``AVG_GEOMETRIES``, ``ceil_mode`` in
``(False, True)``, ``count_include_pad`` in ``(True, False)`` and ``divisor_override`` in
``(None, 4)``::

    nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil_mode,
                 count_include_pad=count_include_pad, divisor_override=divisor_override)

Geometries marked ``ceil_only`` (a kernel wider than the input, which only ceil mode accepts)
are generated with ``ceil_mode=True`` only.  The sizes are odd where that makes ceil mode add
a partial window at the bottom or right, and include cases where PyTorch drops the extra window
because it would start in the right padding.

Output-size table (``shape_table``)
-----------------------------------
An int64 ``[rows, 8]`` tensor: ``[kind, size, kernel, stride, padding, dilation, ceil_mode,
out]`` for ``size`` in 1..=12, ``kernel`` in 1..=4, ``stride`` in 1..=4, ``padding`` in
0..=kernel // 2, ``dilation`` in 1..=2 (MaxPool2d only; AvgPool2d has none), ``ceil_mode`` in
(False, True), where ``out`` is what PyTorch computes, or -1 where it refuses the input::

    x = torch.zeros(1, 1, size, size)
    try:
        if kind == 0:
            out = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode).shape[-1]
        else:
            out = F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode).shape[-1]
    except RuntimeError:
        out = -1

(MaxPool2d rows whose padding exceeds half the dilated kernel span are left out: PyTorch
refuses them before the size rule.)
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_num_threads(1)

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "crates", "nn", "tests", "fixtures",
    "pool_option_parity.safetensors",
)

# (name, kernel, stride, padding, dilation, input shape, ceil_only)
MAX_GEOMETRIES = [
    ("k3s2", 3, 2, 0, 1, (2, 3, 8, 9), False),        # 8: ceil adds a 2-row window
    ("k3s2p1", 3, 2, 1, 1, (2, 3, 10, 7), False),     # 10: the 5th window ends in padding
    ("k2s2", 2, 2, 0, 1, (2, 3, 7, 9), False),        # 7 and 9: a 1-wide last window
    ("k3s2p1d2", 3, 2, 1, 2, (2, 2, 11, 8), False),   # dilation: the last window's taps run off
    ("k32s23p10d12", (3, 2), (2, 3), (1, 0), (1, 2), (2, 2, 9, 10), False),
    ("k3s3p1", 3, 3, 1, 1, (1, 2, 9, 8), False),      # 8: the extra window would start in padding
    ("k3s2wide", 3, 2, 0, 1, (2, 3, 2, 2), True),     # kernel 3 over a 2×2 input
]

# (name, kernel, stride, padding, input shape, ceil_only)
AVG_GEOMETRIES = [
    ("k3s2p1", 3, 2, 1, (2, 3, 10, 7), False),
    ("k2s2", 2, 2, 0, (2, 3, 7, 9), False),
    ("k32s23p11", (3, 2), (2, 3), (1, 1), (2, 2, 9, 10), False),
    ("k3s3p1", 3, 3, 1, (1, 2, 9, 8), False),
    ("k3s2wide", 3, 2, 0, (2, 3, 2, 2), True),
]


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def cases():
    """(name, module, config, shape) for every case, in a fixed order."""
    out = []
    for name, k, s, p, d, shape, ceil_only in MAX_GEOMETRIES:
        for ceil in (True,) if ceil_only else (False, True):
            pool = nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
            cfg = [0, *pair(k), *pair(s), *pair(p), *pair(d), int(ceil), 0, 0]
            out.append((f"max_{name}_{'ceil' if ceil else 'floor'}", pool, cfg, shape))
    for name, k, s, p, shape, ceil_only in AVG_GEOMETRIES:
        for ceil in (True,) if ceil_only else (False, True):
            for cip in (True, False):
                for div in (None, 4):
                    pool = nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil,
                                        count_include_pad=cip, divisor_override=div)
                    cfg = [1, *pair(k), *pair(s), *pair(p), 1, 1, int(ceil), int(cip), div or 0]
                    tag = f"{'ceil' if ceil else 'floor'}_{'cip' if cip else 'nocip'}_div{div or 0}"
                    out.append((f"avg_{name}_{tag}", pool, cfg, shape))
    return out


def shape_table():
    rows = []
    for kind in (0, 1):
        for size in range(1, 13):
            for kernel in range(1, 5):
                for stride in range(1, 5):
                    for padding in range(0, kernel // 2 + 1):
                        for dilation in (1, 2) if kind == 0 else (1,):
                            if 2 * padding > dilation * (kernel - 1) + 1:
                                continue
                            for ceil in (False, True):
                                x = torch.zeros(1, 1, size, size)
                                try:
                                    if kind == 0:
                                        y = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil)
                                    else:
                                        y = F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil)
                                    out = y.shape[-1]
                                except RuntimeError:
                                    out = -1
                                rows.append([kind, size, kernel, stride, padding, dilation, int(ceil), out])
    return torch.tensor(rows, dtype=torch.int64)


def main():
    tensors = {}
    for index, (name, pool, cfg, shape) in enumerate(cases()):
        for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
            torch.manual_seed(1000 + index)
            x = torch.randn(*shape, dtype=dtype, requires_grad=True)
            y = pool(x)
            gy = torch.randn(*y.shape, dtype=dtype)
            y.backward(gy)
            key = f"{name}_{suffix}"
            tensors[f"{key}.x"] = x.detach().clone()
            tensors[f"{key}.y"] = y.detach().clone()
            tensors[f"{key}.gy"] = gy
            tensors[f"{key}.grad_x"] = x.grad.detach().clone()
            tensors[f"{key}.config"] = torch.tensor(cfg, dtype=torch.int64)
    tensors["shape_table"] = shape_table()
    meta = {"torch_version": torch.__version__, "generator": "tools/make_pool_option_fixtures.py"}
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
    n = sum(1 for k in tensors if k.endswith(".config"))
    print(f"wrote {os.path.normpath(OUT)}: {n} cases, {tensors['shape_table'].shape[0]} shape-table rows")


if __name__ == "__main__":
    main()
