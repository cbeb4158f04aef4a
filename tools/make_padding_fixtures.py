#!/usr/bin/env python3
"""Generate PyTorch reference values for Conv2d's ``padding = "same" | "valid" | int/pair``
and ``padding_mode = "zeros" | "reflect" | "replicate" | "circular"``.

Writes ``crates/nn/tests/fixtures/padding_parity.safetensors`` (via
``safetensors.torch.save_file``), which ``crates/nn/tests/padding_parity.rs`` compares
strata against (output, input gradient, weight and bias gradients) with no PyTorch at test
time.  Regenerate with::

    python3 tools/make_padding_fixtures.py

(torch 2.x, numpy and safetensors.)  The tensors are bit-identical from run to run for a
given torch version; the order of the metadata entries in the header may differ (safetensors
writes them from a hash map), so compare regenerated files by their tensors, not their bytes.

Global settings, applied before anything else::

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

The grid: every padding mode x every padding kind x three layer variants x two dtypes,
72 cases, named ``<mode>_<padding>_<variant>_<dtype>`` (``reflect_same_even_f64``)::

    MODES = ["zeros", "reflect", "replicate", "circular"]
    PADDINGS = ["same", "valid", "explicit"]
    VARIANTS = {
        # name: (in, out, kernel, dilation, groups, bias, explicit padding,
        #        stride when not "same", input shape)
        "odd":       (4, 6, (3, 3), (1, 1), 1, True,  (1, 2), (2, 1), (2, 4, 6, 5)),
        "even":      (4, 6, (4, 2), (2, 3), 2, True,  (2, 1), (1, 1), (2, 4, 9, 8)),
        "depthwise": (4, 8, (2, 2), (1, 1), 4, False, (1, 1), (2, 2), (1, 4, 5, 6)),
    }
    DTYPES = {"f32": torch.float32, "f64": torch.float64}

"even" is an even kernel with dilation and groups: "same" pads it asymmetrically, the extra
element on the right/bottom (heights: dilation 2 x (4 - 1) = 6 -> 3 + 3; widths:
3 x (2 - 1) = 3 -> 1 + 2).  "same" runs at stride 1 (PyTorch refuses a strided "same").

For case number ``i`` (in the loop order modes, paddings, variants, dtypes)::

    torch.manual_seed(1000 + i)
    padding = {"same": "same", "valid": "valid", "explicit": explicit}[pad]
    stride = 1 if pad == "same" else stride
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=bias, padding_mode=mode).to(dtype)
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    y = conv(x)
    gy = torch.randn_like(y)
    y.backward(gy)
    # <name>.weight, <name>.bias (if any) = conv's parameters before the backward
    # <name>.x, <name>.y, <name>.gy
    # <name>.grad.x = x.grad, <name>.grad.weight = conv.weight.grad,
    # <name>.grad.bias = conv.bias.grad

The metadata holds ``torch_version``, ``generator`` and ``cases`` (the names, comma-separated,
in order), so the Rust test can check it covers the whole grid.
"""

import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = "crates/nn/tests/fixtures/padding_parity.safetensors"

MODES = ["zeros", "reflect", "replicate", "circular"]
PADDINGS = ["same", "valid", "explicit"]
VARIANTS = {
    "odd": (4, 6, (3, 3), (1, 1), 1, True, (1, 2), (2, 1), (2, 4, 6, 5)),
    "even": (4, 6, (4, 2), (2, 3), 2, True, (2, 1), (1, 1), (2, 4, 9, 8)),
    "depthwise": (4, 8, (2, 2), (1, 1), 4, False, (1, 1), (2, 2), (1, 4, 5, 6)),
}
DTYPES = {"f32": torch.float32, "f64": torch.float64}


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    tensors, names = {}, []
    i = 0
    for mode in MODES:
        for pad in PADDINGS:
            for vname, (cin, cout, kernel, dilation, groups, bias, explicit, stride, shape) in VARIANTS.items():
                for dname, dtype in DTYPES.items():
                    name = f"{mode}_{pad}_{vname}_{dname}"
                    torch.manual_seed(1000 + i)
                    i += 1
                    padding = {"same": "same", "valid": "valid", "explicit": explicit}[pad]
                    s = 1 if pad == "same" else stride
                    conv = nn.Conv2d(cin, cout, kernel, stride=s, padding=padding, dilation=dilation,
                                     groups=groups, bias=bias, padding_mode=mode).to(dtype)
                    for k, v in conv.state_dict().items():
                        tensors[f"{name}.{k}"] = v.detach().clone()
                    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
                    y = conv(x)
                    gy = torch.randn_like(y)
                    y.backward(gy)
                    tensors[f"{name}.x"] = x.detach().clone()
                    tensors[f"{name}.y"] = y.detach().clone()
                    tensors[f"{name}.gy"] = gy
                    tensors[f"{name}.grad.x"] = x.grad.clone()
                    for k, p in conv.named_parameters():
                        tensors[f"{name}.grad.{k}"] = p.grad.clone()
                    names.append(name)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    meta = {
        "torch_version": torch.__version__,
        "generator": "tools/make_padding_fixtures.py",
        "cases": ",".join(names),
    }
    save_file(tensors, OUT, metadata=meta)
    print(f"wrote {OUT}: {len(names)} cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
