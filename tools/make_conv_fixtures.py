#!/usr/bin/env python3
"""Generate PyTorch reference values for strata's convolution, pooling and
batch-norm parity tests.

Writes ``crates/nn/tests/fixtures/conv_parity.safetensors`` (via
``safetensors.torch.save_file``) so the Rust tests (``crates/nn/tests/conv_parity.rs``)
need no PyTorch at test time.  Regenerate with::

    python3 tools/make_conv_fixtures.py

Global settings (applied before anything else)::

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

All tensors are float32 unless a group says float64; ``num_batches_tracked`` is
int64 (shape ``[]``).  Every backward uses a fixed random upstream gradient
``gy`` (``y.backward(gy)``), so that errors in any output element show up in the
input and parameter gradients.  The safetensors metadata holds
``torch_version`` and ``generator``.

The exact torch code behind every group of keys follows.

Convolution (groups ``conv_a``, ``conv_b``, ``conv_c``, ``conv_d``)
-------------------------------------------------------------------
::

    CONVS = {
        # name:  (seed, ctor, input shape, dtype)
        "conv_a": (10, lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
                   (2, 4, 9, 8), torch.float32),
        "conv_b": (11, lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2),
                                         dilation=(2, 1), groups=2, bias=False),
                   (2, 4, 9, 8), torch.float32),
        "conv_c": (12, lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 6), torch.float64),
        "conv_d": (13, lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4), (3, 4, 5, 7), torch.float32),
    }
    torch.manual_seed(seed)
    conv = ctor().to(dtype)
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    y = conv(x)
    gy = torch.randn_like(y)
    y.backward(gy)
    # <name>.weight, <name>.bias (if any) = conv.state_dict()   (before the backward)
    # <name>.x, <name>.y, <name>.gy
    # <name>.grad.x = x.grad, <name>.grad.weight = conv.weight.grad, <name>.grad.bias = conv.bias.grad

Pooling (groups ``maxpool_a``, ``maxpool_b``, ``avgpool_a``, ``avgpool_b``, ``adaptive_a``, ``adaptive_b``)
-----------------------------------------------------------------------------------------------------------
::

    POOLS = {
        "maxpool_a":  (20, nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
        "maxpool_b":  (21, nn.MaxPool2d((3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)), (2, 3, 9, 8)),
        "avgpool_a":  (22, nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
        "avgpool_b":  (23, nn.AvgPool2d((3, 2), stride=(2, 1), padding=1, count_include_pad=False), (2, 3, 9, 8)),
        "adaptive_a": (24, nn.AdaptiveAvgPool2d((3, 4)), (2, 3, 7, 9)),
        "adaptive_b": (25, nn.AdaptiveAvgPool2d(1), (2, 3, 7, 9)),
    }
    torch.manual_seed(seed)
    x = torch.randn(*shape, requires_grad=True)
    y = pool(x)
    gy = torch.randn_like(y)
    y.backward(gy)
    # <name>.x, <name>.y, <name>.gy, <name>.grad.x = x.grad

Batch norm (groups ``bn1d_a``, ``bn1d_b``, ``bn2d``, ``bn2d_f64``, ``bn2d_cma``)
--------------------------------------------------------------------------------
::

    BNS = {
        # name:      (seed, ctor, input shape, dtype)
        "bn1d_a":   (30, lambda: nn.BatchNorm1d(5), (8, 5), torch.float32),
        "bn1d_b":   (31, lambda: nn.BatchNorm1d(5), (4, 5, 6), torch.float32),
        "bn2d":     (32, lambda: nn.BatchNorm2d(3), (4, 3, 5, 6), torch.float32),
        "bn2d_f64": (33, lambda: nn.BatchNorm2d(3), (4, 3, 5, 6), torch.float64),
        "bn2d_cma": (34, lambda: nn.BatchNorm2d(3, momentum=None), (4, 3, 5, 6), torch.float32),
    }
    torch.manual_seed(seed)
    bn = ctor().to(dtype)
    with torch.no_grad():                 # non-trivial affine parameters
        bn.weight.copy_(torch.randn(C, dtype=dtype))
        bn.bias.copy_(torch.randn(C, dtype=dtype))
    # <name>.init.<k> = bn.state_dict()[k]   (weight, bias, running_mean, running_var,
    #                                          num_batches_tracked)
    bn.train()
    x = (torch.randn(*shape, dtype=dtype) * 2 + 1).requires_grad_()
    y = bn(x)                              # training step 1: batch statistics
    gy = torch.randn_like(y)
    y.backward(gy)
    # <name>.x, <name>.y, <name>.gy, <name>.grad.x, <name>.grad.weight, <name>.grad.bias
    x2 = torch.randn(*shape, dtype=dtype) * 3 - 1
    with torch.no_grad():
        bn(x2)                             # training step 2 (updates the running stats again)
    # <name>.x2; <name>.after.<k> = bn.state_dict()[k] after the two steps
    bn.eval()
    bn.zero_grad(set_to_none=True)
    x3 = torch.randn(*shape, dtype=dtype, requires_grad=True)
    y3 = bn(x3)                            # evaluation: running statistics
    gy3 = torch.randn_like(y3)
    y3.backward(gy3)
    # <name>.eval.x, <name>.eval.y, <name>.eval.gy, <name>.eval.grad.x,
    # <name>.eval.grad.weight, <name>.eval.grad.bias
"""

import os

import safetensors
import safetensors.torch
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "nn", "tests", "fixtures", "conv_parity.safetensors")

CONVS = {
    "conv_a": (10, lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (2, 4, 9, 8), torch.float32),
    "conv_b": (
        11,
        lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2, bias=False),
        (2, 4, 9, 8),
        torch.float32,
    ),
    "conv_c": (12, lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 6), torch.float64),
    "conv_d": (13, lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4), (3, 4, 5, 7), torch.float32),
}

POOLS = {
    "maxpool_a": (20, nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
    "maxpool_b": (21, nn.MaxPool2d((3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)), (2, 3, 9, 8)),
    "avgpool_a": (22, nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
    "avgpool_b": (23, nn.AvgPool2d((3, 2), stride=(2, 1), padding=1, count_include_pad=False), (2, 3, 9, 8)),
    "adaptive_a": (24, nn.AdaptiveAvgPool2d((3, 4)), (2, 3, 7, 9)),
    "adaptive_b": (25, nn.AdaptiveAvgPool2d(1), (2, 3, 7, 9)),
}

BNS = {
    "bn1d_a": (30, lambda: nn.BatchNorm1d(5), (8, 5), torch.float32),
    "bn1d_b": (31, lambda: nn.BatchNorm1d(5), (4, 5, 6), torch.float32),
    "bn2d": (32, lambda: nn.BatchNorm2d(3), (4, 3, 5, 6), torch.float32),
    "bn2d_f64": (33, lambda: nn.BatchNorm2d(3), (4, 3, 5, 6), torch.float64),
    "bn2d_cma": (34, lambda: nn.BatchNorm2d(3, momentum=None), (4, 3, 5, 6), torch.float32),
}


def t(v):
    """A standalone contiguous copy, as safetensors wants."""
    return v.detach().clone().contiguous()


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    out = {}

    for name, (seed, ctor, shape, dtype) in CONVS.items():
        torch.manual_seed(seed)
        conv = ctor().to(dtype)
        for k, v in conv.state_dict().items():
            out[f"{name}.{k}"] = t(v)
        x = torch.randn(*shape, dtype=dtype, requires_grad=True)
        y = conv(x)
        gy = torch.randn_like(y)
        y.backward(gy)
        out[f"{name}.x"], out[f"{name}.y"], out[f"{name}.gy"] = t(x), t(y), t(gy)
        out[f"{name}.grad.x"] = t(x.grad)
        out[f"{name}.grad.weight"] = t(conv.weight.grad)
        if conv.bias is not None:
            out[f"{name}.grad.bias"] = t(conv.bias.grad)

    for name, (seed, pool, shape) in POOLS.items():
        torch.manual_seed(seed)
        x = torch.randn(*shape, requires_grad=True)
        y = pool(x)
        gy = torch.randn_like(y)
        y.backward(gy)
        out[f"{name}.x"], out[f"{name}.y"], out[f"{name}.gy"] = t(x), t(y), t(gy)
        out[f"{name}.grad.x"] = t(x.grad)

    for name, (seed, ctor, shape, dtype) in BNS.items():
        torch.manual_seed(seed)
        bn = ctor().to(dtype)
        c = shape[1]
        with torch.no_grad():
            bn.weight.copy_(torch.randn(c, dtype=dtype))
            bn.bias.copy_(torch.randn(c, dtype=dtype))
        for k, v in bn.state_dict().items():
            out[f"{name}.init.{k}"] = t(v)
        bn.train()
        x = (torch.randn(*shape, dtype=dtype) * 2 + 1).requires_grad_()
        y = bn(x)
        gy = torch.randn_like(y)
        y.backward(gy)
        out[f"{name}.x"], out[f"{name}.y"], out[f"{name}.gy"] = t(x), t(y), t(gy)
        out[f"{name}.grad.x"] = t(x.grad)
        out[f"{name}.grad.weight"] = t(bn.weight.grad)
        out[f"{name}.grad.bias"] = t(bn.bias.grad)
        x2 = torch.randn(*shape, dtype=dtype) * 3 - 1
        with torch.no_grad():
            bn(x2)
        out[f"{name}.x2"] = t(x2)
        for k, v in bn.state_dict().items():
            out[f"{name}.after.{k}"] = t(v)
        bn.eval()
        bn.zero_grad(set_to_none=True)
        x3 = torch.randn(*shape, dtype=dtype, requires_grad=True)
        y3 = bn(x3)
        gy3 = torch.randn_like(y3)
        y3.backward(gy3)
        out[f"{name}.eval.x"], out[f"{name}.eval.y"], out[f"{name}.eval.gy"] = t(x3), t(y3), t(gy3)
        out[f"{name}.eval.grad.x"] = t(x3.grad)
        out[f"{name}.eval.grad.weight"] = t(bn.weight.grad)
        out[f"{name}.eval.grad.bias"] = t(bn.bias.grad)

    assert out["bn2d.after.num_batches_tracked"].dtype == torch.int64
    metadata = {"torch_version": torch.__version__, "generator": "tools/make_conv_fixtures.py"}
    safetensors.torch.save_file(out, OUT, metadata=metadata)
    print(f"wrote {os.path.normpath(OUT)}: {len(out)} tensors (torch {torch.__version__}, safetensors {safetensors.__version__})")
    for k in sorted(out):
        print(f"  {k:32s} {str(out[k].dtype):14s} {list(out[k].shape)}")


if __name__ == "__main__":
    main()
